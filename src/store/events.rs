//! Event alerts (the runner's `RearguardRollback` notices): written here
//! before they reach the dispatcher, so a crash between the event and its
//! notification does not lose it. A row stays pending until a notification
//! carrying it was accepted by the outbox; at start (and periodically) pending
//! rows are presented to the dispatcher again.

use std::collections::BTreeMap;

use rusqlite::{params, OptionalExtension};

use super::{Store, StoreError};
use crate::clock::TimestampMs;

pub(super) const MIGRATION: &str = "
CREATE TABLE event_alerts (
    fingerprint TEXT PRIMARY KEY,
    event_id TEXT NOT NULL,
    labels TEXT NOT NULL,
    annotations TEXT NOT NULL,
    value REAL,
    generator_url TEXT NOT NULL,
    starts_at_ms INTEGER NOT NULL,
    ends_at_ms INTEGER NOT NULL,
    notified_at_ms INTEGER,
    notified_receivers TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX event_alerts_pending ON event_alerts (notified_at_ms);
";

/// One stored event alert.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredEvent {
    /// The labels' fingerprint (hex): one row per label set.
    pub fingerprint: String,
    /// Stable across restarts and re-presentations: `fingerprint-startsAt`.
    pub event_id: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub value: f64,
    pub generator_url: String,
    pub starts_at_ms: TimestampMs,
    pub ends_at_ms: TimestampMs,
    pub notified_at_ms: Option<TimestampMs>,
}

fn row_to_event(r: &rusqlite::Row<'_>) -> Result<StoredEvent, rusqlite::Error> {
    let labels: String = r.get(2)?;
    let annotations: String = r.get(3)?;
    Ok(StoredEvent {
        fingerprint: r.get(0)?,
        event_id: r.get(1)?,
        labels: serde_json::from_str(&labels).unwrap_or_default(),
        annotations: serde_json::from_str(&annotations).unwrap_or_default(),
        value: r.get::<_, Option<f64>>(4)?.unwrap_or(0.0),
        generator_url: r.get(5)?,
        starts_at_ms: r.get(6)?,
        ends_at_ms: r.get(7)?,
        notified_at_ms: r.get(8)?,
    })
}

const COLUMNS: &str = "fingerprint, event_id, labels, annotations, value, generator_url, starts_at_ms, ends_at_ms, notified_at_ms";

impl Store {
    /// Records an event. A row of the same label set that is still pending
    /// or still active (`ends_at > now`) is the same notice repeated: it keeps
    /// its id and start and is held until `ends_at_ms`; otherwise the event is
    /// a new notice. Returns the row as stored.
    pub async fn record_event(
        &self,
        new: StoredEvent,
        now_ms: TimestampMs,
    ) -> Result<StoredEvent, StoreError> {
        self.call(move |c| {
            let tx = c.transaction()?;
            let existing = tx
                .query_row(
                    &format!("SELECT {COLUMNS} FROM event_alerts WHERE fingerprint = ?1"),
                    params![new.fingerprint],
                    row_to_event,
                )
                .optional()?;
            let stored = match existing {
                Some(old) if old.notified_at_ms.is_none() || old.ends_at_ms > now_ms => {
                    StoredEvent {
                        event_id: old.event_id,
                        starts_at_ms: old.starts_at_ms,
                        notified_at_ms: old.notified_at_ms,
                        ends_at_ms: new.ends_at_ms.max(old.ends_at_ms),
                        ..new
                    }
                }
                _ => new,
            };
            tx.execute(
                "INSERT INTO event_alerts (fingerprint, event_id, labels, annotations, value,
                    generator_url, starts_at_ms, ends_at_ms, notified_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT (fingerprint) DO UPDATE SET event_id = excluded.event_id,
                    labels = excluded.labels, annotations = excluded.annotations,
                    value = excluded.value, generator_url = excluded.generator_url,
                    starts_at_ms = excluded.starts_at_ms, ends_at_ms = excluded.ends_at_ms,
                    notified_at_ms = excluded.notified_at_ms",
                params![
                    stored.fingerprint,
                    stored.event_id,
                    serde_json::to_string(&stored.labels).unwrap_or_else(|_| "{}".into()),
                    serde_json::to_string(&stored.annotations).unwrap_or_else(|_| "{}".into()),
                    Some(stored.value).filter(|v| v.is_finite()),
                    stored.generator_url,
                    stored.starts_at_ms,
                    stored.ends_at_ms,
                    stored.notified_at_ms,
                ],
            )?;
            tx.commit()?;
            Ok(stored)
        })
        .await
    }

    /// The row of a label set, if any.
    pub async fn event_by_fingerprint(
        &self,
        fingerprint: String,
    ) -> Result<Option<StoredEvent>, StoreError> {
        self.call(move |c| {
            c.query_row(
                &format!("SELECT {COLUMNS} FROM event_alerts WHERE fingerprint = ?1"),
                params![fingerprint],
                row_to_event,
            )
            .optional()
        })
        .await
    }

    /// Records that `receiver` accepted a notification carrying each event
    /// (id, the receivers it routes to); an event is notified once every one
    /// of its receivers has (or at once when it names none). Returns how many
    /// became notified.
    pub async fn mark_events_notified(
        &self,
        events: Vec<(String, Vec<String>)>,
        receiver: String,
        at_ms: TimestampMs,
    ) -> Result<usize, StoreError> {
        self.call(move |c| {
            let tx = c.transaction()?;
            let mut n = 0;
            for (id, required) in &events {
                let Some(seen) = tx
                    .query_row(
                        "SELECT notified_receivers FROM event_alerts
                         WHERE event_id = ?1 AND notified_at_ms IS NULL",
                        params![id],
                        |r| r.get::<_, String>(0),
                    )
                    .optional()?
                else {
                    continue;
                };
                let mut seen: std::collections::BTreeSet<String> =
                    serde_json::from_str(&seen).unwrap_or_default();
                seen.insert(receiver.clone());
                let done = required.iter().all(|r| seen.contains(r));
                tx.execute(
                    "UPDATE event_alerts SET notified_receivers = ?2,
                        notified_at_ms = CASE WHEN ?3 THEN ?4 ELSE NULL END
                     WHERE event_id = ?1",
                    params![
                        id,
                        serde_json::to_string(&seen).unwrap_or_else(|_| "[]".into()),
                        done,
                        at_ms
                    ],
                )?;
                n += usize::from(done);
            }
            tx.commit()?;
            Ok(n)
        })
        .await
    }

    /// Events to present to the dispatcher: not yet notified, or still active at `now_ms`.
    pub async fn live_events(&self, now_ms: TimestampMs) -> Result<Vec<StoredEvent>, StoreError> {
        self.call(move |c| {
            let mut st = c.prepare(&format!(
                "SELECT {COLUMNS} FROM event_alerts
                 WHERE notified_at_ms IS NULL OR ends_at_ms > ?1 ORDER BY starts_at_ms"
            ))?;
            let rows = st.query_map(params![now_ms], row_to_event)?;
            rows.collect()
        })
        .await
    }

    /// Sets a pending event's end (to keep presenting it until it is notified).
    pub async fn extend_event(
        &self,
        event_id: String,
        ends_at_ms: TimestampMs,
    ) -> Result<(), StoreError> {
        self.call(move |c| {
            c.execute(
                "UPDATE event_alerts SET ends_at_ms = ?2 WHERE event_id = ?1",
                params![event_id, ends_at_ms],
            )
            .map(|_| ())
        })
        .await
    }

    /// Deletes the notified events that ended before `before_ms`, and the
    /// pending ones that started before it (given up on).
    pub async fn delete_events_before(&self, before_ms: TimestampMs) -> Result<usize, StoreError> {
        self.call(move |c| {
            c.execute(
                "DELETE FROM event_alerts WHERE
                   (notified_at_ms IS NOT NULL AND ends_at_ms < ?1)
                   OR (notified_at_ms IS NULL AND starts_at_ms < ?1)",
                params![before_ms],
            )
        })
        .await
    }
}
