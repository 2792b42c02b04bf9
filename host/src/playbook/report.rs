//! The post-incident report (`vigil incidents report ID`): a Markdown document with the
//! incident's summary, time to detect / contain / resolve, triggering events, the
//! playbook runs with each action and its outcome, and the full timeline.

use std::fmt::Write;

use chrono::{DateTime, Utc};

use super::incident_view;
use super::runner::{Run, StepStatus};
use crate::actions::snapshot;
use crate::event::IncidentId;
use crate::incident::{self, Incident, IncidentStatus};
use crate::store::{self, Cf, Log, Store, Table};

/// Runs (of one incident, or all), oldest first.
pub fn runs_of(store: &Store, incident: Option<IncidentId>) -> store::Result<Vec<Run>> {
    let runs: Table<[u8; 16], Run> = Table::new(store, Cf::State, b"run/");
    Ok(runs
        .scan(None, usize::MAX)?
        .into_iter()
        .map(|(_, r)| r)
        .filter(|r| incident.is_none_or(|i| r.incident_id == i))
        .collect())
}

fn span(from: DateTime<Utc>, to: Option<DateTime<Utc>>) -> String {
    match to {
        Some(to) => {
            let secs = (to - from).num_seconds().max(0) as u64;
            humantime::format_duration(std::time::Duration::from_secs(secs)).to_string()
        }
        None => "—".into(),
    }
}

fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

/// The report of incident `id`; `None` when there is no such incident.
pub fn markdown(store: &Store, log: &Log, id: IncidentId) -> store::Result<Option<String>> {
    let Some(i) = incident::get(store, id)? else { return Ok(None) };
    let runs = runs_of(store, Some(id))?;
    let events = snapshot::gather(log, &incident_view(&i), chrono::Duration::zero(), 50, true)?;
    Ok(Some(render(&i, &runs, &events.into_iter().map(|(_, e)| e).collect::<Vec<_>>())))
}

fn contained_at(i: &Incident, runs: &[Run]) -> Option<DateTime<Utc>> {
    let by_action = runs.iter().filter_map(|r| r.first_action_at).min();
    let by_status = i
        .timeline
        .iter()
        .find(|e| e.kind == "status" && e.detail.contains(&format!("→ {}", IncidentStatus::Contained.as_str())))
        .map(|e| e.time);
    by_action.into_iter().chain(by_status).min()
}

fn render(i: &Incident, runs: &[Run], events: &[crate::event::SecurityEvent]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Incident report: {}\n", i.title);
    let _ = writeln!(out, "| | |\n|---|---|");
    for (k, v) in [
        ("Incident", i.id.to_string()),
        ("Rule", i.rule_id.to_string()),
        ("Priority", i.priority.to_string()),
        ("Category", i.category.map(|c| format!("{c:?}")).unwrap_or_else(|| "—".into())),
        ("Status", i.status.as_str().into()),
        ("Assignee", i.assignee.clone().unwrap_or_else(|| "—".into())),
        ("First event", i.first_seen.to_rfc3339()),
        ("Opened", i.opened_at.to_rfc3339()),
        ("Resolved", i.resolved_at.map_or("—".into(), |t| t.to_rfc3339())),
        ("Events", i.event_count.to_string()),
        ("ATT&CK", if i.techniques.is_empty() { "—".into() } else { i.techniques.join(", ") }),
    ] {
        let _ = writeln!(out, "| {k} | {} |", cell(&v));
    }
    let _ = writeln!(out, "\n## Response times\n");
    let _ =
        writeln!(out, "- Time to detect (first event → incident opened): {}", span(i.first_seen, Some(i.opened_at)));
    let _ =
        writeln!(out, "- Time to contain (opened → first containment): {}", span(i.opened_at, contained_at(i, runs)));
    let _ = writeln!(out, "- Time to resolve (opened → resolved): {}", span(i.opened_at, i.resolved_at));
    let e = &i.entities;
    let _ = writeln!(out, "\n## Entities\n");
    for (name, set) in [
        ("Source addresses", &e.source_ips),
        ("Addresses", &e.ips),
        ("Threat-intel addresses", &e.threat_ips),
        ("Users", &e.users),
        ("Hosts", &e.hosts),
    ] {
        if !set.is_empty() {
            let _ = writeln!(out, "- {name}: {}", set.iter().cloned().collect::<Vec<_>>().join(", "));
        }
    }
    let _ = writeln!(out, "\n## Triggering events\n");
    if events.is_empty() {
        let _ = writeln!(
            out,
            "Event ids: {}",
            i.event_ids.iter().take(20).map(ToString::to_string).collect::<Vec<_>>().join(", ")
        );
    } else {
        let _ = writeln!(
            out,
            "| time | class | action | outcome | source | user | message |\n|---|---|---|---|---|---|---|"
        );
        for ev in events.iter().take(50) {
            let _ = writeln!(
                out,
                "| {} | {:?} | {} | {} | {} | {} | {} |",
                ev.time.to_rfc3339(),
                ev.class,
                cell(ev.action.as_deref().unwrap_or("")),
                format!("{:?}", ev.outcome).to_lowercase(),
                ev.source.as_ref().and_then(|s| s.ip.map(|ip| ip.to_string())).unwrap_or_default(),
                cell(ev.user.as_ref().and_then(|u| u.name.as_deref()).unwrap_or("")),
                cell(&ev.message.as_deref().unwrap_or("").chars().take(120).collect::<String>()),
            );
        }
    }
    let _ = writeln!(out, "\n## Actions and outcomes\n");
    if runs.is_empty() {
        let _ = writeln!(out, "No playbook ran.");
    }
    for run in runs {
        let _ = writeln!(
            out,
            "### Playbook {} v{} — {}{}\n",
            run.playbook,
            run.version,
            format!("{:?}", run.status).to_lowercase(),
            if run.dry_run { " (dry run)" } else { "" }
        );
        let _ = writeln!(out, "Run {} started {} by {}.\n", run.id, run.created_at.to_rfc3339(), run.requested_by);
        let _ = writeln!(out, "| step | action | target | status | outcome |\n|---|---|---|---|---|");
        for s in &run.steps {
            let outcome = match (&s.outcome, &s.error, &s.approval) {
                (Some(o), _, _) => o.detail.clone(),
                (None, Some(e), _) => e.clone(),
                (None, None, Some(a)) => format!("{} by {}", a.decision, a.by),
                _ => String::new(),
            };
            let outcome = match &s.rollback {
                Some(r) => format!("{outcome}; {r}"),
                None => outcome,
            };
            let status = if s.status == StepStatus::RolledBack {
                "rolled back".to_owned()
            } else {
                format!("{:?}", s.status).to_lowercase()
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {status} | {} |",
                cell(&s.def.id),
                s.def.action.as_deref().unwrap_or(match s.def.kind {
                    super::StepKind::Manual => "manual",
                    super::StepKind::Approval => "approval",
                    super::StepKind::Automated => "",
                }),
                cell(s.target.as_deref().unwrap_or("")),
                cell(&outcome)
            );
        }
        let _ = writeln!(out);
    }
    let _ = writeln!(out, "## Timeline\n\n| time | kind | by | detail |\n|---|---|---|---|");
    for entry in &i.timeline {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            entry.time.to_rfc3339(),
            entry.kind,
            entry.actor.as_deref().unwrap_or(""),
            cell(&entry.detail)
        );
    }
    out
}
