//! Silences and the notification log (dispatch), schema version 4.

use rusqlite::{params, OptionalExtension};
use serde::{Deserialize, Serialize};

use super::{Store, StoreError};
use crate::clock::TimestampMs;

pub(super) const MIGRATION: &str = "
CREATE TABLE silences (
    id TEXT PRIMARY KEY,
    matchers TEXT NOT NULL,
    starts_at_ms INTEGER NOT NULL,
    ends_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    comment TEXT NOT NULL
);
CREATE INDEX silences_by_end ON silences (ends_at_ms);
CREATE TABLE notification_log (
    receiver TEXT NOT NULL,
    group_key TEXT NOT NULL,
    firing TEXT NOT NULL,
    resolved TEXT NOT NULL,
    timestamp_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    PRIMARY KEY (receiver, group_key)
);
";

/// One matcher of a silence, in Alertmanager's API shape.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SilenceMatcher {
    pub name: String,
    pub value: String,
    #[serde(default)]
    pub is_regex: bool,
    #[serde(default = "default_true")]
    pub is_equal: bool,
}

fn default_true() -> bool {
    true
}

#[derive(Clone, Debug, PartialEq)]
pub struct SilenceRecord {
    pub id: String,
    pub matchers: Vec<SilenceMatcher>,
    pub starts_at_ms: TimestampMs,
    pub ends_at_ms: TimestampMs,
    pub updated_at_ms: TimestampMs,
    pub created_by: String,
    pub comment: String,
}

/// What was last notified for one receiver and alert group (Alertmanager's nflog entry).
#[derive(Clone, Debug, PartialEq)]
pub struct NotificationLogEntry {
    pub receiver: String,
    pub group_key: String,
    pub firing: Vec<u64>,
    pub resolved: Vec<u64>,
    pub timestamp_ms: TimestampMs,
    pub expires_at_ms: TimestampMs,
}

fn join_fps(fps: &[u64]) -> String {
    fps.iter()
        .map(|f| format!("{f:016x}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn split_fps(s: &str) -> Vec<u64> {
    s.split(',')
        .filter(|p| !p.is_empty())
        .filter_map(|p| u64::from_str_radix(p, 16).ok())
        .collect()
}

impl Store {
    pub async fn upsert_silence(&self, s: SilenceRecord) -> Result<(), StoreError> {
        let matchers = serde_json::to_string(&s.matchers).unwrap_or_else(|_| "[]".into());
        self.call(move |c| {
            c.execute(
                "INSERT INTO silences (id, matchers, starts_at_ms, ends_at_ms, updated_at_ms, created_by, comment)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT(id) DO UPDATE SET matchers = ?2, starts_at_ms = ?3, ends_at_ms = ?4,
                   updated_at_ms = ?5, created_by = ?6, comment = ?7",
                params![s.id, matchers, s.starts_at_ms, s.ends_at_ms, s.updated_at_ms, s.created_by, s.comment],
            )
            .map(|_| ())
        })
        .await
    }

    /// Every stored silence. Rows whose matchers do not parse are skipped with a warning.
    pub async fn load_silences(&self) -> Result<Vec<SilenceRecord>, StoreError> {
        let rows: Vec<(SilenceRecord, String)> = self
            .call(|c| {
                let mut st = c.prepare(
                    "SELECT id, matchers, starts_at_ms, ends_at_ms, updated_at_ms, created_by, comment
                     FROM silences ORDER BY starts_at_ms, id",
                )?;
                let rows = st.query_map([], |r| {
                    Ok((
                        SilenceRecord {
                            id: r.get(0)?,
                            matchers: Vec::new(),
                            starts_at_ms: r.get(2)?,
                            ends_at_ms: r.get(3)?,
                            updated_at_ms: r.get(4)?,
                            created_by: r.get(5)?,
                            comment: r.get(6)?,
                        },
                        r.get::<_, String>(1)?,
                    ))
                })?;
                rows.collect()
            })
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(mut rec, json)| match serde_json::from_str(&json) {
                Ok(m) => {
                    rec.matchers = m;
                    Some(rec)
                }
                Err(e) => {
                    tracing::warn!(silence = %rec.id, error = %e, "skipping a stored silence whose matchers do not parse");
                    None
                }
            })
            .collect())
    }

    /// Drops silences that ended before `cutoff_ms`; returns how many.
    pub async fn delete_silences_ended_before(
        &self,
        cutoff_ms: TimestampMs,
    ) -> Result<usize, StoreError> {
        self.call(move |c| {
            c.execute(
                "DELETE FROM silences WHERE ends_at_ms < ?1",
                params![cutoff_ms],
            )
        })
        .await
    }

    pub async fn upsert_notification_log(&self, e: NotificationLogEntry) -> Result<(), StoreError> {
        self.call(move |c| {
            c.execute(
                "INSERT INTO notification_log (receiver, group_key, firing, resolved, timestamp_ms, expires_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT(receiver, group_key) DO UPDATE SET firing = ?3, resolved = ?4,
                   timestamp_ms = ?5, expires_at_ms = ?6",
                params![
                    e.receiver,
                    e.group_key,
                    join_fps(&e.firing),
                    join_fps(&e.resolved),
                    e.timestamp_ms,
                    e.expires_at_ms
                ],
            )
            .map(|_| ())
        })
        .await
    }

    pub async fn notification_log_entry(
        &self,
        receiver: &str,
        group_key: &str,
    ) -> Result<Option<NotificationLogEntry>, StoreError> {
        let (receiver, group_key) = (receiver.to_string(), group_key.to_string());
        self.call(move |c| {
            c.query_row(
                "SELECT receiver, group_key, firing, resolved, timestamp_ms, expires_at_ms
                 FROM notification_log WHERE receiver = ?1 AND group_key = ?2",
                params![receiver, group_key],
                row_to_entry,
            )
            .optional()
        })
        .await
    }

    /// Every entry that has not expired at `now_ms`.
    pub async fn load_notification_log(
        &self,
        now_ms: TimestampMs,
    ) -> Result<Vec<NotificationLogEntry>, StoreError> {
        self.call(move |c| {
            let mut st = c.prepare(
                "SELECT receiver, group_key, firing, resolved, timestamp_ms, expires_at_ms
                 FROM notification_log WHERE expires_at_ms > ?1",
            )?;
            let rows = st.query_map(params![now_ms], row_to_entry)?;
            rows.collect()
        })
        .await
    }

    pub async fn delete_expired_notification_log(
        &self,
        now_ms: TimestampMs,
    ) -> Result<usize, StoreError> {
        self.call(move |c| {
            c.execute(
                "DELETE FROM notification_log WHERE expires_at_ms <= ?1",
                params![now_ms],
            )
        })
        .await
    }
}

fn row_to_entry(r: &rusqlite::Row<'_>) -> rusqlite::Result<NotificationLogEntry> {
    Ok(NotificationLogEntry {
        receiver: r.get(0)?,
        group_key: r.get(1)?,
        firing: split_fps(&r.get::<_, String>(2)?),
        resolved: split_fps(&r.get::<_, String>(3)?),
        timestamp_ms: r.get(4)?,
        expires_at_ms: r.get(5)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn silences_round_trip_and_expire() {
        let s = Store::open_in_memory().unwrap();
        let rec = SilenceRecord {
            id: "a".into(),
            matchers: vec![SilenceMatcher {
                name: "service".into(),
                value: "back.*".into(),
                is_regex: true,
                is_equal: true,
            }],
            starts_at_ms: 10,
            ends_at_ms: 20,
            updated_at_ms: 10,
            created_by: "me".into(),
            comment: "deploy".into(),
        };
        s.upsert_silence(rec.clone()).await.unwrap();
        s.upsert_silence(SilenceRecord {
            ends_at_ms: 30,
            ..rec.clone()
        })
        .await
        .unwrap();
        let all = s.load_silences().await.unwrap();
        assert_eq!(
            all,
            vec![SilenceRecord {
                ends_at_ms: 30,
                ..rec
            }]
        );
        assert_eq!(s.delete_silences_ended_before(30).await.unwrap(), 0);
        assert_eq!(s.delete_silences_ended_before(31).await.unwrap(), 1);
        assert!(s.load_silences().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn notification_log_round_trip() {
        let s = Store::open_in_memory().unwrap();
        let e = NotificationLogEntry {
            receiver: "team".into(),
            group_key: "{}:{alertname=\"A\"}".into(),
            firing: vec![1, u64::MAX],
            resolved: vec![],
            timestamp_ms: 100,
            expires_at_ms: 200,
        };
        s.upsert_notification_log(e.clone()).await.unwrap();
        assert_eq!(
            s.notification_log_entry("team", &e.group_key)
                .await
                .unwrap(),
            Some(e.clone())
        );
        assert_eq!(s.load_notification_log(150).await.unwrap(), vec![e]);
        assert!(s.load_notification_log(200).await.unwrap().is_empty());
        assert_eq!(s.delete_expired_notification_log(200).await.unwrap(), 1);
    }
}
