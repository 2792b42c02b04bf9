//! Window state kept per (rule, group key), and the algorithms that decide when a window
//! fires. Everything runs on event time: entries are kept sorted by their event's time,
//! whatever order they arrived in, so the verdict depends only on the events, not on
//! arrival timing (within the allowed lateness).

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::alert::{Entities, Seen};
use crate::event::EventId;
use crate::rules::Statistic;

/// Most entries one group keeps; older ones are dropped first (counted as evictions).
pub const MAX_ENTRIES: usize = 1024;

/// One matching event in a window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Event time, ms since the epoch.
    pub t: i64,
    /// The event.
    pub id: EventId,
    /// Which of the rule's matchers it matched (bit per matcher).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub bits: u32,
    /// The counted value, for distinct windows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// The event's entities, for the alert the match may end in.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seen: Vec<Seen>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The matches that made a window fire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fired {
    /// Event time (ms) of the earliest match.
    pub first_ms: i64,
    /// Event time (ms) of the latest match.
    pub last_ms: i64,
    /// Ids of the matches, oldest first.
    pub ids: Vec<EventId>,
    /// The entities of the matches (at most [`MAX_FIRED_ENTITIES`] of each kind).
    pub entities: Entities,
}

/// Most entities of each kind a fired window reports.
pub const MAX_FIRED_ENTITIES: usize = 100;

/// Time-sorted matches of one group.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    entries: VecDeque<Entry>,
}

impl Window {
    /// Inserts a match in event-time order (after equal times); returns its position and
    /// how many entries the size cap dropped.
    pub fn insert(&mut self, entry: Entry) -> (usize, usize) {
        let at = self.entries.partition_point(|e| e.t <= entry.t);
        self.entries.insert(at, entry);
        let mut dropped = 0;
        let mut at = at;
        while self.entries.len() > MAX_ENTRIES {
            self.entries.pop_front();
            dropped += 1;
            at = at.saturating_sub(1);
        }
        (at, dropped)
    }

    /// Drops entries older than `cutoff_ms`: they can no longer be part of a window.
    pub fn expire(&mut self, cutoff_ms: i64) {
        while self.entries.front().is_some_and(|e| e.t < cutoff_ms) {
            self.entries.pop_front();
        }
    }

    /// The position of the entry with `value`, if any.
    pub fn position_of_value(&self, value: &str) -> Option<usize> {
        self.entries.iter().position(|e| e.value.as_deref() == Some(value))
    }

    /// The entry at `position`.
    pub fn entry(&self, position: usize) -> &Entry {
        &self.entries[position]
    }

    /// Removes the entry at `position`.
    pub fn remove(&mut self, position: usize) {
        self.entries.remove(position);
    }

    /// Event time of the newest entry.
    pub fn newest_ms(&self) -> Option<i64> {
        self.entries.back().map(|e| e.t)
    }

    /// Whether the window holds nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries, oldest first.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter()
    }

    /// Removes the entries at `positions` (ascending) and returns what fired.
    fn take(&mut self, positions: &[usize]) -> Fired {
        let first_ms = self.entries[positions[0]].t;
        let last_ms = self.entries[positions[positions.len() - 1]].t;
        let ids = positions.iter().map(|&i| self.entries[i].id).collect();
        let mut entities = Entities::default();
        for &i in positions {
            for seen in &self.entries[i].seen {
                entities.add(seen, MAX_FIRED_ENTITIES);
            }
        }
        for &i in positions.iter().rev() {
            self.entries.remove(i);
        }
        Fired { first_ms, last_ms, ids, entities }
    }

    /// Threshold: `count` entries within `within_ms` of each other, among windows that
    /// contain the entry just inserted at `at`. The earliest such window fires.
    pub fn threshold(&mut self, at: usize, count: usize, within_ms: i64) -> Option<Fired> {
        let t = self.entries[at].t;
        let start = self.entries.partition_point(|e| e.t < t.saturating_sub(within_ms));
        for first in start..=at {
            let end_t = self.entries[first].t.saturating_add(within_ms);
            let last = first + count - 1;
            if last < self.entries.len() && last >= at && self.entries[last].t <= end_t {
                let positions: Vec<usize> = (first..=last).collect();
                return Some(self.take(&positions));
            }
        }
        None
    }

    /// The first index whose entry is at or after `t`.
    fn first_at(&self, t: i64) -> usize {
        self.entries.partition_point(|e| e.t < t)
    }

    /// Distinct: `count` different values within `within_ms`, among windows that contain
    /// the entry at `at`. One sweep with two pointers over the windows that start within
    /// `within_ms` before it; the first entry of each value is the one reported.
    pub fn distinct(&mut self, at: usize, count: usize, within_ms: i64) -> Option<Fired> {
        let t = self.entries[at].t;
        let mut seen: rustc_hash::FxHashMap<&str, usize> = rustc_hash::FxHashMap::default();
        let begin = self.first_at(t.saturating_sub(within_ms));
        let mut end = begin;
        for first in begin..=at {
            let end_t = self.entries[first].t.saturating_add(within_ms);
            while end < self.entries.len() && self.entries[end].t <= end_t {
                *seen.entry(self.entries[end].value.as_deref().unwrap_or("")).or_default() += 1;
                end += 1;
            }
            if end > at && seen.len() >= count {
                let mut values: Vec<&str> = Vec::new();
                let mut positions = Vec::new();
                for i in first..end {
                    let value = self.entries[i].value.as_deref().unwrap_or("");
                    if !values.contains(&value) {
                        values.push(value);
                        positions.push(i);
                    }
                }
                return Some(self.take(&positions));
            }
            let leaving = self.entries[first].value.as_deref().unwrap_or("");
            if let Some(n) = seen.get_mut(leaving) {
                *n -= 1;
                if *n == 0 {
                    seen.remove(leaving);
                }
            }
        }
        None
    }

    /// Sum: the values (numbers) of entries within `within_ms` add up to `at_least`, among
    /// windows that contain the entry at `at` (one two-pointer sweep).
    pub fn sum(&mut self, at: usize, at_least: u64, within_ms: i64) -> Option<Fired> {
        let t = self.entries[at].t;
        let amount = |e: &Entry| e.value.as_deref().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        let begin = self.first_at(t.saturating_sub(within_ms));
        let mut total = 0u64;
        let mut end = begin;
        for first in begin..=at {
            let end_t = self.entries[first].t.saturating_add(within_ms);
            while end < self.entries.len() && self.entries[end].t <= end_t {
                total = total.saturating_add(amount(&self.entries[end]));
                end += 1;
            }
            if end > at && total >= at_least {
                let positions: Vec<usize> = (first..end).collect();
                return Some(self.take(&positions));
            }
            total = total.saturating_sub(amount(&self.entries[first]));
        }
        None
    }

    /// Statistic: the statistic of the numeric values of the entries of the `within_ms`
    /// that end at the entry at `at` (a moving statistic, as of each match) reaches
    /// `bound` (`(at_least, strictly)`). Entries without a number are not counted. Unlike
    /// counts and sums, a mean or a percentile is not larger over a larger window, so the
    /// window is the one that ends at the match, not any that contains it.
    pub fn statistic(&mut self, at: usize, statistic: Statistic, bound: (f64, bool), within_ms: i64) -> Option<Fired> {
        let (at_least, strictly) = bound;
        let t = self.entries[at].t;
        let number =
            |e: &Entry| e.value.as_deref().and_then(|v| v.trim().parse::<f64>().ok()).filter(|v| v.is_finite());
        let begin = self.first_at(t.saturating_sub(within_ms));
        let end = begin + self.entries.range(begin..).take_while(|e| e.t <= t).count();
        let positions: Vec<usize> = (begin..end).filter(|&i| number(&self.entries[i]).is_some()).collect();
        let mut values: Vec<f64> = positions.iter().filter_map(|&i| number(&self.entries[i])).collect();
        if values.is_empty() {
            return None;
        }
        let value = statistic.of(&mut values);
        (value > at_least || !strictly && value >= at_least).then(|| self.take(&positions))
    }

    /// All of: every bit of `bits` matched, in any order, within `within_ms`, among
    /// windows that contain the entry at `at`. The earliest such span fires, with the
    /// first entry of each bit in it.
    pub fn all_of(&mut self, at: usize, bits: u32, within_ms: i64) -> Option<Fired> {
        let t = self.entries[at].t;
        for first in self.first_at(t.saturating_sub(within_ms))..=at {
            let end_t = self.entries[first].t.saturating_add(within_ms);
            let mut covered = 0u32;
            let mut positions = Vec::new();
            let mut i = first;
            while i < self.entries.len() && self.entries[i].t <= end_t {
                let new = self.entries[i].bits & bits & !covered;
                if new != 0 {
                    covered |= new;
                    positions.push(i);
                }
                if covered == bits && i >= at {
                    return Some(self.take(&positions));
                }
                i += 1;
            }
        }
        None
    }

    /// Sequence: each step's matcher bit matched `count` times, in event-time order, the
    /// whole chain within `within_ms`. For each entry matching the last step (earliest
    /// first), a greedy left-to-right pass over the `within_ms` before it finds the chain if
    /// one exists (greedy matching is optimal for an ordered pattern), so the cost is linear
    /// in the window per candidate end.
    pub fn sequence(&mut self, steps: &[(u32, u32)], within_ms: i64) -> Option<Fired> {
        let (last_bit, _) = steps[steps.len() - 1];
        let ends: Vec<usize> = (0..self.entries.len()).filter(|&i| self.entries[i].bits & last_bit != 0).collect();
        for end in ends {
            let from = self.first_at(self.entries[end].t.saturating_sub(within_ms));
            let mut stage = 0;
            let mut counted = 0;
            let mut positions = Vec::new();
            for i in from..=end {
                let (bit, needed) = steps[stage];
                // The chain's final match is this end: earlier last-step matches are skipped.
                let final_match = stage + 1 == steps.len() && counted + 1 == needed;
                if self.entries[i].bits & bit == 0 || (final_match && i != end) {
                    continue;
                }
                positions.push(i);
                counted += 1;
                if counted == needed {
                    stage += 1;
                    counted = 0;
                    if stage == steps.len() {
                        return Some(self.take(&positions));
                    }
                }
            }
        }
        None
    }

    /// Absence: a `then` match clears the `first` matches it follows within `within_ms`.
    pub fn absence_clear(&mut self, then_t: i64, first_bit: u32, within_ms: i64) {
        self.entries.retain(|e| !(e.bits & first_bit != 0 && e.t <= then_t && then_t - e.t <= within_ms));
    }

    /// Absence: the `first` matches whose wait ended before `watermark_ms` with nothing
    /// following. The earliest fires (one alert per call).
    pub fn absence_due(&mut self, watermark_ms: i64, within_ms: i64) -> Option<Fired> {
        let position = self.entries.iter().position(|e| e.t.saturating_add(within_ms) < watermark_ms)?;
        Some(self.take(&[position]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(t: i64, bits: u32, value: Option<&str>) -> Entry {
        Entry { t, id: EventId::generate(), bits, value: value.map(str::to_owned), seen: Vec::new() }
    }

    fn fill(w: &mut Window, times: &[i64]) -> Vec<usize> {
        times.iter().map(|&t| w.insert(entry(t, 1, None)).0).collect()
    }

    #[test]
    fn threshold_fires_on_the_earliest_qualifying_window() {
        let mut w = Window::default();
        let at = fill(&mut w, &[0, 500, 1000]);
        assert_eq!(w.threshold(at[2], 3, 1000).map(|f| (f.first_ms, f.last_ms)), Some((0, 1000)));
        assert!(w.is_empty());
        let at = fill(&mut w, &[0, 600, 1200]);
        assert_eq!(w.threshold(at[2], 3, 1000), None, "1,200 ms apart does not fit 1,000");
    }

    #[test]
    fn threshold_counts_out_of_order_entries_at_their_time() {
        let mut w = Window::default();
        fill(&mut w, &[5000, 1000]);
        let (at, _) = w.insert(entry(2000, 1, None));
        assert_eq!(at, 1);
        assert_eq!(w.threshold(at, 2, 1500).map(|f| (f.first_ms, f.last_ms)), Some((1000, 2000)));
        assert_eq!(w.entries().map(|e| e.t).collect::<Vec<_>>(), vec![5000]);
    }

    #[test]
    fn distinct_counts_values_not_events() {
        let mut w = Window::default();
        for (t, v) in [(0, "a"), (10, "a"), (20, "b")] {
            let (at, _) = w.insert(entry(t, 1, Some(v)));
            assert_eq!(w.distinct(at, 3, 1000), None);
        }
        let (at, _) = w.insert(entry(30, 1, Some("c")));
        let fired = w.distinct(at, 3, 1000).expect("three distinct values");
        assert_eq!(fired.ids.len(), 3);
        assert_eq!(w.entries().count(), 1, "the repeated `a` stays");
    }

    #[test]
    fn sum_adds_values_within_the_window() {
        let mut w = Window::default();
        for (t, v) in [(0, "400"), (10, "500")] {
            let (at, _) = w.insert(entry(t, 1, Some(v)));
            assert_eq!(w.sum(at, 1000, 100), None);
        }
        let (at, _) = w.insert(entry(200, 1, Some("900")));
        assert_eq!(w.sum(at, 1000, 100), None, "the first two are too old for the third");
        let (at, _) = w.insert(entry(250, 1, Some("100")));
        assert_eq!(w.sum(at, 1000, 100).map(|f| f.ids.len()), Some(2));
    }

    #[test]
    fn sequence_needs_order_and_counts_within_the_window() {
        let mut w = Window::default();
        // success before the failures: not a chain.
        w.insert(entry(0, 0b10, None));
        for t in [10, 20, 30] {
            w.insert(entry(t, 0b01, None));
        }
        assert_eq!(w.sequence(&[(0b01, 3), (0b10, 1)], 1000), None);
        w.insert(entry(40, 0b10, None));
        let fired = w.sequence(&[(0b01, 3), (0b10, 1)], 1000).expect("chain");
        assert_eq!((fired.first_ms, fired.last_ms, fired.ids.len()), (10, 40, 4));
        // Too slow: the success comes after the window of the first failure.
        let mut w = Window::default();
        for t in [0, 10, 20] {
            w.insert(entry(t, 0b01, None));
        }
        w.insert(entry(2000, 0b10, None));
        assert_eq!(w.sequence(&[(0b01, 3), (0b10, 1)], 1000), None);
    }

    #[test]
    fn absence_fires_when_nothing_followed_in_time() {
        let mut w = Window::default();
        w.insert(entry(0, 0b01, None));
        w.insert(entry(100, 0b01, None));
        w.absence_clear(150, 0b01, 1000); // clears both: they were followed within 1 s
        assert!(w.is_empty());
        w.insert(entry(5000, 0b01, None));
        assert_eq!(w.absence_due(5900, 1000), None, "still waiting");
        assert_eq!(w.absence_due(6001, 1000).map(|f| f.first_ms), Some(5000));
    }

    #[test]
    fn the_size_cap_drops_the_oldest() {
        let mut w = Window::default();
        let mut dropped = 0;
        for t in 0..(MAX_ENTRIES as i64 + 10) {
            dropped += w.insert(entry(t, 1, None)).1;
        }
        assert_eq!(dropped, 10);
        assert_eq!(w.entries().next().map(|e| e.t), Some(10));
    }
}
