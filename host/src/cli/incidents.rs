//! `vigil incidents list|show`: reads the store read-only, so it works beside a running
//! server.

use std::process::ExitCode;

use anyhow::Context;

use super::IncidentsCommand;
use crate::config::VigilConfig;
use crate::event::IncidentId;
use crate::incident;
use crate::store::Store;

pub fn run(config: &VigilConfig, command: IncidentsCommand) -> anyhow::Result<ExitCode> {
    let store = Store::open_read_only(&config.store.path)
        .with_context(|| format!("opening the store in {} (has Vigil run here yet?)", config.store.path.display()))?;
    match command {
        IncidentsCommand::List { limit, json } => {
            let incidents = incident::list(&store, limit)?;
            if json {
                for i in &incidents {
                    println!("{}", serde_json::to_string(i)?);
                }
            } else {
                println!("{:<36}  {:<8}  {:<8}  {:<20}  {:>6}  TITLE", "ID", "SEVERITY", "STATUS", "OPENED", "EVENTS");
                for i in &incidents {
                    println!(
                        "{:<36}  {:<8}  {:<8}  {:<20}  {:>6}  {}",
                        i.id,
                        i.severity.as_str(),
                        serde_json::to_value(i.status)?.as_str().unwrap_or(""),
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
