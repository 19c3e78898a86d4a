//! `probes:` entries: HTTP health checks.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::defaults;
use super::duration::Dur;
use super::{Validator, YamlPath};

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeConfig {
    pub name: String,
    pub url: String,
    #[serde(default = "default_method")]
    pub method: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default = "default_interval")]
    pub interval: Dur,
    /// Default: 5s, or the interval when that is shorter (see [`ProbeConfig::timeout`]).
    #[serde(default, rename = "timeout")]
    pub timeout_setting: Option<Dur>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub expect: ProbeExpect,
    #[serde(default)]
    pub tls: ProbeTls,
    /// Reuse the connection between runs. Off by default: a fresh connection
    /// each run is what notices a listener that stops accepting new
    /// connections while old ones still answer.
    #[serde(default)]
    pub keep_alive: bool,
}

/// How a probe's TLS connection is verified.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeTls {
    /// Accept any certificate (self-signed, wrong host, expired). The
    /// certificate's expiry is still read, so `cert_min_days` still applies.
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeExpect {
    /// Accepted status codes; empty means any 2xx.
    #[serde(default)]
    pub status: Vec<u16>,
    #[serde(default)]
    pub body_contains: Option<String>,
    #[serde(default)]
    pub body_regex: Option<String>,
    /// JSON pointer (RFC 6901) → expected JSON value.
    #[serde(default)]
    pub json: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    pub max_duration: Option<Dur>,
    #[serde(default)]
    pub cert_min_days: Option<u32>,
    #[serde(default = "default_follow_redirects")]
    pub follow_redirects: bool,
}

impl Default for ProbeExpect {
    fn default() -> Self {
        Self {
            status: Vec::new(),
            body_contains: None,
            body_regex: None,
            json: BTreeMap::new(),
            max_duration: None,
            cert_min_days: None,
            follow_redirects: defaults::PROBE_FOLLOW_REDIRECTS,
        }
    }
}

fn default_method() -> String {
    defaults::PROBE_METHOD.to_string()
}
fn default_interval() -> Dur {
    defaults::PROBE_INTERVAL
}
impl ProbeConfig {
    /// The configured timeout, else the default capped at the interval
    /// (so `interval: 1s` alone is valid).
    pub fn timeout(&self) -> Dur {
        self.timeout_setting
            .unwrap_or_else(|| defaults::PROBE_TIMEOUT.min(self.interval))
    }
}
fn default_follow_redirects() -> bool {
    defaults::PROBE_FOLLOW_REDIRECTS
}

impl ProbeExpect {
    pub fn status_ok(&self, code: u16) -> bool {
        if self.status.is_empty() {
            defaults::PROBE_STATUS_RANGE.contains(&code)
        } else {
            self.status.contains(&code)
        }
    }
}

pub(super) fn validate(probes: &[ProbeConfig], v: &mut Validator) {
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, p) in probes.iter().enumerate() {
        let path = YamlPath::root().key("probes").index(i);
        if p.name.trim().is_empty() {
            v.error(&path.key("name"), "probe name must not be empty");
        } else if !p
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            v.error(
                &path.key("name"),
                format!(
                    "probe name {:?} may only contain letters, digits, '-', '_' and '.'",
                    p.name
                ),
            );
        }
        if let Some(first) = seen.insert(&p.name, i) {
            v.error(
                &path.key("name"),
                format!(
                    "duplicate probe name {:?} (also used by probes[{first}])",
                    p.name
                ),
            );
        }
        match url::Url::parse(&p.url) {
            Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {
                if u.host_str().is_none() {
                    v.error(
                        &path.key("url"),
                        format!("invalid url {:?}: no host", p.url),
                    );
                }
            }
            Ok(u) => v.error(
                &path.key("url"),
                format!(
                    "invalid url {:?}: scheme {:?} is not http or https",
                    p.url,
                    u.scheme()
                ),
            ),
            Err(e) => v.error(&path.key("url"), format!("invalid url {:?}: {e}", p.url)),
        }
        if reqwest::Method::from_bytes(p.method.as_bytes()).is_err() {
            v.error(
                &path.key("method"),
                format!("invalid HTTP method {:?}", p.method),
            );
        }
        for (name, value) in &p.headers {
            if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err()
                || reqwest::header::HeaderValue::from_str(value).is_err()
            {
                v.error(
                    &path.key("headers").key(name),
                    format!("invalid HTTP header {name:?}"),
                );
            }
        }
        if p.interval.0.is_zero() {
            v.error(&path.key("interval"), "interval must be greater than 0");
        }
        let timeout = p.timeout();
        if timeout.0.is_zero() && !p.interval.0.is_zero() {
            v.error(&path.key("timeout"), "timeout must be greater than 0");
        } else if timeout > p.interval && !p.interval.0.is_zero() {
            v.error(
                &path.key("timeout"),
                format!(
                    "timeout {} is longer than the interval {}; make it at most the interval",
                    timeout, p.interval
                ),
            );
        }
        for k in p.labels.keys() {
            if !super::valid_label_name(k) || k == "probe" || k == "instance" {
                v.error(
                    &path.key("labels").key(k),
                    format!("invalid label name {k:?} (must match [a-zA-Z_][a-zA-Z0-9_]* and not be probe or instance)"),
                );
            }
        }
        let ex = path.key("expect");
        for (j, code) in p.expect.status.iter().enumerate() {
            if !(100..=599).contains(code) {
                v.error(
                    &ex.key("status").index(j),
                    format!("invalid HTTP status code {code}"),
                );
            }
        }
        if let Some(re) = &p.expect.body_regex {
            if let Err(e) = regex::Regex::new(re) {
                v.error(
                    &ex.key("body_regex"),
                    format!("invalid regular expression: {e}"),
                );
            }
        }
        for ptr in p.expect.json.keys() {
            if !(ptr.is_empty() || ptr.starts_with('/')) {
                v.error(
                    &ex.key("json").key(ptr),
                    format!("{ptr:?} is not a JSON pointer (write it as /field/sub, e.g. /status)"),
                );
            }
        }
    }
}
