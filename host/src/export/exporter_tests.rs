//! The delivery loop on its own: a scripted sink, and tokio's paused clock, so waits are
//! checked exactly (virtual time) and no test sleeps.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::*;
use crate::export::{BreakerState, SendReport};

/// A sink answering from a script, one answer per request (then success), recording when
/// each request came and which items it carried.
#[derive(Default)]
struct Scripted {
    answers: Mutex<VecDeque<Result<SendReport, SinkError>>>,
    requests: Mutex<Vec<(Instant, Vec<String>)>>,
}

impl Scripted {
    fn new(answers: impl IntoIterator<Item = Result<SendReport, SinkError>>) -> Self {
        Self { answers: Mutex::new(answers.into_iter().collect()), ..Self::default() }
    }

    fn requests(&self) -> Vec<(Instant, Vec<String>)> {
        self.requests.lock().expect("lock").clone()
    }
}

impl Sink for Scripted {
    async fn send(&self, batch: &[Item]) -> Result<SendReport, SinkError> {
        self.requests.lock().expect("lock").push((Instant::now(), batch.iter().map(|i| i.id.clone()).collect()));
        self.answers.lock().expect("lock").pop_front().unwrap_or(Ok(SendReport::default()))
    }
}

fn shared(sink: Scripted, failures: u32, open_for: Duration) -> Shared<Scripted> {
    let metrics = ExporterMetrics::register(&MetricsRegistry::default());
    Shared {
        name: "scripted".into(),
        sink: Arc::new(sink),
        breaker: CircuitBreaker::new(failures, open_for),
        limiter: None,
        budget: RetryBudget::new(1.0),
        backoff: Backoff { initial: Duration::from_millis(10), max: Duration::from_millis(100) },
        give_up_after: None,
        metrics: SinkMetrics::new(&metrics, "scripted"),
        status: Arc::default(),
        stop: CancellationToken::new(),
    }
}

fn items(n: usize) -> Vec<Item> {
    (0..n)
        .map(|i| Item {
            seq: i as u64 + 1,
            kind: RecordKind::Event,
            id: format!("r{i}"),
            time: Utc::now(),
            host: None,
            severity: 3,
            body: b"{}".to_vec(),
            json: true,
        })
        .collect()
}

fn failed(index: usize, error: SinkError) -> Result<SendReport, SinkError> {
    Ok(SendReport { failed: vec![(index, error)] })
}

fn retry_after(secs: u64) -> SinkError {
    SinkError::Retryable { reason: "slow down".into(), retry_after: Some(Duration::from_secs(secs)) }
}

fn ids(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_honoured_and_only_the_failed_items_go_again() {
    let shared = shared(Scripted::new([Err(retry_after(1)), failed(1, retry_after(2))]), 10, Duration::from_secs(5));
    let outcome = deliver(&shared, items(3)).await;
    let Outcome::Done { delivered, dead } = outcome else { panic!("aborted") };
    assert_eq!((delivered, dead.len()), (3, 0));
    let requests = shared.sink.requests();
    let carried: Vec<Vec<String>> = requests.iter().map(|(_, ids)| ids.clone()).collect();
    assert_eq!(carried, [ids(&["r0", "r1", "r2"]), ids(&["r0", "r1", "r2"]), ids(&["r1"])]);
    // Never sooner than the destination asked (the jitter may add up to a tenth).
    let gap = |a: usize, b: usize| requests[b].0 - requests[a].0;
    assert!(gap(0, 1) >= Duration::from_secs(1) && gap(0, 1) <= Duration::from_millis(1100), "{:?}", gap(0, 1));
    assert!(gap(1, 2) >= Duration::from_secs(2) && gap(1, 2) <= Duration::from_millis(2200), "{:?}", gap(1, 2));
    let status = shared.status.read().expect("lock").clone();
    assert_eq!((status.state.as_str(), status.breaker.as_str()), ("healthy", "closed"));
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_holds_every_request_for_its_cool_down_then_lets_one_probe() {
    let down = || Err(SinkError::retryable("503"));
    let shared = shared(Scripted::new([down(), down(), down()]), 2, Duration::from_secs(5));
    let outcome = deliver(&shared, items(2)).await;
    assert!(matches!(outcome, Outcome::Done { delivered: 2, .. }), "{outcome:?}");
    let times: Vec<Instant> = shared.sink.requests().iter().map(|(t, _)| *t).collect();
    assert_eq!(times.len(), 4, "two failures open it; a failed probe reopens it; the next probe succeeds");
    assert!(times[1] - times[0] < Duration::from_secs(1), "closed: the backoff only");
    for pair in times[1..].windows(2) {
        assert!(
            pair[1] - pair[0] >= Duration::from_secs(5),
            "open: nothing before the cool-down ({:?})",
            pair[1] - pair[0]
        );
    }
    assert_eq!(shared.breaker.state(), BreakerState::Closed, "a successful probe closes it");
}

#[tokio::test(start_paused = true)]
async fn a_batch_refused_as_a_whole_goes_in_halves_and_permanent_failures_are_dead() {
    let too_big = Err(SinkError::Split { reason: "413".into() });
    let shared = shared(Scripted::new([too_big, failed(0, SinkError::permanent("400 bad field"))]), 3, Duration::ZERO);
    let Outcome::Done { delivered, dead } = deliver(&shared, items(4)).await else { panic!("aborted") };
    let carried: Vec<Vec<String>> = shared.sink.requests().into_iter().map(|(_, ids)| ids).collect();
    assert_eq!(carried, [ids(&["r0", "r1", "r2", "r3"]), ids(&["r0", "r1"]), ids(&["r2", "r3"])]);
    assert_eq!(delivered, 3);
    assert_eq!(dead.len(), 1);
    let (index, error, attempts) = &dead[0];
    assert_eq!((*index, error.is_retryable(), *attempts), (0, false, 1), "{error}");
    assert_eq!(shared.breaker.state(), BreakerState::Closed, "a permanent refusal is an answer, not an outage");
}

#[tokio::test(start_paused = true)]
async fn a_single_item_refused_for_its_size_is_dead_not_retried() {
    let shared = shared(Scripted::new([Err(SinkError::Split { reason: "413".into() })]), 3, Duration::ZERO);
    let Outcome::Done { delivered, dead } = deliver(&shared, items(1)).await else { panic!("aborted") };
    assert_eq!((delivered, dead.len(), shared.sink.requests().len()), (0, 1, 1));
    assert!(dead[0].1.to_string().contains("refused on its own"), "{}", dead[0].1);
}

#[tokio::test(start_paused = true)]
async fn while_the_destination_is_down_the_status_says_so_and_stopping_aborts_the_wait() {
    let answers = std::iter::repeat_with(|| Err(SinkError::retryable("connection refused"))).take(1000);
    let shared = Arc::new(shared(Scripted::new(answers), 1000, Duration::ZERO));
    let task = tokio::spawn({
        let shared = shared.clone();
        async move { deliver(&shared, items(2)).await }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    let status = shared.status.read().expect("lock").clone();
    assert_eq!(status.state, "unhealthy");
    assert!(status.last_error.as_deref().is_some_and(|e| e.contains("connection refused")), "{status:?}");
    shared.stop.cancel();
    let outcome = task.await.expect("no panic");
    assert!(matches!(outcome, Outcome::Aborted), "{outcome:?}: nothing is committed when stopped mid-retry");
}
