//! `receivers:` (Alertmanager's format, plus `rollback_configs`) and `reports:`.
//!
//! Keys and defaults follow Alertmanager's `email_configs` and `webhook_configs`
//! (email `send_resolved` defaults to false, webhook to true; `require_tls`
//! defaults to true). Secrets named by `*_file` keys are read at load time into
//! [`ReceiverSecrets`], so a missing file is a located config error, not a
//! failed delivery at 3 a.m.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::duration::Dur;
use super::secret::Secret;
use super::{Validator, YamlPath};

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiverConfig {
    pub name: String,
    #[serde(default)]
    pub email_configs: Vec<EmailConfig>,
    #[serde(default)]
    pub webhook_configs: Vec<WebhookConfig>,
    #[serde(default)]
    pub rollback_configs: Vec<RollbackConfig>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    /// Comma-separated addresses, as in Alertmanager.
    pub to: String,
    pub from: String,
    /// `host:port`; port 465 means implicit TLS, anything else SMTP with STARTTLS.
    pub smarthost: String,
    #[serde(default)]
    pub hello: Option<String>,
    #[serde(default)]
    pub auth_username: Option<String>,
    #[serde(default)]
    pub auth_password_file: Option<PathBuf>,
    /// Accepted for compatibility; lettre's PLAIN mechanism sends no authorization identity.
    #[serde(default)]
    pub auth_identity: Option<String>,
    #[serde(default)]
    pub require_tls: Option<bool>,
    #[serde(default)]
    pub tls_config: Option<TlsConfig>,
    /// Extra headers (values may use the template subset); `Subject` overrides the default subject.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub html: Option<String>,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub send_resolved: Option<bool>,
}

impl EmailConfig {
    /// Alertmanager's default for email: false.
    pub fn send_resolved(&self) -> bool {
        self.send_resolved.unwrap_or(false)
    }
    /// Alertmanager's default: true.
    pub fn require_tls(&self) -> bool {
        self.require_tls.unwrap_or(true)
    }
    /// `(host, port)` of the smarthost; validation guarantees it parses.
    pub fn host_port(&self) -> Option<(String, u16)> {
        split_host_port(&self.smarthost)
    }
}

/// Alertmanager's (Prometheus common) `tls_config`, the keys rustls can honour.
#[derive(Clone, Debug, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    #[serde(default)]
    pub server_name: Option<String>,
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// `TLS12` or `TLS13`.
    #[serde(default)]
    pub min_version: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: String,
    #[serde(default)]
    pub send_resolved: Option<bool>,
    /// 0 (the default) sends every alert.
    #[serde(default)]
    pub max_alerts: Option<usize>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub timeout: Option<Dur>,
    /// Signs each request: `X-Rearguard-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`.
    #[serde(default)]
    pub hmac_secret_file: Option<PathBuf>,
}

/// Default webhook timeout (Alertmanager has none; an outbound call always has one here).
pub const DEFAULT_WEBHOOK_TIMEOUT: Dur = Dur::secs(10);

impl WebhookConfig {
    /// Alertmanager's default for webhooks: true.
    pub fn send_resolved(&self) -> bool {
        self.send_resolved.unwrap_or(true)
    }
    pub fn timeout(&self) -> std::time::Duration {
        self.timeout.unwrap_or(DEFAULT_WEBHOOK_TIMEOUT).0
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackConfig {
    pub action: String,
}

/// A digest report: a summary of the period since the previous run, mailed on a schedule.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportConfig {
    pub name: String,
    /// Cron expression: 5 fields (`min hour dom month dow`), or 6–7 with seconds (and year).
    pub schedule: String,
    pub email_configs: Vec<EmailConfig>,
}

impl ReportConfig {
    /// The parsed schedule (validation guarantees it parses).
    pub fn cron_schedule(&self) -> Option<cron::Schedule> {
        parse_cron(&self.schedule).ok()
    }
}

/// Parses a cron expression; a classic 5-field one gets a leading `0` seconds field.
pub fn parse_cron(expr: &str) -> Result<cron::Schedule, String> {
    use std::str::FromStr;
    let fields = expr.split_whitespace().count();
    let full = if fields == 5 {
        format!("0 {expr}")
    } else {
        expr.to_string()
    };
    cron::Schedule::from_str(&full).map_err(|e| format!("invalid cron schedule {expr:?}: {e}"))
}

/// Which integration of which receiver (or report): the outbox's unit of
/// delivery and of concurrency.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IntegrationId {
    /// The receiver name, or `report:<name>` for a report's email.
    pub receiver: String,
    pub kind: IntegrationKind,
    pub index: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IntegrationKind {
    Email,
    Webhook,
}

impl IntegrationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            IntegrationKind::Email => "email",
            IntegrationKind::Webhook => "webhook",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "email" => Some(IntegrationKind::Email),
            "webhook" => Some(IntegrationKind::Webhook),
            _ => None,
        }
    }
}

impl std::fmt::Display for IntegrationId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{}[{}]",
            self.receiver,
            self.kind.as_str(),
            self.index
        )
    }
}

pub const REPORT_RECEIVER_PREFIX: &str = "report:";

/// Secrets read from `auth_password_file` and `hmac_secret_file`, and TLS files.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReceiverSecrets {
    pub smtp_passwords: BTreeMap<IntegrationId, Secret>,
    pub hmac_secrets: BTreeMap<IntegrationId, Secret>,
    /// PEM contents of `tls_config` files (ca, cert, key) by integration.
    pub tls_files: BTreeMap<IntegrationId, TlsFiles>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct TlsFiles {
    pub ca_pem: Option<Vec<u8>>,
    pub cert_pem: Option<Vec<u8>>,
    pub key_pem: Option<Secret>,
}

fn split_host_port(s: &str) -> Option<(String, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return None;
    }
    Some((host.to_string(), port.parse().ok()?))
}

fn valid_header_name(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic() && b != b':')
}

/// Validates receivers and reports, reading their secret files.
pub fn validate(
    receivers: &[ReceiverConfig],
    reports: &[ReportConfig],
    v: &mut Validator,
) -> ReceiverSecrets {
    let mut secrets = ReceiverSecrets::default();
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, r) in receivers.iter().enumerate() {
        let path = YamlPath::root().key("receivers").index(i);
        if r.name.trim().is_empty() {
            v.error(&path.key("name"), "receiver name must not be empty");
        } else if r.name.starts_with(REPORT_RECEIVER_PREFIX) {
            v.error(&path.key("name"), format!("receiver names may not start with {REPORT_RECEIVER_PREFIX:?} (reserved for reports)"));
        }
        if let Some(first) = seen.insert(&r.name, i) {
            v.error(
                &path.key("name"),
                format!(
                    "duplicate receiver name {:?} (also used by receivers[{first}])",
                    r.name
                ),
            );
        }
        for (j, e) in r.email_configs.iter().enumerate() {
            let id = IntegrationId {
                receiver: r.name.clone(),
                kind: IntegrationKind::Email,
                index: j,
            };
            validate_email(e, &path.key("email_configs").index(j), id, v, &mut secrets);
        }
        for (j, w) in r.webhook_configs.iter().enumerate() {
            let id = IntegrationId {
                receiver: r.name.clone(),
                kind: IntegrationKind::Webhook,
                index: j,
            };
            validate_webhook(
                w,
                &path.key("webhook_configs").index(j),
                id,
                v,
                &mut secrets,
            );
        }
        for (j, rb) in r.rollback_configs.iter().enumerate() {
            if rb.action.trim().is_empty() {
                v.error(
                    &path.key("rollback_configs").index(j).key("action"),
                    "action must name an entry of `actions:`",
                );
            }
        }
    }
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, r) in reports.iter().enumerate() {
        let path = YamlPath::root().key("reports").index(i);
        if r.name.trim().is_empty() {
            v.error(&path.key("name"), "report name must not be empty");
        }
        if let Some(first) = seen.insert(&r.name, i) {
            v.error(
                &path.key("name"),
                format!(
                    "duplicate report name {:?} (also used by reports[{first}])",
                    r.name
                ),
            );
        }
        if let Err(e) = parse_cron(&r.schedule) {
            v.error(
                &path.key("schedule"),
                format!("{e} (write 5 fields `min hour day-of-month month day-of-week`, e.g. \"0 8 * * Mon\")"),
            );
        }
        if r.email_configs.is_empty() {
            v.error(
                &path.key("email_configs"),
                "a report needs at least one email_configs entry",
            );
        }
        for (j, e) in r.email_configs.iter().enumerate() {
            let id = IntegrationId {
                receiver: format!("{REPORT_RECEIVER_PREFIX}{}", r.name),
                kind: IntegrationKind::Email,
                index: j,
            };
            validate_email(e, &path.key("email_configs").index(j), id, v, &mut secrets);
        }
    }
    secrets
}

fn validate_email(
    e: &EmailConfig,
    path: &YamlPath,
    id: IntegrationId,
    v: &mut Validator,
    secrets: &mut ReceiverSecrets,
) {
    let to: Vec<&str> =
        e.to.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
    if to.is_empty() {
        v.error(&path.key("to"), "`to` must name at least one address");
    }
    for addr in to {
        if addr.parse::<lettre::message::Mailbox>().is_err() {
            v.error(&path.key("to"), format!("invalid email address {addr:?}"));
        }
    }
    if e.from.parse::<lettre::message::Mailbox>().is_err() {
        v.error(
            &path.key("from"),
            format!("invalid email address {:?}", e.from),
        );
    }
    if e.host_port().is_none() {
        v.error(
            &path.key("smarthost"),
            format!(
                "smarthost {:?} must be host:port, e.g. smtp.example.com:587",
                e.smarthost
            ),
        );
    }
    if let Some(h) = &e.hello {
        if h.trim().is_empty() {
            v.error(&path.key("hello"), "hello must not be empty");
        }
    }
    match (&e.auth_username, &e.auth_password_file) {
        (Some(_), Some(f)) => {
            if let Some(s) = v.secret_file(&path.key("auth_password_file"), f) {
                secrets.smtp_passwords.insert(id.clone(), s);
            }
        }
        (Some(_), None) => v.error(
            &path.key("auth_username"),
            "auth_username needs auth_password_file",
        ),
        (None, Some(_)) => v.error(
            &path.key("auth_password_file"),
            "auth_password_file needs auth_username",
        ),
        (None, None) => {}
    }
    for name in e.headers.keys() {
        if !valid_header_name(name) {
            v.error(
                &path.key("headers").key(name),
                format!("invalid header name {name:?}"),
            );
        }
    }
    for (name, value) in &e.headers {
        if let Err(err) = crate::template::Template::parse(name, value, &[]) {
            v.error(
                &path.key("headers").key(name),
                format!("invalid template: {err}"),
            );
        }
    }
    for (key, tpl) in [("html", &e.html), ("text", &e.text)] {
        if let Some(t) = tpl {
            if let Err(err) = crate::template::Template::parse(key, t, &[]) {
                v.error(&path.key(key), format!("invalid template: {err}"));
            }
        }
    }
    if let Some(tls) = &e.tls_config {
        let tp = path.key("tls_config");
        let mut files = TlsFiles::default();
        if let Some(f) = &tls.ca_file {
            files.ca_pem = read_file(v, &tp.key("ca_file"), f);
            if let Some(pem) = &files.ca_pem {
                if lettre::transport::smtp::client::Certificate::from_pem(pem).is_err() {
                    v.error(
                        &tp.key("ca_file"),
                        format!("{} is not a PEM certificate", f.display()),
                    );
                }
            }
        }
        match (&tls.cert_file, &tls.key_file) {
            (Some(c), Some(k)) => {
                files.cert_pem = read_file(v, &tp.key("cert_file"), c);
                files.key_pem = v.secret_file(&tp.key("key_file"), k);
            }
            (Some(_), None) => v.error(&tp.key("cert_file"), "cert_file needs key_file"),
            (None, Some(_)) => v.error(&tp.key("key_file"), "key_file needs cert_file"),
            (None, None) => {}
        }
        if let Some(m) = &tls.min_version {
            if !matches!(m.as_str(), "TLS12" | "TLS13") {
                v.error(
                    &tp.key("min_version"),
                    format!("min_version {m:?} must be TLS12 or TLS13"),
                );
            }
        }
        secrets.tls_files.insert(id, files);
    }
}

fn read_file(v: &mut Validator, path: &YamlPath, file: &std::path::Path) -> Option<Vec<u8>> {
    let full = super::secret::resolve_path(v.base_dir, file);
    match std::fs::read(&full) {
        Ok(b) => Some(b),
        Err(e) => {
            v.error(path, format!("cannot read {}: {e} (fix the path; relative paths are resolved from the config file's folder)", full.display()));
            None
        }
    }
}

fn validate_webhook(
    w: &WebhookConfig,
    path: &YamlPath,
    id: IntegrationId,
    v: &mut Validator,
    secrets: &mut ReceiverSecrets,
) {
    match url::Url::parse(&w.url) {
        Ok(u) if (u.scheme() == "http" || u.scheme() == "https") && u.host_str().is_some() => {}
        Ok(u) => v.error(
            &path.key("url"),
            format!(
                "invalid webhook url {:?}: needs http(s)://host (scheme was {:?})",
                w.url,
                u.scheme()
            ),
        ),
        Err(e) => v.error(
            &path.key("url"),
            format!("invalid webhook url {:?}: {e}", w.url),
        ),
    }
    if let Some(t) = w.timeout {
        if t.0.is_zero() {
            v.error(&path.key("timeout"), "timeout must be greater than 0");
        }
    }
    for (name, value) in &w.headers {
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            v.error(
                &path.key("headers").key(name),
                format!("invalid header name {name:?}"),
            );
        } else if http::HeaderValue::from_str(value).is_err() {
            v.error(
                &path.key("headers").key(name),
                format!("invalid value for header {name:?}"),
            );
        }
    }
    if let Some(f) = &w.hmac_secret_file {
        if let Some(s) = v.secret_file(&path.key("hmac_secret_file"), f) {
            if s.expose().is_empty() {
                v.error(
                    &path.key("hmac_secret_file"),
                    "the HMAC secret file is empty",
                );
            } else {
                secrets.hmac_secrets.insert(id, s);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::load_str;

    #[test]
    fn defaults_follow_alertmanager() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw"), "hunter2\n").unwrap();
        std::fs::write(dir.path().join("hmac"), "k").unwrap();
        let text = "
receivers:
  - name: team
    email_configs:
      - { to: a@example.com, from: r@example.com, smarthost: 'smtp.example.com:587', auth_username: r, auth_password_file: pw }
    webhook_configs:
      - { url: 'https://hooks.example.com/x', hmac_secret_file: hmac }
reports:
  - name: weekly
    schedule: '0 8 * * Mon'
    email_configs:
      - { to: a@example.com, from: r@example.com, smarthost: 'smtp.example.com:465' }
";
        let c = load_str(&dir.path().join("c.yaml"), text, |_| None).unwrap();
        let r = &c.config.receivers[0];
        assert!(!r.email_configs[0].send_resolved());
        assert!(r.email_configs[0].require_tls());
        assert!(r.webhook_configs[0].send_resolved());
        assert_eq!(
            r.webhook_configs[0].timeout(),
            std::time::Duration::from_secs(10)
        );
        let id = |kind, receiver: &str| super::IntegrationId {
            receiver: receiver.into(),
            kind,
            index: 0,
        };
        assert_eq!(
            c.receiver_secrets.smtp_passwords[&id(super::IntegrationKind::Email, "team")].expose(),
            "hunter2"
        );
        assert_eq!(
            c.receiver_secrets.hmac_secrets[&id(super::IntegrationKind::Webhook, "team")].expose(),
            "k"
        );
        assert!(c.config.reports[0].cron_schedule().is_some());
    }

    #[test]
    fn errors_are_located() {
        let text = "receivers:
  - name: team
    email_configs:
      - to: 'not an address'
        from: r@example.com
        smarthost: smtp.example.com
        auth_username: r
        text: '{{ range .Alerts }}'
    webhook_configs:
      - url: ftp://x/
        hmac_secret_file: missing-secret
  - name: team
reports:
  - name: r
    schedule: 'every day'
    email_configs: []
";
        let err = load_str(Path::new("/tmp/rg-x/c.yaml"), text, |_| None).unwrap_err();
        let s = err.to_string();
        for needle in [
            "c.yaml:4:13: invalid email address \"not an address\"",
            "c.yaml:6:20: smarthost \"smtp.example.com\" must be host:port",
            "c.yaml:7:24: auth_username needs auth_password_file",
            "c.yaml:8:15: invalid template",
            "c.yaml:10:14: invalid webhook url",
            "c.yaml:11:27: cannot read secret file /tmp/rg-x/missing-secret",
            "c.yaml:12:11: duplicate receiver name \"team\"",
            "c.yaml:15:15: invalid cron schedule \"every day\"",
            "c.yaml:16:20: a report needs at least one email_configs entry",
        ] {
            assert!(s.contains(needle), "missing {needle:?} in:\n{s}");
        }
    }
}
