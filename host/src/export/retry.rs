//! Retry timing: exponential backoff with full jitter, `Retry-After` in both its forms, and
//! a retry budget that keeps a failing destination from turning every request into many.

use std::sync::Mutex;
use std::time::Duration;

// tokio's clock, so that tests with a paused clock drive these as they drive the sleeps.
use tokio::time::Instant;

use rand::Rng;

/// Exponential backoff with full jitter: attempt `n` waits uniformly in
/// `[0, min(max, initial · 2^n)]`.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    /// The first ceiling.
    pub initial: Duration,
    /// The largest ceiling.
    pub max: Duration,
}

impl Backoff {
    /// The wait before retry number `attempt` (0 for the first retry).
    pub fn delay(&self, attempt: u32) -> Duration {
        let ceiling = self.initial.saturating_mul(1u32 << attempt.min(20)).min(self.max);
        let millis = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(rand::rng().random_range(0..=millis))
    }

    /// The wait before a retry, honouring a server's `Retry-After` (never shorter than it,
    /// and not capped by `max`: the destination knows best).
    pub fn delay_with(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let jittered = self.delay(attempt);
        match retry_after {
            Some(after) => after.max(jittered.min(after / 10)),
            None => jittered,
        }
    }
}

/// Parses a `Retry-After` value: delay seconds (`120`) or an HTTP-date
/// (`Wed, 21 Oct 2015 07:28:00 GMT`, relative to `now`). Dates in the past mean no wait.
pub fn parse_retry_after(value: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    Some((date.with_timezone(&chrono::Utc) - now).to_std().unwrap_or(Duration::ZERO))
}

/// A retry budget: each first attempt deposits `ratio` tokens, each retry spends one, with a
/// floor of ten retries per second so a quiet sink can still recover. With the budget spent,
/// a retry waits for tokens instead of adding load; nothing is dropped.
#[derive(Debug)]
pub struct RetryBudget {
    ratio: f64,
    state: Mutex<(f64, Instant)>,
}

impl RetryBudget {
    /// A budget allowing `ratio` retries per first attempt.
    pub fn new(ratio: f64) -> Self {
        Self { ratio, state: Mutex::new((10.0, Instant::now())) }
    }

    fn refill(state: &mut (f64, Instant)) {
        let now = Instant::now();
        state.0 = (state.0 + now.duration_since(state.1).as_secs_f64() * 10.0).min(100.0);
        state.1 = now;
    }

    /// Records a first attempt.
    pub fn deposit(&self) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.0 = (state.0 + self.ratio).min(100.0);
    }

    /// Takes a token for a retry; `None` if one is available, else how long until one is.
    pub fn withdraw(&self) -> Option<Duration> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        Self::refill(&mut state);
        if state.0 >= 1.0 {
            state.0 -= 1.0;
            None
        } else {
            // In whole milliseconds, the timer's resolution: a shorter sleep may end before
            // the clock moves, and the budget would never refill (a spin).
            Some(Duration::from_millis(((1.0 - state.0) * 100.0).ceil().max(1.0) as u64))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_capped_and_jittered() {
        let b = Backoff { initial: Duration::from_millis(100), max: Duration::from_secs(2) };
        for attempt in 0..40 {
            assert!(b.delay(attempt) <= Duration::from_secs(2));
        }
        assert!(b.delay(0) <= Duration::from_millis(100));
        let samples: std::collections::HashSet<Duration> = (0..50).map(|_| b.delay(10)).collect();
        assert!(samples.len() > 1, "jitter varies the wait");
        assert!(
            b.delay_with(0, Some(Duration::from_secs(7))) >= Duration::from_secs(7),
            "never earlier than Retry-After"
        );
    }

    #[test]
    fn retry_after_in_seconds_and_http_date() {
        let now: chrono::DateTime<chrono::Utc> = "2015-10-21T07:27:30Z".parse().expect("time");
        assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now), Some(Duration::from_secs(30)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn the_budget_limits_retries_to_a_share_of_attempts() {
        let budget = RetryBudget::new(0.5);
        // The floor: a few retries are always allowed.
        let mut allowed = 0;
        while budget.withdraw().is_none() {
            allowed += 1;
            assert!(allowed < 1000);
        }
        assert!((9..=11).contains(&allowed), "{allowed}");
        for _ in 0..4 {
            budget.deposit();
        }
        assert!(budget.withdraw().is_none() && budget.withdraw().is_none(), "four attempts at 0.5 buy two retries");
        assert!(budget.withdraw().is_some_and(|wait| wait <= Duration::from_millis(100)));
    }
}
