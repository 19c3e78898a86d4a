//! Alerts posted by external senders (`POST /api/v2/alerts`), schema version 7.
//! One row per fingerprint: what the dispatcher needs to rebuild them after a
//! restart. Rows go once their end passed long enough ago.

use std::collections::BTreeMap;

use rusqlite::params;

use super::{Store, StoreError};
use crate::clock::TimestampMs;

pub(super) const MIGRATION: &str = "
CREATE TABLE external_alerts (
    fingerprint TEXT PRIMARY KEY,
    labels TEXT NOT NULL,
    annotations TEXT NOT NULL,
    starts_at_ms INTEGER NOT NULL,
    ends_at_ms INTEGER NOT NULL,
    ends_by_timeout INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    generator_url TEXT NOT NULL
);
CREATE INDEX external_alerts_by_end ON external_alerts (ends_at_ms);
";

/// An external alert as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct ExternalAlertRecord {
    pub fingerprint: u64,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub starts_at_ms: TimestampMs,
    /// Given by the sender, or `updated_at + resolve_timeout` when `ends_by_timeout`.
    pub ends_at_ms: TimestampMs,
    pub ends_by_timeout: bool,
    pub updated_at_ms: TimestampMs,
    pub generator_url: String,
}

fn to_json(m: &BTreeMap<String, String>) -> String {
    serde_json::to_string(m).unwrap_or_else(|_| "{}".to_string())
}

fn from_json(s: &str) -> BTreeMap<String, String> {
    serde_json::from_str(s).unwrap_or_default()
}

impl Store {
    /// Inserts or replaces the given alerts in one transaction.
    pub async fn upsert_external_alerts(
        &self,
        alerts: Vec<ExternalAlertRecord>,
    ) -> Result<(), StoreError> {
        self.call(move |c| {
            let tx = c.transaction()?;
            {
                let mut st = tx.prepare(
                    "INSERT OR REPLACE INTO external_alerts (fingerprint, labels, annotations,
                     starts_at_ms, ends_at_ms, ends_by_timeout, updated_at_ms, generator_url)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )?;
                for a in &alerts {
                    st.execute(params![
                        format!("{:016x}", a.fingerprint),
                        to_json(&a.labels),
                        to_json(&a.annotations),
                        a.starts_at_ms,
                        a.ends_at_ms,
                        a.ends_by_timeout,
                        a.updated_at_ms,
                        a.generator_url,
                    ])?;
                }
            }
            tx.commit()
        })
        .await
    }

    /// Every stored external alert.
    pub async fn load_external_alerts(&self) -> Result<Vec<ExternalAlertRecord>, StoreError> {
        self.call(|c| {
            let mut st = c.prepare(
                "SELECT fingerprint, labels, annotations, starts_at_ms, ends_at_ms,
                 ends_by_timeout, updated_at_ms, generator_url FROM external_alerts",
            )?;
            let rows = st.query_map([], |r| {
                let fp: String = r.get(0)?;
                let labels: String = r.get(1)?;
                let annotations: String = r.get(2)?;
                Ok(ExternalAlertRecord {
                    fingerprint: u64::from_str_radix(&fp, 16).unwrap_or(0),
                    labels: from_json(&labels),
                    annotations: from_json(&annotations),
                    starts_at_ms: r.get(3)?,
                    ends_at_ms: r.get(4)?,
                    ends_by_timeout: r.get(5)?,
                    updated_at_ms: r.get(6)?,
                    generator_url: r.get(7)?,
                })
            })?;
            rows.collect()
        })
        .await
    }

    /// Deletes the alerts that ended before `before_ms`; returns how many.
    pub async fn delete_external_alerts_ended_before(
        &self,
        before_ms: TimestampMs,
    ) -> Result<usize, StoreError> {
        self.call(move |c| {
            c.execute(
                "DELETE FROM external_alerts WHERE ends_at_ms < ?1",
                params![before_ms],
            )
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(fp: u64, ends: TimestampMs) -> ExternalAlertRecord {
        ExternalAlertRecord {
            fingerprint: fp,
            labels: BTreeMap::from([("alertname".to_string(), "X".to_string())]),
            annotations: BTreeMap::from([("summary".to_string(), "s".to_string())]),
            starts_at_ms: 1_000,
            ends_at_ms: ends,
            ends_by_timeout: true,
            updated_at_ms: 2_000,
            generator_url: "http://p/graph".to_string(),
        }
    }

    #[tokio::test]
    async fn round_trips_and_expires() {
        let s = Store::open_in_memory().unwrap();
        s.upsert_external_alerts(vec![rec(u64::MAX, 10_000), rec(7, 50_000)])
            .await
            .unwrap();
        let mut got = s.load_external_alerts().await.unwrap();
        got.sort_by_key(|r| r.fingerprint);
        assert_eq!(got, vec![rec(7, 50_000), rec(u64::MAX, 10_000)]);
        s.upsert_external_alerts(vec![rec(7, 60_000)])
            .await
            .unwrap();
        assert_eq!(
            s.delete_external_alerts_ended_before(20_000).await.unwrap(),
            1
        );
        assert_eq!(
            s.load_external_alerts().await.unwrap(),
            vec![rec(7, 60_000)]
        );
    }
}
