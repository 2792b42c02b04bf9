//! Faithful local servers for destinations that have no installable counterpart: an HTTP
//! server on 127.0.0.1 that records every request (body un-gzipped) and answers with a
//! protocol-specific handler — Splunk HEC with indexer acknowledgements, Elasticsearch
//! `_bulk` with per-item statuses, Datadog, Sumo Logic, a signed webhook.

use std::collections::HashMap;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

/// A request as the server saw it.
#[derive(Clone, Debug)]
pub struct Request {
    /// `POST`, `GET`…
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Header values by lower-case name.
    pub headers: HashMap<String, String>,
    /// The body, gunzipped when it was sent with `Content-Encoding: gzip`.
    pub body: Vec<u8>,
}

impl Request {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// An answer: status, headers, body.
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

impl Answer {
    pub fn json(status: u16, body: serde_json::Value) -> Self {
        Self { status, headers: vec![("content-type", "application/json".into())], body: body.to_string() }
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

type Handler = dyn Fn(&Request) -> Answer + Send + Sync;

/// A server on 127.0.0.1 that runs until dropped.
///
/// A handler's assertion fails on a server thread, where the test cannot see it (it would
/// wait for a delivery that never comes and fail on a timeout instead). So a panicking
/// handler answers 500 and its message is kept: the test's next look at the requests, or
/// the server's drop, fails with it.
pub struct MockServer {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<Request>>>,
    failures: Arc<Mutex<Vec<String>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MockServer {
    /// Starts a server answering with `handler`.
    pub fn start(handler: impl Fn(&Request) -> Answer + Send + Sync + 'static) -> Self {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), handler)
    }

    /// Starts a server on `addr` (to come back on the same port after a restart).
    pub fn start_on(addr: SocketAddr, handler: impl Fn(&Request) -> Answer + Send + Sync + 'static) -> Self {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let listener = std::net::TcpListener::bind(addr).expect("bind the mock server");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (recorded, failed) = (requests.clone(), failures.clone());
        let thread = std::thread::spawn(move || {
            let runtime =
                tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let app =
                    axum::Router::new().fallback(move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                        let (handler, recorded, failed) = (handler.clone(), recorded.clone(), failed.clone());
                        async move { answer(&*handler, &recorded, &failed, method, uri, headers, body) }
                    });
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = stopped.await;
                    })
                    .await;
            });
        });
        Self { addr, requests, failures, stop: Some(stop), thread: Some(thread) }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request so far. Fails the test if a handler failed.
    pub fn requests(&self) -> Vec<Request> {
        self.check();
        self.requests.lock().expect("lock").clone()
    }

    /// Fails the test with the first handler failure, if any.
    fn check(&self) {
        if let Some(failure) = self.failures.lock().expect("lock").first() {
            panic!("the mock server's handler failed: {failure}");
        }
    }

    /// Requests to paths starting with `prefix`.
    pub fn requests_to(&self, prefix: &str) -> Vec<Request> {
        self.requests().into_iter().filter(|r| r.path.starts_with(prefix)).collect()
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        if !std::thread::panicking() {
            self.check();
        }
    }
}

fn answer(
    handler: &Handler,
    recorded: &Mutex<Vec<Request>>,
    failed: &Mutex<Vec<String>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let headers: HashMap<String, String> = headers
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    let body = if headers.get("content-encoding").is_some_and(|e| e == "gzip") {
        let mut out = Vec::new();
        if flate2::read::GzDecoder::new(&body[..]).read_to_end(&mut out).is_err() {
            return (StatusCode::BAD_REQUEST, "bad gzip").into_response();
        }
        out
    } else {
        body.to_vec()
    };
    let request = Request { method: method.to_string(), path: uri.to_string(), headers, body };
    let a = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler(&request))) {
        Ok(a) => a,
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "a panic without a message".into());
            failed.lock().expect("lock").push(format!("{} {}: {message}", request.method, request.path));
            Answer::json(500, serde_json::json!({ "error": "the mock handler failed; the test reports it" }))
        }
    };
    recorded.lock().expect("lock").push(request);
    let mut response = (StatusCode::from_u16(a.status).expect("status"), a.body).into_response();
    for (name, value) in a.headers {
        response.headers_mut().insert(name, value.parse().expect("header value"));
    }
    response
}

/// Splits HEC's concatenated JSON objects.
pub fn hec_objects(body: &[u8]) -> Vec<serde_json::Value> {
    serde_json::Deserializer::from_slice(body)
        .into_iter::<serde_json::Value>()
        .map(|v| v.expect("HEC object"))
        .collect()
}

/// A Splunk HEC endpoint: checks the token and channel, parses the batch, answers with
/// ack ids, and confirms each ack on its second poll (so Vigil must poll). `fault` may
/// answer a post instead (an HEC error code, a 503).
pub struct Hec {
    pub token: String,
    state: Mutex<HecState>,
    fault: Box<FaultFn>,
}

/// Decides, from a post's objects, whether the HEC endpoint misbehaves for it.
type FaultFn = dyn Fn(&[serde_json::Value]) -> Option<HecFault> + Send + Sync;

/// How the HEC endpoint misbehaves for one post.
pub enum HecFault {
    /// Answer this, indexing nothing.
    Answer(Answer),
    /// Object `k` is bad: objects before it are indexed, it and the rest are not (HTTP 400,
    /// code 6, `invalid-event-number: k`), as Splunk does.
    Invalid(usize),
}

#[derive(Default)]
struct HecState {
    next_ack: u64,
    polled: HashMap<u64, u32>,
    /// Objects of batches whose ack was confirmed: what Splunk indexed.
    pending: HashMap<u64, Vec<serde_json::Value>>,
    indexed: Vec<serde_json::Value>,
}

impl Hec {
    pub fn new(
        token: &str,
        fault: impl Fn(&[serde_json::Value]) -> Option<HecFault> + Send + Sync + 'static,
    ) -> Arc<Self> {
        Arc::new(Self { token: token.into(), state: Mutex::default(), fault: Box::new(fault) })
    }

    /// Objects whose acknowledgement Splunk confirmed.
    pub fn indexed(&self) -> Vec<serde_json::Value> {
        self.state.lock().expect("lock").indexed.clone()
    }

    pub fn handle(&self, r: &Request) -> Answer {
        if r.header("authorization") != Some(&format!("Splunk {}", self.token)) {
            return Answer::json(401, serde_json::json!({"text": "Invalid authorization", "code": 3}));
        }
        let Some(channel) = r.header("x-splunk-request-channel") else {
            return Answer::json(400, serde_json::json!({"text": "Data channel is missing", "code": 10}));
        };
        if r.path.starts_with("/services/collector/health") {
            return Answer::json(200, serde_json::json!({"text": "HEC is healthy", "code": 17}));
        }
        if r.path.starts_with("/services/collector/ack") {
            assert!(r.path.contains(channel), "ack poll names the channel");
            let asked: serde_json::Value = serde_json::from_slice(&r.body).expect("ack request");
            let mut state = self.state.lock().expect("lock");
            let mut acks = serde_json::Map::new();
            for id in asked["acks"].as_array().expect("acks").iter().filter_map(serde_json::Value::as_u64) {
                let polls = state.polled.entry(id).or_default();
                *polls += 1;
                let done = *polls >= 2;
                if done && let Some(objects) = state.pending.remove(&id) {
                    state.indexed.extend(objects);
                }
                acks.insert(id.to_string(), done.into());
            }
            return Answer::json(200, serde_json::json!({ "acks": acks }));
        }
        assert_eq!(r.path, "/services/collector/event", "HEC posts to the event endpoint");
        let objects = hec_objects(&r.body);
        for o in &objects {
            assert!(
                o["time"].is_number() && o.get("event").is_some() && o["sourcetype"].is_string(),
                "HEC object: {o}"
            );
        }
        let mut state = self.state.lock().expect("lock");
        match (self.fault)(&objects) {
            Some(HecFault::Answer(answer)) => return answer,
            Some(HecFault::Invalid(k)) => {
                state.indexed.extend(objects[..k].iter().cloned());
                return Answer::json(
                    400,
                    serde_json::json!({"text": "Invalid data format", "code": 6, "invalid-event-number": k}),
                );
            }
            None => {}
        }
        let id = state.next_ack;
        state.next_ack += 1;
        state.pending.insert(id, objects);
        Answer::json(200, serde_json::json!({"text": "Success", "code": 0, "ackId": id}))
    }
}

#[test]
fn a_failing_handler_fails_the_test_instead_of_timing_it_out() {
    use std::panic::{AssertUnwindSafe, catch_unwind};
    let server = MockServer::start(|r| {
        assert_eq!(r.path, "/expected", "the handler's own check");
        Answer::json(200, serde_json::json!({}))
    });
    let url = format!("{}/other", server.url());
    let status =
        crate::helpers::blocking(async { reqwest::Client::new().post(url).send().await.map(|r| r.status().as_u16()) });
    assert_eq!(status.ok(), Some(500), "the sender sees a failure, not a success");
    let seen = catch_unwind(AssertUnwindSafe(|| server.requests())).expect_err("the failure reaches the test");
    let message = seen.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(message.contains("the handler's own check") && message.contains("POST /other"), "{message}");
    assert!(catch_unwind(AssertUnwindSafe(move || drop(server))).is_err(), "and fails the drop too");
}
