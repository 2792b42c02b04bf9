//! `vigil incidents list|show|report`: reads the store read-only, so it works beside a running
//! server.

use std::process::ExitCode;

use anyhow::Context;

use super::IncidentsCommand;
use crate::config::VigilConfig;
use crate::event::IncidentId;
use crate::incident;
use crate::store::Store;

pub fn run(config: &VigilConfig, command: IncidentsCommand) -> anyhow::Result<ExitCode> {
    if let IncidentsCommand::Transition { id, status, note, url } = command {
        let url = url.unwrap_or_else(|| format!("http://{}", config.api.listen));
        return super::block_on(transition(url, id, status, note));
    }
    let store = Store::open_read_only(&config.store.path)
        .with_context(|| format!("opening the store in {} (has Vigil run here yet?)", config.store.path.display()))?;
    match command {
        IncidentsCommand::List { limit, json } => {
            let incidents = incident::list(&store, limit, None)?;
            if json {
                for i in &incidents {
                    println!("{}", serde_json::to_string(i)?);
                }
            } else {
                println!("{:<36}  {:<3}  {:<13}  {:<20}  {:>6}  TITLE", "ID", "PRI", "STATUS", "OPENED", "EVENTS");
                for i in &incidents {
                    println!(
                        "{:<36}  {:<3}  {:<13}  {:<20}  {:>6}  {}",
                        i.id,
                        i.priority.as_str(),
                        i.status.as_str(),
                        i.opened_at.format("%Y-%m-%d %H:%M:%S"),
                        i.event_count,
                        i.title
                    );
                }
                if incidents.is_empty() {
                    println!("(no incidents)");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        IncidentsCommand::Transition { .. } => unreachable!("handled above"),
        IncidentsCommand::Report { id } => {
            let id: IncidentId = id.parse().context("incident ids are UUIDs")?;
            let log = crate::store::Log::read_only(&store)?;
            match crate::playbook::report::markdown(&store, &log, id)? {
                Some(text) => {
                    print!("{text}");
                    Ok(ExitCode::SUCCESS)
                }
                None => {
                    eprintln!("no incident {id}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        IncidentsCommand::Show { id } => {
            let id: IncidentId = id.parse().context("incident ids are UUIDs")?;
            match incident::get(&store, id)? {
                Some(i) => {
                    println!("{}", serde_json::to_string_pretty(&i)?);
                    Ok(ExitCode::SUCCESS)
                }
                None => {
                    eprintln!("no incident {id}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
    }
}

async fn transition(url: String, id: String, status: String, note: Option<String>) -> anyhow::Result<ExitCode> {
    let endpoint = format!("{}/v1/incidents/{id}/transition", url.trim_end_matches('/'));
    let (status_code, body) =
        super::sinks::call(reqwest::Method::POST, endpoint, Some(serde_json::json!({ "to": status, "note": note })))
            .await?;
    if status_code.is_success() {
        println!("{} is now {}", body["id"].as_str().unwrap_or("?"), body["status"].as_str().unwrap_or("?"));
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("{status_code}: {}", body["error"]["message"].as_str().unwrap_or("refused"));
        Ok(ExitCode::FAILURE)
    }
}
