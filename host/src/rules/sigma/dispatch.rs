//! Which Sigma detection rules an event must be evaluated by ([`Dispatch`]).

use std::sync::Arc;

use serde_json::Value;

use super::detection::Node;
use super::value::Lookup;
use super::{CompiledRule, pipeline};
use crate::event::FieldPath;
use crate::rules::predicate::Predicate;

/// Finds the Sigma detection rules an event must be evaluated by: their logsource's
/// `when` is checked once per logsource, not once per rule; logsources that pin the
/// Windows channel are only checked for events of that channel; and within a logsource,
/// a rule that needs a field to contain one of some substrings (almost every rule: an
/// `Image|endswith`, a `CommandLine|contains` list) is only evaluated when one pass of
/// an Aho-Corasick automaton over that field found one of them.
#[derive(Debug, Default)]
pub struct Dispatch {
    groups: Vec<Group>,
    /// Logsources by the (lowercased) channel their `when` requires.
    by_channel: rustc_hash::FxHashMap<Vec<u8>, Vec<usize>>,
    /// Logsources that do not pin a channel.
    always: Vec<usize>,
    channel: Option<FieldPath>,
}

thread_local! {
    /// Which keyed rules of a group the current event hit (reused across events).
    static HITS: std::cell::RefCell<Vec<bool>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The rules of one logsource.
/// Per pattern of a field's automaton, the slots it stands for.
type Slots = Vec<Vec<u32>>;

/// A field's patterns while a group is built: the field, its patterns, their slots.
type Gathering = (Arc<[FieldPath]>, Vec<Vec<u8>>, Slots);

/// A rule of a group: its index, and its detection when it has one to prefilter on.
type Member<'a> = (usize, Option<&'a Node>);

#[derive(Debug)]
struct Group {
    entry: Arc<pipeline::Entry>,
    /// Rules without a substring they need: evaluated whenever the logsource matches.
    unkeyed: Vec<usize>,
    /// Per field: its automaton, and the slots (of `keyed`) each pattern stands for.
    fields: Vec<(Arc<[FieldPath]>, aho_corasick::AhoCorasick, Slots)>,
    /// Slot → rule index.
    keyed: Vec<usize>,
}

impl Group {
    fn build(entry: Arc<pipeline::Entry>, members: &[Member<'_>]) -> Group {
        let mut unkeyed = Vec::new();
        let mut keyed = Vec::new();
        let mut fields: Vec<Gathering> = Vec::new();
        for (index, node) in members {
            let Some(requirement) = node.and_then(Node::requirement) else {
                unkeyed.push(*index);
                continue;
            };
            let slot = keyed.len() as u32;
            keyed.push(*index);
            for (paths, literal) in requirement {
                let field = match fields.iter().position(|(p, ..)| *p == paths) {
                    Some(f) => f,
                    None => {
                        fields.push((paths, Vec::new(), Vec::new()));
                        fields.len() - 1
                    }
                };
                let (_, patterns, slots) = &mut fields[field];
                let pattern = match patterns.iter().position(|p| *p == literal) {
                    Some(p) => p,
                    None => {
                        patterns.push(literal);
                        slots.push(Vec::new());
                        patterns.len() - 1
                    }
                };
                if slots[pattern].last() != Some(&slot) {
                    slots[pattern].push(slot);
                }
            }
        }
        let mut built = Vec::new();
        for (paths, patterns, slots) in fields {
            match aho_corasick::AhoCorasick::builder().ascii_case_insensitive(true).build(&patterns) {
                Ok(ac) => built.push((paths, ac, slots)),
                // Too large an automaton: its rules are evaluated every time instead.
                Err(_) => slots.iter().flatten().for_each(|s| unkeyed.push(keyed[*s as usize])),
            }
        }
        Group { entry, unkeyed, fields: built, keyed }
    }

    fn select(&self, event: &Lookup<'_>, out: &mut Vec<usize>) {
        out.extend_from_slice(&self.unkeyed);
        if self.keyed.is_empty() {
            return;
        }
        HITS.with_borrow_mut(|hit| self.select_keyed(event, hit, out));
    }

    /// The keyed rules one of whose substrings the event shows; `hit` is scratch space.
    fn select_keyed(&self, event: &Lookup<'_>, hit: &mut Vec<bool>, out: &mut Vec<usize>) {
        hit.clear();
        hit.resize(self.keyed.len(), false);
        for (paths, ac, slots) in &self.fields {
            let Some(value) = event.get(paths) else { continue };
            if let crate::event::FieldValue::Json(Value::Array(_) | Value::Object(_)) = value {
                slots.iter().flatten().for_each(|s| hit[*s as usize] = true);
                continue;
            }
            let text = value.to_text();
            for m in ac.find_overlapping_iter(text.as_bytes()) {
                for s in &slots[m.pattern().as_usize()] {
                    hit[*s as usize] = true;
                }
            }
        }
        out.extend(hit.iter().zip(&self.keyed).filter(|(h, _)| **h).map(|(_, index)| *index));
    }
}

impl Dispatch {
    /// The dispatch of the runnable detection rules among `rules`.
    pub fn build(rules: &[Arc<CompiledRule>]) -> Dispatch {
        let mut d = Dispatch { channel: FieldPath::parse("attributes.windows.Channel").ok(), ..Dispatch::default() };
        let mut members: Vec<(Arc<pipeline::Entry>, Vec<Member<'_>>)> = Vec::new();
        for (index, rule) in rules.iter().enumerate() {
            let Some(entry) = rule.sigma.as_ref().and_then(|s| s.logsource_entry.as_ref()) else { continue };
            if !rule.runs() {
                continue;
            }
            let node = match rule.matchers.first().and_then(|m| m.predicate.as_ref()) {
                Some(Predicate::Sigma(node)) => Some(node.as_ref()),
                _ => None,
            };
            match members.iter_mut().find(|(e, _)| Arc::ptr_eq(e, entry)) {
                Some((_, list)) => list.push((index, node)),
                None => members.push((entry.clone(), vec![(index, node)])),
            }
        }
        for (group, (entry, list)) in members.into_iter().enumerate() {
            match d.channel.as_ref().and_then(|c| entry.when.required(c)) {
                Some(channels) => {
                    for channel in channels {
                        d.by_channel.entry(channel).or_default().push(group);
                    }
                }
                None => d.always.push(group),
            }
            d.groups.push(Group::build(entry, &list));
        }
        d
    }

    /// Whether `rule` is found here (so the class index must not file it).
    pub fn handles(rule: &CompiledRule) -> bool {
        rule.sigma.as_ref().is_some_and(|s| s.logsource_entry.is_some())
    }

    /// Whether `event` is in the logsource of `rule` (for a rule evaluated alone).
    pub fn in_logsource(rule: &CompiledRule, event: &crate::event::SecurityEvent) -> bool {
        rule.sigma.as_ref().and_then(|s| s.logsource_entry.as_ref()).is_none_or(|e| e.when.eval(&Lookup::new(event)))
    }

    /// Appends the rules `event` must be evaluated by; returns whether `out` needs sorting.
    pub fn select(&self, event: &Lookup<'_>, out: &mut Vec<usize>) -> bool {
        if self.groups.is_empty() {
            return false;
        }
        let before = out.len();
        let visit = |group: usize, out: &mut Vec<usize>| {
            let g = &self.groups[group];
            if g.entry.when.eval(event) {
                g.select(event, out);
            }
        };
        if let Some(channel) = self.channel.as_ref().and_then(|c| c.get(event.event)) {
            let text = channel.to_text();
            // Channel names are short: lowercase them on the stack (a longer one is no key).
            let mut buf = [0u8; 128];
            if let Some(lowered) = buf.get_mut(..text.len()) {
                lowered.copy_from_slice(text.as_bytes());
                lowered.make_ascii_lowercase();
                for &group in self.by_channel.get(&*lowered).map(Vec::as_slice).unwrap_or_default() {
                    visit(group, out);
                }
            }
        }
        for &group in &self.always {
            visit(group, out);
        }
        out.len() > before
    }
}
