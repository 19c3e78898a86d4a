//! One probe run: the HTTP request, the expectations, and why it failed.

use std::fmt;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_LENGTH};
use reqwest::Method;
use serde::Serialize;
use tokio::time::Instant;

use crate::clock::{Clock, TimestampMs};
use crate::config::probe::ProbeConfig;
use crate::labels::Labels;

/// At most this much of a response body is read; the expectations see only this part.
pub const MAX_BODY_BYTES: usize = 4 << 20;

/// Why a probe failed, as exported in `probe_failure_info{reason}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FailureReason {
    /// No complete answer within `timeout`.
    Timeout,
    /// The connection could not be made or broke (refused, DNS, reset).
    Connect,
    /// The status code is not one of `expect.status`.
    Status,
    /// The body does not match `body_contains`, `body_regex` or `json`.
    Body,
    /// The answer came, but later than `max_duration`.
    Latency,
    /// The TLS handshake failed, or the certificate expires sooner than `cert_min_days`.
    Tls,
}

impl FailureReason {
    pub const ALL: [FailureReason; 6] = [
        FailureReason::Timeout,
        FailureReason::Connect,
        FailureReason::Status,
        FailureReason::Body,
        FailureReason::Latency,
        FailureReason::Tls,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::Timeout => "timeout",
            FailureReason::Connect => "connect",
            FailureReason::Status => "status",
            FailureReason::Body => "body",
            FailureReason::Latency => "latency",
            FailureReason::Tls => "tls",
        }
    }
}

impl fmt::Display for FailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome of one probe run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ProbeResult {
    pub probe: String,
    /// Wall time at which the run started.
    pub at_ms: TimestampMs,
    pub success: bool,
    pub reason: Option<FailureReason>,
    /// The final response's status code (after redirects), if a response came.
    pub status_code: Option<u16>,
    #[serde(serialize_with = "serialize_secs")]
    pub duration: Duration,
    /// The Content-Length header, or the number of body bytes read when it is absent.
    pub content_length: Option<u64>,
    /// notAfter of the peer's leaf certificate, in Unix seconds (https only).
    pub cert_not_after: Option<i64>,
    /// A human explanation of the failure, for logs and the API.
    pub error: Option<String>,
}

fn serialize_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// A probe config turned into what a run needs, checked once.
#[derive(Debug)]
pub struct CompiledProbe {
    pub config: ProbeConfig,
    pub url: reqwest::Url,
    pub method: Method,
    pub headers: HeaderMap,
    pub body_regex: Option<regex::Regex>,
    /// `probe`, `instance` and the configured labels (no metric name).
    pub labels: Labels,
    /// The label sets of this probe's series, built once.
    pub series: super::export::SeriesLabels,
    pub https: bool,
}

impl CompiledProbe {
    /// Compiles a config. The config was validated at load, so errors here are
    /// unexpected; they are reported rather than panicking.
    pub fn new(config: ProbeConfig) -> Result<Self, String> {
        let url = reqwest::Url::parse(&config.url)
            .map_err(|e| format!("invalid url {:?}: {e}", config.url))?;
        let method = Method::from_bytes(config.method.as_bytes())
            .map_err(|_| format!("invalid HTTP method {:?}", config.method))?;
        let mut headers = HeaderMap::new();
        for (name, value) in &config.headers {
            let n = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("invalid header name {name:?}"))?;
            let v = HeaderValue::from_str(value)
                .map_err(|_| format!("invalid value for header {name:?}"))?;
            headers.append(n, v);
        }
        let body_regex = match &config.expect.body_regex {
            Some(re) => {
                Some(regex::Regex::new(re).map_err(|e| format!("invalid body_regex: {e}"))?)
            }
            None => None,
        };
        let mut b = Labels::from_map(&config.labels).builder();
        b.insert("probe", &config.name);
        b.insert("instance", &config.url);
        let https = url.scheme() == "https";
        let labels = b.build();
        Ok(Self {
            url,
            method,
            headers,
            body_regex,
            series: super::export::SeriesLabels::new(&labels),
            labels,
            https,
            config,
        })
    }

    fn needs_body(&self) -> bool {
        let e = &self.config.expect;
        e.body_contains.is_some() || self.body_regex.is_some() || !e.json.is_empty()
    }
}

/// Runs the probe once. Never takes longer than the probe's timeout (plus scheduling).
pub async fn execute(
    client: &reqwest::Client,
    probe: &CompiledProbe,
    clock: &Clock,
) -> ProbeResult {
    let at_ms = clock.now_ms();
    let started = Instant::now();
    let mut result = ProbeResult {
        probe: probe.config.name.clone(),
        at_ms,
        success: false,
        reason: None,
        status_code: None,
        duration: Duration::ZERO,
        content_length: None,
        cert_not_after: None,
        error: None,
    };
    let outcome = tokio::time::timeout(
        probe.config.timeout().0,
        request(client, probe, &mut result),
    )
    .await;
    result.duration = started.elapsed();
    let failure = match outcome {
        Err(_) => Some((
            FailureReason::Timeout,
            format!("no complete answer within {}", probe.config.timeout()),
        )),
        Ok(Err(f)) => Some(f),
        Ok(Ok(body)) => judge(probe, &result, &body, clock),
    };
    match failure {
        Some((reason, error)) => {
            result.reason = Some(reason);
            result.error = Some(error);
        }
        None => result.success = true,
    }
    result
}

type Failure = (FailureReason, String);

/// Sends the request and reads the body; fills in what it learns on the way
/// (so a timeout in the body still reports the status code).
async fn request(
    client: &reqwest::Client,
    probe: &CompiledProbe,
    out: &mut ProbeResult,
) -> Result<Vec<u8>, Failure> {
    let mut req = client
        .request(probe.method.clone(), probe.url.clone())
        .headers(probe.headers.clone());
    if let Some(body) = &probe.config.body {
        req = req.body(body.clone());
    }
    let mut resp = req.send().await.map_err(classify)?;
    out.status_code = Some(resp.status().as_u16());
    if probe.https {
        out.cert_not_after = resp
            .extensions()
            .get::<reqwest::tls::TlsInfo>()
            .and_then(|info| info.peer_certificate())
            .and_then(cert_not_after);
    }
    let header_len = resp
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let keep = probe.needs_body();
    let mut body = Vec::new();
    let mut read: u64 = 0;
    while let Some(chunk) = resp.chunk().await.map_err(classify)? {
        read += chunk.len() as u64;
        if keep {
            let room = MAX_BODY_BYTES.saturating_sub(body.len());
            body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        }
        if read >= MAX_BODY_BYTES as u64 {
            break;
        }
    }
    out.content_length = Some(header_len.unwrap_or(read));
    Ok(body)
}

/// Checks the expectations, in order of what a person would want to hear first.
fn judge(probe: &CompiledProbe, r: &ProbeResult, body: &[u8], clock: &Clock) -> Option<Failure> {
    let expect = &probe.config.expect;
    let code = r.status_code.unwrap_or(0);
    if !expect.status_ok(code) {
        let wanted = if expect.status.is_empty() {
            "2xx".to_string()
        } else {
            format!("{:?}", expect.status)
        };
        return Some((
            FailureReason::Status,
            format!("status {code}, expected {wanted}"),
        ));
    }
    if let Some(failure) = check_body(probe, body) {
        return Some((FailureReason::Body, failure));
    }
    if let Some(min_days) = expect.cert_min_days {
        match r.cert_not_after {
            Some(not_after) => {
                let left_secs = not_after - clock.now_ms() / 1000;
                if left_secs < i64::from(min_days) * 86_400 {
                    return Some((
                        FailureReason::Tls,
                        format!(
                            "certificate expires in {:.1} days, sooner than cert_min_days {min_days}",
                            left_secs as f64 / 86_400.0
                        ),
                    ));
                }
            }
            None => return Some((
                FailureReason::Tls,
                "cert_min_days is set but the server presented no certificate (is the url https?)"
                    .into(),
            )),
        }
    }
    if let Some(max) = expect.max_duration {
        if r.duration > max.0 {
            return Some((
                FailureReason::Latency,
                format!(
                    "answered in {:.3}s, more than max_duration {max}",
                    r.duration.as_secs_f64()
                ),
            ));
        }
    }
    None
}

fn check_body(probe: &CompiledProbe, body: &[u8]) -> Option<String> {
    let expect = &probe.config.expect;
    if !probe.needs_body() {
        return None;
    }
    let text = String::from_utf8_lossy(body);
    if let Some(needle) = &expect.body_contains {
        if !text.contains(needle.as_str()) {
            return Some(format!("body does not contain {needle:?}"));
        }
    }
    if let Some(re) = &probe.body_regex {
        if !re.is_match(&text) {
            return Some(format!("body does not match /{}/", re.as_str()));
        }
    }
    if !expect.json.is_empty() {
        let doc: serde_json::Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => return Some(format!("body is not JSON: {e}")),
        };
        for (pointer, wanted) in &expect.json {
            match doc.pointer(pointer) {
                Some(found) if found == wanted => {}
                Some(found) => {
                    return Some(format!("JSON {pointer} is {found}, expected {wanted}"))
                }
                None => return Some(format!("JSON {pointer} is missing, expected {wanted}")),
            }
        }
    }
    None
}

/// Sorts a request error into a failure reason.
fn classify(e: reqwest::Error) -> Failure {
    let reason = if e.is_timeout() {
        FailureReason::Timeout
    } else if is_tls_error(&e) {
        FailureReason::Tls
    } else {
        FailureReason::Connect
    };
    (reason, error_chain(&e))
}

fn is_tls_error(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err.downcast_ref::<rustls::Error>().is_some() {
            return true;
        }
        // hyper-util wraps the handshake's io::Error in another io::Error, and
        // io::Error::source() skips the wrapped error itself: unwrap by hand.
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if let Some(inner) = io.get_ref() {
                cur = Some(inner as &(dyn std::error::Error + 'static));
                continue;
            }
        }
        cur = err.source();
    }
    false
}

/// "error sending request: connection refused": the whole chain, which reqwest's
/// Display alone does not show.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(err) = cur {
        let msg = err.to_string();
        if !s.contains(&msg) {
            s.push_str(": ");
            s.push_str(&msg);
        }
        cur = err.source();
    }
    s
}

/// notAfter of a DER certificate, in Unix seconds.
pub fn cert_not_after(der: &[u8]) -> Option<i64> {
    x509_parser::parse_x509_certificate(der)
        .ok()
        .map(|(_, cert)| cert.validity().not_after.timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(yaml: &str) -> CompiledProbe {
        let cfg: ProbeConfig = serde_yaml_ng::from_str(yaml).unwrap();
        CompiledProbe::new(cfg).unwrap()
    }

    #[test]
    fn labels_carry_probe_instance_and_configured_labels() {
        let p = probe("{name: a, url: 'http://x/h', labels: {service: s}}");
        assert_eq!(
            p.labels.to_string(),
            r#"{instance="http://x/h", probe="a", service="s"}"#
        );
        assert!(!p.https);
        assert!(probe("{name: a, url: 'HTTPS://x/h'}").https);
    }

    #[test]
    fn body_checks() {
        let p = probe(
            r#"{name: a, url: 'http://x', expect: {body_contains: ok, body_regex: 'v\d+', json: {"/s": "ok", "/n/0": 3}}}"#,
        );
        assert_eq!(check_body(&p, br#"{"s":"ok","n":[3],"v":"v1"}"#), None);
        assert!(check_body(&p, br#"{"s":"no","n":[3],"v":"v1 ok"}"#)
            .unwrap()
            .contains("/s is \"no\""));
        assert!(check_body(&p, br#"{"s":"ok","n":[],"v":"v1"}"#)
            .unwrap()
            .contains("/n/0 is missing"));
        assert!(check_body(&p, b"ok v1 not json")
            .unwrap()
            .contains("not JSON"));
        assert!(check_body(&p, b"v1").unwrap().contains("does not contain"));
        assert!(check_body(&p, b"ok").unwrap().contains("does not match"));
    }

    #[test]
    fn expectations_in_order() {
        let clock = Clock::starting_at(1_000_000_000_000);
        let p = probe("{name: a, url: 'https://x', expect: {status: [200], max_duration: 1s, cert_min_days: 10}}");
        let mut r = ProbeResult {
            probe: "a".into(),
            at_ms: 0,
            success: false,
            reason: None,
            status_code: Some(200),
            duration: Duration::from_millis(500),
            content_length: None,
            cert_not_after: Some(1_000_000_000 + 11 * 86_400),
            error: None,
        };
        assert_eq!(judge(&p, &r, b"", &clock), None);
        r.duration = Duration::from_secs(2);
        assert_eq!(
            judge(&p, &r, b"", &clock).unwrap().0,
            FailureReason::Latency
        );
        r.cert_not_after = Some(1_000_000_000 + 9 * 86_400);
        assert_eq!(judge(&p, &r, b"", &clock).unwrap().0, FailureReason::Tls);
        r.status_code = Some(204);
        assert_eq!(judge(&p, &r, b"", &clock).unwrap().0, FailureReason::Status);
    }
}
