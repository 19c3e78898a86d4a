//! `cloud_logging:` entries: one filter each, read with `entries.list` over a
//! window that starts a little before a persisted cursor (entries arrive late),
//! de-duplicated by insertId across windows and restarts, counted into
//! `log_entries_total{query,severity[,revision_name]}`. The last entries of each
//! query are kept as evidence for notifications and the API. Every query of the
//! project shares one call quota (Cloud Logging allows 60 calls a minute).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::clock::{to_datetime, TimestampMs};
use crate::config::gcp::CloudLoggingConfig;
use crate::gcp::logging::{ListLogEntriesRequest, LogEntry};
use crate::gcp::monitoring::rfc3339;
use crate::gcp::{GcpContext, GcpError};
use crate::labels::{Labels, Sample, METRIC_NAME};
use crate::source::health::kind;
use crate::store::gcp::KIND_LOGGING;

pub use super::poll::GcpSourceDeps;
use super::poll::{PolledSource, SourcePolls};

pub const METRIC: &str = "log_entries_total";
/// Entries kept per query as evidence.
pub const EVIDENCE_PER_QUERY: usize = 20;
const MAX_MESSAGE_CHARS: usize = 2000;
const PAGE_SIZE: i32 = 1000;
/// Pages read per poll at most (each is a call against the quota).
const MAX_PAGES_PER_POLL: usize = 20;
/// JSON payloads larger than this are not kept as evidence (the message is).
const MAX_JSON_EVIDENCE_BYTES: usize = 8 * 1024;

/// One log entry kept as evidence.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogEvidence {
    pub query: String,
    pub timestamp: Option<DateTime<Utc>>,
    pub severity: String,
    pub revision: Option<String>,
    /// `textPayload`, `jsonPayload.message`, or the JSON payload as text (shortened).
    pub message: String,
    /// The JSON payload, when the entry had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json_payload: Option<serde_json::Value>,
    pub insert_id: String,
    pub log_name: String,
}

/// The evidence of every query, shared by the sources (writers) and
/// notifications, templates and the API (readers). Cheap to clone.
#[derive(Clone, Default)]
pub struct LogEvidenceStore {
    inner: Arc<RwLock<HashMap<String, VecDeque<LogEvidence>>>>,
}

impl LogEvidenceStore {
    /// The last entries of `query`, oldest first (at most [`EVIDENCE_PER_QUERY`]).
    pub fn entries(&self, query: &str) -> Option<Vec<LogEvidence>> {
        let g = self.inner.read().unwrap_or_else(|p| p.into_inner());
        g.get(query).map(|q| q.iter().cloned().collect())
    }

    /// The names of the queries that have evidence (or are configured).
    pub fn queries(&self) -> Vec<String> {
        let g = self.inner.read().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<String> = g.keys().cloned().collect();
        v.sort();
        v
    }

    /// Replaces the evidence of `query` (the sources do this after each poll).
    pub fn set(&self, query: &str, entries: VecDeque<LogEvidence>) {
        let mut g = self.inner.write().unwrap_or_else(|p| p.into_inner());
        g.insert(query.to_string(), entries);
    }

    fn retain(&self, keep: &[String]) {
        let mut g = self.inner.write().unwrap_or_else(|p| p.into_inner());
        g.retain(|k, _| keep.contains(k));
    }
}

/// What a log query persists.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LoggingState {
    /// The end of the last window read.
    pub cursor_ms: Option<TimestampMs>,
    /// insertIds read in the overlap, with their entry time (pruned as the window moves).
    pub seen: BTreeMap<String, TimestampMs>,
    /// Counter totals keyed by `severity` + `\u{1}` + `revision_name`.
    pub counts: BTreeMap<String, f64>,
    pub evidence: VecDeque<LogEvidence>,
    /// The last poll stopped at its page limit: the next one starts exactly at the cursor.
    /// (Written by older versions; a search cut short is now resumed instead.)
    #[serde(default)]
    pub partial: bool,
    /// A search cut short by the page limit, continued by the next poll with
    /// its page token rather than started again (a slow search answers empty
    /// pages with tokens until it has looked everywhere: logging-v2.json,
    /// `ListLogEntriesResponse.nextPageToken`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<ResumeSearch>,
}

/// Where an unfinished `entries.list` search stands.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResumeSearch {
    /// The filter of the search (its time range included), sent again unchanged
    /// with the token, as `pageToken` requires ("the values of other method
    /// parameters should be identical to those in the previous call").
    pub filter: String,
    pub page_token: String,
    /// The end of the search's time range: the cursor once it is finished.
    pub end_ms: TimestampMs,
}

/// One `cloud_logging:` entry.
pub struct CloudLoggingSource {
    cfg: CloudLoggingConfig,
    ctx: GcpContext,
    deps: GcpSourceDeps,
    evidence: LogEvidenceStore,
    state: LoggingState,
}

fn dedup_key(e: &LogEntry) -> String {
    if e.insert_id.is_empty() {
        // No insertId (rare): the entry's identity is its log, time and text.
        format!(
            "{}|{}|{}",
            e.log_name,
            e.timestamp
                .map(|t| t.timestamp_nanos_opt().unwrap_or(0))
                .unwrap_or(0),
            e.message()
        )
    } else {
        e.insert_id.clone()
    }
}

fn shorten(s: &str) -> String {
    if s.chars().count() <= MAX_MESSAGE_CHARS {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(MAX_MESSAGE_CHARS).collect();
        t.push('…');
        t
    }
}

impl CloudLoggingSource {
    pub async fn load(
        cfg: CloudLoggingConfig,
        ctx: GcpContext,
        deps: GcpSourceDeps,
        evidence: LogEvidenceStore,
    ) -> Self {
        let state: LoggingState = match deps.store.gcp_state(KIND_LOGGING, &cfg.name).await {
            Ok(Some(text)) => serde_json::from_str(&text).unwrap_or_else(|e| {
                tracing::warn!(query = %cfg.name, error = %e, "stored cloud_logging state unreadable; starting afresh");
                LoggingState::default()
            }),
            Ok(None) => LoggingState::default(),
            Err(e) => {
                tracing::warn!(query = %cfg.name, error = %e, "cannot read cloud_logging state; starting afresh");
                LoggingState::default()
            }
        };
        let mut state = state;
        // A search saved under another filter (the config changed) is not resumed.
        let ours = format!("({}) AND timestamp", cfg.filter.trim());
        if state
            .resume
            .as_ref()
            .is_some_and(|r| !r.filter.starts_with(&ours))
        {
            state.resume = None;
        }
        evidence.set(&cfg.name, state.evidence.clone());
        Self {
            cfg,
            ctx,
            deps,
            evidence,
            state,
        }
    }

    pub fn state(&self) -> &LoggingState {
        &self.state
    }

    fn labels(&self, key: &str) -> Labels {
        let (severity, revision) = key.split_once('\u{1}').unwrap_or((key, ""));
        Labels::from_pairs([
            (METRIC_NAME, METRIC),
            ("query", self.cfg.name.as_str()),
            ("severity", severity),
            ("revision_name", revision),
        ])
    }

    /// The filter of a new search: the query's, over `[cursor - overlap, now]`.
    fn search_filter(&self, now: TimestampMs) -> String {
        let start = match self.state.cursor_ms {
            Some(c) => c.min(now) - self.cfg.overlap.as_millis(),
            None => now - self.cfg.interval.as_millis(),
        }
        // After a long gap, old errors must not arrive as a burst of new ones
        // (that could page someone or roll back a healthy deploy): read back at
        // most `max_catch_up` beyond the overlap. A long catch-up reads at most
        // MAX_PAGES_PER_POLL pages a poll, each through the shared call quota,
        // and goes on from its page token at the next poll.
        .max(now - self.cfg.overlap.as_millis() - self.cfg.max_catch_up.as_millis());
        format!(
            "({}) AND timestamp >= \"{}\" AND timestamp <= \"{}\"",
            self.cfg.filter.trim(),
            rfc3339(to_datetime(start)),
            rfc3339(to_datetime(now))
        )
    }

    /// An `entries.list` request, newest first: logging-v2.json advises
    /// "timestamp desc" for recently ingested entries, as "timestamp asc" "may
    /// take a long time to fetch matching logs that are only recently ingested".
    fn request(&self, filter: String, page_token: Option<String>) -> ListLogEntriesRequest {
        ListLogEntriesRequest {
            resource_names: vec![format!("projects/{}", self.ctx.project)],
            filter,
            order_by: "timestamp desc".into(),
            page_size: Some(PAGE_SIZE),
            page_token,
        }
    }

    fn evidence_of(&self, e: &LogEntry) -> LogEvidence {
        LogEvidence {
            query: self.cfg.name.clone(),
            timestamp: e.timestamp,
            severity: e.severity().to_string(),
            revision: e.revision_name().map(str::to_string),
            message: shorten(&e.message()),
            json_payload: e
                .json_payload
                .clone()
                .map(serde_json::Value::Object)
                .filter(|j| j.to_string().len() <= MAX_JSON_EVIDENCE_BYTES),
            insert_id: e.insert_id.clone(),
            log_name: e.log_name.clone(),
        }
    }

    /// One poll: reads `[cursor - overlap, now]` page by page, newest first,
    /// counts entries not seen before, persists the state, then writes the
    /// counters. A search the page limit cuts short goes on at the next poll
    /// from its page token. Returns the new entries.
    pub async fn poll_once(&mut self) -> Result<usize, GcpError> {
        let now = self.deps.clock.now_ms();
        let mut new_counts: BTreeMap<String, f64> = BTreeMap::new();
        let mut new_entries = 0usize;
        let mut new_evidence: Vec<LogEvidence> = Vec::new();
        let mut pages_left = MAX_PAGES_PER_POLL;
        // At most two searches a poll: the rest of one cut short, then a new one.
        for _ in 0..2 {
            let (mut body, mut end_ms) = match self.state.resume.take() {
                Some(r) => (self.request(r.filter, Some(r.page_token)), r.end_ms),
                None => (self.request(self.search_filter(now), None), now),
            };
            let mut resumed = body.page_token.is_some();
            let mut finished = false;
            while pages_left > 0 {
                pages_left -= 1;
                let page = match self
                    .ctx
                    .logging
                    .list(&body, Some(&self.ctx.log_quota))
                    .await
                {
                    Ok(p) => p,
                    // A token Logging no longer takes (expired): search again from the cursor.
                    Err(e) if resumed && e.http_status() == Some(400) => {
                        tracing::warn!(query = %self.cfg.name, error = %e, "entries.list: the saved page token was refused; searching again");
                        body = self.request(self.search_filter(now), None);
                        resumed = false;
                        end_ms = now;
                        continue;
                    }
                    Err(e) => {
                        self.state.resume =
                            body.page_token.clone().map(|page_token| ResumeSearch {
                                filter: body.filter.clone(),
                                page_token,
                                end_ms,
                            });
                        return Err(e);
                    }
                };
                for e in &page.entries {
                    let key = dedup_key(e);
                    let ts = e.timestamp.map(|t| t.timestamp_millis()).unwrap_or(now);
                    if self.state.seen.contains_key(&key) {
                        continue;
                    }
                    self.state.seen.insert(key, ts);
                    new_entries += 1;
                    let ck = format!("{}\u{1}{}", e.severity(), e.revision_name().unwrap_or(""));
                    *new_counts.entry(ck).or_insert(0.0) += 1.0;
                    new_evidence.push(self.evidence_of(e));
                }
                // An empty page with a token means the search is not finished: keep paging.
                match page.next_page_token.filter(|t| !t.is_empty()) {
                    Some(t) => body.page_token = Some(t),
                    None => {
                        finished = true;
                        break;
                    }
                }
            }
            if !finished {
                if let Some(page_token) = body.page_token.clone() {
                    self.state.resume = Some(ResumeSearch {
                        filter: body.filter.clone(),
                        page_token,
                        end_ms,
                    });
                }
                tracing::warn!(query = %self.cfg.name, pages = MAX_PAGES_PER_POLL, "entries.list: more pages than one poll reads; continuing next poll");
                break;
            }
            self.state.cursor_ms = Some(end_ms);
            if !resumed || pages_left == 0 {
                break;
            }
        }
        // Pages come newest first: evidence is kept oldest first.
        self.state.evidence.extend(new_evidence);
        self.state
            .evidence
            .make_contiguous()
            .sort_by_key(|e| e.timestamp);
        while self.state.evidence.len() > EVIDENCE_PER_QUERY {
            self.state.evidence.pop_front();
        }
        self.state.partial = self.state.resume.is_some();
        // What was read is in `seen` and will not count twice when read again.
        let first_new_series: Vec<String> = new_counts
            .keys()
            .filter(|k| !self.state.counts.contains_key(*k))
            .cloned()
            .collect();
        for (k, n) in &new_counts {
            *self.state.counts.entry(k.clone()).or_insert(0.0) += n;
        }
        let horizon = self.state.cursor_ms.unwrap_or(now) - self.cfg.overlap.as_millis() - 60_000;
        self.state.seen.retain(|_, t| *t >= horizon);
        match serde_json::to_string(&self.state) {
            Ok(text) => {
                if let Err(e) = self
                    .deps
                    .store
                    .put_gcp_state(KIND_LOGGING, &self.cfg.name, now, text)
                    .await
                {
                    tracing::warn!(query = %self.cfg.name, error = %e, "cannot persist cloud_logging state");
                }
            }
            Err(e) => {
                tracing::warn!(query = %self.cfg.name, error = %e, "cannot encode cloud_logging state")
            }
        }
        self.evidence
            .set(&self.cfg.name, self.state.evidence.clone());
        let mut samples = Vec::new();
        // A new series starts at 0 just before its first count, so increase() sees it.
        for k in &first_new_series {
            samples.push(Sample {
                labels: self.labels(k),
                timestamp_ms: now - 1,
                value: 0.0,
            });
        }
        for (k, v) in &self.state.counts {
            samples.push(Sample {
                labels: self.labels(k),
                timestamp_ms: now,
                value: *v,
            });
        }
        self.deps.sink.append(&samples);
        Ok(new_entries)
    }
}

/// Runs every `cloud_logging:` entry and owns the shared evidence.
/// Runs every `cloud_logging:` query; `apply` changes the set on reload.
pub type CloudLoggingManager = SourcePolls<CloudLoggingSource>;

impl CloudLoggingManager {
    /// The evidence accessor for notifications, templates and the API.
    pub fn evidence(&self) -> LogEvidenceStore {
        self.shared().clone()
    }
}

impl PolledSource for CloudLoggingSource {
    type Config = CloudLoggingConfig;
    type Shared = LogEvidenceStore;
    type Polled = usize;
    const KIND: &'static str = kind::CLOUD_LOGGING;

    fn name(cfg: &CloudLoggingConfig) -> &str {
        &cfg.name
    }

    fn interval(cfg: &CloudLoggingConfig) -> Duration {
        cfg.interval.into()
    }

    async fn load(
        cfg: CloudLoggingConfig,
        ctx: GcpContext,
        deps: GcpSourceDeps,
        evidence: LogEvidenceStore,
    ) -> Self {
        CloudLoggingSource::load(cfg, ctx, deps, evidence).await
    }

    async fn poll_once(&mut self) -> Result<usize, GcpError> {
        CloudLoggingSource::poll_once(self).await
    }

    fn retain(evidence: &LogEvidenceStore, names: &[String]) {
        evidence.retain(names);
    }
}
