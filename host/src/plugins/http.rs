//! The `http` capability: outbound requests to granted hosts only, with the SSRF guard.
//!
//! A request is refused unless its host (or `host:port`) is in the manifest's allow list.
//! Every address the host resolves to — by DNS or by the `[plugins.hosts]` overrides — is
//! checked: loopback, private, shared (CGNAT), link-local (cloud metadata lives at
//! 169.254.169.254), unspecified, multicast and IPv4-mapped forms of them are refused
//! unless the grant says `allow_private`. Redirects are followed only to allowed hosts
//! and resolve through the same guard; bodies and times are capped.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use super::manifest::HttpGrant;

/// Why a request was not answered.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HttpFailure {
    /// Not allowed by the grant or the guard.
    #[error("denied: {0}")]
    Denied(String),
    /// No answer in time.
    #[error("timed out")]
    Timeout,
    /// The body is over the limit.
    #[error("response too large")]
    TooLarge,
    /// Anything else.
    #[error("failed: {0}")]
    Failed(String),
}

/// A response.
#[derive(Clone, Debug)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

/// Whether an address is one a plugin must not reach without `allow_private`.
pub fn refused(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
                || a == 0
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return refused(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local (fd00:ec2::254, metadata)
                || (first & 0xffc0) == 0xfe80 // link-local
        }
    }
}

/// Resolves names through the overrides, then DNS, refusing guarded addresses.
#[derive(Clone, Debug)]
struct GuardedResolver {
    overrides: Arc<BTreeMap<String, IpAddr>>,
    allow_private: bool,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let this = self.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = match this.overrides.get(&host) {
                Some(ip) => vec![SocketAddr::new(*ip, 0)],
                None => tokio::net::lookup_host((host.as_str(), 0)).await?.collect(),
            };
            if !this.allow_private
                && let Some(bad) = addrs.iter().find(|a| refused(a.ip()))
            {
                let message = format!("{host} resolves to {}, a loopback/private/link-local address", bad.ip());
                return Err(Box::new(std::io::Error::new(std::io::ErrorKind::PermissionDenied, message))
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// One plugin's HTTP client.
#[derive(Clone, Debug)]
pub struct GuardedHttp {
    grant: HttpGrant,
    client: reqwest::Client,
    overrides: Arc<BTreeMap<String, IpAddr>>,
}

fn host_allowed(allow: &[String], url: &reqwest::Url) -> bool {
    let Some(host) = url.host_str() else { return false };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let with_port = url.port_or_known_default().map(|p| format!("{host}:{p}"));
    allow
        .iter()
        .any(|a| a.eq_ignore_ascii_case(host) || with_port.as_deref().is_some_and(|h| a.eq_ignore_ascii_case(h)))
}

impl GuardedHttp {
    /// The client for a grant.
    pub fn new(grant: HttpGrant, overrides: Arc<BTreeMap<String, IpAddr>>) -> Result<Self, String> {
        let allow = grant.allow.clone();
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(GuardedResolver {
                overrides: overrides.clone(),
                allow_private: grant.allow_private,
            }))
            .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() >= 5 {
                    attempt.error("more than 5 redirects")
                } else if host_allowed(&allow, attempt.url()) {
                    attempt.follow()
                } else {
                    let to = attempt.url().host_str().unwrap_or("").to_owned();
                    attempt.error(format!("redirect to {to}, which is not an allowed host"))
                }
            }))
            .timeout(grant.timeout)
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(Self { grant, client, overrides })
    }

    /// Sends a request under the grant. `timeout` is capped by the grant's.
    pub async fn send(
        &self,
        method: &str,
        url: &str,
        headers: &[(String, String)],
        body: Option<Vec<u8>>,
        timeout: Option<Duration>,
    ) -> Result<HttpResponse, HttpFailure> {
        let url = reqwest::Url::parse(url).map_err(|e| HttpFailure::Denied(format!("`{url}` is not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(HttpFailure::Denied(format!("scheme `{}` is not http or https", url.scheme())));
        }
        if !host_allowed(&self.grant.allow, &url) {
            return Err(HttpFailure::Denied(format!("{} is not an allowed host", url.host_str().unwrap_or(""))));
        }
        // An address literal is not resolved, so the guard checks it here.
        if let Some(host) = url.host_str() {
            let literal = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>().ok();
            let ip = literal.or_else(|| self.overrides.get(host).copied());
            if let Some(ip) = ip
                && refused(ip)
                && !self.grant.allow_private
            {
                return Err(HttpFailure::Denied(format!("{ip} is a loopback/private/link-local address")));
            }
        }
        let method = reqwest::Method::from_bytes(method.to_ascii_uppercase().as_bytes())
            .map_err(|_| HttpFailure::Denied(format!("`{method}` is not an HTTP method")))?;
        let mut request = self.client.request(method, url);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        request = request.timeout(timeout.map_or(self.grant.timeout, |t| t.min(self.grant.timeout)));
        let mut response = request.send().await.map_err(classify)?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        let limit = usize::try_from(self.grant.max_body.as_u64()).unwrap_or(usize::MAX);
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(classify)? {
            if body.len() + chunk.len() > limit {
                return Err(HttpFailure::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(HttpResponse { status, headers, body })
    }
}

fn classify(e: reqwest::Error) -> HttpFailure {
    if e.is_timeout() {
        return HttpFailure::Timeout;
    }
    // The guard's refusals surface as connect or redirect errors: find them in the chain.
    let mut source: Option<&dyn std::error::Error> = Some(&e);
    while let Some(err) = source {
        let text = err.to_string();
        if text.contains("loopback/private/link-local") || text.contains("not an allowed host") {
            return HttpFailure::Denied(text);
        }
        source = err.source();
    }
    HttpFailure::Failed(without_url(&e))
}

/// The error without its URL (which may carry a token in its query).
fn without_url(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    if let Some(url) = e.url() {
        text = text.replace(url.as_str(), "<url>");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guard_refuses_internal_ranges() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00:ec2::254",
            "::ffff:127.0.0.1",
            "224.0.0.1",
        ] {
            assert!(refused(ip.parse().expect("ip")), "{ip} must be refused");
        }
        for ip in ["93.184.216.34", "8.8.8.8", "2606:4700::1111"] {
            assert!(!refused(ip.parse().expect("ip")), "{ip} is public");
        }
    }

    #[test]
    fn hosts_match_with_or_without_port() {
        let allow = vec!["tickets.example.com".to_owned(), "10.0.0.5:8443".to_owned()];
        let ok = |u: &str| host_allowed(&allow, &reqwest::Url::parse(u).expect("url"));
        assert!(ok("https://tickets.example.com/x") && ok("http://TICKETS.example.com:9/"));
        assert!(ok("https://10.0.0.5:8443/") && !ok("https://10.0.0.5:8444/"));
        assert!(!ok("https://tickets.example.com.evil.test/") && !ok("https://evil.test/?tickets.example.com"));
    }
}
