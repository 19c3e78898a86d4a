//! `actions:`: what a `rollback_configs` entry runs, and its guard rails.
//!
//! Every guard rail has a safe default, so an action written with only its
//! effect (`cloud_run_traffic: {service: ...}`) already acts at most twice a
//! day, waits 30 minutes between attempts and only undoes recent deploys.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use super::duration::Dur;
use super::gcp::valid_service_name;
use super::{Validator, YamlPath};

/// The default number of actions per target per window, and the window.
pub const DEFAULT_MAX_PER_WINDOW: u32 = 2;
pub const DEFAULT_BUDGET_WINDOW: Dur = Dur::secs(24 * 3600);
pub const DEFAULT_COOLDOWN: Dur = Dur::secs(30 * 60);
pub const DEFAULT_BAKE_WINDOW: Dur = Dur::secs(2 * 3600);
pub const DEFAULT_COMMAND_TIMEOUT: Dur = Dur::secs(5 * 60);
pub const DEFAULT_OPERATION_TIMEOUT: Dur = Dur::secs(10 * 60);

/// About 8.5 minutes in all: an alert on a 5-minute rate of Cloud Monitoring
/// data (which lags by minutes) cannot stop firing sooner, and a check that
/// gives up early calls a rollback that worked a failure. A check that passes
/// ends verification at once, so a quick fix is still verified quickly.
pub fn default_verify_backoff() -> Vec<Dur> {
    [2, 4, 8, 16, 32, 64, 128, 256]
        .into_iter()
        .map(Dur::secs)
        .collect()
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionConfig {
    #[serde(default)]
    pub cloud_run_traffic: Option<CloudRunTrafficConfig>,
    #[serde(default)]
    pub cloud_run_env: Option<CloudRunEnvConfig>,
    /// argv of a command; success is exit status 0.
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// A ladder: each step is tried and verified before the next one.
    #[serde(default)]
    pub steps: Vec<StepConfig>,
    #[serde(default)]
    pub verify: VerifyConfig,
    /// Minimum time between two actions on this target.
    #[serde(default = "default_cooldown")]
    pub cooldown: Dur,
    #[serde(default)]
    pub max_per_window: MaxPerWindow,
    /// Act only when the serving revision began serving at most this long
    /// before the alert became active. `0` turns the check off.
    #[serde(default = "default_bake_window")]
    pub bake_window: Dur,
    /// For a Cloud Run action on an alert whose rule reads
    /// `run.googleapis.com/request_count`: the fewest requests the judged
    /// revision must have served over the alert's evidence window (when a
    /// `cloud_monitoring` entry reads that metric). Fewer: inconclusive, no
    /// action, keep watching. `0` turns the check off.
    #[serde(default = "default_min_requests")]
    pub min_requests: u64,
    /// Before acting on an alert, announce the rollback and wait this long:
    /// a hold during the wait cancels it. `0s` acts at once.
    #[serde(default)]
    pub veto: Dur,
    #[serde(default)]
    pub dry_run: bool,
    /// How long a `command` may run before it is killed (a failure).
    #[serde(default = "default_command_timeout")]
    pub timeout: Dur,
    /// How long to wait for a Cloud Run operation and for traffic to show it.
    #[serde(default = "default_operation_timeout")]
    pub operation_timeout: Dur,
    /// Names of `time_intervals` during which this action does not run.
    #[serde(default)]
    pub mute_time_intervals: Vec<String>,
}

fn default_cooldown() -> Dur {
    DEFAULT_COOLDOWN
}
/// With a 1% baseline error rate, 100 requests make a false "more than 5%"
/// unlikely (see docs/writing-rules.md).
pub const DEFAULT_MIN_REQUESTS: u64 = 100;

fn default_min_requests() -> u64 {
    DEFAULT_MIN_REQUESTS
}
fn default_bake_window() -> Dur {
    DEFAULT_BAKE_WINDOW
}
fn default_command_timeout() -> Dur {
    DEFAULT_COMMAND_TIMEOUT
}
fn default_operation_timeout() -> Dur {
    DEFAULT_OPERATION_TIMEOUT
}

/// One rung of a ladder: exactly one effect.
#[derive(Clone, Debug, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct StepConfig {
    #[serde(default)]
    pub cloud_run_traffic: Option<CloudRunTrafficConfig>,
    #[serde(default)]
    pub cloud_run_env: Option<CloudRunEnvConfig>,
    #[serde(default)]
    pub command: Option<Vec<String>>,
}

/// One effect, resolved from a step or from the action itself.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    CloudRunTraffic(CloudRunTrafficConfig),
    CloudRunEnv(CloudRunEnvConfig),
    Command(Vec<String>),
}

impl Effect {
    pub fn kind(&self) -> &'static str {
        match self {
            Effect::CloudRunTraffic(_) => "cloud_run_traffic",
            Effect::CloudRunEnv(_) => "cloud_run_env",
            Effect::Command(_) => "command",
        }
    }

    /// The Cloud Run service this effect changes, if any.
    pub fn service(&self) -> Option<&str> {
        match self {
            Effect::CloudRunTraffic(c) => Some(&c.service),
            Effect::CloudRunEnv(c) => Some(&c.service),
            Effect::Command(_) => None,
        }
    }
}

fn effects_of(
    traffic: &Option<CloudRunTrafficConfig>,
    env: &Option<CloudRunEnvConfig>,
    command: &Option<Vec<String>>,
) -> Vec<Effect> {
    let mut out = Vec::new();
    if let Some(c) = env {
        out.push(Effect::CloudRunEnv(c.clone()));
    }
    if let Some(c) = traffic {
        out.push(Effect::CloudRunTraffic(c.clone()));
    }
    if let Some(c) = command {
        out.push(Effect::Command(c.clone()));
    }
    out
}

impl StepConfig {
    pub fn effect(&self) -> Option<Effect> {
        effects_of(&self.cloud_run_traffic, &self.cloud_run_env, &self.command)
            .into_iter()
            .next()
    }
}

impl ActionConfig {
    /// The ladder this action runs: its `steps`, or its single effect.
    pub fn effects(&self) -> Vec<Effect> {
        if !self.steps.is_empty() {
            return self.steps.iter().filter_map(StepConfig::effect).collect();
        }
        effects_of(&self.cloud_run_traffic, &self.cloud_run_env, &self.command)
    }

    /// The first Cloud Run service the action changes (its "deploy").
    pub fn service(&self) -> Option<String> {
        self.effects()
            .iter()
            .find_map(|e| e.service().map(str::to_string))
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudRunTrafficConfig {
    /// `projects/P/locations/L/services/S`.
    pub service: String,
    /// Pin the revision to send traffic to; by default the one that served
    /// before the current one and was Ready.
    #[serde(default)]
    pub revision: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudRunEnvConfig {
    pub service: String,
    pub env: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyConfig {
    /// Probes that must pass (by name) for the action to count as verified.
    #[serde(default)]
    pub probes: Vec<String>,
    /// Waits between verification attempts; the action fails after the last.
    #[serde(default = "default_verify_backoff")]
    pub backoff: Vec<Dur>,
}

impl Default for VerifyConfig {
    fn default() -> Self {
        Self {
            probes: Vec::new(),
            backoff: default_verify_backoff(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaxPerWindow {
    pub count: u32,
    #[serde(default = "default_budget_window")]
    pub window: Dur,
}

fn default_budget_window() -> Dur {
    DEFAULT_BUDGET_WINDOW
}

impl Default for MaxPerWindow {
    fn default() -> Self {
        Self {
            count: DEFAULT_MAX_PER_WINDOW,
            window: DEFAULT_BUDGET_WINDOW,
        }
    }
}

/// `projects/P/locations/L/services/S` with no empty part.
fn validate_traffic(c: &CloudRunTrafficConfig, path: &YamlPath, v: &mut Validator) {
    if !valid_service_name(&c.service) {
        v.error(
            &path.key("service"),
            format!(
                "invalid Cloud Run service {:?}: write projects/PROJECT/locations/REGION/services/NAME",
                c.service
            ),
        );
    }
    if let Some(r) = &c.revision {
        if r.trim().is_empty()
            || (r.contains('/') && !r.starts_with(&format!("{}/revisions/", c.service)))
        {
            v.error(
                &path.key("revision"),
                format!("invalid revision {r:?}: write the revision's short name (e.g. backend-00042-abc)"),
            );
        }
    }
}

fn validate_env(c: &CloudRunEnvConfig, path: &YamlPath, v: &mut Validator) {
    if !valid_service_name(&c.service) {
        v.error(
            &path.key("service"),
            format!(
                "invalid Cloud Run service {:?}: write projects/PROJECT/locations/REGION/services/NAME",
                c.service
            ),
        );
    }
    if c.env.is_empty() {
        v.error(
            &path.key("env"),
            "env is empty: name at least one variable to set",
        );
    }
    for name in c.env.keys() {
        let ok = !name.is_empty()
            && !name.starts_with(|ch: char| ch.is_ascii_digit())
            && name
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '_');
        if !ok {
            v.error(
                &path.key("env").key(name),
                format!("invalid environment variable name {name:?}: use letters, digits and _"),
            );
        }
    }
}

fn validate_command(argv: &[String], path: &YamlPath, v: &mut Validator) {
    if argv.is_empty() || argv[0].trim().is_empty() {
        v.error(
            path,
            "command is empty: give the program and its arguments as a list, e.g. [kubectl, rollout, undo, deploy/x]",
        );
    }
}

fn validate_effects(
    traffic: &Option<CloudRunTrafficConfig>,
    env: &Option<CloudRunEnvConfig>,
    command: &Option<Vec<String>>,
    path: &YamlPath,
    v: &mut Validator,
) -> usize {
    if let Some(c) = traffic {
        validate_traffic(c, &path.key("cloud_run_traffic"), v);
    }
    if let Some(c) = env {
        validate_env(c, &path.key("cloud_run_env"), v);
    }
    if let Some(c) = command {
        validate_command(c, &path.key("command"), v);
    }
    traffic.is_some() as usize + env.is_some() as usize + command.is_some() as usize
}

/// Checks every action; `time_intervals` and `probes` are the names defined in the config.
pub fn validate(
    actions: &BTreeMap<String, ActionConfig>,
    time_intervals: &BTreeSet<String>,
    probes: &BTreeSet<String>,
    v: &mut Validator,
) {
    let root = YamlPath::root().key("actions");
    for (name, a) in actions {
        let path = root.key(name);
        if name.trim().is_empty() {
            v.error(&path, "action name is empty");
        }
        let n = validate_effects(&a.cloud_run_traffic, &a.cloud_run_env, &a.command, &path, v);
        if a.steps.is_empty() {
            if n == 0 {
                v.error(
                    &path,
                    format!(
                        "action {name:?} does nothing: give one of cloud_run_traffic, cloud_run_env, command or steps"
                    ),
                );
            } else if n > 1 {
                v.error(
                    &path,
                    format!("action {name:?} has {n} effects: give exactly one, or list them in order under steps"),
                );
            }
        } else if n > 0 {
            v.error(
                &path.key("steps"),
                format!("action {name:?} has both steps and a top-level effect: move the effect into steps"),
            );
        }
        for (i, step) in a.steps.iter().enumerate() {
            let sp = path.key("steps").index(i);
            let k = validate_effects(
                &step.cloud_run_traffic,
                &step.cloud_run_env,
                &step.command,
                &sp,
                v,
            );
            if k != 1 {
                v.error(
                    &sp,
                    format!("step {} has {k} effects: each step is exactly one of cloud_run_traffic, cloud_run_env, command", i + 1),
                );
            }
        }
        let services: BTreeSet<String> = a
            .effects()
            .iter()
            .filter_map(|e| e.service().map(str::to_string))
            .collect();
        if services.len() > 1 {
            v.error(
                &path.key("steps"),
                format!("action {name:?} changes {} different services: one action may change one Cloud Run service (write one action per service)", services.len()),
            );
        }
        if a.verify.backoff.is_empty() {
            v.error(
                &path.key("verify").key("backoff"),
                "verify.backoff is empty: give the waits between checks, e.g. [2s, 4s, 8s, 16s, 32s, 64s, 128s, 256s]",
            );
        }
        for (i, d) in a.verify.backoff.iter().enumerate() {
            if d.0.is_zero() {
                v.error(
                    &path.key("verify").key("backoff").index(i),
                    "a verification wait must be greater than 0",
                );
            }
        }
        for (i, p) in a.verify.probes.iter().enumerate() {
            if !probes.contains(p) {
                v.error(
                    &path.key("verify").key("probes").index(i),
                    format!("unknown probe {p:?}: verify.probes names entries of probes:"),
                );
            }
        }
        if a.max_per_window.count == 0 {
            v.error(
                &path.key("max_per_window").key("count"),
                "max_per_window.count is 0, so the action could never run: use dry_run: true to disable acting",
            );
        }
        if a.max_per_window.window.0.is_zero() {
            v.error(
                &path.key("max_per_window").key("window"),
                "max_per_window.window must be greater than 0",
            );
        }
        if a.timeout.0.is_zero() {
            v.error(&path.key("timeout"), "timeout must be greater than 0");
        }
        if a.operation_timeout.0.is_zero() {
            v.error(
                &path.key("operation_timeout"),
                "operation_timeout must be greater than 0",
            );
        }
        for (i, ti) in a.mute_time_intervals.iter().enumerate() {
            if !time_intervals.contains(ti) {
                v.error(
                    &path.key("mute_time_intervals").index(i),
                    format!("unknown time interval {ti:?}: define it under time_intervals"),
                );
            }
        }
    }
}

/// Checks that every `rollback_configs` entry names a defined action; `refs`
/// are (receiver index, config index, action name).
pub fn validate_references(
    actions: &BTreeMap<String, ActionConfig>,
    refs: &[(usize, usize, String)],
    v: &mut Validator,
) {
    for (ri, ci, name) in refs {
        if !actions.contains_key(name) {
            let known: Vec<&str> = actions.keys().map(String::as_str).collect();
            v.error(
                &YamlPath::root()
                    .key("receivers")
                    .index(*ri)
                    .key("rollback_configs")
                    .index(*ci)
                    .key("action"),
                format!(
                    "unknown action {name:?} (defined actions: {})",
                    known.join(", ")
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{load_str, LoadedConfig, LocatedErrors};

    fn load(text: &str) -> Result<LoadedConfig, LocatedErrors> {
        load_str(Path::new("/tmp/rg-actions/rearguard.yaml"), text, |_| None)
    }

    const SVC: &str = "projects/p/locations/us-central1/services/backend";

    #[test]
    fn defaults_are_safe() {
        let c = load(&format!(
            "actions:\n  backend:\n    cloud_run_traffic:\n      service: {SVC}\n"
        ))
        .unwrap()
        .config;
        let a = &c.actions["backend"];
        assert_eq!(
            a.max_per_window,
            MaxPerWindow {
                count: 2,
                window: Dur::secs(86400)
            }
        );
        assert_eq!(a.verify.backoff, default_verify_backoff());
        assert_eq!(a.cooldown, DEFAULT_COOLDOWN);
        assert_eq!(a.bake_window, DEFAULT_BAKE_WINDOW);
        assert!(!a.dry_run);
        assert_eq!(a.effects().len(), 1);
        assert_eq!(a.service().as_deref(), Some(SVC));
    }

    #[test]
    fn ladder_parses_in_order() {
        let text = format!(
            "actions:\n  backend:\n    steps:\n      - cloud_run_env: {{service: {SVC}, env: {{USE_SANDBOX: \"false\"}}}}\n      - cloud_run_traffic: {{service: {SVC}}}\n      - command: [sh, -c, 'true']\n"
        );
        let a = load(&text).unwrap().config.actions["backend"].clone();
        let kinds: Vec<&str> = a.effects().iter().map(Effect::kind).collect();
        assert_eq!(kinds, ["cloud_run_env", "cloud_run_traffic", "command"]);
    }

    #[test]
    fn errors_are_located() {
        let text = "time_intervals:\n  - name: weekends\nreceivers:\n  - name: r\n    rollback_configs:\n      - action: nope\nactions:\n  a:\n    cloud_run_traffic:\n      service: backend\n    max_per_window: {count: 0}\n    mute_time_intervals: [weekdays]\n    verify:\n      backoff: []\n      probes: [nope]\n  b:\n    command: [x]\n    cloud_run_traffic: {service: projects/p/locations/l/services/s}\n  c:\n    steps:\n      - {}\n  d:\n    dry_run: true\n";
        let err = load(text).unwrap_err();
        let s = err.to_string();
        for want in [
            ":10:16: invalid Cloud Run service \"backend\"",
            ":11:29: max_per_window.count is 0",
            ":12:27: unknown time interval \"weekdays\"",
            ":14:16: verify.backoff is empty",
            ":15:16: unknown probe \"nope\"",
            "action \"b\" has 2 effects",
            ":21:9: step 1 has 0 effects",
            "action \"d\" does nothing",
            ":6:17: unknown action \"nope\"",
        ] {
            assert!(s.contains(want), "missing {want:?} in:\n{s}");
        }
    }

    #[test]
    fn service_names_follow_the_same_rule_as_the_gcp_section() {
        // A name the gcp section rejects (a space in the project) must be
        // rejected here too, not found out at the first rollback.
        let text = "actions:\n  a:\n    cloud_run_traffic:\n      service: projects/my project/locations/l/services/s\n";
        let err = load(text).unwrap_err().to_string();
        assert!(err.contains(":4:16: invalid Cloud Run service"), "{err}");
        assert!(!crate::config::gcp::valid_service_name(
            "projects/my project/locations/l/services/s"
        ));
    }
}
