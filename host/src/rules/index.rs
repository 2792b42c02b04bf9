//! The rule index: which rules an event must be evaluated by.
//!
//! Two levels. The first is the event's class: a rule that can only match `authentication`
//! events is never asked about a DNS query. The second is one field: most rules need a
//! field to equal one of a few constants (`event.action == "user_created"`,
//! `event.user.name in ["root", "admin"]`, `event.http.status_code == 401`), and within
//! a class such a rule is filed under those values and found by a hash lookup of the
//! event's value; a rule that only needs a field to be there (`exists(…)`, a regex of it)
//! is filed under its presence. What a rule needs is read from the native form of its conditions, with
//! the class tests kept and resolved per class, so `(event.class == "process" && …) ||
//! in_list(event.action, "x")` is keyed on `action` for every class but `process`. The
//! index only ever skips a rule on an event it cannot match: it reads the same predicates
//! as native evaluation, whose semantics are Rhai's.

use rustc_hash::{FxHashMap, FxHashSet};

use super::predicate::{CmpOp, FieldRef, Literal, Predicate};
use crate::event::{EventClass, Field, FieldPath, FieldValue, SecurityEvent};

/// The values a field must hold for a condition to be true.
#[derive(Clone, Debug, Default, PartialEq)]
struct Values {
    /// Its text (strings; addresses, times and ids in canonical form).
    strs: FxHashSet<String>,
    /// Integers.
    ints: FxHashSet<i64>,
    /// Whether any value will do: the field only has to be there (`exists(f)`, a regex or
    /// string test of `f`, which a missing field fails).
    any: bool,
}

impl Values {
    fn present() -> Values {
        Values { any: true, ..Values::default() }
    }
}

/// What a condition needs of an event of a given class to be true.
#[derive(Clone, Debug, PartialEq)]
enum Need {
    /// Nothing it could be true for.
    Never,
    /// Each entry is necessary on its own; none means no indexable need.
    Fields(Vec<(Field, Values)>),
}

impl Need {
    const ANY: Need = Need::Fields(Vec::new());

    fn field(field: Field, values: Values) -> Need {
        Need::Fields(vec![(field, values)])
    }

    /// The need of a disjunction: fields every alternative needs, with their values merged.
    fn any_of(needs: impl IntoIterator<Item = Need>) -> Need {
        let mut merged: Option<Vec<(Field, Values)>> = None;
        for need in needs {
            let Need::Fields(fields) = need else { continue };
            merged = Some(match merged {
                None => fields,
                Some(so_far) => so_far
                    .into_iter()
                    .filter_map(|(field, mut values)| {
                        let (_, other) = fields.iter().find(|(f, _)| *f == field)?;
                        values.strs.extend(other.strs.iter().cloned());
                        values.ints.extend(other.ints.iter().copied());
                        values.any |= other.any;
                        Some((field, values))
                    })
                    .collect(),
            });
        }
        merged.map_or(Need::Never, Need::Fields)
    }
}

fn known(field: &FieldRef) -> Option<Field> {
    match field.path {
        FieldPath::Known(f) if !field.lower => Some(f),
        _ => None,
    }
}

/// What `predicate` needs of an event of `class`.
fn need(predicate: &Predicate, class: EventClass) -> Need {
    match predicate {
        Predicate::Const(false) => Need::Never,
        Predicate::And(items) => {
            let mut all = Vec::new();
            for item in items {
                match need(item, class) {
                    Need::Never => return Need::Never,
                    Need::Fields(fields) => all.extend(fields),
                }
            }
            Need::Fields(all)
        }
        Predicate::Or(items) => Need::any_of(items.iter().map(|item| need(item, class))),
        Predicate::Cmp(field, op, Literal::Str { text, .. }) if known(field) == Some(Field::Class) => {
            match (op, text == class.as_str()) {
                (CmpOp::Eq, false) | (CmpOp::Ne, true) => Need::Never,
                _ => Need::ANY,
            }
        }
        Predicate::InSet(field, set) if known(field) == Some(Field::Class) => {
            if set.contains(class.as_str()) {
                Need::ANY
            } else {
                Need::Never
            }
        }
        Predicate::Cmp(field, CmpOp::Eq, literal) => match (known(field), literal) {
            (Some(f), Literal::Str { text, .. }) => {
                Need::field(f, Values { strs: [text.clone()].into_iter().collect(), ..Values::default() })
            }
            (Some(f), Literal::Int(n)) => {
                Need::field(f, Values { ints: [*n].into_iter().collect(), ..Values::default() })
            }
            _ => Need::ANY,
        },
        // `in_list` reads any value as text, so an integer field matches a member that
        // spells it: such members are filed as integers too.
        Predicate::InSet(field, set) => match known(field) {
            Some(f) => {
                let ints = set.iter().filter_map(|s| s.parse::<i64>().ok().filter(|i| i.to_string() == *s)).collect();
                Need::field(f, Values { strs: set.iter().cloned().collect(), ints, ..Values::default() })
            }
            None => Need::ANY,
        },
        // False on a missing field (a lowered one reads as "", so `known` leaves it out).
        Predicate::Exists(field)
        | Predicate::Str(field, ..)
        | Predicate::Regex(field, _)
        | Predicate::Cidr(field, _)
        | Predicate::Public(field) => known(field).map_or(Need::ANY, |f| Need::field(f, Values::present())),
        Predicate::Sigma(_) => Need::ANY,
        _ => Need::ANY,
    }
}

/// Rules filed under the values of one field.
#[derive(Debug)]
struct Keyed {
    field: Field,
    strs: FxHashMap<Box<str>, Vec<usize>>,
    ints: FxHashMap<i64, Vec<usize>>,
    /// Rules that only need the field to be there.
    present: Vec<usize>,
    /// Every rule filed here (for values the maps cannot answer for).
    every: Vec<usize>,
}

impl Keyed {
    fn select(&self, event: &SecurityEvent, out: &mut Vec<usize>) {
        let by_text = |text: &str, out: &mut Vec<usize>| {
            if let Some(rules) = self.strs.get(text) {
                out.extend_from_slice(rules);
            }
        };
        let value = self.field.get(event);
        if value.is_some() {
            out.extend_from_slice(&self.present);
        }
        match value {
            // A missing field equals no constant and is in no list.
            None => {}
            Some(FieldValue::Str(s)) => by_text(s, out),
            Some(FieldValue::Int(i)) => {
                if let Some(rules) = self.ints.get(&i) {
                    out.extend_from_slice(rules);
                }
            }
            Some(FieldValue::List(_) | FieldValue::Json(_)) => out.extend_from_slice(&self.every),
            Some(other) => by_text(&other.to_text(), out),
        }
    }
}

/// The rules of one class.
#[derive(Debug, Default)]
pub(super) struct ClassIndex {
    /// Every enabled rule that can match the class, in load order.
    pub(super) all: Vec<usize>,
    /// The ones evaluated on every event of the class.
    always: Vec<usize>,
    /// The others, filed by the field they need.
    keyed: Vec<Keyed>,
}

impl ClassIndex {
    /// Files `rules` — (index, the guards of its matchers; `None` for a matcher with no
    /// native form) — for `class`.
    pub(super) fn build<'a>(
        class: EventClass,
        rules: impl IntoIterator<Item = (usize, Vec<Option<&'a Predicate>>)>,
    ) -> ClassIndex {
        let mut index = ClassIndex::default();
        let mut needing: Vec<(usize, Vec<(Field, Values)>)> = Vec::new();
        for (rule, guards) in rules {
            // A rule is a candidate when any of its matchers can be true.
            match Need::any_of(guards.into_iter().map(|g| g.map_or(Need::ANY, |p| need(p, class)))) {
                Need::Never => continue,
                Need::Fields(fields) if fields.is_empty() => index.always.push(rule),
                Need::Fields(fields) => needing.push((rule, fields)),
            }
            index.all.push(rule);
        }
        // File each rule under the field it needs with the most distinct values among the
        // class's rules: the likeliest to rule it out (`user.name` rather than `outcome`);
        // a field it only needs to be there comes last.
        let mut distinct: FxHashMap<Field, FxHashSet<String>> = FxHashMap::default();
        for (_, fields) in &needing {
            for (field, values) in fields {
                let seen = distinct.entry(*field).or_default();
                seen.extend(values.strs.iter().cloned());
                seen.extend(values.ints.iter().map(|i| format!("\0{i}")));
            }
        }
        for (rule, fields) in needing {
            let (field, values) = fields
                .into_iter()
                .max_by_key(|(f, v)| (!v.any, distinct.get(f).map_or(0, FxHashSet::len), std::cmp::Reverse(*f)))
                .expect("a rule with needs has at least one");
            let keyed = match index.keyed.iter().position(|k| k.field == field) {
                Some(i) => &mut index.keyed[i],
                None => {
                    index.keyed.push(Keyed {
                        field,
                        strs: FxHashMap::default(),
                        ints: FxHashMap::default(),
                        present: Vec::new(),
                        every: Vec::new(),
                    });
                    index.keyed.last_mut().expect("just pushed")
                }
            };
            for text in values.strs {
                keyed.strs.entry(text.into_boxed_str()).or_default().push(rule);
            }
            for int in values.ints {
                keyed.ints.entry(int).or_default().push(rule);
            }
            if values.any {
                keyed.present.push(rule);
            }
            keyed.every.push(rule);
        }
        index
    }

    /// How rule `rule` is found in this class: `None` when it cannot match the class,
    /// `Some(None)` when every event of the class is evaluated by it, else its field.
    pub(super) fn keyed_on(&self, rule: usize) -> Option<Option<Field>> {
        if !self.all.contains(&rule) {
            return None;
        }
        Some(self.keyed.iter().find(|k| k.every.contains(&rule)).map(|k| k.field))
    }

    /// The rules `event` (of this class) must be evaluated by, in load order, into `out`.
    pub(super) fn select(&self, event: &SecurityEvent, out: &mut Vec<usize>) {
        out.clear();
        out.extend_from_slice(&self.always);
        if self.keyed.is_empty() {
            return;
        }
        for keyed in &self.keyed {
            keyed.select(event, out);
        }
        out.sort_unstable();
        out.dedup();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn eq(field: Field, text: &str) -> Predicate {
        let literal = Literal::Str { text: text.into(), ip: text.parse().ok() };
        Predicate::Cmp(FieldRef { path: FieldPath::Known(field), lower: false }, CmpOp::Eq, literal)
    }

    fn seen(field: Field) -> Predicate {
        Predicate::Exists(FieldRef { path: FieldPath::Known(field), lower: false })
    }

    fn strs(items: &[&str]) -> Values {
        Values { strs: items.iter().map(|s| s.to_string()).collect(), ..Values::default() }
    }

    #[test]
    fn needs_follow_and_or_and_the_class() {
        let auth = EventClass::Authentication;
        let failed_root = Predicate::And(vec![eq(Field::Outcome, "failure"), eq(Field::UserName, "root")]);
        assert_eq!(
            need(&failed_root, auth),
            Need::Fields(vec![(Field::Outcome, strs(&["failure"])), (Field::UserName, strs(&["root"]))])
        );
        let either = Predicate::Or(vec![eq(Field::UserName, "root"), eq(Field::UserName, "admin")]);
        assert_eq!(need(&either, auth), Need::field(Field::UserName, strs(&["root", "admin"])));
        let mixed = Predicate::Or(vec![eq(Field::UserName, "root"), eq(Field::Action, "x")]);
        assert_eq!(need(&mixed, auth), Need::ANY);
        let process_only = Predicate::And(vec![eq(Field::Class, "process"), eq(Field::ProcessName, "sh")]);
        assert_eq!(need(&process_only, auth), Need::Never);
        let split = Predicate::Or(vec![process_only.clone(), eq(Field::Action, "x")]);
        assert_eq!(need(&split, auth), Need::field(Field::Action, strs(&["x"])));
        assert_eq!(need(&split, EventClass::Process), Need::ANY);
        let not = Predicate::Not(Box::new(eq(Field::UserName, "root")));
        assert_eq!(need(&not, auth), Need::ANY);
        assert_eq!(need(&seen(Field::UserName), auth), Need::field(Field::UserName, Values::present()));
        let lowered = FieldRef { path: FieldPath::Known(Field::UserName), lower: true };
        let re = Arc::new(regex::Regex::new("^$").expect("regex"));
        assert_eq!(need(&Predicate::Regex(lowered, re), auth), Need::ANY, "lower() of a missing field is \"\"");
    }

    #[test]
    fn rules_are_filed_under_their_most_selective_field() {
        let failed = |user: &str| Predicate::And(vec![eq(Field::Outcome, "failure"), eq(Field::UserName, user)]);
        let (a, b, c) = (failed("svc1"), failed("svc2"), eq(Field::Outcome, "failure"));
        let listed = Predicate::InSet(
            FieldRef { path: FieldPath::Known(Field::SourcePort), lower: false },
            Arc::new(["22".to_owned()].into_iter().collect()),
        );
        let matched = seen(Field::ThreatIndicatorId);
        let acted = Predicate::And(vec![seen(Field::UserName), eq(Field::Action, "x")]);
        let rules = vec![
            (0, vec![Some(&a)]),
            (1, vec![Some(&b)]),
            (2, vec![Some(&c)]),
            (3, vec![None]),
            (4, vec![Some(&listed)]),
            (5, vec![Some(&matched)]),
            (6, vec![Some(&acted)]),
        ];
        let index = ClassIndex::build(EventClass::Authentication, rules);
        assert_eq!(index.all, vec![0, 1, 2, 3, 4, 5, 6]);
        assert_eq!(index.always, vec![3]);
        assert_eq!(
            (0..8).map(|r| index.keyed_on(r)).collect::<Vec<_>>(),
            vec![
                Some(Some(Field::UserName)),
                Some(Some(Field::UserName)),
                Some(Some(Field::Outcome)),
                Some(None),
                Some(Some(Field::SourcePort)),
                Some(Some(Field::ThreatIndicatorId)),
                Some(Some(Field::Action)),
                None
            ]
        );
        let mut event = SecurityEvent::new(EventClass::Authentication, chrono::Utc::now());
        let mut out = Vec::new();
        index.select(&event, &mut out);
        assert_eq!(out, vec![3], "outcome is unknown, and no user or port");
        event.outcome = crate::event::Outcome::Failure;
        event.user = Some(Box::new(crate::event::User { name: Some("svc2".into()), ..Default::default() }));
        event.source = Some(crate::event::Endpoint { port: Some(22), ..Default::default() });
        index.select(&event, &mut out);
        assert_eq!(out, vec![1, 2, 3, 4], "an integer is found by its text for a list");
        event.threat = Some(Box::new(crate::event::Threat { indicator_id: "x".into(), ..Default::default() }));
        index.select(&event, &mut out);
        assert_eq!(out, vec![1, 2, 3, 4, 5], "a field that only has to be there");
    }
}
