//! Shared helpers of the notify integration tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rearguard::alert::Alert;
use rearguard::dispatch::Notification;
use rearguard::labels::Labels;
use rearguard::notify::NotifierConfig;

/// Loads `yaml` as a config file in `dir` and returns the notifier's part.
pub fn notifier_config(dir: &Path, yaml: &str) -> NotifierConfig {
    let path = dir.join("rearguard.yaml");
    std::fs::write(&path, yaml).unwrap();
    let loaded = rearguard::config::load(&path).unwrap_or_else(|e| panic!("config: {e}"));
    NotifierConfig::from_loaded(&loaded)
}

pub fn alert(
    name: &str,
    extra: &[(&str, &str)],
    starts_at_ms: i64,
    ends_at_ms: Option<i64>,
    value: f64,
) -> Alert {
    let mut labels: Vec<(&str, &str)> =
        vec![("alertname", name), ("service", "netra-backend-staging")];
    labels.extend_from_slice(extra);
    Alert {
        labels: Labels::from_pairs(labels),
        annotations: BTreeMap::from([
            ("summary".to_string(), format!("{name} summary")),
            (
                "description".to_string(),
                format!("{name} description, value {value}"),
            ),
        ]),
        active_at_ms: starts_at_ms - 60_000,
        starts_at_ms,
        ends_at_ms,
        value,
        generator_url: format!("http://rearguard.test/rules#{name}"),
    }
}

pub fn notification(receiver: &str, alerts: Vec<Alert>, created_at_ms: i64) -> Notification {
    Notification {
        receiver: receiver.to_string(),
        group_key: "{}:{service=\"netra-backend-staging\"}".to_string(),
        group_labels: Labels::from_pairs([("service", "netra-backend-staging")]),
        alerts,
        created_at_ms,
    }
}

/// Polls `f` every 10 ms (real time) until it is true or `secs` pass.
pub async fn eventually(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    f()
}

/// Headers and body of a request the receiver got.
pub type Request = (http::HeaderMap, Vec<u8>);

/// A webhook receiver (axum) that records every request, answering with the
/// status codes in `answers` in turn (200 once they run out).
#[derive(Clone, Default)]
pub struct WebhookReceiver {
    pub requests: Arc<Mutex<Vec<Request>>>,
    pub answers: Arc<Mutex<Vec<u16>>>,
}

impl WebhookReceiver {
    pub async fn serve_on(self, listener: tokio::net::TcpListener) {
        use axum::routing::post;
        let app = axum::Router::new()
            .route(
                "/hook",
                post(
                    |axum::extract::State(s): axum::extract::State<WebhookReceiver>,
                     headers: http::HeaderMap,
                     body: axum::body::Bytes| async move {
                        s.requests.lock().unwrap().push((headers, body.to_vec()));
                        let mut answers = s.answers.lock().unwrap();
                        let code = if answers.is_empty() {
                            200
                        } else {
                            answers.remove(0)
                        };
                        http::StatusCode::from_u16(code).unwrap()
                    },
                ),
            )
            .with_state(self);
        axum::serve(listener, app).await.unwrap();
    }

    pub async fn start(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(self.clone().serve_on(listener));
        format!("http://{addr}/hook")
    }

    pub fn count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }
}

/// An in-process SMTP server (mailin-embedded) that keeps every message.
#[derive(Clone, Default)]
pub struct SmtpSink {
    pub messages: Arc<Mutex<Vec<ReceivedMail>>>,
    current: Vec<u8>,
    from: String,
    to: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct ReceivedMail {
    pub from: String,
    pub to: Vec<String>,
    pub raw: Vec<u8>,
}

impl mailin_embedded::Handler for SmtpSink {
    fn data_start(
        &mut self,
        _domain: &str,
        from: &str,
        _is8bit: bool,
        to: &[String],
    ) -> mailin_embedded::Response {
        self.current.clear();
        self.from = from.to_string();
        self.to = to.to_vec();
        mailin_embedded::response::OK
    }
    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.current.extend_from_slice(buf);
        Ok(())
    }
    fn data_end(&mut self) -> mailin_embedded::Response {
        self.messages.lock().unwrap().push(ReceivedMail {
            from: self.from.clone(),
            to: self.to.clone(),
            raw: std::mem::take(&mut self.current),
        });
        mailin_embedded::response::OK
    }
}

impl SmtpSink {
    /// Serves SMTP (no TLS) on `listener` in a background thread.
    pub fn serve(&self, listener: std::net::TcpListener) {
        let mut server = mailin_embedded::Server::new(self.clone());
        server
            .with_name("smtp.test")
            .with_num_threads(2)
            .with_tcp_listener(listener);
        std::thread::spawn(move || {
            let _ = server.serve();
        });
    }

    pub fn count(&self) -> usize {
        self.messages.lock().unwrap().len()
    }
}

/// A parsed MIME message: top-level headers and the decoded text/plain and text/html parts.
#[derive(Debug, Default)]
pub struct ParsedMail {
    pub headers: Vec<(String, String)>,
    pub text: String,
    pub html: String,
}

impl ParsedMail {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn split_headers(raw: &str) -> (Vec<(String, String)>, &str) {
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((raw, ""));
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in head.split("\r\n") {
        if line.starts_with([' ', '\t']) {
            if let Some(last) = headers.last_mut() {
                last.1.push(' ');
                last.1.push_str(line.trim());
            }
        } else if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    (headers, body)
}

fn decode_qp(s: &str) -> String {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'=' {
            if b.get(i + 1) == Some(&b'\r') && b.get(i + 2) == Some(&b'\n') {
                i += 3;
                continue;
            }
            if let Ok(v) =
                u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16)
            {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn decode_body(headers: &[(String, String)], body: &str) -> String {
    let enc = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("Content-Transfer-Encoding"))
        .map(|(_, v)| v.to_ascii_lowercase())
        .unwrap_or_default();
    match enc.as_str() {
        "quoted-printable" => decode_qp(body),
        "base64" => {
            use base64::Engine;
            let compact: String = body.split_whitespace().collect();
            String::from_utf8_lossy(
                &base64::engine::general_purpose::STANDARD
                    .decode(compact)
                    .unwrap(),
            )
            .into_owned()
        }
        _ => body.to_string(),
    }
}

/// Decodes an RFC 2047 encoded-word subject (lettre encodes non-ASCII ones).
pub fn decode_subject(s: &str) -> String {
    if let Some(rest) = s
        .strip_prefix("=?utf-8?b?")
        .or_else(|| s.strip_prefix("=?UTF-8?B?"))
    {
        use base64::Engine;
        let parts: Vec<&str> = rest.split("?= =?utf-8?b?").collect();
        let joined: String = parts
            .iter()
            .map(|p| p.trim_end_matches("?="))
            .collect::<Vec<_>>()
            .concat();
        return String::from_utf8_lossy(
            &base64::engine::general_purpose::STANDARD
                .decode(joined)
                .unwrap_or_default(),
        )
        .into_owned();
    }
    s.to_string()
}

pub fn parse_mail(raw: &[u8]) -> ParsedMail {
    let raw = String::from_utf8_lossy(raw).into_owned();
    let (headers, body) = split_headers(&raw);
    let ctype = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("Content-Type"))
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let boundary = ctype
        .split(';')
        .filter_map(|p| p.trim().strip_prefix("boundary="))
        .next()
        .map(|b| b.trim_matches('"').to_string())
        .expect("multipart message with a boundary");
    let mut mail = ParsedMail {
        headers,
        ..Default::default()
    };
    for part in body.split(&format!("--{boundary}")) {
        let part = part.trim_start_matches("\r\n");
        if part.starts_with("--") || part.trim().is_empty() {
            continue;
        }
        let (ph, pb) = split_headers(part);
        let pct = ph
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("Content-Type"))
            .map(|(_, v)| v.to_ascii_lowercase())
            .unwrap_or_default();
        let decoded = decode_body(&ph, pb.trim_end_matches("\r\n"));
        if pct.starts_with("text/plain") {
            mail.text = decoded;
        } else if pct.starts_with("text/html") {
            mail.html = decoded;
        }
    }
    mail
}
