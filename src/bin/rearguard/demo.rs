//! `rearguard demo`: a staging scenario on loopback that runs the real daemon.
//!
//! The fake Google APIs (`rearguard_sim::FakeGcp`) host a Cloud Run service whose healthy
//! revision serves real HTTP (`rearguard_sim::SimService`); a bad revision is deployed;
//! the real [`Daemon`], with the config in `examples/demo/` (probes, Cloud
//! Monitoring, Cloud Logging and Cloud Run sources against the fake, rules with
//! `for` of seconds, a rollback action and email + webhook receivers pointed at
//! local sinks), detects it, fires, rolls back, verifies, and notifies. The
//! timeline is read from the daemon's own state: rule groups, the action audit
//! in the store, and what the sinks received.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use serde_json::{json, Value};

use rearguard::action::journal::Decision;
use rearguard::clock::{Clock, TimestampMs};
use rearguard::config::{self, LocatedErrors};
use rearguard::daemon::{Daemon, DaemonError};
use rearguard::rules::alerting::AlertState;
use rearguard::rules::group::RuleState;
use rearguard_sim::scenario::{Demo, DemoOptions};
use rearguard_sim::service::SimServiceOptions;
use rearguard_sim::sinks::{ReceivedMail, ReceivedWebhook, SmtpSink, WebhookSink};
use rearguard_sim::{methods, FakeOptions};

/// The demo's config and rules; `${NAME}` is filled in by [`render`].
const CONFIG_TEMPLATE: &str = include_str!("../../../examples/demo/rearguard.yaml");
const RULES_TEMPLATE: &str = include_str!("../../../examples/demo/rules.yaml");

/// Every number of the demo, in one place.
#[derive(Clone, Debug)]
pub struct Timings {
    /// From the start to the bad deploy: probes and Cloud Run status first see
    /// the healthy revision serving (the rollback goes back to it).
    pub deploy_after: Duration,
    pub probe_interval: Duration,
    /// Shorter than the bad revision's latency (1.5 s): its probes time out.
    pub probe_timeout: Duration,
    /// Cloud Monitoring polls (the config's minimum is 10s).
    pub monitoring_interval: Duration,
    /// Cloud Logging polls.
    pub source_interval: Duration,
    /// Cloud Run status polls.
    pub run_interval: Duration,
    pub evaluation_interval: Duration,
    /// `for:` of the critical health alert, which rolls back.
    pub health_for: Duration,
    /// `for:` of the error-ratio, latency and error-log warnings.
    pub signal_for: Duration,
    pub group_wait: Duration,
    pub group_interval: Duration,
    /// Probe retries after the rollback, until the service is healthy.
    pub verify_backoff: Vec<Duration>,
    /// How often the simulated service writes its Cloud Monitoring points.
    pub report_interval: Duration,
    /// How long a Cloud Run operation takes in the fake.
    pub operation_delay: Duration,
    /// The scenario fails if it has not ended this long after the start.
    pub deadline: Duration,
    /// How often the timeline reads the daemon's state.
    pub poll: Duration,
}

impl Default for Timings {
    fn default() -> Self {
        let s = Duration::from_secs;
        Self {
            deploy_after: s(5),
            probe_interval: s(1),
            probe_timeout: Duration::from_millis(900),
            monitoring_interval: s(10),
            source_interval: s(2),
            run_interval: s(1),
            evaluation_interval: s(1),
            health_for: s(5),
            signal_for: s(5),
            group_wait: s(1),
            group_interval: s(2),
            verify_backoff: vec![s(1), s(2), s(2), s(4), s(4)],
            report_interval: s(2),
            operation_delay: s(2),
            deadline: s(100),
            poll: Duration::from_millis(200),
        }
    }
}

/// The steps of the story, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Deployed,
    Pending,
    Firing,
    RollingBack,
    Verified,
    Resolved,
}

impl Phase {
    pub const ALL: [Phase; 6] = [
        Phase::Deployed,
        Phase::Pending,
        Phase::Firing,
        Phase::RollingBack,
        Phase::Verified,
        Phase::Resolved,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Deployed => "deployed",
            Phase::Pending => "pending",
            Phase::Firing => "firing",
            Phase::RollingBack => "rolling back",
            Phase::Verified => "verified",
            Phase::Resolved => "resolved",
        }
    }

    /// What the demo waits for once this phase is reached.
    fn next_wait(self, t: &Timings) -> String {
        match self {
            Phase::Deployed => "waiting for a health probe of the bad revision to fail".into(),
            Phase::Pending => format!(
                "waiting for the probe to keep failing for {} (the rule's `for`)",
                fmt_dur(t.health_for)
            ),
            Phase::Firing => format!(
                "waiting for dispatch (group_wait {}) to hand the critical alert to the rollback action",
                fmt_dur(t.group_wait)
            ),
            Phase::RollingBack => {
                "waiting for the Cloud Run operation and the verifying probes".into()
            }
            Phase::Verified => "waiting for every alert to resolve and the resolved notifications (windows of 30s)".into(),
            Phase::Resolved => String::new(),
        }
    }
}

/// One line of the timeline.
#[derive(Clone, Debug, PartialEq)]
pub struct TimelineEntry {
    pub at_ms: TimestampMs,
    pub phase: Option<Phase>,
    pub text: String,
}

/// What [`DemoRun::watch`] saw.
#[derive(Clone, Debug, Default)]
pub struct Timeline {
    /// When the bad revision was deployed (the timeline's zero).
    pub deployed_at_ms: TimestampMs,
    pub entries: Vec<TimelineEntry>,
    /// When each phase was first reached.
    pub phases: BTreeMap<Phase, TimestampMs>,
}

impl Timeline {
    pub fn reached(&self, phase: Phase) -> bool {
        self.phases.contains_key(&phase)
    }

    pub fn missing(&self) -> Vec<Phase> {
        Phase::ALL
            .into_iter()
            .filter(|p| !self.reached(*p))
            .collect()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("the demo's config is invalid (a bug in the demo):\n{0}")]
    Config(LocatedErrors),
    #[error("the daemon did not start: {0}")]
    Daemon(#[from] DaemonError),
    #[error("{0} (a bug in the demo)")]
    Template(String),
    #[error("the rollback did not succeed: {0}")]
    RollbackFailed(String),
    #[error(
        "the scenario did not reach {} within {}s of the start (reached: {})",
        .missing.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(", "),
        .deadline.as_secs(),
        .reached.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(", ")
    )]
    Timeout {
        missing: Vec<Phase>,
        reached: Vec<Phase>,
        deadline: Duration,
    },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DemoError {
    let what = what.into();
    move |source| DemoError::Io { what, source }
}

/// `1s`, `900ms`: Prometheus durations for the config.
pub fn fmt_dur(d: Duration) -> String {
    let ms = d.as_millis();
    if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// Replaces every `${NAME}` of `template` with `values[NAME]`; an unknown name is a bug.
fn render(template: &str, values: &HashMap<&str, String>) -> Result<String, DemoError> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            rest = "";
            break;
        };
        let name = &after[..end];
        let value = values.get(name).ok_or_else(|| {
            DemoError::Template(format!(
                "the demo's template names an unknown value ${{{name}}}"
            ))
        })?;
        out.push_str(value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Everything the demo runs: the fakes, the sinks and the daemon.
pub struct DemoRun {
    pub demo: Demo,
    pub daemon: Daemon,
    pub webhook: WebhookSink,
    pub smtp: SmtpSink,
    pub state_dir: PathBuf,
    pub config_path: PathBuf,
    pub timings: Timings,
    /// When the bad deploy is scheduled.
    deploy_at_ms: TimestampMs,
    started_at_ms: TimestampMs,
}

impl DemoRun {
    /// Starts the fake APIs and service, the sinks, and the daemon with the
    /// rendered demo config (written to `state_dir`). The bad deploy follows
    /// `timings.deploy_after` later.
    pub async fn start(
        clock: Clock,
        state_dir: &Path,
        timings: Timings,
    ) -> Result<DemoRun, DemoError> {
        tokio::fs::create_dir_all(state_dir)
            .await
            .map_err(io_err(format!("cannot create {}", state_dir.display())))?;
        let state_dir = tokio::fs::canonicalize(state_dir)
            .await
            .map_err(io_err(format!("cannot resolve {}", state_dir.display())))?;
        let webhook = WebhookSink::start(clock.clone())
            .await
            .map_err(io_err("cannot start the webhook sink"))?;
        let smtp = SmtpSink::start(clock.clone())
            .await
            .map_err(io_err("cannot start the SMTP sink"))?;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(io_err("cannot listen on 127.0.0.1"))?;
        let daemon_addr = listener
            .local_addr()
            .map_err(io_err("cannot read the daemon's address"))?;

        let started_at_ms = clock.now_ms();
        let demo = Demo::start(
            clock.clone(),
            DemoOptions {
                deploy_after: timings.deploy_after,
                fake: FakeOptions {
                    operation_delay: timings.operation_delay,
                    require_auth: true,
                    ..FakeOptions::default()
                },
                service_options: SimServiceOptions {
                    report_interval: timings.report_interval,
                    ..SimServiceOptions::default()
                },
                ..DemoOptions::default()
            },
        )
        .await
        .map_err(io_err("cannot start the simulated Cloud Run service"))?;
        let deploy_at_ms = started_at_ms + timings.deploy_after.as_millis() as i64;

        // The daemon authenticates like with a real key: an authorized_user
        // key whose token endpoint is the fake's.
        let credentials = state_dir.join("demo-credentials.json");
        let key = json!({
            "type": "authorized_user",
            "client_id": "rearguard-demo",
            "client_secret": "not-a-secret",
            "refresh_token": "demo-refresh-token",
            "token_uri": demo.fake.token_uri(),
        });
        tokio::fs::write(&credentials, key.to_string())
            .await
            .map_err(io_err(format!("cannot write {}", credentials.display())))?;

        let values: HashMap<&str, String> = HashMap::from([
            ("STATE_DIR", state_dir.display().to_string()),
            ("EXTERNAL_URL", format!("http://{daemon_addr}")),
            ("CREDENTIALS", credentials.display().to_string()),
            ("FAKE_GCP", demo.fake.base_url()),
            ("SERVICE_URL", demo.service.url()),
            ("SERVICE", demo.service_name.clone()),
            ("WEBHOOK_URL", webhook.url()),
            ("SMTP", smtp.smarthost()),
            ("EVAL_INTERVAL", fmt_dur(timings.evaluation_interval)),
            ("PROBE_INTERVAL", fmt_dur(timings.probe_interval)),
            ("PROBE_TIMEOUT", fmt_dur(timings.probe_timeout)),
            ("SOURCE_INTERVAL", fmt_dur(timings.source_interval)),
            ("MONITORING_INTERVAL", fmt_dur(timings.monitoring_interval)),
            ("RUN_INTERVAL", fmt_dur(timings.run_interval)),
            ("GROUP_WAIT", fmt_dur(timings.group_wait)),
            ("GROUP_INTERVAL", fmt_dur(timings.group_interval)),
            ("HEALTH_FOR", fmt_dur(timings.health_for)),
            ("SIGNAL_FOR", fmt_dur(timings.signal_for)),
            (
                "VERIFY_BACKOFF",
                format!(
                    "[{}]",
                    timings
                        .verify_backoff
                        .iter()
                        .map(|d| fmt_dur(*d))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
        ]);
        let config_text = render(CONFIG_TEMPLATE, &values)?;
        let rules_text = render(RULES_TEMPLATE, &values)?;
        let config_path = state_dir.join("rearguard.yaml");
        tokio::fs::write(&config_path, &config_text)
            .await
            .map_err(io_err(format!("cannot write {}", config_path.display())))?;
        let rules_path = state_dir.join("rules.yaml");
        tokio::fs::write(&rules_path, &rules_text)
            .await
            .map_err(io_err(format!("cannot write {}", rules_path.display())))?;
        let loaded = {
            let path = config_path.clone();
            tokio::task::spawn_blocking(move || config::load_str(&path, &config_text, |_| None))
                .await
                .map_err(|e| DemoError::Io {
                    what: "the config loader failed".into(),
                    source: std::io::Error::other(e.to_string()),
                })?
                .map_err(DemoError::Config)?
        };
        let daemon = Daemon::start(loaded, clock, Some(listener)).await?;
        Ok(DemoRun {
            demo,
            daemon,
            webhook,
            smtp,
            state_dir,
            config_path,
            timings,
            deploy_at_ms,
            started_at_ms,
        })
    }

    /// The daemon's base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.daemon.local_addr())
    }

    /// Follows the scenario until every phase was reached (and the resolved
    /// notifications arrived), a rollback fails, or the deadline passes.
    /// Each new timeline line is passed to `out` as it is seen.
    pub async fn watch(&self, out: &mut dyn FnMut(&str)) -> Result<Timeline, DemoError> {
        let clock = self.daemon.clock().clone();
        let deadline = self.started_at_ms + self.timings.deadline.as_millis() as i64;
        let mut w = Watcher {
            timeline: Timeline {
                deployed_at_ms: self.deploy_at_ms,
                ..Timeline::default()
            },
            alerts: HashMap::new(),
            fired: BTreeSet::new(),
            audit_seen: 0,
            webhooks_seen: 0,
            mails_seen: 0,
            failure: None,
        };
        out(&format!(
            "{:>8}  waiting {} for the bad deploy (probes and Cloud Run status see the healthy revision first)",
            fmt_rel(self.started_at_ms - self.deploy_at_ms),
            fmt_dur(self.timings.deploy_after)
        ));
        loop {
            let before: BTreeSet<Phase> = w.timeline.phases.keys().copied().collect();
            let mut new = self.poll(&mut w).await;
            new.sort_by_key(|e| e.at_ms);
            let zero = w.timeline.deployed_at_ms;
            for e in &new {
                let phase = e
                    .phase
                    .map(|p| format!("{:<12}", p.as_str()))
                    .unwrap_or_else(|| " ".repeat(12));
                out(&format!(
                    "{:>8}  {phase}  {}",
                    fmt_rel(e.at_ms - zero),
                    e.text
                ));
            }
            w.timeline.entries.extend(new);
            if let Some(f) = w.failure.take() {
                return Err(DemoError::RollbackFailed(f));
            }
            let done = w.timeline.missing().is_empty() && self.notified_resolved(&w);
            if done {
                return Ok(w.timeline);
            }
            // Say what we wait for when a phase was reached.
            if let Some(latest) = w
                .timeline
                .phases
                .keys()
                .copied()
                .filter(|p| !before.contains(p))
                .max()
            {
                let next = latest.next_wait(&self.timings);
                if !next.is_empty() {
                    out(&format!("{:>8}  {:<12}  … {next}", "", ""));
                }
            }
            if clock.now_ms() >= deadline {
                let missing = w.timeline.missing();
                return Err(DemoError::Timeout {
                    reached: w.timeline.phases.keys().copied().collect(),
                    missing: if missing.is_empty() {
                        vec![Phase::Resolved]
                    } else {
                        missing
                    },
                    deadline: self.timings.deadline,
                });
            }
            tokio::time::sleep(self.timings.poll).await;
        }
    }

    /// Whether the webhook sink got a resolved notification for every alert that fired.
    fn notified_resolved(&self, w: &Watcher) -> bool {
        let resolved: BTreeSet<String> = self
            .webhook
            .received()
            .iter()
            .filter(|h| h.status() == "resolved")
            .flat_map(|h| alertnames(&h.body))
            .collect();
        !w.fired.is_empty()
            && w.fired.iter().all(|n| resolved.contains(n))
            && !self.smtp.messages().is_empty()
    }

    async fn poll(&self, w: &mut Watcher) -> Vec<TimelineEntry> {
        let mut new = Vec::new();
        let now = self.daemon.clock().now_ms();
        if !w.timeline.reached(Phase::Deployed) {
            if let Some(ev) = self
                .demo
                .scenario
                .events()
                .into_iter()
                .find(|e| e.revision.is_some())
            {
                w.timeline.deployed_at_ms = ev.at_ms;
                let rev = ev.revision.unwrap_or_default();
                new.push(w.reach(
                    Phase::Deployed,
                    ev.at_ms,
                    format!(
                        "{} deployed: health 503, half the requests fail, 1.5s latency",
                        short(&rev)
                    ),
                ));
            }
        }

        // Alerts, from the rule manager's groups.
        let mut seen: HashMap<(String, u64), ()> = HashMap::new();
        for group in self.daemon.rules().groups() {
            for rule in &group.rules {
                let RuleState::Alerting(a) = &rule.state else {
                    continue;
                };
                for (fp, alert) in &a.active {
                    let name = alert.labels.get("alertname").unwrap_or("?").to_string();
                    let key = (a.key.clone(), *fp);
                    let prev = w.alerts.get(&key).copied();
                    match alert.state {
                        AlertState::Inactive => continue,
                        AlertState::Pending if prev.is_none() => new.push(w.reach(
                            Phase::Pending,
                            alert.active_at_ms,
                            format!("{name} pending ({})", describe_value(&name, alert.value)),
                        )),
                        AlertState::Firing if prev != Some(AlertState::Firing) => {
                            if prev.is_none() {
                                new.push(w.reach(
                                    Phase::Pending,
                                    alert.active_at_ms,
                                    format!("{name} pending"),
                                ));
                            }
                            w.fired.insert(name.clone());
                            new.push(w.reach(
                                Phase::Firing,
                                alert.fired_at_ms.unwrap_or(now),
                                format!(
                                    "{name} firing{}",
                                    alert
                                        .labels
                                        .get("severity")
                                        .map(|s| format!(" (severity {s})"))
                                        .unwrap_or_default()
                                ),
                            ));
                        }
                        _ => {}
                    }
                    seen.insert(key.clone(), ());
                    w.alerts.insert(key, alert.state);
                }
            }
        }
        let gone: Vec<(String, u64)> = w
            .alerts
            .keys()
            .filter(|k| !seen.contains_key(*k))
            .cloned()
            .collect();
        for key in gone {
            if let Some(state) = w.alerts.remove(&key) {
                let name = self.alertname_of(&key.0);
                if state == AlertState::Firing {
                    let all_resolved = w.alerts.values().all(|s| *s != AlertState::Firing)
                        && w.timeline.reached(Phase::Verified);
                    let text = format!("{name} resolved");
                    if all_resolved {
                        new.push(w.reach(Phase::Resolved, now, text));
                    } else {
                        new.push(w.entry(now, text));
                    }
                } else {
                    new.push(w.entry(now, format!("{name} no longer pending")));
                }
            }
        }
        // A late resolution of the last alert after verification also counts.
        if w.timeline.reached(Phase::Verified)
            && !w.timeline.reached(Phase::Resolved)
            && !w.fired.is_empty()
            && w.alerts.is_empty()
        {
            new.push(w.reach(Phase::Resolved, now, "every alert resolved".into()));
        }

        // The action audit.
        match self.daemon.store().audit(None, 500).await {
            Ok(entries) => {
                let seen = w.audit_seen;
                for e in entries.into_iter().filter(|e| e.id > seen) {
                    w.audit_seen = e.id;
                    let revs = match (&e.from_revision, &e.to_revision) {
                        (Some(f), Some(t)) => format!(" from {} to {}", short(f), short(t)),
                        (None, Some(t)) => format!(" to {}", short(t)),
                        _ => String::new(),
                    };
                    let why = e.alertname.as_deref().unwrap_or("manual");
                    match e.decision {
                        Decision::Started => new.push(w.reach(
                            Phase::RollingBack,
                            e.at_ms,
                            format!("rolling back {}{revs} (on {why})", e.target),
                        )),
                        Decision::Verified => new.push(w.reach(
                            Phase::Verified,
                            e.at_ms,
                            format!("rollback verified: {}", e.reason),
                        )),
                        Decision::Done => new.push(w.entry(
                            e.at_ms,
                            format!("traffic moved{revs}; verifying with the health probe"),
                        )),
                        d if d.is_failure() => {
                            w.failure = Some(format!("{}: {}", e.decision, e.reason));
                            new.push(
                                w.entry(e.at_ms, format!("rollback {}: {}", e.decision, e.reason)),
                            );
                        }
                        _ => new.push(w.entry(
                            e.at_ms,
                            format!("action {} {} ({why}): {}", e.target, e.decision, e.reason),
                        )),
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "demo cannot read the action audit"),
        }

        // The sinks.
        let hooks = self.webhook.received();
        for h in hooks.iter().skip(w.webhooks_seen) {
            new.push(w.entry(h.at_ms, format!("webhook received: {}", webhook_line(h))));
        }
        w.webhooks_seen = hooks.len();
        let mails = self.smtp.messages();
        for m in mails.iter().skip(w.mails_seen) {
            new.push(w.entry(m.at_ms, format!("email received: {}", m.subject())));
        }
        w.mails_seen = mails.len();
        new
    }

    fn alertname_of(&self, rule_key: &str) -> String {
        for group in self.daemon.rules().groups() {
            for rule in &group.rules {
                if let RuleState::Alerting(a) = &rule.state {
                    if a.key == rule_key {
                        return a.def.name.clone();
                    }
                }
            }
        }
        rule_key.to_string()
    }

    /// What the sinks received and what reached the fake, in short form.
    pub fn summary(&self) -> Vec<String> {
        let zero = self.deploy_at_ms;
        let mut lines = vec![String::new(), "Webhook payloads received:".to_string()];
        for h in self.webhook.received() {
            lines.push(format!(
                "  {:>8}  POST {}  {}",
                fmt_rel(h.at_ms - zero),
                h.path,
                webhook_line(&h)
            ));
        }
        lines.push(String::new());
        lines.push("Emails received:".to_string());
        for m in self.smtp.messages() {
            lines.push(format!(
                "  {:>8}  {}",
                fmt_rel(m.at_ms - zero),
                mail_line(&m)
            ));
        }
        let patches = self.demo.fake.calls_to(methods::SERVICES_PATCH);
        lines.push(String::new());
        lines.push(format!(
            "Cloud Run services.patch calls that reached the fake: {}",
            patches.len()
        ));
        lines.push(format!(
            "Serving now: {}",
            self.demo
                .fake
                .serving(&self.demo.service_name)
                .iter()
                .map(|(r, p)| format!("{} {p}%", short(r)))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        lines
    }

    /// Shuts the daemon down (the fakes and sinks stop when dropped).
    pub async fn shutdown(self) {
        self.daemon.shutdown().await;
    }
}

struct Watcher {
    timeline: Timeline,
    /// (rule key, fingerprint) → last state seen.
    alerts: HashMap<(String, u64), AlertState>,
    /// Names of the alerts that fired.
    fired: BTreeSet<String>,
    audit_seen: i64,
    webhooks_seen: usize,
    mails_seen: usize,
    failure: Option<String>,
}

impl Watcher {
    /// A timeline line that marks `phase` when it is the first of its kind.
    fn reach(&mut self, phase: Phase, at_ms: TimestampMs, text: String) -> TimelineEntry {
        let first = !self.timeline.phases.contains_key(&phase);
        if first {
            self.timeline.phases.insert(phase, at_ms);
        }
        TimelineEntry {
            at_ms,
            phase: first.then_some(phase),
            text,
        }
    }

    fn entry(&self, at_ms: TimestampMs, text: String) -> TimelineEntry {
        TimelineEntry {
            at_ms,
            phase: None,
            text,
        }
    }
}

fn short(name: &str) -> &str {
    name.rsplit('/').next().unwrap_or(name)
}

fn fmt_rel(ms: i64) -> String {
    format!("{:+.1}s", ms as f64 / 1000.0)
}

fn describe_value(name: &str, v: f64) -> String {
    if name.contains("Probe") {
        "probe_success 0".into()
    } else {
        format!("value {v:.3}")
    }
}

/// Alert names in an Alertmanager webhook payload.
fn alertnames(body: &Value) -> Vec<String> {
    body.get("alerts")
        .and_then(Value::as_array)
        .map(|alerts| {
            alerts
                .iter()
                .filter_map(|a| a.pointer("/labels/alertname").and_then(Value::as_str))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn webhook_line(h: &ReceivedWebhook) -> String {
    let alerts = h
        .body
        .get("alerts")
        .and_then(Value::as_array)
        .map(|alerts| {
            alerts
                .iter()
                .map(|a| {
                    format!(
                        "{} {}",
                        a.pointer("/labels/alertname")
                            .and_then(Value::as_str)
                            .unwrap_or("?"),
                        a.get("status").and_then(Value::as_str).unwrap_or("?")
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    format!(
        "status={} receiver={} alerts=[{alerts}]",
        h.status(),
        h.body
            .get("receiver")
            .and_then(Value::as_str)
            .unwrap_or("?")
    )
}

fn mail_line(m: &ReceivedMail) -> String {
    format!("to {}  subject: {}", m.to.join(", "), m.subject())
}

/// A fresh directory under the system's temp dir.
fn temp_state_dir(clock: &Clock) -> PathBuf {
    std::env::temp_dir().join(format!(
        "rearguard-demo-{}-{}",
        std::process::id(),
        clock.now_ms()
    ))
}

/// `rearguard demo [--keep-running] [--state-dir DIR]`.
pub async fn run(keep_running: bool, state_dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let clock = Clock::system();
    let timings = Timings::default();
    let state_dir = state_dir.unwrap_or_else(|| temp_state_dir(&clock));
    println!("rearguard demo: a Cloud Run staging service on loopback, a bad deploy, and the real daemon watching it.");
    println!("  state dir: {}", state_dir.display());
    println!("  starting the fake Google APIs, the simulated service, the local webhook and SMTP sinks, and the daemon ...");

    let start = DemoRun::start(clock, &state_dir, timings);
    let run = tokio::select! {
        r = start => r?,
        _ = tokio::signal::ctrl_c() => {
            println!("\ninterrupted before the demo started");
            return Ok(ExitCode::from(130));
        }
    };
    println!(
        "  config:    {} (rules: rules.yaml beside it)",
        run.config_path.display()
    );
    println!("  daemon:    {}", run.url());
    println!(
        "  service:   {} (Cloud Run service {})",
        run.demo.service.url(),
        short(&run.demo.service_name)
    );
    println!(
        "  webhook:   {}   smtp: {}",
        run.webhook.url(),
        run.smtp.smarthost()
    );
    println!();
    println!("Timeline (seconds since the bad deploy):");

    let mut print = |line: &str| println!("{line}");
    let outcome = tokio::select! {
        r = run.watch(&mut print) => Some(r),
        _ = tokio::signal::ctrl_c() => None,
    };
    let Some(outcome) = outcome else {
        println!("\ninterrupted; shutting the daemon down");
        run.shutdown().await;
        return Ok(ExitCode::from(130));
    };
    for line in run.summary() {
        println!("{line}");
    }
    let code = match &outcome {
        Ok(t) => {
            println!();
            println!(
                "Done: detected, rolled back and verified {:.1}s after the deploy; every alert resolved at {:+.1}s.",
                t.phases
                    .get(&Phase::Verified)
                    .map(|v| (v - t.deployed_at_ms) as f64 / 1000.0)
                    .unwrap_or(0.0),
                t.phases
                    .get(&Phase::Resolved)
                    .map(|v| (v - t.deployed_at_ms) as f64 / 1000.0)
                    .unwrap_or(0.0)
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("\nerror: {e}");
            eprintln!("  the daemon's state is in {}", run.state_dir.display());
            ExitCode::FAILURE
        }
    };
    if keep_running {
        let url = run.url();
        println!();
        println!("Everything keeps running; press Ctrl-C to stop.");
        println!("  {url}/metrics");
        println!("  {url}/api/v1/alerts");
        println!("  {url}/api/v1/rollbacks");
        println!("  {url}/api/v1/rules");
        println!("  simulated service: {}", run.demo.service.url());
        let _ = tokio::signal::ctrl_c().await;
        println!("\nstopping");
    }
    run.shutdown().await;
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_fills_every_name() {
        let values = HashMap::from([("A", "1".to_string()), ("B", "two".to_string())]);
        assert_eq!(render("x ${A} y ${B}", &values).unwrap(), "x 1 y two");
        assert!(render("${C}", &values).is_err());
    }

    #[test]
    fn the_templates_name_only_known_values() {
        let names: Vec<&str> = [CONFIG_TEMPLATE, RULES_TEMPLATE]
            .iter()
            .flat_map(|t| t.split("${").skip(1))
            .filter_map(|s| s.split('}').next())
            .collect();
        assert!(names.contains(&"HEALTH_FOR"));
        for n in names {
            assert!(n.chars().all(|c| c.is_ascii_uppercase() || c == '_'), "{n}");
        }
    }

    #[test]
    fn durations_format_for_the_config() {
        assert_eq!(fmt_dur(Duration::from_secs(2)), "2s");
        assert_eq!(fmt_dur(Duration::from_millis(900)), "900ms");
    }
}
