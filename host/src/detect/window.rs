//! Window state kept per (rule, group key).

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::event::EventId;

/// Sliding count window over event time: fires when `count` matches fall within `within`.
/// Holds at most `count` entries, sorted by time.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThresholdWindow {
    entries: VecDeque<(i64, EventId)>,
}

/// The matches that made a window fire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fired {
    /// Event time (ms) of the earliest match.
    pub first_ms: i64,
    /// Ids of the matches, oldest first.
    pub ids: Vec<EventId>,
}

impl ThresholdWindow {
    /// Adds a match at `time_ms`; returns the matches when `count` of them now lie within
    /// `within_ms` of each other, and empties the window.
    pub fn add(&mut self, time_ms: i64, id: EventId, count: usize, within_ms: i64) -> Option<Fired> {
        let at = self.entries.partition_point(|(t, _)| *t <= time_ms);
        self.entries.insert(at, (time_ms, id));
        let newest = self.entries.back().map_or(time_ms, |(t, _)| *t);
        while self.entries.front().is_some_and(|(t, _)| *t < newest.saturating_sub(within_ms)) {
            self.entries.pop_front();
        }
        while self.entries.len() > count {
            self.entries.pop_front();
        }
        if self.entries.len() < count {
            return None;
        }
        let first_ms = self.entries.front().map_or(time_ms, |(t, _)| *t);
        let ids = self.entries.drain(..).map(|(_, id)| id).collect();
        Some(Fired { first_ms, ids })
    }

    /// Event time (ms) of the newest match held.
    pub fn newest_ms(&self) -> Option<i64> {
        self.entries.back().map(|(t, _)| *t)
    }

    /// Whether the window holds no match.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_at_most_count_entries_and_fires_once_per_count() {
        let mut w = ThresholdWindow::default();
        let ids: Vec<EventId> = (0..5).map(|_| EventId::generate()).collect();
        assert_eq!(w.add(0, ids[0], 2, 100), None);
        let fired = w.add(50, ids[1], 2, 100).expect("fires");
        assert_eq!(fired, Fired { first_ms: 0, ids: vec![ids[0], ids[1]] });
        assert!(w.is_empty());
        assert_eq!(w.add(1000, ids[2], 2, 100), None);
        assert_eq!(w.add(1200, ids[3], 2, 100), None, "200ms apart is outside a 100ms window");
        assert_eq!(w.newest_ms(), Some(1200));
    }
}
