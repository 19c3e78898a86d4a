//! Local receivers for notifications: a webhook sink (HTTP POST, keeps the JSON
//! bodies) and a minimal SMTP sink (EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP,
//! QUIT; keeps the messages). Both listen on `127.0.0.1:0` and stamp what they
//! receive with the shared [`Clock`], so `rearguard demo` and tests can show
//! and check what a real receiver would have got.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Router;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use rearguard_clock::{Clock, TimestampMs};

/// One POST the webhook sink received.
#[derive(Clone, Debug)]
pub struct ReceivedWebhook {
    pub at_ms: TimestampMs,
    pub path: String,
    /// The body as JSON (`Value::String` with the raw text when it is not JSON).
    pub body: Value,
}

impl ReceivedWebhook {
    /// `status` of an Alertmanager-format payload (`firing` or `resolved`).
    pub fn status(&self) -> &str {
        self.body
            .get("status")
            .and_then(Value::as_str)
            .unwrap_or("")
    }
}

struct WebhookState {
    clock: Clock,
    received: Mutex<Vec<ReceivedWebhook>>,
}

/// An HTTP server that answers 200 to every POST and keeps the bodies. Stops when dropped.
pub struct WebhookSink {
    state: Arc<WebhookState>,
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl WebhookSink {
    pub async fn start(clock: Clock) -> io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(WebhookState {
            clock,
            received: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .fallback(receive_webhook)
            .with_state(state.clone());
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::warn!(error = %e, "webhook sink stopped");
            }
        });
        Ok(Self { state, addr, task })
    }

    /// `http://127.0.0.1:PORT/hook`.
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    pub fn received(&self) -> Vec<ReceivedWebhook> {
        self.state
            .received
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Drop for WebhookSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn receive_webhook(
    State(state): State<Arc<WebhookState>>,
    uri: axum::http::Uri,
    body: Bytes,
) -> StatusCode {
    let body = serde_json::from_slice(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    let entry = ReceivedWebhook {
        at_ms: state.clock.now_ms(),
        path: uri.path().to_string(),
        body,
    };
    state
        .received
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(entry);
    StatusCode::OK
}

/// One message the SMTP sink accepted.
#[derive(Clone, Debug)]
pub struct ReceivedMail {
    pub at_ms: TimestampMs,
    pub from: String,
    pub to: Vec<String>,
    /// The DATA as received (headers and body, dot-unstuffed, CRLF line ends).
    pub data: String,
}

impl ReceivedMail {
    /// The value of header `name` (case-insensitive; folded lines joined).
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.data.split("\r\n\r\n").next().unwrap_or("");
        let mut value: Option<String> = None;
        for line in head.split("\r\n") {
            if line.starts_with([' ', '\t']) {
                if let Some(v) = value.as_mut() {
                    v.push(' ');
                    v.push_str(line.trim());
                }
                continue;
            }
            if value.is_some() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.trim().eq_ignore_ascii_case(name) {
                    value = Some(v.trim().to_string());
                }
            }
        }
        value
    }

    pub fn subject(&self) -> String {
        self.header("Subject").unwrap_or_default()
    }
}

/// Longest line or message the sink accepts, so a broken client cannot exhaust memory.
const SMTP_MAX_LINE: usize = 64 * 1024;
const SMTP_MAX_MESSAGE: usize = 16 * 1024 * 1024;

struct SmtpState {
    clock: Clock,
    messages: Mutex<Vec<ReceivedMail>>,
}

/// A plain-text SMTP server that accepts every message. Stops when dropped.
pub struct SmtpSink {
    state: Arc<SmtpState>,
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl SmtpSink {
    pub async fn start(clock: Clock) -> io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(SmtpState {
            clock,
            messages: Mutex::new(Vec::new()),
        });
        let accept_state = state.clone();
        let task = tokio::spawn(async move {
            let mut sessions = tokio::task::JoinSet::new();
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        let state = accept_state.clone();
                        sessions.spawn(async move {
                            if let Err(e) = smtp_session(stream, state).await {
                                tracing::debug!(error = %e, "SMTP sink session ended");
                            }
                        });
                    }
                    Err(e) => tracing::debug!(error = %e, "SMTP sink accept failed"),
                }
                while sessions.try_join_next().is_some() {}
            }
        });
        Ok(Self { state, addr, task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `127.0.0.1:PORT`, for `smarthost:`.
    pub fn smarthost(&self) -> String {
        self.addr.to_string()
    }

    pub fn messages(&self) -> Vec<ReceivedMail> {
        self.state
            .messages
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn smtp_session(stream: TcpStream, state: Arc<SmtpState>) -> io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    write
        .write_all(b"220 rearguard-sink ESMTP ready\r\n")
        .await?;
    let mut from: Option<String> = None;
    let mut to: Vec<String> = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if read_line(&mut lines, &mut line).await? == 0 {
            return Ok(());
        }
        let cmd = line.trim_end();
        let upper = cmd.to_ascii_uppercase();
        let reply: &[u8] = if upper.starts_with("EHLO") {
            b"250-rearguard-sink\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n"
        } else if upper.starts_with("HELO") {
            b"250 rearguard-sink\r\n"
        } else if upper.starts_with("MAIL FROM:") {
            from = Some(address(&cmd[10..]));
            to.clear();
            b"250 OK\r\n"
        } else if upper.starts_with("RCPT TO:") {
            if from.is_none() {
                b"503 MAIL first\r\n"
            } else {
                to.push(address(&cmd[8..]));
                b"250 OK\r\n"
            }
        } else if upper == "DATA" {
            if from.is_none() || to.is_empty() {
                b"503 MAIL and RCPT first\r\n"
            } else {
                write
                    .write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                    .await?;
                let data = read_data(&mut lines).await?;
                let mail = ReceivedMail {
                    at_ms: state.clock.now_ms(),
                    from: from.take().unwrap_or_default(),
                    to: std::mem::take(&mut to),
                    data,
                };
                state
                    .messages
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(mail);
                b"250 OK: queued\r\n"
            }
        } else if upper == "RSET" {
            from = None;
            to.clear();
            b"250 OK\r\n"
        } else if upper == "NOOP" {
            b"250 OK\r\n"
        } else if upper == "QUIT" {
            write.write_all(b"221 Bye\r\n").await?;
            return Ok(());
        } else {
            b"502 Command not implemented\r\n"
        };
        write.write_all(reply).await?;
    }
}

/// Reads one line (up to LF), refusing lines longer than [`SMTP_MAX_LINE`].
async fn read_line<R: AsyncBufReadExt + Unpin>(r: &mut R, line: &mut String) -> io::Result<usize> {
    let mut buf = Vec::new();
    let n = AsyncReadExt::take(&mut *r, SMTP_MAX_LINE as u64)
        .read_until(b'\n', &mut buf)
        .await?;
    if n == SMTP_MAX_LINE && !buf.ends_with(b"\n") {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "line too long"));
    }
    line.push_str(&String::from_utf8_lossy(&buf));
    Ok(n)
}

/// Reads DATA up to the lone `.` line, undoing dot-stuffing.
async fn read_data<R: AsyncBufReadExt + Unpin>(r: &mut R) -> io::Result<String> {
    let mut data = String::new();
    let mut line = String::new();
    loop {
        line.clear();
        if read_line(r, &mut line).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed during DATA",
            ));
        }
        let content = line.trim_end_matches(['\r', '\n']);
        if content == "." {
            return Ok(data);
        }
        data.push_str(content.strip_prefix('.').unwrap_or(content));
        data.push_str("\r\n");
        if data.len() > SMTP_MAX_MESSAGE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "message too large",
            ));
        }
    }
}

/// `<a@b> SIZE=12` → `a@b`.
fn address(arg: &str) -> String {
    let arg = arg.trim();
    let inner = match (arg.find('<'), arg.find('>')) {
        (Some(a), Some(b)) if a < b => &arg[a + 1..b],
        _ => arg.split_whitespace().next().unwrap_or(""),
    };
    inner.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn expect<R: AsyncBufReadExt + Unpin>(r: &mut R, code: &str) {
        let mut line = String::new();
        loop {
            line.clear();
            r.read_line(&mut line).await.unwrap();
            assert!(line.starts_with(code), "expected {code}, got {line:?}");
            if line.as_bytes().get(3) != Some(&b'-') {
                break;
            }
        }
    }

    #[tokio::test]
    async fn smtp_sink_keeps_a_message() {
        let sink = SmtpSink::start(Clock::system()).await.unwrap();
        let stream = TcpStream::connect(sink.addr()).await.unwrap();
        let (r, mut w) = stream.into_split();
        let mut r = BufReader::new(r);
        expect(&mut r, "220").await;
        for (cmd, code) in [
            ("EHLO me\r\n", "250"),
            ("MAIL FROM:<a@example.com> SIZE=10\r\n", "250"),
            ("RCPT TO:<b@example.com>\r\n", "250"),
            ("DATA\r\n", "354"),
            ("Subject: hi\r\n\r\n..dot\r\nbody\r\n.\r\n", "250"),
            ("QUIT\r\n", "221"),
        ] {
            w.write_all(cmd.as_bytes()).await.unwrap();
            expect(&mut r, code).await;
        }
        let m = sink.messages();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].from, "a@example.com");
        assert_eq!(m[0].to, vec!["b@example.com".to_string()]);
        assert_eq!(m[0].subject(), "hi");
        assert!(
            m[0].data.contains("\r\n.dot\r\nbody\r\n"),
            "{:?}",
            m[0].data
        );
    }

    #[tokio::test]
    async fn webhook_sink_keeps_json() {
        // reqwest panics without a process-wide rustls provider.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let sink = WebhookSink::start(Clock::system()).await.unwrap();
        let r = reqwest::Client::new()
            .post(sink.url())
            .body(r#"{"status":"firing"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let got = sink.received();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].status(), "firing");
        assert_eq!(got[0].path, "/hook");
    }
}
