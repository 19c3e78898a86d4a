//! Rollback intents (exactly once), the audit of every action decision, holds
//! and the quarantine of revisions that were rolled back from.

use rusqlite::{params, OptionalExtension};
use serde::Serialize;

use super::{Store, StoreError};
use crate::action::journal::{Decision, IntentDetail, IntentKind};
use crate::clock::TimestampMs;

pub(super) const MIGRATION: &str = "
CREATE TABLE action_intents (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL,
    target TEXT NOT NULL,
    kind TEXT NOT NULL,
    service TEXT,
    step INTEGER NOT NULL DEFAULT 0,
    fingerprint TEXT NOT NULL,
    alertname TEXT NOT NULL,
    from_revision TEXT,
    to_revision TEXT,
    etag TEXT,
    detail TEXT NOT NULL DEFAULT '{}',
    state TEXT NOT NULL,
    operation TEXT,
    note TEXT,
    manual INTEGER NOT NULL DEFAULT 0,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
);
CREATE INDEX action_intents_by_target ON action_intents (target, created_at_ms);
CREATE INDEX action_intents_by_state ON action_intents (state);

CREATE TABLE action_audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms INTEGER NOT NULL,
    run_id TEXT,
    target TEXT NOT NULL,
    service TEXT,
    intent_id INTEGER,
    alertname TEXT,
    fingerprint TEXT,
    decision TEXT NOT NULL,
    reason TEXT NOT NULL,
    from_revision TEXT,
    to_revision TEXT,
    dry_run INTEGER NOT NULL DEFAULT 0,
    evidence TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX action_audit_by_target ON action_audit (target, at_ms);

CREATE TABLE action_holds (
    target TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    set_by TEXT NOT NULL,
    at_ms INTEGER NOT NULL
);

CREATE TABLE action_quarantine (
    service TEXT NOT NULL,
    revision TEXT NOT NULL,
    reason TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    PRIMARY KEY (service, revision)
);
";

/// The target name a global hold is stored under.
pub const GLOBAL_HOLD: &str = "*";

/// Where an intent stands. Only `Pending` and `Applied` are unfinished.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IntentState {
    /// Written before the API call; the call may or may not have happened.
    Pending,
    /// The API accepted the change; waiting for it to take effect.
    Applied,
    /// The change took effect; its verification has not ended. A restart
    /// picks the run up here (verify, then the ladder's next steps).
    Verifying,
    /// The change took effect and its verification ended (either way).
    Done,
    /// Another actor made the change (etag conflict, or found done at reconcile).
    Superseded,
    /// The change was refused or did not take effect.
    Failed,
    /// Found unfinished at start, and no longer needed (the alert resolved).
    Abandoned,
}

impl IntentState {
    pub fn as_str(self) -> &'static str {
        match self {
            IntentState::Pending => "pending",
            IntentState::Applied => "applied",
            IntentState::Verifying => "verifying",
            IntentState::Done => "done",
            IntentState::Superseded => "superseded",
            IntentState::Failed => "failed",
            IntentState::Abandoned => "abandoned",
        }
    }

    pub fn parse(s: &str) -> IntentState {
        match s {
            "pending" => IntentState::Pending,
            "applied" => IntentState::Applied,
            "verifying" => IntentState::Verifying,
            "done" => IntentState::Done,
            "superseded" => IntentState::Superseded,
            "abandoned" => IntentState::Abandoned,
            _ => IntentState::Failed,
        }
    }

    pub fn is_unfinished(self) -> bool {
        matches!(
            self,
            IntentState::Pending | IntentState::Applied | IntentState::Verifying
        )
    }
}

/// What rearguard meant to do, written before doing it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Intent {
    pub id: i64,
    /// One run of an action (a ladder's steps share it); budgets count runs.
    pub run_id: String,
    /// The action name (what holds, cooldown and budget are kept per).
    pub target: String,
    /// What the intent changes (stored as its word).
    pub kind: IntentKind,
    pub service: Option<String>,
    /// Index of the step in a ladder (0 for a single effect).
    pub step: u32,
    /// The triggering alert's fingerprint (hex), or "manual".
    pub fingerprint: String,
    pub alertname: String,
    pub from_revision: Option<String>,
    pub to_revision: Option<String>,
    /// The service etag seen when the intent was written.
    pub etag: Option<String>,
    /// What the effect needs to be re-done or checked (the alert, the plan,
    /// env vars, argv); stored as JSON.
    pub detail: IntentDetail,
    pub state: IntentState,
    pub operation: Option<String>,
    pub note: Option<String>,
    pub manual: bool,
    pub created_at_ms: TimestampMs,
    pub updated_at_ms: TimestampMs,
}

/// One decision, acted or skipped, with its reason and evidence.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AuditEntry {
    pub id: i64,
    pub at_ms: TimestampMs,
    pub run_id: Option<String>,
    pub target: String,
    pub service: Option<String>,
    pub intent_id: Option<i64>,
    pub alertname: Option<String>,
    pub fingerprint: Option<String>,
    /// What was decided (stored and served as its word).
    pub decision: Decision,
    /// Why, in a stable word (cooldown, budget, hold, not_deploy_regression, ...) or a sentence.
    pub reason: String,
    pub from_revision: Option<String>,
    pub to_revision: Option<String>,
    pub dry_run: bool,
    pub evidence: serde_json::Value,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Hold {
    /// An action name, or `*` for every target.
    pub target: String,
    pub reason: String,
    pub set_by: String,
    pub at_ms: TimestampMs,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Quarantined {
    pub service: String,
    pub revision: String,
    pub reason: String,
    pub at_ms: TimestampMs,
}

const INTENT_COLUMNS: &str = "id, run_id, target, kind, service, step, fingerprint, alertname, from_revision, to_revision, etag, detail, state, operation, note, manual, created_at_ms, updated_at_ms";

/// A row this version cannot read as a whole (a word it does not know,
/// written by a newer version): skipped by the listings, with a warning.
fn unreadable(column: usize, what: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(column, rusqlite::types::Type::Text, what.into())
}

/// Collects rows, leaving out (and logging) those [`unreadable`] made.
fn readable<T>(
    table: &str,
    rows: impl Iterator<Item = rusqlite::Result<T>>,
) -> rusqlite::Result<Vec<T>> {
    let mut out = Vec::new();
    for row in rows {
        match row {
            Ok(v) => out.push(v),
            Err(rusqlite::Error::FromSqlConversionFailure(_, _, why)) => {
                tracing::warn!(table, error = %why, "skipping a row this version cannot read (written by a newer rearguard?)");
            }
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

fn row_to_intent(r: &rusqlite::Row<'_>) -> rusqlite::Result<Intent> {
    let id: i64 = r.get(0)?;
    let kind: String = r.get(3)?;
    let kind = IntentKind::parse(&kind)
        .ok_or_else(|| unreadable(3, format!("intent {id}: unknown kind {kind:?}")))?;
    let detail: String = r.get(11)?;
    // A detail that is not even a JSON object reads as empty, as before types.
    let detail = serde_json::from_str(&detail).unwrap_or_else(|e| {
        tracing::warn!(intent = id, error = %e, "the intent's detail cannot be read; taking it as empty");
        IntentDetail::default()
    });
    let state: String = r.get(12)?;
    Ok(Intent {
        id,
        run_id: r.get(1)?,
        target: r.get(2)?,
        kind,
        service: r.get(4)?,
        step: r.get::<_, i64>(5)? as u32,
        fingerprint: r.get(6)?,
        alertname: r.get(7)?,
        from_revision: r.get(8)?,
        to_revision: r.get(9)?,
        etag: r.get(10)?,
        detail,
        state: IntentState::parse(&state),
        operation: r.get(13)?,
        note: r.get(14)?,
        manual: r.get(15)?,
        created_at_ms: r.get(16)?,
        updated_at_ms: r.get(17)?,
    })
}

const AUDIT_COLUMNS: &str =
    "id, at_ms, run_id, target, service, intent_id, alertname, fingerprint, decision, reason, from_revision, to_revision, dry_run, evidence";

fn row_to_audit(r: &rusqlite::Row<'_>) -> rusqlite::Result<AuditEntry> {
    let id: i64 = r.get(0)?;
    let decision: String = r.get(8)?;
    let decision = Decision::parse(&decision).ok_or_else(|| {
        unreadable(
            8,
            format!("audit entry {id}: unknown decision {decision:?}"),
        )
    })?;
    let evidence: String = r.get(13)?;
    Ok(AuditEntry {
        id,
        at_ms: r.get(1)?,
        run_id: r.get(2)?,
        target: r.get(3)?,
        service: r.get(4)?,
        intent_id: r.get(5)?,
        alertname: r.get(6)?,
        fingerprint: r.get(7)?,
        decision,
        reason: r.get(9)?,
        from_revision: r.get(10)?,
        to_revision: r.get(11)?,
        dry_run: r.get(12)?,
        evidence: serde_json::from_str(&evidence).unwrap_or(serde_json::Value::Null),
    })
}

impl Store {
    /// Writes a new intent (its `id` is ignored) and returns its id.
    pub async fn insert_intent(&self, i: Intent) -> Result<i64, StoreError> {
        self.call(move |c| {
            c.execute(
                "INSERT INTO action_intents (run_id, target, kind, service, step, fingerprint, alertname, from_revision, to_revision, etag, detail, state, operation, note, manual, created_at_ms, updated_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
                params![
                    i.run_id,
                    i.target,
                    i.kind.as_str(),
                    i.service,
                    i.step as i64,
                    i.fingerprint,
                    i.alertname,
                    i.from_revision,
                    i.to_revision,
                    i.etag,
                    serde_json::to_string(&i.detail).map_err(|e| {
                        // Plain strings and numbers: cannot fail; say so if it does.
                        rusqlite::Error::ToSqlConversionFailure(e.into())
                    })?,
                    i.state.as_str(),
                    i.operation,
                    i.note,
                    i.manual,
                    i.created_at_ms,
                    i.updated_at_ms
                ],
            )?;
            Ok(c.last_insert_rowid())
        })
        .await
    }

    /// Moves an intent to `state`; `operation` and `note` are kept when `None`.
    pub async fn update_intent(
        &self,
        id: i64,
        state: IntentState,
        operation: Option<String>,
        note: Option<String>,
        at_ms: TimestampMs,
    ) -> Result<(), StoreError> {
        self.call(move |c| {
            c.execute(
                "UPDATE action_intents SET state = ?2, operation = COALESCE(?3, operation), note = COALESCE(?4, note), updated_at_ms = ?5 WHERE id = ?1",
                params![id, state.as_str(), operation, note, at_ms],
            )
            .map(|_| ())
        })
        .await
    }

    /// Re-arms an unfinished intent with a fresh etag (the retry at reconcile).
    pub async fn rearm_intent(
        &self,
        id: i64,
        etag: Option<String>,
        at_ms: TimestampMs,
    ) -> Result<(), StoreError> {
        self.call(move |c| {
            c.execute(
                "UPDATE action_intents SET state = 'pending', etag = ?2, operation = NULL, updated_at_ms = ?3 WHERE id = ?1",
                params![id, etag, at_ms],
            )
            .map(|_| ())
        })
        .await
    }

    pub async fn intent(&self, id: i64) -> Result<Option<Intent>, StoreError> {
        self.call(move |c| {
            c.query_row(
                &format!("SELECT {INTENT_COLUMNS} FROM action_intents WHERE id = ?1"),
                params![id],
                row_to_intent,
            )
            .optional()
        })
        .await
    }

    /// Intents left `pending` or `applied` (by a crash), oldest first.
    pub async fn unfinished_intents(&self) -> Result<Vec<Intent>, StoreError> {
        self.call(|c| {
            let mut st = c.prepare(&format!(
                "SELECT {INTENT_COLUMNS} FROM action_intents WHERE state IN ('pending', 'applied', 'verifying') ORDER BY id"
            ))?;
            let rows = st.query_map([], row_to_intent)?;
            readable("action_intents", rows)
        })
        .await
    }

    /// Intents of `target` (all, when `None`) created at or after `since_ms`, newest first.
    pub async fn intents_since(
        &self,
        target: Option<String>,
        since_ms: TimestampMs,
        limit: usize,
    ) -> Result<Vec<Intent>, StoreError> {
        self.call(move |c| {
            let mut st = c.prepare(&format!(
                "SELECT {INTENT_COLUMNS} FROM action_intents
                 WHERE (?1 IS NULL OR target = ?1) AND created_at_ms >= ?2
                 ORDER BY id DESC LIMIT ?3"
            ))?;
            let rows = st.query_map(params![target, since_ms, limit as i64], row_to_intent)?;
            readable("action_intents", rows)
        })
        .await
    }

    /// Start times of the runs of `target` since `since_ms` that changed, or may
    /// have changed, something (runs whose every intent was abandoned do not
    /// count), newest first. Cooldown and budget are counted over these.
    pub async fn action_runs_since(
        &self,
        target: &str,
        since_ms: TimestampMs,
    ) -> Result<Vec<TimestampMs>, StoreError> {
        let target = target.to_string();
        self.call(move |c| {
            let mut st = c.prepare(
                "SELECT MIN(created_at_ms) AS started FROM action_intents
                 WHERE target = ?1 AND created_at_ms >= ?2 AND state != 'abandoned'
                 GROUP BY run_id ORDER BY started DESC",
            )?;
            let rows = st.query_map(params![target, since_ms], |r| r.get(0))?;
            rows.collect()
        })
        .await
    }

    /// Appends an audit entry (its `id` is ignored) and returns its id.
    pub async fn append_audit(&self, e: AuditEntry) -> Result<i64, StoreError> {
        self.call(move |c| {
            c.execute(
                "INSERT INTO action_audit (at_ms, run_id, target, service, intent_id, alertname, fingerprint, decision, reason, from_revision, to_revision, dry_run, evidence)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                params![
                    e.at_ms,
                    e.run_id,
                    e.target,
                    e.service,
                    e.intent_id,
                    e.alertname,
                    e.fingerprint,
                    e.decision.as_str(),
                    e.reason,
                    e.from_revision,
                    e.to_revision,
                    e.dry_run,
                    e.evidence.to_string()
                ],
            )?;
            Ok(c.last_insert_rowid())
        })
        .await
    }

    /// The newest `limit` audit entries (of `target`, when given), oldest first.
    pub async fn audit(
        &self,
        target: Option<String>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        self.call(move |c| {
            let mut st = c.prepare(&format!(
                "SELECT {AUDIT_COLUMNS} FROM
                   (SELECT * FROM action_audit WHERE (?1 IS NULL OR target = ?1) ORDER BY id DESC LIMIT ?2)
                 ORDER BY id"
            ))?;
            let rows = st.query_map(params![target, limit as i64], row_to_audit)?;
            readable("action_audit", rows)
        })
        .await
    }

    /// Sets (or replaces) a hold on `target` (`GLOBAL_HOLD` for all).
    pub async fn set_hold(&self, h: Hold) -> Result<(), StoreError> {
        self.call(move |c| {
            c.execute(
                "INSERT INTO action_holds (target, reason, set_by, at_ms) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (target) DO UPDATE SET reason = excluded.reason, set_by = excluded.set_by, at_ms = excluded.at_ms",
                params![h.target, h.reason, h.set_by, h.at_ms],
            )
            .map(|_| ())
        })
        .await
    }

    /// Removes the hold on `target`; returns whether there was one.
    pub async fn remove_hold(&self, target: &str) -> Result<bool, StoreError> {
        let target = target.to_string();
        self.call(move |c| {
            c.execute(
                "DELETE FROM action_holds WHERE target = ?1",
                params![target],
            )
            .map(|n| n > 0)
        })
        .await
    }

    pub async fn holds(&self) -> Result<Vec<Hold>, StoreError> {
        self.call(|c| {
            let mut st = c.prepare(
                "SELECT target, reason, set_by, at_ms FROM action_holds ORDER BY target",
            )?;
            let rows = st.query_map([], |r| {
                Ok(Hold {
                    target: r.get(0)?,
                    reason: r.get(1)?,
                    set_by: r.get(2)?,
                    at_ms: r.get(3)?,
                })
            })?;
            rows.collect()
        })
        .await
    }

    pub async fn quarantine_revision(&self, q: Quarantined) -> Result<(), StoreError> {
        self.call(move |c| {
            c.execute(
                "INSERT OR IGNORE INTO action_quarantine (service, revision, reason, at_ms) VALUES (?1, ?2, ?3, ?4)",
                params![q.service, q.revision, q.reason, q.at_ms],
            )
            .map(|_| ())
        })
        .await
    }

    pub async fn unquarantine_revision(
        &self,
        service: &str,
        revision: &str,
    ) -> Result<bool, StoreError> {
        let (service, revision) = (service.to_string(), revision.to_string());
        self.call(move |c| {
            c.execute(
                "DELETE FROM action_quarantine WHERE service = ?1 AND revision = ?2",
                params![service, revision],
            )
            .map(|n| n > 0)
        })
        .await
    }

    /// Quarantined revisions (of `service`, when given).
    pub async fn quarantine(
        &self,
        service: Option<String>,
    ) -> Result<Vec<Quarantined>, StoreError> {
        self.call(move |c| {
            let mut st = c.prepare(
                "SELECT service, revision, reason, at_ms FROM action_quarantine
                 WHERE (?1 IS NULL OR service = ?1) ORDER BY at_ms, revision",
            )?;
            let rows = st.query_map(params![service], |r| {
                Ok(Quarantined {
                    service: r.get(0)?,
                    revision: r.get(1)?,
                    reason: r.get(2)?,
                    at_ms: r.get(3)?,
                })
            })?;
            rows.collect()
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intent(target: &str, at: i64) -> Intent {
        Intent {
            id: 0,
            run_id: format!("{target}-{at}"),
            target: target.into(),
            kind: IntentKind::CloudRunTraffic,
            service: Some("projects/p/locations/l/services/s".into()),
            step: 0,
            fingerprint: "abc".into(),
            alertname: "HighErrors".into(),
            from_revision: Some("s-2".into()),
            to_revision: Some("s-1".into()),
            etag: Some("e1".into()),
            detail: IntentDetail {
                origin: Some("s-2".into()),
                ..IntentDetail::default()
            },
            state: IntentState::Pending,
            operation: None,
            note: None,
            manual: false,
            created_at_ms: at,
            updated_at_ms: at,
        }
    }

    #[tokio::test]
    async fn intents_move_through_states_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let id = s.insert_intent(intent("backend", 10)).await.unwrap();
        s.insert_intent(intent("other", 20)).await.unwrap();
        s.update_intent(id, IntentState::Applied, Some("op/1".into()), None, 11)
            .await
            .unwrap();
        drop(s);
        let s = Store::open(dir.path()).unwrap();
        let open = s.unfinished_intents().await.unwrap();
        assert_eq!(open.len(), 2);
        assert_eq!(open[0].state, IntentState::Applied);
        assert_eq!(open[0].operation.as_deref(), Some("op/1"));
        assert_eq!(open[0].detail.origin.as_deref(), Some("s-2"));
        s.update_intent(id, IntentState::Done, None, Some("ok".into()), 12)
            .await
            .unwrap();
        let i = s.intent(id).await.unwrap().unwrap();
        assert_eq!(
            (i.state, i.operation.as_deref(), i.note.as_deref()),
            (IntentState::Done, Some("op/1"), Some("ok"))
        );
        assert_eq!(s.unfinished_intents().await.unwrap().len(), 1);
        assert_eq!(
            s.intents_since(Some("backend".into()), 0, 10)
                .await
                .unwrap()
                .len(),
            1
        );
        assert_eq!(s.intents_since(None, 15, 10).await.unwrap().len(), 1);
        assert_eq!(s.action_runs_since("backend", 0).await.unwrap(), vec![10]);
        s.update_intent(id, IntentState::Abandoned, None, None, 13)
            .await
            .unwrap();
        assert!(s.action_runs_since("backend", 0).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn holds_quarantine_and_audit() {
        let s = Store::open_in_memory().unwrap();
        s.set_hold(Hold {
            target: "backend".into(),
            reason: "investigating".into(),
            set_by: "cli".into(),
            at_ms: 1,
        })
        .await
        .unwrap();
        s.set_hold(Hold {
            target: "backend".into(),
            reason: "still".into(),
            set_by: "api".into(),
            at_ms: 2,
        })
        .await
        .unwrap();
        let holds = s.holds().await.unwrap();
        assert_eq!(holds.len(), 1);
        assert_eq!(holds[0].reason, "still");
        assert!(s.remove_hold("backend").await.unwrap());
        assert!(!s.remove_hold("backend").await.unwrap());

        let q = Quarantined {
            service: "svc".into(),
            revision: "svc-2".into(),
            reason: "rolled back".into(),
            at_ms: 5,
        };
        s.quarantine_revision(q.clone()).await.unwrap();
        s.quarantine_revision(q).await.unwrap();
        assert_eq!(s.quarantine(Some("svc".into())).await.unwrap().len(), 1);
        assert!(s.quarantine(Some("other".into())).await.unwrap().is_empty());
        assert!(s.unquarantine_revision("svc", "svc-2").await.unwrap());

        for (t, d) in [
            ("a", Decision::Skipped),
            ("b", Decision::Started),
            ("a", Decision::Verified),
        ] {
            s.append_audit(AuditEntry {
                id: 0,
                at_ms: 1,
                run_id: None,
                target: t.into(),
                service: None,
                intent_id: None,
                alertname: None,
                fingerprint: None,
                decision: d,
                reason: "r".into(),
                from_revision: None,
                to_revision: None,
                dry_run: false,
                evidence: serde_json::json!({"value": 1.5}),
            })
            .await
            .unwrap();
        }
        let a = s.audit(Some("a".into()), 10).await.unwrap();
        assert_eq!(
            a.iter().map(|e| e.decision.as_str()).collect::<Vec<_>>(),
            ["skipped", "verified"]
        );
        assert_eq!(a[0].evidence["value"], 1.5);
        assert_eq!(s.audit(None, 2).await.unwrap().len(), 2);
    }

    /// Rows exactly as the previous (untyped) version wrote them: a traffic
    /// intent with its alert, origin and plan; an env intent; a command; one
    /// with a detail from before plans were recorded.
    #[tokio::test]
    async fn intents_written_by_the_previous_version_are_read() {
        let s = Store::open_in_memory().unwrap();
        let old_rows = [
            (
                "cloud_run_traffic",
                r#"{"alert":{"labels":{"alertname":"HighErrors","service":"s"},"annotations":{"summary":"5xx"},"value":0.42,"active_at_ms":100,"starts_at_ms":160,"generator_url":"http://x/graph"},"origin":"s-2","planned":{"generation":7,"traffic":[{"revision":"s-2","latest":false,"percent":100}]}}"#,
            ),
            (
                "cloud_run_env",
                r#"{"alert":{"labels":{"alertname":"HighErrors"},"active_at_ms":100},"env":{"FLAG":"off"},"origin":null,"planned":{"generation":3,"traffic":[]}}"#,
            ),
            ("command", r#"{"alert":null,"argv":["sh","-c","true"]}"#),
            // Older still: no plan, an alert value written as null (NaN).
            (
                "cloud_run_traffic",
                r#"{"alert":{"labels":{"alertname":"A"},"active_at_ms":5,"value":null}}"#,
            ),
        ];
        s.call(move |c| {
            for (kind, detail) in old_rows {
                c.execute(
                    "INSERT INTO action_intents (run_id, target, kind, step, fingerprint, alertname, detail, state, created_at_ms, updated_at_ms)
                     VALUES ('r', 'backend', ?1, 0, 'f', 'HighErrors', ?2, 'pending', 1, 1)",
                    params![kind, detail],
                )?;
            }
            Ok(())
        })
        .await
        .unwrap();
        let rows = s.unfinished_intents().await.unwrap();
        let kinds: Vec<IntentKind> = rows.iter().map(|i| i.kind).collect();
        assert_eq!(
            kinds,
            [
                IntentKind::CloudRunTraffic,
                IntentKind::CloudRunEnv,
                IntentKind::Command,
                IntentKind::CloudRunTraffic
            ]
        );
        let traffic = &rows[0].detail;
        let alert = traffic.trigger().expect("the alert");
        assert_eq!(alert.name(), "HighErrors");
        assert_eq!(alert.labels.get("service"), Some("s"));
        assert_eq!(alert.annotations["summary"], "5xx");
        assert_eq!(
            (alert.value, alert.active_at_ms, alert.starts_at_ms),
            (0.42, 100, 160)
        );
        assert_eq!(alert.generator_url, "http://x/graph");
        assert_eq!(traffic.origin.as_deref(), Some("s-2"));
        let planned = traffic.planned.as_ref().expect("the plan");
        assert_eq!(planned.generation, 7);
        assert_eq!(planned.traffic[0].revision.as_deref(), Some("s-2"));

        let env = &rows[1].detail;
        assert_eq!(env.env["FLAG"], "off");
        assert_eq!(env.origin, None);
        assert_eq!(env.planned.as_ref().map(|p| p.generation), Some(3));

        let command = &rows[2].detail;
        assert!(command.alert.is_none());
        assert_eq!(command.argv, ["sh", "-c", "true"]);

        let oldest = &rows[3].detail;
        assert!(oldest.planned.is_none());
        assert_eq!(oldest.trigger().map(|a| a.value), Some(0.0));

        // What this version writes, the previous one read: same keys.
        let written = serde_json::to_value(traffic).unwrap();
        assert_eq!(written["alert"]["labels"]["alertname"], "HighErrors");
        assert_eq!(written["alert"]["active_at_ms"], 100);
        assert_eq!(written["origin"], "s-2");
        assert_eq!(written["planned"]["generation"], 7);
    }

    /// A word this version does not know (a newer version wrote it) leaves
    /// that row out of a listing instead of failing the listing.
    #[tokio::test]
    async fn rows_with_unknown_words_are_left_out_of_listings() {
        let s = Store::open_in_memory().unwrap();
        s.insert_intent(intent("backend", 10)).await.unwrap();
        s.call(|c| {
            c.execute(
                "INSERT INTO action_intents (run_id, target, kind, step, fingerprint, alertname, state, created_at_ms, updated_at_ms)
                 VALUES ('r', 'backend', 'cloud_run_jobs', 0, 'f', 'A', 'pending', 11, 11)",
                [],
            )?;
            c.execute(
                "INSERT INTO action_audit (at_ms, target, decision, reason) VALUES (1, 'backend', 'teleported', 'r')",
                [],
            )?;
            c.execute(
                "INSERT INTO action_audit (at_ms, target, decision, reason) VALUES (2, 'backend', 'verified', 'ok')",
                [],
            )?;
            Ok(())
        })
        .await
        .unwrap();
        let open = s.unfinished_intents().await.unwrap();
        assert_eq!(open.len(), 1);
        assert_eq!(open[0].kind, IntentKind::CloudRunTraffic);
        let audit = s.audit(None, 10).await.unwrap();
        assert_eq!(audit.len(), 1);
        assert_eq!(audit[0].decision, Decision::Verified);
    }
}
