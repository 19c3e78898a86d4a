//! The notification outbox: one row per notification and integration, written
//! before anything is sent. (The notification log, Alertmanager's nflog, is
//! dispatch's: `store/silences.rs`.)

use rusqlite::{params, OptionalExtension};
use serde::Serialize;

use super::{Store, StoreError};
use crate::clock::TimestampMs;

pub(super) const MIGRATION: &str = "
CREATE TABLE outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    notification_id TEXT NOT NULL,
    receiver TEXT NOT NULL,
    integration TEXT NOT NULL,
    integration_index INTEGER NOT NULL,
    group_key TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER NOT NULL,
    last_error TEXT,
    state TEXT NOT NULL DEFAULT 'pending',
    finished_at_ms INTEGER,
    UNIQUE (notification_id, receiver, integration, integration_index)
);
CREATE INDEX outbox_pending ON outbox (state, receiver, integration, integration_index, id);
CREATE INDEX outbox_finished ON outbox (finished_at_ms);
";

pub const STATE_PENDING: &str = "pending";
pub const STATE_DELIVERED: &str = "delivered";
pub const STATE_DEAD: &str = "dead";

/// A row to write: `notification_id` is deterministic, so writing the same
/// notification twice keeps one row per integration.
#[derive(Clone, Debug, PartialEq)]
pub struct NewOutboxRow {
    pub notification_id: String,
    pub receiver: String,
    pub integration: String,
    pub integration_index: usize,
    pub group_key: String,
    pub payload: String,
    pub created_at_ms: TimestampMs,
}

#[derive(Clone, Debug, PartialEq)]
pub struct OutboxRow {
    pub id: i64,
    pub notification_id: String,
    pub receiver: String,
    pub integration: String,
    pub integration_index: usize,
    pub group_key: String,
    pub payload: String,
    pub created_at_ms: TimestampMs,
    pub attempts: u32,
    pub next_attempt_ms: TimestampMs,
    pub last_error: Option<String>,
    pub state: String,
    pub finished_at_ms: Option<TimestampMs>,
}

/// Deliveries of one integration kind of one receiver within a period.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OutboxStats {
    pub receiver: String,
    pub integration: String,
    pub delivered: u64,
    pub dead_lettered: u64,
    pub pending: u64,
}

const COLUMNS: &str = "id, notification_id, receiver, integration, integration_index, group_key, payload, created_at_ms, attempts, next_attempt_ms, last_error, state, finished_at_ms";

fn row_to_outbox(r: &rusqlite::Row<'_>) -> rusqlite::Result<OutboxRow> {
    Ok(OutboxRow {
        id: r.get(0)?,
        notification_id: r.get(1)?,
        receiver: r.get(2)?,
        integration: r.get(3)?,
        integration_index: r.get::<_, i64>(4)? as usize,
        group_key: r.get(5)?,
        payload: r.get(6)?,
        created_at_ms: r.get(7)?,
        attempts: r.get::<_, i64>(8)? as u32,
        next_attempt_ms: r.get(9)?,
        last_error: r.get(10)?,
        state: r.get(11)?,
        finished_at_ms: r.get(12)?,
    })
}

impl Store {
    /// Writes the rows (skipping ones already written) in one transaction.
    /// Returns how many rows were new.
    pub async fn outbox_enqueue(&self, rows: Vec<NewOutboxRow>) -> Result<usize, StoreError> {
        self.call(move |c| {
            let tx = c.transaction()?;
            let mut inserted = 0;
            {
                let mut st = tx.prepare(
                    "INSERT OR IGNORE INTO outbox (notification_id, receiver, integration, integration_index, group_key, payload, created_at_ms, next_attempt_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)",
                )?;
                for r in &rows {
                    inserted += st.execute(params![
                        r.notification_id,
                        r.receiver,
                        r.integration,
                        r.integration_index as i64,
                        r.group_key,
                        r.payload,
                        r.created_at_ms
                    ])?;
                }
            }
            tx.commit()?;
            Ok(inserted)
        })
        .await
    }

    /// The oldest pending row of one integration (its queue head).
    pub async fn outbox_head(
        &self,
        receiver: &str,
        integration: &str,
        index: usize,
    ) -> Result<Option<OutboxRow>, StoreError> {
        let (receiver, integration) = (receiver.to_string(), integration.to_string());
        self.call(move |c| {
            c.query_row(
                &format!(
                    "SELECT {COLUMNS} FROM outbox WHERE state = 'pending' AND receiver = ?1 AND integration = ?2 AND integration_index = ?3 ORDER BY id LIMIT 1"
                ),
                params![receiver, integration, index as i64],
                row_to_outbox,
            )
            .optional()
        })
        .await
    }

    /// Every integration that has pending rows: `(receiver, integration, index)`.
    pub async fn outbox_pending_integrations(
        &self,
    ) -> Result<Vec<(String, String, usize)>, StoreError> {
        self.call(|c| {
            let mut st = c.prepare(
                "SELECT DISTINCT receiver, integration, integration_index FROM outbox WHERE state = 'pending' ORDER BY 1, 2, 3",
            )?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? as usize)))?;
            rows.collect()
        })
        .await
    }

    pub async fn outbox_mark_delivered(
        &self,
        id: i64,
        attempts: u32,
        at_ms: TimestampMs,
    ) -> Result<(), StoreError> {
        self.call(move |c| {
            c.execute(
                "UPDATE outbox SET state = 'delivered', attempts = ?2, finished_at_ms = ?3, last_error = NULL WHERE id = ?1",
                params![id, attempts as i64, at_ms],
            )
            .map(|_| ())
        })
        .await
    }

    pub async fn outbox_mark_retry(
        &self,
        id: i64,
        attempts: u32,
        next_attempt_ms: TimestampMs,
        error: String,
    ) -> Result<(), StoreError> {
        self.call(move |c| {
            c.execute(
                "UPDATE outbox SET attempts = ?2, next_attempt_ms = ?3, last_error = ?4 WHERE id = ?1",
                params![id, attempts as i64, next_attempt_ms, error],
            )
            .map(|_| ())
        })
        .await
    }

    pub async fn outbox_mark_dead(
        &self,
        id: i64,
        attempts: u32,
        at_ms: TimestampMs,
        error: String,
    ) -> Result<(), StoreError> {
        self.call(move |c| {
            c.execute(
                "UPDATE outbox SET state = 'dead', attempts = ?2, finished_at_ms = ?3, last_error = ?4 WHERE id = ?1",
                params![id, attempts as i64, at_ms, error],
            )
            .map(|_| ())
        })
        .await
    }

    /// Rows still to deliver.
    pub async fn outbox_queue_depth(&self) -> Result<i64, StoreError> {
        self.call(|c| {
            c.query_row(
                "SELECT COUNT(*) FROM outbox WHERE state = 'pending'",
                [],
                |r| r.get(0),
            )
        })
        .await
    }

    /// Rows in any state, newest first (for the API, tests and debugging).
    pub async fn outbox_rows(&self, limit: usize) -> Result<Vec<OutboxRow>, StoreError> {
        self.call(move |c| {
            let mut st = c.prepare(&format!(
                "SELECT {COLUMNS} FROM outbox ORDER BY id DESC LIMIT ?1"
            ))?;
            let rows = st.query_map(params![limit as i64], row_to_outbox)?;
            rows.collect()
        })
        .await
    }

    /// Delivered and dead-lettered rows finished in `[from_ms, to_ms)`, and
    /// pending rows created in it, per receiver and integration kind.
    pub async fn outbox_stats(
        &self,
        from_ms: TimestampMs,
        to_ms: TimestampMs,
    ) -> Result<Vec<OutboxStats>, StoreError> {
        self.call(move |c| {
            let mut st = c.prepare(
                "SELECT receiver, integration,
                   SUM(state = 'delivered' AND finished_at_ms >= ?1 AND finished_at_ms < ?2),
                   SUM(state = 'dead' AND finished_at_ms >= ?1 AND finished_at_ms < ?2),
                   SUM(state = 'pending' AND created_at_ms < ?2)
                 FROM outbox
                 WHERE (finished_at_ms >= ?1 AND finished_at_ms < ?2) OR state = 'pending'
                 GROUP BY receiver, integration ORDER BY receiver, integration",
            )?;
            let rows = st.query_map(params![from_ms, to_ms], |r| {
                Ok(OutboxStats {
                    receiver: r.get(0)?,
                    integration: r.get(1)?,
                    delivered: r.get::<_, Option<i64>>(2)?.unwrap_or(0) as u64,
                    dead_lettered: r.get::<_, Option<i64>>(3)?.unwrap_or(0) as u64,
                    pending: r.get::<_, Option<i64>>(4)?.unwrap_or(0) as u64,
                })
            })?;
            rows.collect()
        })
        .await
    }

    /// The newest `created_at_ms` of any row of `receiver` (None: it has no rows).
    /// For a report's receiver that is its last queued run.
    pub async fn outbox_latest_created_ms(
        &self,
        receiver: &str,
    ) -> Result<Option<TimestampMs>, StoreError> {
        let receiver = receiver.to_string();
        self.call(move |c| {
            c.query_row(
                "SELECT MAX(created_at_ms) FROM outbox WHERE receiver = ?1",
                params![receiver],
                |r| r.get(0),
            )
        })
        .await
    }

    /// Deletes finished rows older than `before_ms`, except the newest rows of
    /// each receiver starting with `keep_latest_prefix` (reports: their last
    /// run must outlive a weekly or monthly period, so a run missed while the
    /// daemon was down can be caught up). Returns how many were deleted.
    pub async fn outbox_prune(
        &self,
        before_ms: TimestampMs,
        keep_latest_prefix: &str,
    ) -> Result<usize, StoreError> {
        let prefix = keep_latest_prefix.to_string();
        self.call(move |c| {
            c.execute(
                "DELETE FROM outbox WHERE state != 'pending' AND finished_at_ms < ?1
                   AND NOT (substr(receiver, 1, length(?2)) = ?2
                            AND created_at_ms = (SELECT MAX(o.created_at_ms) FROM outbox o
                                                 WHERE o.receiver = outbox.receiver))",
                params![before_ms, prefix],
            )
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(nid: &str, idx: usize) -> NewOutboxRow {
        NewOutboxRow {
            notification_id: nid.into(),
            receiver: "team".into(),
            integration: "email".into(),
            integration_index: idx,
            group_key: "{}:{}".into(),
            payload: "{}".into(),
            created_at_ms: 1000,
        }
    }

    #[tokio::test]
    async fn enqueue_is_idempotent_and_rows_move_through_states() {
        let s = Store::open_in_memory().unwrap();
        assert_eq!(
            s.outbox_enqueue(vec![row("n1", 0), row("n1", 1)])
                .await
                .unwrap(),
            2
        );
        assert_eq!(s.outbox_enqueue(vec![row("n1", 0)]).await.unwrap(), 0);
        assert_eq!(s.outbox_queue_depth().await.unwrap(), 2);
        let head = s.outbox_head("team", "email", 0).await.unwrap().unwrap();
        assert_eq!(head.next_attempt_ms, 1000);
        s.outbox_mark_retry(head.id, 1, 5000, "refused".into())
            .await
            .unwrap();
        let head = s.outbox_head("team", "email", 0).await.unwrap().unwrap();
        assert_eq!((head.attempts, head.next_attempt_ms), (1, 5000));
        s.outbox_mark_delivered(head.id, 2, 6000).await.unwrap();
        assert!(s.outbox_head("team", "email", 0).await.unwrap().is_none());
        let other = s.outbox_head("team", "email", 1).await.unwrap().unwrap();
        s.outbox_mark_dead(other.id, 3, 7000, "gone".into())
            .await
            .unwrap();
        assert_eq!(s.outbox_queue_depth().await.unwrap(), 0);
        let stats = s.outbox_stats(0, 10_000).await.unwrap();
        assert_eq!(
            (stats[0].delivered, stats[0].dead_lettered, stats[0].pending),
            (1, 1, 0)
        );
        assert_eq!(s.outbox_prune(6500, "report:").await.unwrap(), 1);
    }

    #[tokio::test]
    async fn latest_created_and_prune_keep_a_reports_last_run() {
        let s = Store::open_in_memory().unwrap();
        let report_row = |nid: &str, at: TimestampMs| NewOutboxRow {
            receiver: "report:weekly".into(),
            created_at_ms: at,
            ..row(nid, 0)
        };
        assert_eq!(
            s.outbox_latest_created_ms("report:weekly").await.unwrap(),
            None
        );
        s.outbox_enqueue(vec![
            report_row("w1", 1000),
            report_row("w2", 2000),
            row("n1", 0),
        ])
        .await
        .unwrap();
        assert_eq!(
            s.outbox_latest_created_ms("report:weekly").await.unwrap(),
            Some(2000)
        );
        assert_eq!(
            s.outbox_latest_created_ms("team").await.unwrap(),
            Some(1000)
        );
        for r in s.outbox_rows(10).await.unwrap() {
            s.outbox_mark_delivered(r.id, 1, 3000).await.unwrap();
        }
        // The older report run and the alert go; the report's last run stays.
        assert_eq!(s.outbox_prune(10_000, "report:").await.unwrap(), 2);
        let left = s.outbox_rows(10).await.unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].notification_id, "w2");
        assert_eq!(
            s.outbox_latest_created_ms("report:weekly").await.unwrap(),
            Some(2000)
        );
    }
}
