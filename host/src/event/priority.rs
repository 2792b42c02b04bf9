//! Incident priority P0 (drop everything) to P4 (when convenient), and how rule severities
//! written as `info`…`critical` map onto it.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::model::Severity;

/// Priority of an alert or incident; `P0` is the most urgent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Priority {
    /// Critical and widespread: respond now (15 minutes).
    P0,
    /// Critical: respond within an hour.
    P1,
    /// High: within four hours.
    P2,
    /// Medium: within a day.
    P3,
    /// Low or informational.
    P4,
}

impl Priority {
    /// Every priority, most urgent first.
    pub const ALL: [Priority; 5] = [Self::P0, Self::P1, Self::P2, Self::P3, Self::P4];

    /// `P0`…`P4`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::P0 => "P0",
            Self::P1 => "P1",
            Self::P2 => "P2",
            Self::P3 => "P3",
            Self::P4 => "P4",
        }
    }

    /// Parses `P0`…`P4` (any case) or a severity word: `critical` → P1, `high` → P2,
    /// `medium` → P3, `low` and `info` → P4.
    pub fn parse(s: &str) -> Option<Self> {
        let upper = s.to_ascii_uppercase();
        if let Some(p) = Self::ALL.into_iter().find(|p| p.as_str() == upper) {
            return Some(p);
        }
        Severity::parse(&s.to_ascii_lowercase()).map(Self::from)
    }

    /// One step more urgent (P0 stays P0).
    pub fn escalate(self) -> Self {
        match self {
            Self::P0 | Self::P1 => Self::P0,
            Self::P2 => Self::P1,
            Self::P3 => Self::P2,
            Self::P4 => Self::P3,
        }
    }

    /// The more urgent of two priorities.
    pub fn most_urgent(self, other: Self) -> Self {
        self.min(other)
    }

    /// The matching event severity.
    pub fn severity(self) -> Severity {
        match self {
            Self::P0 | Self::P1 => Severity::Critical,
            Self::P2 => Severity::High,
            Self::P3 => Severity::Medium,
            Self::P4 => Severity::Low,
        }
    }
}

impl From<Severity> for Priority {
    fn from(s: Severity) -> Self {
        match s {
            Severity::Critical => Self::P1,
            Severity::High => Self::P2,
            Severity::Medium => Self::P3,
            Severity::Low | Severity::Info => Self::P4,
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl Serialize for Priority {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Priority {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Self::parse(&s).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown severity `{s}`; expected P0-P4 or info, low, medium, high, critical"
            ))
        })
    }
}

impl schemars::JsonSchema for Priority {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Priority".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "string", "enum": ["P0", "P1", "P2", "P3", "P4"] })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_priorities_and_severity_words() {
        assert_eq!(Priority::parse("p1"), Some(Priority::P1));
        assert_eq!(Priority::parse("critical"), Some(Priority::P1));
        assert_eq!(Priority::parse("High"), Some(Priority::P2));
        assert_eq!(Priority::parse("info"), Some(Priority::P4));
        assert_eq!(Priority::parse("urgent"), None);
        assert!(Priority::P0 < Priority::P4, "P0 sorts first: it is the most urgent");
        assert_eq!(Priority::P3.escalate(), Priority::P2);
        assert_eq!(Priority::P0.escalate(), Priority::P0);
        assert_eq!(Priority::P2.most_urgent(Priority::P1), Priority::P1);
    }
}
