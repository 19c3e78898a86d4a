//! Evidence for an email: the last log entries of the `cloud_logging` query
//! and the state of the probe an alert names. The daemon wires this to the
//! Cloud Logging source's recent entries and to the probe engine.
//!
//! Which query and probe an alert names: the annotation `evidence_log_query`
//! or else the label `query` (as on `log_entries_total{query="..."}`); the
//! annotation `evidence_probe` or else the label `probe`.

use serde::Serialize;

use crate::clock::TimestampMs;
use crate::notify::payload::StoredAlert;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LogEvidence {
    pub timestamp_ms: TimestampMs,
    pub severity: String,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ProbeEvidence {
    pub up: bool,
    /// Why it failed (timeout, connect, status, body, latency, tls).
    pub reason: Option<String>,
    pub status_code: Option<u16>,
    /// Since when it has been in this state.
    pub since_ms: Option<TimestampMs>,
}

/// Reads already-collected evidence; must not block (no network calls here).
pub trait EvidenceSource: Send + Sync {
    /// The newest `limit` entries of the named `cloud_logging` query, oldest first.
    fn log_entries(&self, query: &str, limit: usize) -> Vec<LogEvidence>;
    fn probe_status(&self, probe: &str) -> Option<ProbeEvidence>;
}

/// No evidence at all (tests, or a daemon without log queries and probes).
pub struct NoEvidence;

impl EvidenceSource for NoEvidence {
    fn log_entries(&self, _query: &str, _limit: usize) -> Vec<LogEvidence> {
        Vec::new()
    }
    fn probe_status(&self, _probe: &str) -> Option<ProbeEvidence> {
        None
    }
}

/// How many log lines an email shows per alert.
pub const LOG_LINES: usize = 5;

pub fn log_query_of(a: &StoredAlert) -> Option<&str> {
    a.annotations
        .get("evidence_log_query")
        .or_else(|| a.labels.get("query"))
        .map(String::as_str)
        .filter(|s| !s.is_empty())
}

pub fn probe_of(a: &StoredAlert) -> Option<&str> {
    a.annotations
        .get("evidence_probe")
        .or_else(|| a.labels.get("probe"))
        .map(String::as_str)
        .filter(|s| !s.is_empty())
}

/// The evidence gathered for one alert.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct AlertEvidence {
    pub log_query: Option<String>,
    pub logs: Vec<LogEvidence>,
    pub probe: Option<String>,
    pub probe_status: Option<ProbeEvidence>,
}

pub fn gather(source: &dyn EvidenceSource, a: &StoredAlert) -> AlertEvidence {
    let log_query = log_query_of(a).map(str::to_string);
    let logs = log_query
        .as_deref()
        .map(|q| source.log_entries(q, LOG_LINES))
        .unwrap_or_default();
    let probe = probe_of(a).map(str::to_string);
    let probe_status = probe.as_deref().and_then(|p| source.probe_status(p));
    AlertEvidence {
        log_query,
        logs,
        probe,
        probe_status,
    }
}

/// Evidence that sources push in as they see it (the Cloud Logging source its
/// newest entries per query, the probe engine each probe's state) and emails
/// read: a ready-made [`EvidenceSource`] for the daemon to share.
#[derive(Default)]
pub struct SharedEvidence {
    logs: std::sync::RwLock<
        std::collections::HashMap<String, std::collections::VecDeque<LogEvidence>>,
    >,
    probes: std::sync::RwLock<std::collections::HashMap<String, ProbeEvidence>>,
}

/// How many entries per query [`SharedEvidence`] keeps.
pub const KEEP_LOG_ENTRIES: usize = 20;

impl SharedEvidence {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds entries (oldest first) of a query, keeping the newest [`KEEP_LOG_ENTRIES`].
    pub fn push_log_entries(&self, query: &str, entries: impl IntoIterator<Item = LogEvidence>) {
        let mut logs = self.logs.write().unwrap_or_else(|p| p.into_inner());
        let q = logs.entry(query.to_string()).or_default();
        for e in entries {
            q.push_back(e);
            while q.len() > KEEP_LOG_ENTRIES {
                q.pop_front();
            }
        }
    }

    pub fn set_probe_status(&self, probe: &str, status: ProbeEvidence) {
        self.probes
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(probe.to_string(), status);
    }
}

impl EvidenceSource for SharedEvidence {
    fn log_entries(&self, query: &str, limit: usize) -> Vec<LogEvidence> {
        let logs = self.logs.read().unwrap_or_else(|p| p.into_inner());
        logs.get(query)
            .map(|q| {
                q.iter()
                    .skip(q.len().saturating_sub(limit))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }
    fn probe_status(&self, probe: &str) -> Option<ProbeEvidence> {
        self.probes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(probe)
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_evidence_keeps_the_newest() {
        let ev = SharedEvidence::new();
        ev.push_log_entries(
            "q",
            (0..30).map(|i| LogEvidence {
                timestamp_ms: i,
                severity: "ERROR".into(),
                message: format!("m{i}"),
            }),
        );
        let got = ev.log_entries("q", 3);
        assert_eq!(
            got.iter().map(|e| e.timestamp_ms).collect::<Vec<_>>(),
            [27, 28, 29]
        );
        assert!(ev.log_entries("other", 3).is_empty());
        ev.set_probe_status(
            "p",
            ProbeEvidence {
                up: false,
                reason: Some("timeout".into()),
                status_code: None,
                since_ms: Some(5),
            },
        );
        assert_eq!(
            ev.probe_status("p").unwrap().reason.as_deref(),
            Some("timeout")
        );
    }
}
