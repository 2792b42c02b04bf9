//! Settings of the `elasticsearch` sink.

use std::time::Duration;

use chrono::format::{Item as Strftime, StrftimeItems};
use serde::{Deserialize, Serialize};

use crate::export::http::{Compression, HttpAuth, HttpClientConfig, validate_url};

/// Index template and lifecycle installed before the first write (`template = { ... }`).
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TemplateConfig {
    /// Install (or update) an index template for the sink's indices.
    pub install: bool,
    /// The template's name.
    pub name: String,
    /// With a value, an ILM policy of the same name deleting indices this old is installed
    /// and attached (Elasticsearch only; OpenSearch uses ISM instead).
    #[serde(with = "humantime_serde")]
    #[schemars(with = "Option<String>")]
    pub delete_after: Option<Duration>,
}

impl Default for TemplateConfig {
    fn default() -> Self {
        Self { install: false, name: "vigil".into(), delete_after: None }
    }
}

/// Settings of an `elasticsearch` sink (Elasticsearch or OpenSearch).
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ElasticsearchConfig {
    /// Base URL of the cluster, e.g. `https://es.example:9200`.
    pub endpoint: String,
    /// Index of each record: `{kind}` becomes `event`, `alert` or `incident`; `%Y`, `%m`,
    /// `%d` (any strftime field) come from the record's time, in UTC.
    #[serde(default = "default_index")]
    pub index: String,
    /// Credentials: `basic`, `api_key`, `bearer` or `header`.
    #[serde(default)]
    pub auth: Option<HttpAuth>,
    /// Body compression.
    #[serde(default)]
    pub compression: Compression,
    /// Index template and lifecycle.
    #[serde(default)]
    pub template: TemplateConfig,
    /// Connection settings.
    #[serde(default)]
    pub http: HttpClientConfig,
}

fn default_index() -> String {
    "vigil-{kind}-%Y.%m.%d".into()
}

impl ElasticsearchConfig {
    /// Every problem with the settings, with its path under `prefix`.
    pub fn validate(&self, prefix: &str) -> Vec<(String, String)> {
        let mut errors: Vec<_> = validate_url(&self.endpoint, format!("{prefix}.endpoint")).into_iter().collect();
        match self.render("event", chrono::DateTime::UNIX_EPOCH) {
            None => errors.push((format!("{prefix}.index"), format!("`{}` has an invalid % field", self.index))),
            Some(sample) => {
                if sample.is_empty()
                    || sample.to_lowercase() != sample
                    || sample.starts_with(['-', '_', '+'])
                    || sample.contains([' ', '"', '*', '\\', '<', '>', '|', ',', '/', '?', '#', ':'])
                {
                    errors.push((
                        format!("{prefix}.index"),
                        format!("`{sample}` is not a valid index name: lowercase, none of space \" * \\ < > | , / ? # :, not starting with - _ +"),
                    ));
                }
            }
        }
        if let Some(auth) = &self.auth {
            errors.extend(auth.validate(prefix));
        }
        if self.template.install && self.template.name.is_empty() {
            errors.push((format!("{prefix}.template.name"), "must not be empty".into()));
        }
        errors
    }

    /// The index for a record of `kind` at `time`; `None` if the pattern is invalid.
    pub fn render(&self, kind: &str, time: chrono::DateTime<chrono::Utc>) -> Option<String> {
        use std::fmt::Write;
        let with_kind = self.index.replace("{kind}", kind);
        let items: Vec<Strftime<'_>> = StrftimeItems::new(&with_kind).collect();
        if items.iter().any(|i| matches!(i, Strftime::Error)) {
            return None;
        }
        let mut out = String::with_capacity(with_kind.len() + 8);
        write!(out, "{}", time.format_with_items(items.iter())).ok()?;
        Some(out)
    }

    /// The index pattern the template covers: the index up to its first variable part.
    pub fn index_pattern(&self) -> String {
        let fixed = self.index.split(['{', '%']).next().unwrap_or_default();
        format!("{fixed}*")
    }
}
