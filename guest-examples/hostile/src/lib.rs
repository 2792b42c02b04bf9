//! The hostile corpus: a function that misbehaves on request, for the host's tests.
//! Input `{"do": "..."}`: `loop` spins forever, `alloc` grows memory without bound,
//! `recurse` recurses without bound, `output` returns a huge string, `trap` panics,
//! `fetch` sends an HTTP GET to `url`, `clock` answers the host's time, `emit` sends a
//! derived event, `secret` reads the secret `name`, `echo` answers its input.

use serde_json::{Value, json};
use vigil_sdk::{Error, Function, clock, emit, http, secrets};

#[allow(unconditional_recursion)]
fn recurse(depth: u64, trail: &mut Vec<u64>) -> u64 {
    trail.push(depth);
    let below = recurse(depth + 1, trail);
    below.wrapping_add(trail[trail.len() / 2])
}

struct Hostile;

impl Function for Hostile {
    fn call(input: Value) -> Result<Value, Error> {
        match input["do"].as_str().unwrap_or("echo") {
            "loop" => {
                let mut x: u64 = 0;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            "alloc" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "recurse" => Ok(Value::from(recurse(0, &mut Vec::new()))),
            "output" => Ok(Value::String("x".repeat(input["bytes"].as_u64().unwrap_or(64 << 20) as usize))),
            "trap" => panic!("asked to trap"),
            "fetch" => {
                let url = input["url"].as_str().unwrap_or_default();
                match http::send("GET", url, &[], None) {
                    Ok(r) => Ok(Value::from(r.status)),
                    Err(http::HttpError::Denied(m)) => Err(Error::Failed(format!("denied: {m}"))),
                    Err(e) => Err(Error::Retryable(e.to_string())),
                }
            }
            "clock" => Ok(Value::from(clock::now_ms())),
            "emit" => {
                let event = json!({ "class": "system", "action": "plugin_finding", "message": input["message"] });
                emit::event(&event).map(|()| Value::Bool(true)).map_err(Error::Failed)
            }
            "secret" => secrets::get(input["name"].as_str().unwrap_or_default()).map(Value::from).map_err(Error::Failed),
            _ => Ok(input),
        }
    }
}

vigil_sdk::register_plugin!(function: Hostile);
