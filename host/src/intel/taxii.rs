//! A TAXII 2.1 client: discovery, API roots, collections, and `added_after` polling of a
//! collection's objects page by page (`more`/`next`), with basic, API-key or client
//! certificate authentication, a request rate limit, and retries of 429, 5xx and network
//! failures (honouring `Retry-After`).

use std::num::NonZeroU32;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use reqwest::header::{ACCEPT, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use serde_json::Value;

use super::{FeedAuth, FeedConfig};

/// The TAXII 2.1 media type.
pub const TAXII_MEDIA_TYPE: &str = "application/taxii+json;version=2.1";

/// Why a feed could not be read. Never carries a credential.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    /// The server refused the credentials.
    #[error("{url}: authentication failed (HTTP {status}); check the feed's credentials")]
    Auth {
        /// The request URL.
        url: String,
        /// 401 or 403.
        status: u16,
    },
    /// The server answered with an error status.
    #[error("{url}: HTTP {status}: {body}")]
    Status {
        /// The request URL.
        url: String,
        /// The status.
        status: u16,
        /// The start of the body.
        body: String,
    },
    /// The request did not complete.
    #[error("{url}: {reason}")]
    Network {
        /// The request URL.
        url: String,
        /// What failed.
        reason: String,
    },
    /// The answer was not what TAXII or STIX says it is.
    #[error("{url}: {reason}")]
    Protocol {
        /// The request URL.
        url: String,
        /// What was wrong.
        reason: String,
    },
    /// The feed's settings cannot work.
    #[error("feed {feed}: {reason}")]
    Config {
        /// The feed.
        feed: String,
        /// What is wrong.
        reason: String,
    },
}

/// An HTTP client for one feed.
#[derive(Debug)]
pub struct FeedClient {
    http: reqwest::Client,
    auth: FeedAuth,
    limiter: DefaultDirectRateLimiter,
    retries: u32,
    max_backoff: Duration,
}

/// One page of a collection's objects.
#[derive(Debug)]
pub struct Page {
    /// The envelope (`objects`, `more`, `next`).
    pub envelope: Value,
    /// `X-TAXII-Date-Added-Last`: where the next incremental poll starts.
    pub date_added_last: Option<String>,
}

impl FeedClient {
    /// A client with the feed's timeout, client certificate, rate limit and retries.
    pub fn new(feed: &FeedConfig) -> Result<Self, FeedError> {
        let config_error = |reason: String| FeedError::Config { feed: feed.name.clone(), reason };
        let mut builder = reqwest::Client::builder()
            .timeout(feed.timeout)
            .user_agent(concat!("vigil/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::limited(3));
        if let Some(tls) = &feed.client_cert {
            let mut pem = std::fs::read(&tls.cert)
                .map_err(|e| config_error(format!("cannot read client_cert.cert {}: {e}", tls.cert.display())))?;
            pem.extend(
                std::fs::read(&tls.key)
                    .map_err(|e| config_error(format!("cannot read client_cert.key {}: {e}", tls.key.display())))?,
            );
            let identity = reqwest::Identity::from_pem(&pem)
                .map_err(|e| config_error(format!("client_cert is not a PEM certificate and key: {e}")))?;
            builder = builder.identity(identity);
        }
        if let Some(ca) = &feed.ca_file {
            let pem =
                std::fs::read(ca).map_err(|e| config_error(format!("cannot read ca_file {}: {e}", ca.display())))?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .map_err(|e| config_error(format!("ca_file is not a PEM certificate: {e}")))?;
            builder = builder.add_root_certificate(cert);
        }
        let http = builder.build().map_err(|e| config_error(format!("cannot build the HTTP client: {e}")))?;
        let per_minute = NonZeroU32::new(feed.requests_per_minute.max(1)).unwrap_or(NonZeroU32::MIN);
        // A poll's first few requests (discovery, collections, first pages) go at once.
        let burst = NonZeroU32::new((feed.requests_per_minute / 4).clamp(1, 10)).unwrap_or(NonZeroU32::MIN);
        Ok(Self {
            http,
            auth: feed.auth.clone(),
            limiter: RateLimiter::direct(Quota::per_minute(per_minute).allow_burst(burst)),
            retries: feed.retries,
            max_backoff: feed.max_backoff,
        })
    }

    /// GETs `url`, retrying what may pass; returns the JSON body and the headers.
    pub async fn get_json(&self, url: &str, accept: &str) -> Result<(Value, HeaderMap), FeedError> {
        let mut attempt = 0;
        loop {
            self.limiter.until_ready().await;
            let mut request = self.http.get(url).header(ACCEPT, accept);
            request = match &self.auth {
                FeedAuth::None => request,
                FeedAuth::Basic { username, password } => request.basic_auth(username, Some(password.expose())),
                FeedAuth::ApiKey { header, key } => {
                    let name = HeaderName::from_bytes(header.as_bytes()).map_err(|_| FeedError::Protocol {
                        url: url.to_owned(),
                        reason: format!("{header:?} is not a valid header name"),
                    })?;
                    let mut value = HeaderValue::from_str(key.expose()).map_err(|_| FeedError::Protocol {
                        url: url.to_owned(),
                        reason: "the API key is not a valid header value".into(),
                    })?;
                    value.set_sensitive(true);
                    request.header(name, value)
                }
            };
            let wait = match request.send().await {
                Ok(response) => {
                    let status = response.status();
                    if status.is_success() {
                        let headers = response.headers().clone();
                        let body = response.bytes().await.map_err(|e| FeedError::Network {
                            url: url.to_owned(),
                            reason: format!("reading the body: {}", without_url(&e)),
                        })?;
                        let json = serde_json::from_slice(&body).map_err(|e| FeedError::Protocol {
                            url: url.to_owned(),
                            reason: format!("the body is not JSON: {e}"),
                        })?;
                        return Ok((json, headers));
                    }
                    if matches!(status.as_u16(), 401 | 403) {
                        return Err(FeedError::Auth { url: url.to_owned(), status: status.as_u16() });
                    }
                    let retry_after = response
                        .headers()
                        .get(RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs);
                    let body = response.text().await.unwrap_or_default();
                    let error = FeedError::Status {
                        url: url.to_owned(),
                        status: status.as_u16(),
                        body: body.chars().take(300).collect(),
                    };
                    if !(status.as_u16() == 429 || status.is_server_error()) || attempt >= self.retries {
                        return Err(error);
                    }
                    tracing::warn!(%error, attempt, "TAXII request failed; retrying");
                    retry_after
                }
                Err(e) => {
                    let error = FeedError::Network { url: url.to_owned(), reason: without_url(&e) };
                    if attempt >= self.retries {
                        return Err(error);
                    }
                    tracing::warn!(%error, attempt, "TAXII request failed; retrying");
                    None
                }
            };
            let backoff = Duration::from_millis(250u64.saturating_mul(1 << attempt.min(16)));
            tokio::time::sleep(wait.unwrap_or(backoff).min(self.max_backoff)).await;
            attempt += 1;
        }
    }

    /// The API root to use for `url`: `url` itself when it is one, else the discovery
    /// document's default (or its only) API root.
    pub async fn api_root(&self, url: &str) -> Result<String, FeedError> {
        let (doc, _) = self.get_json(url, TAXII_MEDIA_TYPE).await?;
        if doc.get("versions").is_some() {
            return Ok(with_slash(url));
        }
        let root = doc
            .get("default")
            .and_then(Value::as_str)
            .or_else(|| doc.get("api_roots").and_then(Value::as_array).and_then(|r| r.first()).and_then(Value::as_str))
            .ok_or_else(|| FeedError::Protocol {
                url: url.to_owned(),
                reason: "neither an API root nor a discovery document with api_roots".into(),
            })?;
        let root = reqwest::Url::parse(url)
            .and_then(|base| base.join(root))
            .map_err(|e| FeedError::Protocol { url: url.to_owned(), reason: format!("bad API root {root:?}: {e}") })?;
        Ok(with_slash(root.as_str()))
    }

    /// The id of the collection whose id or title is `want`.
    pub async fn collection(&self, api_root: &str, want: &str) -> Result<String, FeedError> {
        let url = format!("{api_root}collections/");
        let (doc, _) = self.get_json(&url, TAXII_MEDIA_TYPE).await?;
        let collections = doc.get("collections").and_then(Value::as_array).cloned().unwrap_or_default();
        let found = collections.iter().find(|c| {
            c.get("id").and_then(Value::as_str) == Some(want) || c.get("title").and_then(Value::as_str) == Some(want)
        });
        let Some(found) = found else {
            let names: Vec<&str> = collections.iter().filter_map(|c| c.get("title").and_then(Value::as_str)).collect();
            return Err(FeedError::Protocol {
                url,
                reason: format!("no collection with id or title {want:?}; the server has: {}", names.join(", ")),
            });
        };
        if found.get("can_read").and_then(Value::as_bool) == Some(false) {
            return Err(FeedError::Protocol { url, reason: format!("collection {want:?} cannot be read") });
        }
        found
            .get("id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| FeedError::Protocol { url, reason: "a collection without an id".into() })
    }

    /// One page of objects added after `added_after` (or the page `next` names).
    pub async fn page(
        &self,
        api_root: &str,
        collection: &str,
        added_after: Option<&str>,
        next: Option<&str>,
        limit: usize,
    ) -> Result<Page, FeedError> {
        let mut url = reqwest::Url::parse(&format!("{api_root}collections/{collection}/objects/")).map_err(|e| {
            FeedError::Protocol { url: api_root.to_owned(), reason: format!("bad collection URL: {e}") }
        })?;
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("limit", &limit.to_string());
            if let Some(after) = added_after {
                query.append_pair("added_after", after);
            }
            if let Some(next) = next {
                query.append_pair("next", next);
            }
        }
        let (envelope, headers) = self.get_json(url.as_str(), TAXII_MEDIA_TYPE).await?;
        if !envelope.is_object() {
            return Err(FeedError::Protocol { url: url.to_string(), reason: "the envelope is not an object".into() });
        }
        let date_added_last = headers.get("x-taxii-date-added-last").and_then(|v| v.to_str().ok()).map(str::to_owned);
        Ok(Page { envelope, date_added_last })
    }
}

fn with_slash(url: &str) -> String {
    if url.ends_with('/') { url.to_owned() } else { format!("{url}/") }
}

/// A reqwest error's message without the URL (which callers report once, themselves).
fn without_url(e: &reqwest::Error) -> String {
    let mut message = e.to_string();
    if let Some(url) = e.url() {
        message = message.replace(&format!(" for url ({url})"), "").replace(url.as_str(), "");
    }
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}
