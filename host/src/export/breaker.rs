//! A circuit breaker per destination: closed → open after N consecutive failed attempts →
//! half-open after a cool-down, when one probe goes through; its success closes the breaker,
//! its failure opens it again. While it is open nothing is sent and records stay in the log.

use std::sync::Mutex;
use std::time::Duration;

// tokio's clock, so that tests with a paused clock drive these as they drive the sleeps.
use tokio::time::Instant;

/// The breaker's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    /// Requests flow.
    Closed,
    /// Nothing is sent until the cool-down ends.
    Open,
    /// One probe is in flight.
    HalfOpen,
}

impl BreakerState {
    /// The state as a word.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }
}

#[derive(Debug)]
struct State {
    state: BreakerState,
    failures: u32,
    opened_at: Option<Instant>,
}

/// The breaker.
#[derive(Debug)]
pub struct CircuitBreaker {
    threshold: u32,
    open_for: Duration,
    state: Mutex<State>,
}

impl CircuitBreaker {
    /// A breaker opening after `threshold` consecutive failures, for `open_for`.
    pub fn new(threshold: u32, open_for: Duration) -> Self {
        Self {
            threshold,
            open_for,
            state: Mutex::new(State { state: BreakerState::Closed, failures: 0, opened_at: None }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current state.
    pub fn state(&self) -> BreakerState {
        self.lock().state
    }

    /// Asks to send: `None` when allowed now (a probe, if half-open), else how long to wait
    /// before asking again.
    pub fn acquire(&self) -> Option<Duration> {
        let mut s = self.lock();
        match s.state {
            BreakerState::Closed => None,
            BreakerState::HalfOpen => Some(Duration::from_millis(50)),
            BreakerState::Open => {
                let elapsed = s.opened_at.map_or(self.open_for, |t| t.elapsed());
                if elapsed >= self.open_for {
                    s.state = BreakerState::HalfOpen;
                    None
                } else {
                    Some(self.open_for - elapsed)
                }
            }
        }
    }

    /// Records a successful attempt: closes the breaker.
    pub fn success(&self) {
        let mut s = self.lock();
        if s.state != BreakerState::Closed {
            tracing::info!("Destination answering again; circuit breaker closed.");
        }
        *s = State { state: BreakerState::Closed, failures: 0, opened_at: None };
    }

    /// Records a failed attempt; returns true when this failure opened the breaker.
    pub fn failure(&self) -> bool {
        let mut s = self.lock();
        s.failures += 1;
        let open =
            s.state == BreakerState::HalfOpen || (s.state == BreakerState::Closed && s.failures >= self.threshold);
        if open {
            s.state = BreakerState::Open;
            s.opened_at = Some(Instant::now());
        }
        open
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_consecutive_failures_and_probes_after_the_cool_down() {
        let b = CircuitBreaker::new(3, Duration::from_millis(0));
        assert!(!b.failure() && !b.failure());
        b.success();
        assert!(!b.failure() && !b.failure(), "a success resets the count");
        assert!(b.failure(), "the third consecutive failure opens it");
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.acquire(), None, "cool-down over: one probe");
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(b.acquire().is_some(), "only one probe at a time");
        assert!(b.failure(), "a failed probe opens it again");
        assert_eq!(b.acquire(), None);
        b.success();
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn an_open_breaker_says_how_long_to_wait() {
        let b = CircuitBreaker::new(1, Duration::from_secs(60));
        b.failure();
        assert!(b.acquire().is_some_and(|w| w > Duration::from_secs(50)));
    }
}
