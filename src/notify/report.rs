//! Digest reports: on each `reports:` schedule, a summary of the period since
//! the previous scheduled time — alerts fired and resolved, time spent pending
//! and firing per rule, probe availability per probe, notifications delivered
//! and dead-lettered, rollbacks — mailed through the outbox.
//!
//! The builder works over plain data ([`ReportInput`]); [`ReportData`] gathers
//! it. [`StoreReportData`] reads probe transitions and outbox stats from the
//! store; alert-state history and rollbacks come from hooks the daemon wires
//! once those areas exist ([`AlertHistory`], [`RollbackHistory`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::clock::{to_datetime, Clock, TimestampMs};
use crate::dispatch::notification::BoxFuture;
use crate::notify::email::humanize_duration;
use crate::notify::outbox::Outbox;
use crate::notify::payload::{rfc3339, RenderedReport};
use crate::store::outbox::OutboxStats;
use crate::store::{ProbeTransition, Store};
use crate::template::html_escape;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    Inactive,
    Pending,
    Firing,
}

/// One alert series entering a state.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AlertStateChange {
    /// The rule's alert name.
    pub rule: String,
    /// The series' labels (identifies it within the rule).
    pub labels: BTreeMap<String, String>,
    pub at_ms: TimestampMs,
    pub state: AlertState,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RollbackSummary {
    pub at_ms: TimestampMs,
    pub action: String,
    pub outcome: String,
    pub reason: String,
}

/// Everything a report is built from. Changes and transitions before the
/// period are used for the state at its start; later ones are ignored.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ReportInput {
    pub name: String,
    pub from_ms: TimestampMs,
    pub to_ms: TimestampMs,
    pub alert_changes: Vec<AlertStateChange>,
    pub probe_transitions: Vec<ProbeTransition>,
    pub notifications: Vec<OutboxStats>,
    pub rollbacks: Vec<RollbackSummary>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RuleSummary {
    pub fired: u64,
    pub resolved: u64,
    pub pending_ms: i64,
    pub firing_ms: i64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ProbeSummary {
    /// Fraction of the known time in the period the probe was up (None: no data).
    pub availability: Option<f64>,
    pub down_ms: i64,
    pub outages: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Report {
    pub name: String,
    pub from_ms: TimestampMs,
    pub to_ms: TimestampMs,
    pub rules: BTreeMap<String, RuleSummary>,
    pub probes: BTreeMap<String, ProbeSummary>,
    pub notifications: Vec<OutboxStats>,
    pub rollbacks: Vec<RollbackSummary>,
}

impl Report {
    pub fn fired(&self) -> u64 {
        self.rules.values().map(|r| r.fired).sum()
    }
    pub fn resolved(&self) -> u64 {
        self.rules.values().map(|r| r.resolved).sum()
    }
}

/// A rule name and a series' labels.
type SeriesKey = (String, Vec<(String, String)>);

/// Builds the summary of `[from_ms, to_ms)`.
pub fn build(input: &ReportInput) -> Report {
    let (from, to) = (input.from_ms, input.to_ms.max(input.from_ms));
    let mut rules: BTreeMap<String, RuleSummary> = BTreeMap::new();
    // Per series: its changes in time order.
    let mut series: BTreeMap<SeriesKey, Vec<&AlertStateChange>> = BTreeMap::new();
    for c in &input.alert_changes {
        let key = (
            c.rule.clone(),
            c.labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        );
        series.entry(key).or_default().push(c);
    }
    for ((rule, _), mut changes) in series {
        changes.sort_by_key(|c| c.at_ms);
        let summary = rules.entry(rule).or_default();
        let mut state = AlertState::Inactive;
        let mut since = from;
        for c in changes {
            if c.at_ms >= to {
                break;
            }
            if c.at_ms >= from {
                let span = c.at_ms - since;
                match state {
                    AlertState::Pending => summary.pending_ms += span,
                    AlertState::Firing => summary.firing_ms += span,
                    AlertState::Inactive => {}
                }
                if c.state == AlertState::Firing && state != AlertState::Firing {
                    summary.fired += 1;
                }
                if state == AlertState::Firing && c.state != AlertState::Firing {
                    summary.resolved += 1;
                }
                since = c.at_ms;
            }
            state = c.state;
        }
        match state {
            AlertState::Pending => summary.pending_ms += to - since,
            AlertState::Firing => summary.firing_ms += to - since,
            AlertState::Inactive => {}
        }
    }
    let mut probes: BTreeMap<String, ProbeSummary> = BTreeMap::new();
    let mut by_probe: BTreeMap<&str, Vec<&ProbeTransition>> = BTreeMap::new();
    for t in &input.probe_transitions {
        by_probe.entry(t.probe.as_str()).or_default().push(t);
    }
    for (probe, mut ts) in by_probe {
        ts.sort_by_key(|t| t.at_ms);
        let mut state: Option<bool> = None;
        let mut since = from;
        let (mut up_ms, mut down_ms, mut outages) = (0i64, 0i64, 0u64);
        let account =
            |state: Option<bool>, span: i64, up_ms: &mut i64, down_ms: &mut i64| match state {
                Some(true) => *up_ms += span,
                Some(false) => *down_ms += span,
                None => {}
            };
        for t in ts {
            if t.at_ms >= to {
                break;
            }
            if t.at_ms >= from {
                account(state, t.at_ms - since, &mut up_ms, &mut down_ms);
                if !t.up && state != Some(false) {
                    outages += 1;
                }
                since = t.at_ms;
            }
            state = Some(t.up);
        }
        account(state, to - since, &mut up_ms, &mut down_ms);
        let known = up_ms + down_ms;
        probes.insert(
            probe.to_string(),
            ProbeSummary {
                availability: (known > 0).then(|| up_ms as f64 / known as f64),
                down_ms,
                outages,
            },
        );
    }
    let mut rollbacks: Vec<RollbackSummary> = input
        .rollbacks
        .iter()
        .filter(|r| r.at_ms >= from && r.at_ms < to)
        .cloned()
        .collect();
    rollbacks.sort_by_key(|r| r.at_ms);
    Report {
        name: input.name.clone(),
        from_ms: from,
        to_ms: to,
        rules,
        probes,
        notifications: input.notifications.clone(),
        rollbacks,
    }
}

fn pct(a: Option<f64>) -> String {
    a.map(|a| format!("{:.3}%", a * 100.0))
        .unwrap_or_else(|| "no data".into())
}

/// Renders the report as an email (subject, text and HTML).
pub fn render(r: &Report) -> RenderedReport {
    render_mail(r, None)
}

/// Renders a report sent at `sent_at_ms`, after its due time (the end of its
/// period) passed while the daemon was not running: marked as late in the
/// subject and the body.
pub fn render_late(r: &Report, sent_at_ms: TimestampMs) -> RenderedReport {
    render_mail(r, Some(sent_at_ms))
}

fn render_mail(r: &Report, sent_late_at_ms: Option<TimestampMs>) -> RenderedReport {
    let mut subject = format!(
        "[rearguard report] {}: {} fired, {} resolved ({} – {})",
        r.name,
        r.fired(),
        r.resolved(),
        to_datetime(r.from_ms).format("%Y-%m-%d %H:%M"),
        to_datetime(r.to_ms).format("%Y-%m-%d %H:%M UTC"),
    );
    let late = sent_late_at_ms.map(|sent| {
        format!(
            "This report was due at {} but rearguard was not running then; it was sent at {}.",
            rfc3339(r.to_ms),
            rfc3339(sent)
        )
    });
    if late.is_some() {
        let _ = write!(
            subject,
            " (sent late: rearguard was not running at {})",
            to_datetime(r.to_ms).format("%H:%M UTC")
        );
    }
    let mut t = String::new();
    let mut h = String::new();
    let e = html_escape;
    let _ = writeln!(
        t,
        "{subject}\n\nPeriod: {} to {}\n",
        rfc3339(r.from_ms),
        rfc3339(r.to_ms)
    );
    let _ = writeln!(
        h,
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{}</title></head><body style=\"font-family: sans-serif\">\n<h2>{}</h2>\n<p>Period: {} to {}</p>",
        e(&subject),
        e(&subject),
        rfc3339(r.from_ms),
        rfc3339(r.to_ms)
    );
    if let Some(late) = &late {
        let _ = writeln!(t, "{late}\n");
        let _ = writeln!(h, "<p><strong>{}</strong></p>", e(late));
    }
    let _ = writeln!(t, "Alerts: {} fired, {} resolved", r.fired(), r.resolved());
    h.push_str("<h3>Alerts</h3>\n");
    if r.rules.is_empty() {
        t.push_str("  no alert activity\n");
        h.push_str("<p>No alert activity.</p>\n");
    } else {
        h.push_str("<table border=\"1\" cellpadding=\"3\"><tr><th>Rule</th><th>Fired</th><th>Resolved</th><th>Pending</th><th>Firing</th></tr>\n");
        for (rule, s) in &r.rules {
            let _ = writeln!(
                t,
                "  {rule}: fired {}, resolved {}, pending {}, firing {}",
                s.fired,
                s.resolved,
                humanize_duration(s.pending_ms),
                humanize_duration(s.firing_ms)
            );
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                e(rule),
                s.fired,
                s.resolved,
                humanize_duration(s.pending_ms),
                humanize_duration(s.firing_ms)
            );
        }
        h.push_str("</table>\n");
    }
    t.push_str("\nProbes:\n");
    h.push_str("<h3>Probes</h3>\n");
    if r.probes.is_empty() {
        t.push_str("  no probe data\n");
        h.push_str("<p>No probe data.</p>\n");
    } else {
        h.push_str("<table border=\"1\" cellpadding=\"3\"><tr><th>Probe</th><th>Availability</th><th>Down</th><th>Outages</th></tr>\n");
        for (p, s) in &r.probes {
            let _ = writeln!(
                t,
                "  {p}: availability {}, down {}, {} outage(s)",
                pct(s.availability),
                humanize_duration(s.down_ms),
                s.outages
            );
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                e(p),
                pct(s.availability),
                humanize_duration(s.down_ms),
                s.outages
            );
        }
        h.push_str("</table>\n");
    }
    t.push_str("\nNotifications:\n");
    h.push_str("<h3>Notifications</h3>\n");
    if r.notifications.is_empty() {
        t.push_str("  none\n");
        h.push_str("<p>None.</p>\n");
    } else {
        h.push_str("<table border=\"1\" cellpadding=\"3\"><tr><th>Receiver</th><th>Integration</th><th>Sent</th><th>Failed</th><th>Pending</th></tr>\n");
        for n in &r.notifications {
            let _ = writeln!(
                t,
                "  {} {}: sent {}, failed {}, pending {}",
                n.receiver, n.integration, n.delivered, n.dead_lettered, n.pending
            );
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                e(&n.receiver),
                e(&n.integration),
                n.delivered,
                n.dead_lettered,
                n.pending
            );
        }
        h.push_str("</table>\n");
    }
    t.push_str("\nRollbacks:\n");
    h.push_str("<h3>Rollbacks</h3>\n");
    if r.rollbacks.is_empty() {
        t.push_str("  none\n");
        h.push_str("<p>None.</p>\n");
    } else {
        h.push_str("<ul>\n");
        for rb in &r.rollbacks {
            let line = format!(
                "{} {}: {} ({})",
                rfc3339(rb.at_ms),
                rb.action,
                rb.outcome,
                rb.reason
            );
            let _ = writeln!(t, "  {line}");
            let _ = writeln!(h, "<li>{}</li>", e(&line));
        }
        h.push_str("</ul>\n");
    }
    h.push_str("</body></html>\n");
    RenderedReport {
        name: r.name.clone(),
        subject,
        text: t,
        html: h,
    }
}

/// Alert-state history (the rules area's store), for reports.
pub trait AlertHistory: Send + Sync {
    /// State changes in `[from_ms, to_ms)`, plus each series' last change before `from_ms`.
    fn changes<'a>(
        &'a self,
        from_ms: TimestampMs,
        to_ms: TimestampMs,
    ) -> BoxFuture<'a, Result<Vec<AlertStateChange>, String>>;
}

/// Rollback audit (the action area's store), for reports.
pub trait RollbackHistory: Send + Sync {
    fn rollbacks<'a>(
        &'a self,
        from_ms: TimestampMs,
        to_ms: TimestampMs,
    ) -> BoxFuture<'a, Result<Vec<RollbackSummary>, String>>;
}

/// Gathers a report's input.
pub trait ReportData: Send + Sync {
    fn gather<'a>(
        &'a self,
        name: &'a str,
        from_ms: TimestampMs,
        to_ms: TimestampMs,
    ) -> BoxFuture<'a, Result<ReportInput, String>>;
}

/// Probe transitions and notification stats from the store, alert history and
/// rollbacks from the optional hooks.
pub struct StoreReportData {
    pub store: Store,
    pub alerts: Option<Arc<dyn AlertHistory>>,
    pub rollbacks: Option<Arc<dyn RollbackHistory>>,
}

/// How many transitions per probe a report reads at most.
const PROBE_HISTORY_LIMIT: usize = 100_000;

impl ReportData for StoreReportData {
    fn gather<'a>(
        &'a self,
        name: &'a str,
        from_ms: TimestampMs,
        to_ms: TimestampMs,
    ) -> BoxFuture<'a, Result<ReportInput, String>> {
        Box::pin(async move {
            let mut probe_transitions = Vec::new();
            let probes = self
                .store
                .last_probe_transitions()
                .await
                .map_err(|e| e.to_string())?;
            for p in probes {
                let hist = self
                    .store
                    .probe_history(&p.probe, PROBE_HISTORY_LIMIT)
                    .await
                    .map_err(|e| e.to_string())?;
                // The last transition before the period gives the state at its start.
                let before = hist.iter().rposition(|t| t.at_ms < from_ms);
                let start = before.unwrap_or(0);
                probe_transitions.extend(hist.into_iter().skip(start).filter(|t| t.at_ms < to_ms));
            }
            let notifications = self
                .store
                .outbox_stats(from_ms, to_ms)
                .await
                .map_err(|e| e.to_string())?;
            let alert_changes = match &self.alerts {
                Some(a) => a.changes(from_ms, to_ms).await?,
                None => Vec::new(),
            };
            let rollbacks = match &self.rollbacks {
                Some(r) => r.rollbacks(from_ms, to_ms).await?,
                None => Vec::new(),
            };
            Ok(ReportInput {
                name: name.to_string(),
                from_ms,
                to_ms,
                alert_changes,
                probe_transitions,
                notifications,
                rollbacks,
            })
        })
    }
}

/// The next run of a schedule after `now_ms`, and the run before that (the period's start).
pub fn next_period(
    schedule: &cron::Schedule,
    now_ms: TimestampMs,
) -> Option<(TimestampMs, TimestampMs)> {
    let now = to_datetime(now_ms);
    let next = schedule.after(&now).next()?;
    let prev = schedule.after(&next).next_back()?;
    Some((prev.timestamp_millis(), next.timestamp_millis()))
}

/// The latest run of a schedule at or before `now_ms`, and the run before
/// that: the most recent period that has ended.
pub fn last_period(
    schedule: &cron::Schedule,
    now_ms: TimestampMs,
) -> Option<(TimestampMs, TimestampMs)> {
    let (due, _) = next_period(schedule, now_ms)?;
    let from = schedule.after(&to_datetime(due)).next_back()?;
    Some((from.timestamp_millis(), due))
}

/// How often the scheduler looks at the (possibly reloaded) config again.
const RECHECK: Duration = Duration::from_secs(60);

/// Gathers, renders and queues one run of a report (due at `due`, covering
/// `[from, due)`); `sent_late_at` marks a run caught up after a restart.
async fn run_report(
    outbox: &Outbox,
    data: &dyn ReportData,
    name: &str,
    (from, due): (TimestampMs, TimestampMs),
    sent_late_at: Option<TimestampMs>,
) {
    let input = match data.gather(name, from, due).await {
        Ok(input) => input,
        Err(e) => {
            tracing::error!(report = name, error = %e, "cannot gather the report's data");
            return;
        }
    };
    let report = build(&input);
    let rendered = match sent_late_at {
        Some(at) => render_late(&report, at),
        None => render(&report),
    };
    match outbox.enqueue_report(rendered, due).await {
        Ok(_) => tracing::info!(report = name, "report queued"),
        Err(e) => tracing::error!(report = name, error = %e, "cannot queue the report"),
    }
}

/// At start: the report's most recent run, if it passed while the daemon was
/// not running and an earlier run was queued (a report never queued before is
/// new, and waits for its first run). Older missed runs are not caught up.
async fn missed_run(
    outbox: &Outbox,
    name: &str,
    schedule: &cron::Schedule,
    now: TimestampMs,
) -> Option<(TimestampMs, TimestampMs)> {
    let period = last_period(schedule, now)?;
    let last_queued = match outbox.last_report_run_ms(name).await {
        Ok(last) => last?,
        Err(e) => {
            tracing::error!(report = name, error = %e, "cannot read when the report last ran; a run missed while rearguard was not running is not caught up");
            return None;
        }
    };
    (last_queued < period.1).then(|| {
        tracing::info!(
            report = name,
            due = %rfc3339(period.1),
            last_queued = %rfc3339(last_queued),
            "the report's run was missed while rearguard was not running; sending it late (only the latest missed run)"
        );
        period
    })
}

/// Runs the reports of the outbox's config on their schedules until `shutdown`
/// turns true. Reloads are picked up within a minute. At start, each report's
/// latest run missed while the daemon was not running is sent once, late.
pub fn spawn_scheduler(
    outbox: Outbox,
    clock: Clock,
    data: Arc<dyn ReportData>,
    mut shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        // Report name -> the run time it is waiting for.
        let mut waiting: BTreeMap<String, (TimestampMs, TimestampMs)> = BTreeMap::new();
        // Only reports configured at start catch up: one added by a reload is new.
        let mut starting = true;
        loop {
            if *shutdown.borrow() {
                return;
            }
            let now = clock.now_ms();
            let cfg = outbox.config();
            waiting.retain(|name, _| cfg.reports.iter().any(|r| &r.name == name));
            for r in &cfg.reports {
                let Some(schedule) = r.cron_schedule() else {
                    continue;
                };
                if starting {
                    if let Some(period) = missed_run(&outbox, &r.name, &schedule, now).await {
                        let late = (now > period.1).then_some(now);
                        run_report(&outbox, &*data, &r.name, period, late).await;
                    }
                }
                if let Some(&period) = waiting.get(&r.name) {
                    if period.1 <= now {
                        run_report(&outbox, &*data, &r.name, period, None).await;
                        waiting.remove(&r.name);
                    }
                }
                if !waiting.contains_key(&r.name) {
                    if let Some(p) = next_period(&schedule, now) {
                        waiting.insert(r.name.clone(), p);
                    }
                }
            }
            starting = false;
            let next_due = waiting.values().map(|p| p.1).min().unwrap_or(i64::MAX);
            let wake = next_due.min(now + RECHECK.as_millis() as i64);
            tokio::select! {
                _ = clock.sleep_until_ms(wake) => {}
                _ = shutdown.changed() => {}
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(rule: &str, inst: &str, at: i64, state: AlertState) -> AlertStateChange {
        AlertStateChange {
            rule: rule.into(),
            labels: [("instance".to_string(), inst.to_string())].into(),
            at_ms: at,
            state,
        }
    }

    fn probe(at: i64, up: bool) -> ProbeTransition {
        ProbeTransition {
            probe: "health".into(),
            at_ms: at,
            up,
            reason: None,
            status_code: None,
        }
    }

    #[test]
    fn summarises_states_and_availability() {
        let input = ReportInput {
            name: "daily".into(),
            from_ms: 1000,
            to_ms: 11_000,
            alert_changes: vec![
                // Firing since before the period, resolved inside it.
                change("A", "x", 0, AlertState::Firing),
                change("A", "x", 3000, AlertState::Inactive),
                // Pending 2s then firing until the end.
                change("A", "y", 5000, AlertState::Pending),
                change("A", "y", 7000, AlertState::Firing),
                // After the period: ignored.
                change("B", "z", 12_000, AlertState::Firing),
            ],
            probe_transitions: vec![
                probe(0, true),
                probe(2000, false),
                probe(4000, true),
                probe(10_000, false),
            ],
            notifications: vec![],
            rollbacks: vec![RollbackSummary {
                at_ms: 8000,
                action: "backend".into(),
                outcome: "succeeded".into(),
                reason: "HighErrorRate".into(),
            }],
        };
        let r = build(&input);
        let a = &r.rules["A"];
        assert_eq!((a.fired, a.resolved), (1, 1));
        assert_eq!(a.firing_ms, 2000 + 4000);
        assert_eq!(a.pending_ms, 2000);
        assert_eq!(r.rules["B"], RuleSummary::default());
        let p = &r.probes["health"];
        assert_eq!(p.down_ms, 2000 + 1000);
        assert_eq!(p.outages, 2);
        assert!((p.availability.unwrap() - 0.7).abs() < 1e-9);
        let mail = render(&r);
        assert!(
            mail.subject.contains("1 fired, 1 resolved"),
            "{}",
            mail.subject
        );
        assert!(
            mail.text.contains("health: availability 70.000%"),
            "{}",
            mail.text
        );
        assert!(mail.text.contains("backend: succeeded"), "{}", mail.text);
    }

    #[test]
    fn period_is_previous_to_next_run() {
        let s = crate::config::receivers::parse_cron("0 8 * * *").unwrap();
        // 2026-01-01T12:00:00Z
        let now = 1_767_268_800_000;
        let (from, to) = next_period(&s, now).unwrap();
        assert_eq!(rfc3339(from), "2026-01-01T08:00:00Z");
        assert_eq!(rfc3339(to), "2026-01-02T08:00:00Z");
        // The period that ended last: the one before, also when a run is exactly now.
        for now in [now, 1_767_254_400_000] {
            let (from, due) = last_period(&s, now).unwrap();
            assert_eq!(
                rfc3339(from),
                "2025-12-31T08:00:00Z",
                "now {}",
                rfc3339(now)
            );
            assert_eq!(rfc3339(due), "2026-01-01T08:00:00Z");
        }
    }

    #[test]
    fn a_late_report_says_so_in_its_subject_and_body() {
        let r = build(&ReportInput {
            name: "daily".into(),
            // 2025-12-31T08:00Z to 2026-01-01T08:00Z
            from_ms: 1_767_168_000_000,
            to_ms: 1_767_254_400_000,
            ..ReportInput::default()
        });
        let on_time = render(&r);
        assert!(!on_time.subject.contains("late"), "{}", on_time.subject);
        let late = render_late(&r, 1_767_254_400_000 + 2 * 3_600_000);
        assert_eq!(
            late.subject,
            "[rearguard report] daily: 0 fired, 0 resolved (2025-12-31 08:00 – 2026-01-01 08:00 UTC) (sent late: rearguard was not running at 08:00 UTC)"
        );
        assert!(late.text.starts_with(&late.subject), "{}", late.text);
        assert!(
            late.text.contains("This report was due at 2026-01-01T08:00:00Z but rearguard was not running then; it was sent at 2026-01-01T10:00:00Z."),
            "{}",
            late.text
        );
        assert!(
            late.html.contains("<p><strong>This report was due at"),
            "{}",
            late.html
        );
    }
}
