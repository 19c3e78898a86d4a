//! Email: rendering (default subject, text and HTML bodies, or custom
//! templates) and SMTP delivery with lettre (STARTTLS, implicit TLS on 465,
//! plain only with `require_tls: false`).

use std::fmt::Write as _;
use std::time::Duration;

use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Identity, Tls, TlsParameters, TlsVersion};
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::alert::AlertStatus;
use crate::config::receivers::{EmailConfig, TlsFiles};
use crate::config::Secret;
use crate::notify::evidence::{self, AlertEvidence, EvidenceSource};
use crate::notify::payload::{alert_link, rfc3339, template_data, StoredAlert, StoredNotification};
use crate::notify::DeliveryError;
use crate::template::{html_escape, Funcs, Template, Value as TemplateValue};

/// How long one SMTP conversation may take.
pub const SMTP_TIMEOUT: Duration = Duration::from_secs(30);

/// A rendered email.
#[derive(Clone, Debug, PartialEq)]
pub struct RenderedEmail {
    pub subject: String,
    pub text: String,
    pub html: String,
    /// Extra headers from the config (rendered), `Subject` excluded.
    pub headers: Vec<(String, String)>,
}

/// Alertmanager's default subject: `[FIRING:2] <group label values> (<other common label values>)`.
pub fn default_subject(n: &StoredNotification) -> String {
    let status = match n.status() {
        AlertStatus::Firing => format!("FIRING:{}", n.firing().count()),
        AlertStatus::Resolved => "RESOLVED".to_string(),
    };
    let mut s = format!("[{status}]");
    for v in n.group_labels.values() {
        s.push(' ');
        s.push_str(v);
    }
    let common = n.common_labels();
    let extra: Vec<&str> = common
        .iter()
        .filter(|(k, _)| !n.group_labels.contains_key(*k))
        .map(|(_, v)| v.as_str())
        .collect();
    if !extra.is_empty() {
        let _ = write!(s, " ({})", extra.join(" "));
    }
    s
}

/// "3m20s", "2h5m", "1d4h": how long an alert has been in its state.
pub fn humanize_duration(ms: i64) -> String {
    let secs = (ms.max(0) / 1000) as u64;
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m{s}s"),
        (0, _, _) => format!("{h}h{m}m"),
        _ => format!("{d}d{h}h"),
    }
}

struct AlertView<'a> {
    a: &'a StoredAlert,
    firing: bool,
    evidence: AlertEvidence,
    link: String,
}

fn views<'a>(
    n: &'a StoredNotification,
    ev: &dyn EvidenceSource,
    external_url: &str,
) -> Vec<AlertView<'a>> {
    // Firing first, then resolved, each in the order dispatch gave them.
    let mut out: Vec<AlertView> = n
        .alerts
        .iter()
        .map(|a| AlertView {
            a,
            firing: a.status_at(n.created_at_ms) == AlertStatus::Firing,
            evidence: evidence::gather(ev, a),
            link: alert_link(external_url, a),
        })
        .collect();
    out.sort_by_key(|v| !v.firing);
    out
}

fn label<'a>(a: &'a StoredAlert, k: &str) -> &'a str {
    a.labels.get(k).map(String::as_str).unwrap_or("-")
}

fn probe_line(p: &str, st: &evidence::ProbeEvidence) -> String {
    let mut s = format!("probe {p}: {}", if st.up { "UP" } else { "DOWN" });
    if let Some(c) = st.status_code {
        let _ = write!(s, ", HTTP {c}");
    }
    if let Some(r) = &st.reason {
        let _ = write!(s, ", reason: {r}");
    }
    if let Some(t) = st.since_ms {
        let _ = write!(s, ", since {}", rfc3339(t));
    }
    s
}

fn default_text(n: &StoredNotification, views: &[AlertView], subject: &str) -> String {
    let firing = views.iter().filter(|v| v.firing).count();
    let mut t = String::new();
    let _ = writeln!(t, "{subject}\n");
    let _ = writeln!(
        t,
        "{firing} firing, {} resolved (receiver {}, group {})\n",
        views.len() - firing,
        n.receiver,
        n.group_key
    );
    for v in views {
        let a = v.a;
        let _ = writeln!(
            t,
            "== {} {} ==",
            if v.firing { "FIRING" } else { "RESOLVED" },
            a.name()
        );
        let _ = writeln!(t, "Severity:    {}", label(a, "severity"));
        let _ = writeln!(t, "Service:     {}", label(a, "service"));
        if v.firing {
            let _ = writeln!(t, "Value:       {}", a.value);
            let _ = writeln!(
                t,
                "Since:       {} (firing for {})",
                rfc3339(a.starts_at_ms),
                humanize_duration(n.created_at_ms - a.starts_at_ms)
            );
        } else {
            let end = a.ends_at_ms.unwrap_or(n.created_at_ms);
            let _ = writeln!(t, "Value at resolution: {}", a.value);
            let _ = writeln!(
                t,
                "Fired:       {} until {} ({})",
                rfc3339(a.starts_at_ms),
                rfc3339(end),
                humanize_duration(end - a.starts_at_ms)
            );
        }
        if let Some(s) = a.annotations.get("summary") {
            let _ = writeln!(t, "Summary:     {s}");
        }
        if let Some(s) = a.annotations.get("description") {
            let _ = writeln!(t, "Description: {s}");
        }
        let labels: Vec<String> = a.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = writeln!(t, "Labels:      {}", labels.join(", "));
        let _ = writeln!(t, "Alert:       {}", v.link);
        if !a.generator_url.is_empty() {
            let _ = writeln!(t, "Rule:        {}", a.generator_url);
        }
        if let (Some(p), Some(st)) = (&v.evidence.probe, &v.evidence.probe_status) {
            let _ = writeln!(t, "Evidence:    {}", probe_line(p, st));
        }
        if let Some(q) = &v.evidence.log_query {
            if v.evidence.logs.is_empty() {
                let _ = writeln!(t, "Logs ({q}): no recent entries");
            } else {
                let _ = writeln!(t, "Last log entries of {q}:");
                for e in &v.evidence.logs {
                    let _ = writeln!(
                        t,
                        "  {} {} {}",
                        rfc3339(e.timestamp_ms),
                        e.severity,
                        e.message
                    );
                }
            }
        }
        t.push('\n');
    }
    t
}

fn default_html(n: &StoredNotification, views: &[AlertView], subject: &str) -> String {
    let e = html_escape;
    let firing = views.iter().filter(|v| v.firing).count();
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{}</title></head>\n<body style=\"font-family: sans-serif\">\n<h2>{}</h2>\n<p>{firing} firing, {} resolved (receiver {}, group <code>{}</code>)</p>\n",
        e(subject),
        e(subject),
        views.len() - firing,
        e(&n.receiver),
        e(&n.group_key)
    );
    for v in views {
        let a = v.a;
        let color = if v.firing { "#c0392b" } else { "#27ae60" };
        let _ = write!(
            h,
            "<h3 style=\"color: {color}\">{} {}</h3>\n<table border=\"0\" cellpadding=\"3\">\n",
            if v.firing { "FIRING" } else { "RESOLVED" },
            e(a.name())
        );
        let mut row = |k: &str, val: String| {
            let _ = writeln!(
                h,
                "<tr><th align=\"left\">{}</th><td>{}</td></tr>",
                e(k),
                val
            );
        };
        row("Severity", e(label(a, "severity")));
        row("Service", e(label(a, "service")));
        if v.firing {
            row("Value", e(&a.value));
            row(
                "Since",
                e(&format!(
                    "{} (firing for {})",
                    rfc3339(a.starts_at_ms),
                    humanize_duration(n.created_at_ms - a.starts_at_ms)
                )),
            );
        } else {
            let end = a.ends_at_ms.unwrap_or(n.created_at_ms);
            row("Value at resolution", e(&a.value));
            row(
                "Fired",
                e(&format!(
                    "{} until {}",
                    rfc3339(a.starts_at_ms),
                    rfc3339(end)
                )),
            );
        }
        if let Some(s) = a.annotations.get("summary") {
            row("Summary", e(s));
        }
        if let Some(s) = a.annotations.get("description") {
            row("Description", e(s));
        }
        let labels: Vec<String> = a.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        row("Labels", e(&labels.join(", ")));
        row(
            "Alert",
            format!("<a href=\"{}\">{}</a>", e(&v.link), e(&v.link)),
        );
        if !a.generator_url.is_empty() {
            row(
                "Rule",
                format!("<a href=\"{}\">source</a>", e(&a.generator_url)),
            );
        }
        if let (Some(p), Some(st)) = (&v.evidence.probe, &v.evidence.probe_status) {
            row("Evidence", e(&probe_line(p, st)));
        }
        h.push_str("</table>\n");
        if let Some(q) = &v.evidence.log_query {
            let _ = writeln!(
                h,
                "<p>Last log entries of <code>{}</code>:</p>\n<pre>",
                e(q)
            );
            if v.evidence.logs.is_empty() {
                h.push_str("(no recent entries)\n");
            }
            for l in &v.evidence.logs {
                let _ = writeln!(
                    h,
                    "{} {} {}",
                    e(&rfc3339(l.timestamp_ms)),
                    e(&l.severity),
                    e(&l.message)
                );
            }
            h.push_str("</pre>\n");
        }
    }
    h.push_str("</body></html>\n");
    h
}

/// Renders the email of a notification with the config's templates or the defaults.
pub fn render(
    cfg: &EmailConfig,
    n: &StoredNotification,
    ev: &dyn EvidenceSource,
    external_url: &str,
) -> RenderedEmail {
    let views = views(n, ev, external_url);
    let data = TemplateValue::from(&template_data(n, external_url));
    let funcs = Funcs {
        query: None,
        external_url: external_url.to_string(),
    };
    // Templates are parsed at config load; one that fails while running
    // (say, a function given the wrong type) falls back to the default.
    let render_tpl = |src: &str, html: bool| {
        let t = Template::parse("email", src, &[]).ok()?;
        let out = if html {
            t.execute_html(data.clone(), Vec::new(), &funcs)
        } else {
            t.execute(data.clone(), Vec::new(), &funcs)
        };
        out.map_err(|e| tracing::warn!(receiver = %n.receiver, error = %e, "email template failed; using the default"))
            .ok()
    };
    let mut subject = default_subject(n);
    let mut headers = Vec::new();
    for (k, v) in &cfg.headers {
        let value = render_tpl(v, false).unwrap_or_else(|| v.clone());
        if k.eq_ignore_ascii_case("subject") {
            subject = value;
        } else {
            headers.push((k.clone(), value));
        }
    }
    let text = cfg
        .text
        .as_deref()
        .and_then(|t| render_tpl(t, false))
        .unwrap_or_else(|| default_text(n, &views, &subject));
    let html = cfg
        .html
        .as_deref()
        .and_then(|t| render_tpl(t, true))
        .unwrap_or_else(|| default_html(n, &views, &subject));
    RenderedEmail {
        subject,
        text,
        html,
        headers,
    }
}

fn invalid(msg: String) -> DeliveryError {
    DeliveryError::permanent(msg)
}

/// Builds the MIME message (multipart/alternative: text, then HTML).
/// Builds the message. `delivery_id` (the outbox row's deterministic id and
/// the integration's index) makes the Message-ID: a resend after a crash
/// carries the same one, so mail clients can show it once.
pub fn build_message(
    cfg: &EmailConfig,
    mail: &RenderedEmail,
    now_ms: i64,
    delivery_id: &str,
) -> Result<Message, DeliveryError> {
    let from: Mailbox = cfg
        .from
        .parse()
        .map_err(|e| invalid(format!("invalid from address: {e}")))?;
    let message_id = format!("<{delivery_id}@{}>", from.email.domain());
    let mut b = Message::builder().from(from).subject(mail.subject.clone());
    if !mail
        .headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("message-id"))
    {
        b = b.message_id(Some(message_id));
    }
    for addr in cfg.to.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let to: Mailbox = addr
            .parse()
            .map_err(|e| invalid(format!("invalid to address {addr:?}: {e}")))?;
        b = b.to(to);
    }
    b = b.date(std::time::UNIX_EPOCH + Duration::from_millis(now_ms.max(0) as u64));
    for (k, v) in &mail.headers {
        let name = HeaderName::new_from_ascii(k.clone())
            .map_err(|_| invalid(format!("invalid header name {k:?}")))?;
        b = b.raw_header(HeaderValue::new(name, v.clone()));
    }
    b.multipart(
        MultiPart::alternative()
            .singlepart(SinglePart::plain(mail.text.clone()))
            .singlepart(SinglePart::html(mail.html.clone())),
    )
    .map_err(|e| invalid(format!("cannot build email: {e}")))
}

fn tls_parameters(
    cfg: &EmailConfig,
    host: &str,
    files: Option<&TlsFiles>,
) -> Result<TlsParameters, DeliveryError> {
    let tls = cfg.tls_config.clone().unwrap_or_default();
    let domain = tls.server_name.clone().unwrap_or_else(|| host.to_string());
    let mut b = TlsParameters::builder(domain)
        .dangerous_accept_invalid_certs(tls.insecure_skip_verify)
        .dangerous_accept_invalid_hostnames(tls.insecure_skip_verify);
    if tls.min_version.as_deref() == Some("TLS13") {
        b = b.set_min_tls_version(TlsVersion::Tlsv13);
    }
    if let Some(f) = files {
        if let Some(ca) = &f.ca_pem {
            let cert = Certificate::from_pem(ca)
                .map_err(|e| invalid(format!("tls_config.ca_file: {e}")))?;
            b = b.add_root_certificate(cert);
        }
        if let (Some(c), Some(k)) = (&f.cert_pem, &f.key_pem) {
            let id = Identity::from_pem(c, k.expose().as_bytes())
                .map_err(|e| invalid(format!("tls_config cert_file/key_file: {e}")))?;
            b = b.identify_with(id);
        }
    }
    b.build_rustls()
        .map_err(|e| invalid(format!("TLS setup failed: {e}")))
}

/// Builds the SMTP transport for a config: port 465 → implicit TLS;
/// `require_tls` (default) → STARTTLS required; else plain.
pub fn transport(
    cfg: &EmailConfig,
    password: Option<&Secret>,
    tls_files: Option<&TlsFiles>,
) -> Result<AsyncSmtpTransport<Tokio1Executor>, DeliveryError> {
    crate::tls::ensure_crypto_provider();
    let (host, port) = cfg
        .host_port()
        .ok_or_else(|| invalid(format!("smarthost {:?} is not host:port", cfg.smarthost)))?;
    let tls = if port == 465 {
        Tls::Wrapper(tls_parameters(cfg, &host, tls_files)?)
    } else if cfg.require_tls() {
        Tls::Required(tls_parameters(cfg, &host, tls_files)?)
    } else {
        Tls::None
    };
    let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
        .port(port)
        .tls(tls)
        .timeout(Some(SMTP_TIMEOUT));
    if let Some(h) = &cfg.hello {
        b = b.hello_name(ClientId::Domain(h.clone()));
    }
    if let (Some(user), Some(pw)) = (&cfg.auth_username, password) {
        b = b.credentials(Credentials::new(user.clone(), pw.expose().to_string()));
    }
    Ok(b.build())
}

/// Sends one message. SMTP 5xx answers are permanent; everything else
/// (refused connections, timeouts, 4xx) is worth retrying.
pub async fn send(
    transport: &AsyncSmtpTransport<Tokio1Executor>,
    message: Message,
) -> Result<(), DeliveryError> {
    match transport.send(message).await {
        Ok(_) => Ok(()),
        Err(e) if e.is_permanent() => Err(DeliveryError::permanent(format!(
            "SMTP server refused the message: {e}"
        ))),
        Err(e) => Err(DeliveryError::transient(format!(
            "SMTP delivery failed: {e}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_like_alertmanager() {
        let mk = |name: &str, ends: Option<i64>| StoredAlert {
            labels: [
                ("alertname", name),
                ("service", "api"),
                ("severity", "critical"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            annotations: Default::default(),
            active_at_ms: 0,
            starts_at_ms: 0,
            ends_at_ms: ends,
            value: "1".into(),
            generator_url: String::new(),
        };
        let mut n = StoredNotification {
            receiver: "r".into(),
            group_key: "g".into(),
            group_labels: [("alertname".to_string(), "HighErrors".to_string())].into(),
            alerts: vec![mk("HighErrors", None), mk("HighErrors", Some(5))],
            created_at_ms: 10,
        };
        assert_eq!(default_subject(&n), "[FIRING:1] HighErrors (api critical)");
        n.alerts.remove(0);
        assert_eq!(default_subject(&n), "[RESOLVED] HighErrors (api critical)");
        assert_eq!(humanize_duration(200_000), "3m20s");
        assert_eq!(humanize_duration(7_500_000), "2h5m");
    }
}
