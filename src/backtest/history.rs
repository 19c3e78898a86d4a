//! Reads a window of history from Google through the live clients and the
//! live sources' conversions: `timeSeries.list` for each `cloud_monitoring`
//! entry (converted by `source::cloud_monitoring::convert`), `entries.list`
//! for each `cloud_logging` query (counted into `log_entries_total` at the
//! query's poll ticks, as the live source does), `revisions.list` for create
//! times and Ready conditions, and the Admin Activity audit log for deploys
//! and traffic changes (`gcp::audit`). Every Logging call goes through the
//! context's shared quota. Any error ends the read: a partial history is
//! never replayed as if it were whole.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::action::cloud_run::RevisionState;
use crate::action::deps::ServingPeriod;
use crate::clock::{to_datetime, TimestampMs};
use crate::config::gcp::{CloudLoggingConfig, CloudMonitoringConfig};
use crate::config::Config;
use crate::gcp::audit::{self, AuditError, ServiceChange};
use crate::gcp::logging::ListLogEntriesRequest;
use crate::gcp::monitoring::{rfc3339, Aggregation, ListTimeSeries};
use crate::gcp::{GcpContext, GcpError};
use crate::labels::{Labels, Sample, METRIC_NAME};
use crate::source::cloud_monitoring::{convert, default_aligner, series_filter, MonitoringState};

/// How far before the window the audit log is read, to know what served
/// when the window starts (Admin Activity entries are kept 400 days:
/// https://cloud.google.com/logging/docs/routing/overview#buckets).
pub const AUDIT_LOOKBEHIND_MS: i64 = 30 * 24 * 3_600_000;
/// One `timeSeries.list` query covers at most this much (pages stay small,
/// progress shows, a failure says where).
const MONITORING_CHUNK_MS: i64 = 24 * 3_600_000;
const MONITORING_MAX_PAGES: usize = 100;
const LOGGING_PAGE_SIZE: i32 = 1000;
/// Pages of one log query at most (each a call against the shared quota).
const LOGGING_MAX_PAGES: usize = 2000;

/// What one service did: what served before the window, the changes since,
/// and its revisions.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServiceHistory {
    /// What served before the first change read (from `revisions.list` when
    /// the audit log does not reach back to it).
    pub initial: Option<ServingPeriod>,
    pub changes: Vec<ServiceChange>,
    pub revisions: Vec<RevisionState>,
}

/// Everything the replay needs, read once.
#[derive(Clone, Debug, Default)]
pub struct History {
    /// Samples of every source, in the order the live sources would have
    /// written them (by [`History::visible_at`]).
    pub samples: Vec<Sample>,
    /// When the live daemon would have had each sample (same order as
    /// `samples`; empty: at the sample's own time). A `cloud_monitoring`
    /// point is read by the first poll after it; the poll's phase is not in
    /// the history, so the latest, one `interval` later, is taken.
    pub visible_at: Vec<TimestampMs>,
    /// By full service name.
    pub services: BTreeMap<String, ServiceHistory>,
}

/// Why the history could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("reading cloud_monitoring entry {source_name:?} ({metric}) between {from} and {to}: {error}")]
    Monitoring {
        source_name: String,
        metric: String,
        from: String,
        to: String,
        error: GcpError,
    },
    #[error("cloud_monitoring entry {source_name:?}: Google's answer between {from} and {to} is incomplete ({why}); the backtest stops rather than replay part of the data")]
    Incomplete {
        source_name: String,
        from: String,
        to: String,
        why: String,
    },
    #[error("reading cloud_logging query {query:?}: {error}")]
    Logging { query: String, error: GcpError },
    #[error("cloud_logging query {query:?} has more than {pages} pages of entries in the window; narrow its filter or the window (--from/--to)")]
    TooManyLogPages { query: String, pages: usize },
    #[error("listing the revisions of {service}: {error}")]
    Revisions { service: String, error: GcpError },
    #[error("reading the deploy history of {service} from the audit log: {error}")]
    Audit { service: String, error: AuditError },
}

/// What the progress line shows.
#[derive(Clone, Debug, PartialEq)]
pub enum ReadProgress {
    Monitoring {
        source: String,
        upto_ms: TimestampMs,
    },
    Logging {
        query: String,
        entries: usize,
    },
    Audit {
        service: String,
        entries: usize,
    },
}

fn fmt(ms: TimestampMs) -> String {
    rfc3339(to_datetime(ms))
}

/// The aggregation the live source sends (the same defaults).
async fn aggregation(
    ctx: &GcpContext,
    cfg: &CloudMonitoringConfig,
    query: &ListTimeSeries,
) -> Result<Option<Aggregation>, GcpError> {
    let Some(a) = &cfg.aggregation else {
        return Ok(None);
    };
    let period = a
        .alignment_period
        .map(Duration::from)
        .unwrap_or(Duration::from_secs(60))
        .max(Duration::from_secs(60));
    let aligner = match &a.per_series_aligner {
        Some(al) => al.clone(),
        None => {
            let headers = ListTimeSeries {
                headers_only: true,
                page_size: 1,
                ..query.clone()
            };
            let page = ctx.monitoring.list_page(&headers, None).await?;
            let kind = page.time_series.first().map(|t| t.metric_kind.clone());
            default_aligner(kind.as_deref()).to_string()
        }
    };
    Ok(Some(Aggregation {
        alignment_period: period,
        per_series_aligner: Some(aligner),
        cross_series_reducer: a.cross_series_reducer.clone(),
        group_by_fields: a.group_by_fields.clone(),
    }))
}

/// One `cloud_monitoring` entry over `[from, to]`, day by day.
async fn read_monitoring(
    ctx: &GcpContext,
    cfg: &CloudMonitoringConfig,
    from_ms: TimestampMs,
    to_ms: TimestampMs,
    progress: &mut (dyn FnMut(ReadProgress) + Send),
    out: &mut Vec<Sample>,
) -> Result<(), HistoryError> {
    let err = |from: TimestampMs, to: TimestampMs, error: GcpError| HistoryError::Monitoring {
        source_name: cfg.name.clone(),
        metric: cfg.metric.clone(),
        from: fmt(from),
        to: fmt(to),
        error,
    };
    let mut query = ListTimeSeries {
        name: format!("projects/{}", ctx.project),
        filter: series_filter(&cfg.metric, cfg.filter.as_deref()),
        start: to_datetime(from_ms),
        end: to_datetime(to_ms),
        aggregation: None,
        headers_only: false,
        page_size: 1000,
    };
    query.aggregation = aggregation(ctx, cfg, &query)
        .await
        .map_err(|e| err(from_ms, to_ms, e))?;
    // Aligned queries: chunk edges on period boundaries, so no period is
    // split between two answers.
    let period = query
        .aggregation
        .as_ref()
        .map(|a| a.alignment_period.as_millis() as i64)
        .unwrap_or(1)
        .max(1);
    let align = |t: TimestampMs| t.div_euclid(period) * period;
    let mut state = MonitoringState::default();
    let mut start = align(from_ms);
    while start < to_ms {
        let end = align((start + MONITORING_CHUNK_MS).min(to_ms)).max(start + period);
        query.start = to_datetime(start);
        query.end = to_datetime(end);
        let list = ctx
            .monitoring
            .list_all(&query, MONITORING_MAX_PAGES)
            .await
            .map_err(|e| err(start, end, e))?;
        if let Some(why) = list.incomplete {
            return Err(HistoryError::Incomplete {
                source_name: cfg.name.clone(),
                from: fmt(start),
                to: fmt(end),
                why,
            });
        }
        for ts in &list.series {
            if let Err(e) = convert(ts, &mut state, out) {
                tracing::warn!(source = %cfg.name, metric = %ts.metric.type_, error = %e, "series skipped");
            }
        }
        progress(ReadProgress::Monitoring {
            source: cfg.name.clone(),
            upto_ms: end,
        });
        start = end;
    }
    Ok(())
}

/// Entries of one query: (time, severity, revision).
type Counted = (TimestampMs, String, String);

/// One `cloud_logging` query over `[from, to]`, oldest first.
async fn read_logging(
    ctx: &GcpContext,
    cfg: &CloudLoggingConfig,
    from_ms: TimestampMs,
    to_ms: TimestampMs,
    progress: &mut (dyn FnMut(ReadProgress) + Send),
) -> Result<Vec<Counted>, HistoryError> {
    let mut body = ListLogEntriesRequest {
        resource_names: vec![format!("projects/{}", ctx.project)],
        filter: format!(
            "({}) AND timestamp >= \"{}\" AND timestamp <= \"{}\"",
            cfg.filter.trim(),
            fmt(from_ms),
            fmt(to_ms)
        ),
        order_by: "timestamp asc".into(),
        page_size: Some(LOGGING_PAGE_SIZE),
        page_token: None,
    };
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..LOGGING_MAX_PAGES {
        let page = ctx
            .logging
            .list(&body, Some(&ctx.log_quota))
            .await
            .map_err(|error| HistoryError::Logging {
                query: cfg.name.clone(),
                error,
            })?;
        for e in &page.entries {
            if !e.insert_id.is_empty() && !seen.insert(e.insert_id.clone()) {
                continue;
            }
            let Some(ts) = e.timestamp else { continue };
            out.push((
                ts.timestamp_millis(),
                e.severity().to_string(),
                e.revision_name().unwrap_or("").to_string(),
            ));
        }
        progress(ReadProgress::Logging {
            query: cfg.name.clone(),
            entries: out.len(),
        });
        match page.next_page_token.filter(|t| !t.is_empty()) {
            Some(t) => body.page_token = Some(t),
            None => {
                out.sort();
                return Ok(out);
            }
        }
    }
    Err(HistoryError::TooManyLogPages {
        query: cfg.name.clone(),
        pages: LOGGING_MAX_PAGES,
    })
}

/// `log_entries_total{query,severity,revision_name}` as the live source
/// writes it: at each poll tick the running count of entries up to it; a
/// series starts at 0 just before its first count.
pub fn log_counters(
    query: &str,
    entries: &[Counted],
    from_ms: TimestampMs,
    to_ms: TimestampMs,
    interval_ms: i64,
) -> Vec<Sample> {
    let interval = interval_ms.max(1_000);
    let labels = |sev: &str, rev: &str| {
        Labels::from_pairs([
            (METRIC_NAME, crate::source::cloud_logging::METRIC),
            ("query", query),
            ("severity", sev),
            ("revision_name", rev),
        ])
    };
    let mut counts: BTreeMap<(String, String), f64> = BTreeMap::new();
    let mut out = Vec::new();
    let mut i = 0;
    let mut tick = from_ms - from_ms.rem_euclid(interval) + interval;
    while tick <= to_ms + interval {
        let mut new_keys = Vec::new();
        while i < entries.len() && entries[i].0 <= tick {
            let key = (entries[i].1.clone(), entries[i].2.clone());
            if !counts.contains_key(&key) {
                new_keys.push(key.clone());
            }
            *counts.entry(key).or_insert(0.0) += 1.0;
            i += 1;
        }
        for (sev, rev) in &new_keys {
            out.push(Sample {
                labels: labels(sev, rev),
                timestamp_ms: tick - 1,
                value: 0.0,
            });
        }
        for ((sev, rev), v) in &counts {
            out.push(Sample {
                labels: labels(sev, rev),
                timestamp_ms: tick,
                value: *v,
            });
        }
        tick += interval;
    }
    out
}

/// The services whose history the replay needs: those the actions change
/// and those the `cloud_run` entries watch.
pub fn services_of(config: &Config) -> Vec<String> {
    let mut out: Vec<String> = config
        .actions
        .values()
        .filter_map(|a| a.service())
        .chain(config.cloud_run.iter().map(|c| c.service.clone()))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// What served before the first change: the newest Ready revision created
/// before it (before `before_ms` when there is no change), other than the
/// one the change put in front (a deploy creates its revision before the
/// entry that ends it).
fn initial_serving(
    revisions: &[RevisionState],
    changes: &[ServiceChange],
    before_ms: TimestampMs,
) -> Option<ServingPeriod> {
    let until = changes.first().map(|c| c.at_ms).unwrap_or(before_ms);
    let after_first = changes.first().and_then(|c| c.main_revision());
    revisions
        .iter()
        .filter(|r| r.ready && r.create_time_ms < until && Some(r.name.as_str()) != after_first)
        .max_by_key(|r| (r.create_time_ms, r.name.clone()))
        .map(|r| ServingPeriod {
            revision: r.name.clone(),
            since_ms: r.create_time_ms,
        })
}

/// Reads everything over `[read_from, to]` (the audit log from further back).
pub async fn read(
    ctx: &GcpContext,
    config: &Config,
    read_from_ms: TimestampMs,
    to_ms: TimestampMs,
    progress: &mut (dyn FnMut(ReadProgress) + Send),
) -> Result<History, HistoryError> {
    let mut timed: Vec<(TimestampMs, Sample)> = Vec::new();
    for m in &config.cloud_monitoring {
        let mut samples = Vec::new();
        read_monitoring(ctx, m, read_from_ms, to_ms, progress, &mut samples).await?;
        let poll = m.interval.as_millis();
        timed.extend(samples.into_iter().map(|s| (s.timestamp_ms + poll, s)));
    }
    for l in &config.cloud_logging {
        let entries = read_logging(ctx, l, read_from_ms, to_ms, progress).await?;
        // Counted at the poll itself.
        let counters = log_counters(
            &l.name,
            &entries,
            read_from_ms,
            to_ms,
            l.interval.as_millis(),
        );
        timed.extend(counters.into_iter().map(|s| (s.timestamp_ms, s)));
    }
    // Stable, and a source's delay is the same for all its samples: the
    // samples of one series keep their order.
    timed.sort_by_key(|(v, _)| *v);
    let (visible_at, samples): (Vec<TimestampMs>, Vec<Sample>) = timed.into_iter().unzip();
    let mut services = BTreeMap::new();
    for service in services_of(config) {
        let revisions: Vec<RevisionState> = ctx
            .run
            .list_revisions(&service)
            .await
            .map_err(|error| HistoryError::Revisions {
                service: service.clone(),
                error,
            })?
            .iter()
            .map(|r| RevisionState {
                name: r.short_name().to_string(),
                create_time_ms: r
                    .create_time
                    .map(|t: DateTime<Utc>| t.timestamp_millis())
                    .unwrap_or(0),
                ready: r.is_ready(),
            })
            .collect();
        let short = crate::gcp::run::short_name(&service).to_string();
        let mut on_page = |n: usize| {
            progress(ReadProgress::Audit {
                service: short.clone(),
                entries: n,
            })
        };
        let changes = audit::read_service_changes(
            &ctx.logging,
            &ctx.log_quota,
            &ctx.project,
            &service,
            read_from_ms - AUDIT_LOOKBEHIND_MS,
            to_ms,
            &mut on_page,
        )
        .await
        .map_err(|error| HistoryError::Audit {
            service: service.clone(),
            error,
        })?;
        let initial = initial_serving(&revisions, &changes, read_from_ms);
        services.insert(
            service,
            ServiceHistory {
                initial,
                changes,
                revisions,
            },
        );
    }
    Ok(History {
        samples,
        visible_at,
        services,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_served_first_is_not_what_the_first_deploy_created() {
        let rev = |name: &str, t: i64| RevisionState {
            name: name.into(),
            create_time_ms: t,
            ready: true,
        };
        let revisions = vec![rev("s-1", 0), rev("s-2", 1_000)];
        let deploy = ServiceChange {
            at_ms: 20_000,
            method: "google.cloud.run.v2.Services.UpdateService".into(),
            actor: None,
            serving: vec![("s-2".into(), 100)],
            latest_ready: Some("s-2".into()),
        };
        let first = initial_serving(&revisions, &[deploy], 30_000).unwrap();
        assert_eq!(first.revision, "s-1");
        // No change read: the newest Ready revision before the window.
        assert_eq!(
            initial_serving(&revisions, &[], 30_000).unwrap().revision,
            "s-2"
        );
    }

    #[test]
    fn log_counters_count_up_at_each_tick_from_zero() {
        let e = vec![
            (65_000, "ERROR".to_string(), "r1".to_string()),
            (70_000, "ERROR".to_string(), "r1".to_string()),
            (130_000, "ERROR".to_string(), "r1".to_string()),
        ];
        let s = log_counters("errors", &e, 0, 180_000, 60_000);
        let vals: Vec<(i64, f64)> = s.iter().map(|s| (s.timestamp_ms, s.value)).collect();
        assert_eq!(
            vals,
            vec![
                (119_999, 0.0),
                (120_000, 2.0),
                (180_000, 3.0),
                (240_000, 3.0)
            ]
        );
    }
}
