//! Probe state transitions (up → down, down → up), with time and reason.

use rusqlite::params;
use serde::Serialize;

use super::{Store, StoreError};
use crate::clock::TimestampMs;

pub(super) const MIGRATION: &str = "
CREATE TABLE probe_transitions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    probe TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    up INTEGER NOT NULL,
    reason TEXT,
    status_code INTEGER
);
CREATE INDEX probe_transitions_by_probe ON probe_transitions (probe, at_ms);
";

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ProbeTransition {
    pub probe: String,
    pub at_ms: TimestampMs,
    pub up: bool,
    /// Why it went down (timeout, connect, status, body, latency, tls); none when up.
    pub reason: Option<String>,
    pub status_code: Option<u16>,
}

impl Store {
    pub async fn record_probe_transition(&self, t: ProbeTransition) -> Result<(), StoreError> {
        self.call(move |c| {
            c.execute(
                "INSERT INTO probe_transitions (probe, at_ms, up, reason, status_code) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![t.probe, t.at_ms, t.up, t.reason, t.status_code],
            )
            .map(|_| ())
        })
        .await
    }

    /// The newest transition of every probe.
    pub async fn last_probe_transitions(&self) -> Result<Vec<ProbeTransition>, StoreError> {
        self.call(|c| {
            let mut st = c.prepare(
                "SELECT probe, at_ms, up, reason, status_code FROM probe_transitions t
                 WHERE id = (SELECT MAX(id) FROM probe_transitions u WHERE u.probe = t.probe)
                 ORDER BY probe",
            )?;
            let rows = st.query_map([], row_to_transition)?;
            rows.collect()
        })
        .await
    }

    /// The history of one probe, oldest first.
    pub async fn probe_history(
        &self,
        probe: &str,
        limit: usize,
    ) -> Result<Vec<ProbeTransition>, StoreError> {
        let probe = probe.to_string();
        self.call(move |c| {
            let mut st = c.prepare(
                "SELECT probe, at_ms, up, reason, status_code FROM
                   (SELECT * FROM probe_transitions WHERE probe = ?1 ORDER BY id DESC LIMIT ?2)
                 ORDER BY id",
            )?;
            let rows = st.query_map(params![probe, limit as i64], row_to_transition)?;
            rows.collect()
        })
        .await
    }
}

fn row_to_transition(r: &rusqlite::Row<'_>) -> rusqlite::Result<ProbeTransition> {
    Ok(ProbeTransition {
        probe: r.get(0)?,
        at_ms: r.get(1)?,
        up: r.get(2)?,
        reason: r.get(3)?,
        status_code: r.get::<_, Option<i64>>(4)?.map(|c| c as u16),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn last_transition_per_probe() {
        let s = Store::open_in_memory().unwrap();
        for (probe, at, up) in [("a", 1, false), ("a", 2, true), ("b", 3, false)] {
            s.record_probe_transition(ProbeTransition {
                probe: probe.into(),
                at_ms: at,
                up,
                reason: (!up).then(|| "status".to_string()),
                status_code: Some(503),
            })
            .await
            .unwrap();
        }
        let last = s.last_probe_transitions().await.unwrap();
        assert_eq!(last.len(), 2);
        assert_eq!(
            (last[0].probe.as_str(), last[0].at_ms, last[0].up),
            ("a", 2, true)
        );
        assert_eq!((last[1].probe.as_str(), last[1].up), ("b", false));
        assert_eq!(s.probe_history("a", 10).await.unwrap().len(), 2);
    }
}
