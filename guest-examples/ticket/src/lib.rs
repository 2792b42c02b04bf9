//! An action that opens a ticket in a ticketing system over HTTP: `POST <url>` with the
//! incident's summary, authenticated with the `TICKET_TOKEN` secret; the ticket's id is
//! the outcome's target. `url` is the step's parameter, or else the plugin's `url`
//! setting. The manifest grants HTTP to the ticketing host only.

use serde_json::json;
use vigil_sdk::{Action, ActionContext, Error, Outcome, config, http, log, secrets};

struct Ticket;

impl Action for Ticket {
    fn execute(ctx: ActionContext) -> Result<Outcome, Error> {
        let url = match ctx.param_str("url") {
            Some(url) => url.to_owned(),
            None => config::string("url").ok_or_else(|| Error::InvalidInput("`url`: no parameter and no setting".into()))?,
        };
        let url = url.as_str();
        let (summary, incident) = match &ctx.incident {
            Some(i) => (format!("[{}] {}: {}", i.priority, i.title, i.dedup_key), Some(i.id.clone())),
            None => (ctx.param_str("summary").unwrap_or("Vigil incident").to_owned(), None),
        };
        if ctx.dry_run {
            return Ok(Outcome::new(url, format!("would open a ticket: {summary}")));
        }
        let token = secrets::get("TICKET_TOKEN").map_err(Error::Failed)?;
        let body = json!({ "summary": summary, "incident": incident, "idempotency_key": ctx.idempotency_key });
        let auth = format!("Bearer {token}");
        let response = http::send(
            "POST",
            url,
            &[("content-type", "application/json"), ("authorization", &auth)],
            Some(body.to_string().as_bytes()),
        )
        .map_err(|e| match e {
            http::HttpError::Denied(m) => Error::Failed(format!("denied: {m}")),
            other => Error::Retryable(other.to_string()),
        })?;
        if response.status >= 500 {
            return Err(Error::Retryable(format!("ticketing answered {}", response.status)));
        }
        if response.status >= 300 {
            return Err(Error::Failed(format!("ticketing answered {}", response.status)));
        }
        let created: serde_json::Value = serde_json::from_slice(&response.body)
            .map_err(|e| Error::Failed(format!("ticketing answered non-JSON: {e}")))?;
        let id = created["id"].as_str().map(str::to_owned).unwrap_or_else(|| created["id"].to_string());
        log::info(&format!("opened ticket {id}"));
        Ok(Outcome {
            target: Some(id.clone()),
            detail: format!("opened ticket {id}"),
            data: Some(json!({ "ticket": id })),
        })
    }
}

vigil_sdk::register_plugin!(action: Ticket);
