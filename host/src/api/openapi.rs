//! The OpenAPI 3.1 document, generated from the code: the paths and their roles from the
//! route table, the request and response schemas from the same Rust types the handlers use
//! (through `schemars`, which also generates the event schema), and one error shape.
//! Served at `GET /v1/openapi.json`.
//!
//! `schemars` rather than `utoipa`: the event model already derives `JsonSchema`, and one
//! schema derive per type is one source of truth; JSON Schema 2020-12 is what OpenAPI 3.1
//! uses for schemas.

use schemars::generate::{Contract, SchemaSettings};
use schemars::{JsonSchema, SchemaGenerator};
use serde_json::{Map, Value, json};

use super::RouteSpec;
use crate::actions::ActionSpec;
use crate::actions::audit::AuditRecord;
use crate::actions::block::BlockEntry;
use crate::actions::controls::Control;
use crate::export::DlqFilter;
use crate::incident::{Incident, TimelineEntry};
use crate::playbook::Playbook;
use crate::playbook::runner::{Plan, Run};
use crate::source::batch::BatchReport;

/// What one operation takes and gives.
struct Op {
    summary: &'static str,
    query: Option<Value>,
    body: Option<Value>,
    ok: (u16, &'static str, Value),
    /// A second content type of the success answer.
    alternative: Option<(&'static str, Value)>,
    /// Other answers with a JSON body that is not the error shape.
    also: Vec<(u16, Value)>,
}

struct Schemas {
    responses: SchemaGenerator,
    requests: SchemaGenerator,
}

impl Schemas {
    fn new() -> Self {
        let settings = |contract| {
            let mut s = SchemaSettings::draft2020_12();
            s.definitions_path = "/components/schemas".into();
            s.meta_schema = None;
            s.contract = contract;
            s
        };
        Self {
            responses: settings(Contract::Serialize).into_generator(),
            requests: settings(Contract::Deserialize).into_generator(),
        }
    }

    fn out<T: JsonSchema>(&mut self) -> Value {
        self.responses.subschema_for::<T>().to_value()
    }

    fn input<T: JsonSchema>(&mut self) -> Value {
        self.requests.subschema_for::<T>().to_value()
    }

    /// Query parameters from a type's object schema.
    fn query<T: JsonSchema>(&mut self) -> Value {
        let schema = self.requests.root_schema_for::<T>().to_value();
        let required: Vec<&str> =
            schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        let params: Vec<Value> = schema["properties"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(name, s)| {
                json!({ "name": name, "in": "query", "required": required.contains(&name.as_str()), "schema": s,
                        "description": s.get("description").cloned().unwrap_or(Value::Null) })
            })
            .map(|mut p| {
                if p["description"].is_null() {
                    p.as_object_mut().map(|o| o.remove("description"));
                }
                p
            })
            .collect();
        Value::Array(params)
    }
}

fn list_of(key: &str, item: Value) -> Value {
    json!({ "type": "object", "required": [key], "properties": { key: { "type": "array", "items": item } } })
}

fn text() -> Value {
    json!({ "type": "string" })
}

fn object() -> Value {
    json!({ "type": "object" })
}

fn operation(route: &RouteSpec, s: &mut Schemas) -> Op {
    let op = |summary, query, body, ok| Op { summary, query, body, ok, alternative: None, also: Vec::new() };
    let json = "application/json";
    match (route.method, route.path) {
        ("POST", "/v1/events") => {
            let event = s.input::<crate::event::SecurityEvent>();
            let report = s.out::<BatchReport>();
            let mut events = op(
                "Ingest events in an input format (`?format=`, default `vigil`: a JSON array of SecurityEvents, or NDJSON, one per line; ECS, OCSF, Windows EVTX/XML/JSON, cloud audit logs, auditd, Zeek, Suricata, Falco, CEF, LEEF, syslog; gzip allowed). 202 when all are stored, 207 when some are, 400 when none (with the report, or the error shape for a body that is not a batch at all).",
                Some(s.query::<super::EventsQuery>()),
                Some(json!({ "type": "array", "items": event })),
                (202, json, report.clone()),
            );
            events.also = vec![
                (207, report.clone()),
                (400, json!({ "anyOf": [report, { "$ref": "#/components/schemas/Error" }] })),
            ];
            events
        }
        ("POST", "/v1/webhooks/{source}") => {
            let report = s.out::<BatchReport>();
            let mut hook = op(
                "A tool's payload (Falco, Alertmanager, GitHub secret scanning), verified by HMAC.",
                None,
                Some(object()),
                (202, json, report.clone()),
            );
            hook.also = vec![(422, json!({ "anyOf": [report, { "$ref": "#/components/schemas/Error" }] }))];
            hook
        }
        ("GET", "/v1/incidents") => {
            let incident = s.out::<Incident>();
            let mut page = list_of("incidents", incident);
            page["properties"]["next"] = json!({ "type": ["string", "null"], "format": "uuid" });
            op(
                "Incidents, newest first, filtered and paged.",
                Some(s.query::<super::ListQuery>()),
                None,
                (200, json, page),
            )
        }
        ("GET", "/v1/incidents/{id}") => {
            op("One incident with its timeline.", None, None, (200, json, s.out::<Incident>()))
        }
        ("GET", "/v1/incidents/{id}/timeline") => {
            let entry = s.out::<TimelineEntry>();
            op("An incident's timeline.", None, None, (200, json, list_of("timeline", entry)))
        }
        ("POST", "/v1/incidents/{id}/transition") => op(
            "Move an incident through its lifecycle.",
            None,
            Some(s.input::<super::TransitionBody>()),
            (200, json, s.out::<Incident>()),
        ),
        ("POST", "/v1/incidents/{id}/acknowledge") => {
            op("Acknowledge an incident.", None, Some(s.input::<super::NoteBody>()), (200, json, s.out::<Incident>()))
        }
        ("POST", "/v1/incidents/{id}/assign") => op(
            "Assign (or unassign) an incident.",
            None,
            Some(s.input::<super::AssignBody>()),
            (200, json, s.out::<Incident>()),
        ),
        ("POST", "/v1/incidents/{id}/comment") => {
            op("Comment on an incident.", None, Some(s.input::<super::CommentBody>()), (200, json, s.out::<Incident>()))
        }
        ("POST", "/v1/incidents/{id}/runs") => op(
            "Start a playbook on an incident (or record a dry-run plan).",
            None,
            Some(s.input::<super::response::StartBody>()),
            (201, json, s.out::<Run>()),
        ),
        ("GET", "/v1/incidents/{id}/plan") => op(
            "What a playbook would do for an incident; nothing runs.",
            Some(s.query::<super::response::PlanQuery>()),
            None,
            (200, json, s.out::<Plan>()),
        ),
        ("GET", "/v1/incidents/{id}/report") => {
            op("The post-incident report.", None, None, (200, "text/markdown", text()))
        }
        ("GET", "/v1/rules") => op("The running rules.", None, None, (200, json, list_of("rules", object()))),
        ("GET", "/v1/rules/{id}") => op("One running rule.", None, None, (200, json, object())),
        ("POST", "/v1/rules/check") => op(
            "Compile the rule directory as it is on disk, without swapping it in.",
            None,
            None,
            (
                200,
                json,
                json!({ "type": "object", "required": ["ok", "rules", "errors"], "properties": {
                    "ok": { "type": "boolean" }, "rules": { "type": "integer" },
                    "errors": { "type": "array", "items": { "type": "string" } } } }),
            ),
        ),
        ("POST", "/v1/rules/test") => op(
            "Run the running rules' examples.",
            None,
            None,
            (
                200,
                json,
                json!({ "type": "object", "required": ["examples", "passed", "skipped", "failed"], "properties": {
                    "examples": { "type": "integer" }, "passed": { "type": "integer" }, "skipped": { "type": "integer" },
                    "failed": { "type": "array", "items": { "type": "object" } } } }),
            ),
        ),
        ("POST", "/v1/rules/backtest") => op(
            "Start a backtest of the running rules over stored events (nothing is written).",
            None,
            Some(s.input::<super::backtest::BacktestBody>()),
            (202, json, s.out::<super::backtest::Job>()),
        ),
        ("GET", "/v1/rules/backtest/{id}") => op(
            "A backtest job: progress, then alerts and incidents per rule.",
            None,
            None,
            (200, json, s.out::<super::backtest::Job>()),
        ),
        ("POST", "/v1/hunts") => op(
            "Run a hunt over the stored events: a time range, a filter (or a rule's condition), fields or a group-by with aggregates. A projection cut short by its limit answers `next`: send it back as `after` for the next page.",
            None,
            Some(s.input::<crate::hunt::HuntSpec>()),
            (200, json, s.out::<super::hunt::HuntResult>()),
        ),
        ("GET", "/v1/intel") => op(
            "Threat intel: what the matcher holds, and each feed's position and last result.",
            None,
            None,
            (200, json, s.out::<super::hunt::IntelStatus>()),
        ),
        ("GET", "/v1/intel/lookup") => op(
            "The threat-intel indicator a value (address, domain, URL, email, hash) matches now; 404 when none does.",
            Some(s.query::<super::hunt::LookupQuery>()),
            None,
            (200, json, json!({ "type": "object" })),
        ),
        ("POST", "/v1/intel/feeds/{name}/poll") => op(
            "Poll a threat-intel feed now; 502 when the feed fails.",
            None,
            None,
            (200, json, s.out::<crate::intel::ImportReport>()),
        ),
        ("GET", "/v1/plugins") => {
            let info = s.out::<crate::plugins::PluginInfo>();
            op("The loaded WebAssembly plugins.", None, None, (200, json, list_of("plugins", info)))
        }
        ("POST", "/v1/plugins/sync") => {
            let mut body = list_of("plugins", s.out::<crate::plugins::PluginInfo>());
            body["required"] = json!(["plugins", "failed"]);
            body["properties"]["failed"] = json!({ "type": "array", "items": text() });
            op(
                "Load new and changed plugins of the plugins directory; unload removed ones.",
                None,
                None,
                (200, json, body),
            )
        }
        ("GET", "/v1/plugins/{name}") => op(
            "One loaded plugin: manifest, grants, imports, exports, digest, signature.",
            None,
            None,
            (200, json, s.out::<crate::plugins::PluginInfo>()),
        ),
        ("POST", "/v1/plugins/{name}/reload") => op(
            "Load (or replace) the plugin of the plugins directory; 422 leaves the previous version running.",
            None,
            None,
            (200, json, s.out::<crate::plugins::PluginInfo>()),
        ),
        ("DELETE", "/v1/plugins/{name}") => op(
            "Unload a plugin (calls in flight finish).",
            None,
            None,
            (200, json, json!({ "type": "object", "required": ["unloaded"], "properties": { "unloaded": text() } })),
        ),
        ("POST", "/v1/rules/reload") => op(
            "Compile the rule directory again and swap it in.",
            None,
            None,
            (200, json, json!({ "type": "object", "properties": { "rules": { "type": "integer" } } })),
        ),
        ("GET", "/v1/sinks") => op("Every sink's status.", None, None, (200, json, list_of("sinks", object()))),
        ("GET", "/v1/dlq") => op(
            "Dead letters matching the query.",
            Some(s.query::<super::sinks::DlqQuery>()),
            None,
            (200, json, list_of("dead_letters", object())),
        ),
        ("GET", "/v1/dlq/{sink}/{seq}") => op("One dead letter.", None, None, (200, json, object())),
        ("POST", "/v1/dlq/replay") => op(
            "Send matching dead letters again.",
            None,
            Some(s.input::<DlqFilter>()),
            (200, json, json!({ "type": "object", "properties": { "replayed": { "type": "integer" } } })),
        ),
        ("POST", "/v1/dlq/purge") => op(
            "Delete matching dead letters.",
            None,
            Some(s.input::<DlqFilter>()),
            (200, json, json!({ "type": "object", "properties": { "purged": { "type": "integer" } } })),
        ),
        ("GET", "/v1/blocklist") => {
            let entry = s.out::<BlockEntry>();
            let mut blocklist = op(
                "Blocked addresses: one per line, or JSON with `?format=json` or `Accept: application/json`.",
                Some(s.query::<super::response::FormatQuery>()),
                None,
                (200, "text/plain", text()),
            );
            blocklist.alternative = Some(("application/json", list_of("blocked", entry)));
            blocklist
        }
        ("GET", "/v1/controls") => {
            let control = s.out::<Control>();
            let mut body = list_of("controls", control);
            body["properties"]["read_only"] = json!({ "type": "array", "items": { "type": "string" } });
            op("Controls in force.", None, None, (200, json, body))
        }
        ("GET", "/v1/actions") => {
            let spec = s.out::<ActionSpec>();
            op("Every action's declaration.", None, None, (200, json, list_of("actions", spec)))
        }
        ("GET", "/v1/playbooks") => {
            let playbook = s.out::<Playbook>();
            op("The loaded playbooks.", None, None, (200, json, list_of("playbooks", playbook)))
        }
        ("GET", "/v1/runs") => {
            let run = s.out::<Run>();
            op(
                "Playbook runs, oldest first.",
                Some(s.query::<super::response::RunsQuery>()),
                None,
                (200, json, list_of("runs", run)),
            )
        }
        ("GET", "/v1/runs/{id}") => op("One run.", None, None, (200, json, s.out::<Run>())),
        ("POST", "/v1/runs/{id}/cancel") => op(
            "Cancel a run that has not ended.",
            None,
            Some(s.input::<super::response::CancelBody>()),
            (200, json, s.out::<Run>()),
        ),
        ("POST", "/v1/runs/{id}/steps/{step}/{decision}") => op(
            "Approve, deny or complete a waiting step.",
            None,
            Some(s.input::<super::response::DecisionBody>()),
            (200, json, s.out::<Run>()),
        ),
        ("GET", "/v1/audit") => {
            let _ = s.out::<AuditRecord>();
            op("The audit trail as JSON lines (AuditRecord).", None, None, (200, "application/x-ndjson", text()))
        }
        ("GET", "/v1/audit/verify") => op(
            "Recompute the audit hash chain.",
            None,
            None,
            (
                200,
                json,
                json!({ "type": "object", "properties": { "ok": { "type": "boolean" }, "records": { "type": "integer" },
                        "problems": { "type": "array", "items": { "type": "string" } } } }),
            ),
        ),
        ("GET", "/metrics") => op("OpenMetrics.", None, None, (200, "application/openmetrics-text", text())),
        ("GET", "/healthz") => op("Alive.", None, None, (200, "text/plain", text())),
        ("GET", "/readyz") => op("Ready (the pipeline runs).", None, None, (200, "text/plain", text())),
        ("GET", "/v1/openapi.json") => op("This document.", None, None, (200, json, object())),
        _ => op("", None, None, (200, json, object())),
    }
}

/// Whether the table documents `route` (a test checks every route is).
pub fn documented(route: &RouteSpec) -> bool {
    !operation(route, &mut Schemas::new()).summary.is_empty()
}

fn path_parameters(path: &str) -> Vec<Value> {
    path.split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|name| {
            let schema = match name {
                "id" => json!({ "type": "string", "format": "uuid" }),
                "seq" => json!({ "type": "integer", "minimum": 1 }),
                "decision" => json!({ "type": "string", "enum": ["approve", "deny", "complete"] }),
                _ => json!({ "type": "string" }),
            };
            json!({ "name": name, "in": "path", "required": true, "schema": schema })
        })
        .collect()
}

/// The document.
pub fn document(routes: &[RouteSpec]) -> Value {
    let mut schemas = Schemas::new();
    let mut paths = Map::new();
    for route in routes {
        let op = operation(route, &mut schemas);
        let mut params = path_parameters(route.path);
        if let Some(Value::Array(query)) = op.query {
            params.extend(query);
        }
        let (status, content_type, schema) = op.ok;
        let mut operation = json!({
            "summary": op.summary,
            "operationId": format!("{} {}", route.method.to_lowercase(), route.path),
            "responses": {
                status.to_string(): { "description": "success", "content": { content_type: { "schema": schema } } },
                "default": { "description": "an error", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } },
            },
        });
        for (code, schema) in op.also {
            operation["responses"][code.to_string()] =
                json!({ "description": "see the summary", "content": { "application/json": { "schema": schema } } });
        }
        if let Some((media, schema)) = op.alternative {
            operation["responses"][status.to_string()]["content"][media] = json!({ "schema": schema });
        }
        if !params.is_empty() {
            operation["parameters"] = Value::Array(params);
        }
        if let Some(body) = op.body {
            let required = route.path != "/v1/incidents/{id}/acknowledge";
            operation["requestBody"] =
                json!({ "required": required, "content": { "application/json": { "schema": body } } });
        }
        match route.role {
            Some(role) => {
                operation["security"] = json!([{ "bearer": [] }]);
                operation["x-vigil-role"] = json!(role.as_str());
                operation["description"] = json!(format!("Needs a token with the {} role or above.", role.as_str()));
            }
            None => operation["security"] = json!([]),
        }
        let entry = paths.entry(route.path.to_owned()).or_insert_with(|| json!({}));
        entry[route.method.to_lowercase()] = operation;
    }
    let mut components = schemas.responses.take_definitions(true);
    for (name, schema) in schemas.requests.take_definitions(true) {
        components.entry(name).or_insert(schema);
    }
    components.insert(
        "Error".into(),
        json!({ "type": "object", "required": ["error"], "properties": { "error": {
            "type": "object", "required": ["code", "message"],
            "properties": { "code": { "type": "string" }, "message": { "type": "string" },
                            "request_id": { "type": ["string", "null"] }, "errors": { "type": "array", "items": { "type": "string" } } } } } }),
    );
    json!({
        "openapi": "3.1.0",
        "info": { "title": "Vigil", "version": env!("CARGO_PKG_VERSION"),
                  "description": "The Vigil security response engine's API. Tokens: `vigil token create --role ROLE --name NAME`." },
        "servers": [{ "url": "/" }],
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
        },
    })
}
