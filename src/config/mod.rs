//! The config file: schema, loading with `${ENV}` expansion, and validation
//! that reports every error as `file:line:col: message`.

pub mod actions;
pub mod defaults;
// A leaf of its own (time_interval uses it too); `config::duration` paths stay.
pub use crate::duration;
pub mod gcp;
pub mod locate;
pub mod probe;
pub mod receivers;
pub mod routing;
pub mod secret;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use duration::Dur;
pub use locate::{LocatedError, LocatedErrors, Locator, Pos, YamlPath};
pub use secret::Secret;

use actions::ActionConfig;
use gcp::{
    CloudLoggingConfig, CloudMonitoringConfig, CloudRunConfig, GcpConfig, QuerySourceConfig,
};
use probe::ProbeConfig;
use receivers::{ReceiverConfig, ReportConfig};
use routing::{InhibitRuleConfig, RouteConfig, TimeIntervalConfig};

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "defaults::listen")]
    pub listen: SocketAddr,
    #[serde(default = "defaults::state_dir")]
    pub state_dir: PathBuf,
    #[serde(default = "default_evaluation_interval")]
    pub evaluation_interval: Dur,
    /// How long samples are kept in memory.
    #[serde(default = "default_retention")]
    pub retention: Dur,
    /// How often the sample history's WAL (`state_dir/tsdb`) is written and
    /// fsynced: a `kill -9` loses at most this much. Read at start.
    #[serde(default = "default_tsdb_flush_interval")]
    pub tsdb_flush_interval: Dur,
    #[serde(default)]
    pub external_url: Option<String>,
    #[serde(default)]
    pub external_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub gcp: Option<GcpConfig>,
    #[serde(default)]
    pub probes: Vec<ProbeConfig>,
    #[serde(default)]
    pub cloud_monitoring: Vec<CloudMonitoringConfig>,
    #[serde(default)]
    pub cloud_logging: Vec<CloudLoggingConfig>,
    #[serde(default)]
    pub cloud_run: Vec<CloudRunConfig>,
    #[serde(default)]
    pub rule_files: Vec<String>,
    #[serde(default)]
    pub query_sources: BTreeMap<String, QuerySourceConfig>,
    /// Rule group name → `query_sources` entry that evaluates it (default: the local tsdb).
    #[serde(default)]
    pub rule_group_sources: BTreeMap<String, String>,
    #[serde(default)]
    pub route: Option<RouteConfig>,
    #[serde(default)]
    pub receivers: Vec<ReceiverConfig>,
    #[serde(default)]
    pub inhibit_rules: Vec<InhibitRuleConfig>,
    #[serde(default)]
    pub time_intervals: Vec<TimeIntervalConfig>,
    #[serde(default)]
    pub actions: BTreeMap<String, ActionConfig>,
    #[serde(default)]
    pub reports: Vec<ReportConfig>,
    #[serde(default)]
    pub query: QueryConfig,
}

/// Bounds on PromQL evaluation (Prometheus's `--query.*` flags). Read at
/// start; a reload keeps the values the daemon started with.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryConfig {
    /// How long one evaluation (API query or rule) may run.
    #[serde(default = "defaults::query_timeout")]
    pub timeout: Dur,
    /// The most samples one query may load into memory at once.
    #[serde(default = "defaults::query_max_samples")]
    pub max_samples: usize,
    /// API queries evaluated at once; more wait for a slot (within `timeout`).
    #[serde(default = "defaults::query_max_concurrency")]
    pub max_concurrency: usize,
}

impl Default for QueryConfig {
    fn default() -> Self {
        Self {
            timeout: defaults::query_timeout(),
            max_samples: defaults::query_max_samples(),
            max_concurrency: defaults::query_max_concurrency(),
        }
    }
}

fn default_evaluation_interval() -> Dur {
    defaults::EVALUATION_INTERVAL
}
fn default_retention() -> Dur {
    defaults::RETENTION
}
fn default_tsdb_flush_interval() -> Dur {
    defaults::TSDB_FLUSH_INTERVAL
}

#[derive(Clone, Debug, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// A token that may only post alerts (`POST /api/v2/alerts`), for
    /// Prometheus-compatible senders; the admin token may post alerts too.
    #[serde(default)]
    pub alert_token_file: Option<PathBuf>,
}

/// A loaded, validated config, with what it needs to resolve relative paths
/// and the secrets it read.
#[derive(Clone, Debug)]
pub struct LoadedConfig {
    pub config: Config,
    pub path: PathBuf,
    /// The folder relative paths in the config are resolved from.
    pub base_dir: PathBuf,
    pub admin_token: Option<Secret>,
    /// The alert senders' token (`admin.alert_token_file`).
    pub alert_token: Option<Secret>,
    /// Files named by `rule_files`, resolved and expanded (for `check` and the rules engine).
    pub rule_file_paths: Vec<PathBuf>,
    /// Secrets and TLS files of `receivers:` and `reports:` (read at load).
    pub receiver_secrets: receivers::ReceiverSecrets,
}

impl LoadedConfig {
    pub fn state_dir(&self) -> PathBuf {
        secret::resolve_path(&self.base_dir, &self.config.state_dir)
    }
    pub fn resolve(&self, p: &Path) -> PathBuf {
        secret::resolve_path(&self.base_dir, p)
    }
}

/// Collects located errors while validating a parsed config.
pub struct Validator<'a> {
    file: &'a Path,
    locator: &'a Locator,
    pub base_dir: &'a Path,
    errors: Vec<LocatedError>,
}

impl<'a> Validator<'a> {
    pub fn new(file: &'a Path, locator: &'a Locator, base_dir: &'a Path) -> Self {
        Self {
            file,
            locator,
            base_dir,
            errors: Vec::new(),
        }
    }

    /// An error about the value at `path`.
    pub fn error(&mut self, path: &YamlPath, message: impl Into<String>) {
        let pos = self.locator.value(path);
        self.errors.push(LocatedError::new(self.file, pos, message));
    }

    /// An error in another file (a rule file named by the config).
    pub fn push(&mut self, err: LocatedError) {
        self.errors.push(err);
    }

    /// Reads a secret file named at `path`; records an error if it cannot.
    pub fn secret_file(&mut self, path: &YamlPath, file: &Path) -> Option<Secret> {
        match secret::read_secret_file(self.base_dir, file) {
            Ok(s) => Some(s),
            Err(e) => {
                self.error(path, e);
                None
            }
        }
    }

    pub fn into_errors(self) -> Vec<LocatedError> {
        self.errors
    }
}

// Lives with the label types so `matchers` (used by config and dispatch) needs no config.
pub use crate::labels::valid_label_name;

/// Reads, expands, parses and validates the config file at `path`.
pub fn load(path: &Path) -> Result<LoadedConfig, LocatedErrors> {
    let raw = std::fs::read_to_string(path).map_err(|e| {
        LocatedErrors(vec![LocatedError::new(
            path,
            Pos { line: 0, col: 0 },
            format!("cannot read config file: {e}"),
        )])
    })?;
    load_str(path, &raw, |name| std::env::var(name).ok())
}

/// Like [`load`], from text already read and with a given environment.
pub fn load_str(
    path: &Path,
    raw: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<LoadedConfig, LocatedErrors> {
    let expanded = secret::expand_env(raw, env);
    let mut errors: Vec<LocatedError> = expanded
        .missing
        .iter()
        .map(|(line, col, name)| {
            LocatedError::new(
                path,
                Pos { line: *line, col: *col },
                format!("environment variable {name} is not set (set it, or write ${{{name}:-default}})"),
            )
        })
        .collect();
    let text = &expanded.text;
    if let Err(e) = locate::check_yaml_limits(path, text) {
        errors.push(e);
        return Err(LocatedErrors(errors));
    }
    let config: Config = if text.trim().is_empty() {
        serde_yaml_ng::from_str("{}").expect("empty mapping parses")
    } else {
        match serde_yaml_ng::from_str(text) {
            Ok(c) => c,
            Err(e) => {
                let mut err = locate::from_yaml_error(path, &e);
                err.message = secret::redact(&err.message, &expanded.substituted);
                errors.push(err);
                return Err(LocatedErrors(errors));
            }
        }
    };
    let locator = Locator::new(text);
    let base_dir = path
        .parent()
        .map(Path::to_path_buf)
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("."));
    let mut v = Validator::new(path, &locator, &base_dir);
    probe::validate(&config.probes, &mut v);
    gcp::validate(&config, &mut v);
    routing::validate(&config, &mut v);
    validate_actions(&config, &mut v);
    if config.evaluation_interval.0.is_zero() {
        v.error(
            &YamlPath::root().key("evaluation_interval"),
            "evaluation_interval must be greater than 0",
        );
    }
    let flush = config.tsdb_flush_interval;
    if !(defaults::TSDB_FLUSH_INTERVAL_MIN..=defaults::TSDB_FLUSH_INTERVAL_MAX).contains(&flush.0) {
        v.error(
            &YamlPath::root().key("tsdb_flush_interval"),
            format!(
                "tsdb_flush_interval {flush} is out of range: it must be between {} and {}",
                Dur(defaults::TSDB_FLUSH_INTERVAL_MIN),
                Dur(defaults::TSDB_FLUSH_INTERVAL_MAX)
            ),
        );
    }
    for (field, zero) in [
        ("timeout", config.query.timeout.0.is_zero()),
        ("max_samples", config.query.max_samples == 0),
        ("max_concurrency", config.query.max_concurrency == 0),
    ] {
        if zero {
            v.error(
                &YamlPath::root().key("query").key(field),
                format!("query.{field} must be greater than 0"),
            );
        }
    }
    if let Some(u) = &config.external_url {
        if url::Url::parse(u).is_err() {
            v.error(
                &YamlPath::root().key("external_url"),
                format!("invalid url {u:?}"),
            );
        }
    }
    let admin_token = config
        .admin
        .token_file
        .as_ref()
        .and_then(|f| v.secret_file(&YamlPath::root().key("admin").key("token_file"), f));
    let alert_token = config
        .admin
        .alert_token_file
        .as_ref()
        .and_then(|f| v.secret_file(&YamlPath::root().key("admin").key("alert_token_file"), f));
    let receiver_secrets = receivers::validate(&config.receivers, &config.reports, &mut v);
    let rule_file_paths = resolve_rule_files(&config.rule_files, &base_dir, &mut v);
    for e in crate::rules::check_files(&rule_file_paths) {
        v.push(e);
    }
    for (group, source) in &config.rule_group_sources {
        if !config.query_sources.contains_key(source) {
            v.error(
                &YamlPath::root().key("rule_group_sources").key(group),
                format!("query source {source:?} is not defined under query_sources"),
            );
        }
    }
    errors.extend(v.into_errors().into_iter().map(|mut e| {
        e.message = secret::redact(&e.message, &expanded.substituted);
        e
    }));
    if !errors.is_empty() {
        return Err(LocatedErrors(errors));
    }
    Ok(LoadedConfig {
        config,
        path: path.to_path_buf(),
        base_dir,
        admin_token,
        alert_token,
        rule_file_paths,
        receiver_secrets,
    })
}

fn validate_actions(config: &Config, v: &mut Validator) {
    let intervals = config
        .time_intervals
        .iter()
        .map(|t| t.name.clone())
        .collect();
    let probes = config.probes.iter().map(|p| p.name.clone()).collect();
    actions::validate(&config.actions, &intervals, &probes, v);
    let refs: Vec<(usize, usize, String)> = config
        .receivers
        .iter()
        .enumerate()
        .flat_map(|(ri, r)| {
            r.rollback_configs
                .iter()
                .enumerate()
                .map(move |(ci, c)| (ri, ci, c.action.clone()))
        })
        .collect();
    actions::validate_references(&config.actions, &refs, v);
}

/// Expands `rule_files` globs relative to the config's folder. A pattern that
/// matches nothing is an error unless it is a glob (Prometheus allows empty globs).
fn resolve_rule_files(patterns: &[String], base_dir: &Path, v: &mut Validator) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for (i, pat) in patterns.iter().enumerate() {
        let path = YamlPath::root().key("rule_files").index(i);
        let full = secret::resolve_path(base_dir, Path::new(pat));
        let is_glob = pat.contains(['*', '?', '[']);
        match glob::glob(&full.to_string_lossy()) {
            Ok(paths) => {
                let mut matched: Vec<PathBuf> = paths.filter_map(Result::ok).collect();
                matched.sort();
                if matched.is_empty() && !is_glob {
                    v.error(
                        &path,
                        format!("rule file {} does not exist", full.display()),
                    );
                }
                out.extend(matched);
            }
            Err(e) => v.error(&path, format!("invalid glob pattern {pat:?}: {e}")),
        }
    }
    out.dedup();
    out
}

#[cfg(test)]
mod tests;
