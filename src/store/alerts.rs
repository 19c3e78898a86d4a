//! Alert states of alerting rules: the current state of every active alert
//! (restored at start) and the history of its transitions.

use std::collections::BTreeMap;

use rusqlite::{params, OptionalExtension};
use serde::Serialize;

use super::{Store, StoreError};
use crate::clock::TimestampMs;

pub(super) const MIGRATION: &str = "
CREATE TABLE rule_alerts (
    rule_key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    labels TEXT NOT NULL,
    state TEXT NOT NULL,
    active_at_ms INTEGER NOT NULL,
    fired_at_ms INTEGER,
    resolved_at_ms INTEGER,
    keep_firing_since_ms INTEGER,
    last_sent_at_ms INTEGER,
    value REAL,
    updated_at_ms INTEGER NOT NULL,
    PRIMARY KEY (rule_key, fingerprint)
);
CREATE TABLE rule_alert_transitions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    rule_key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    labels TEXT NOT NULL,
    from_state TEXT NOT NULL,
    to_state TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    value REAL
);
CREATE INDEX rule_alert_transitions_by_time ON rule_alert_transitions (at_ms);
CREATE TABLE rule_group_evaluations (
    group_key TEXT PRIMARY KEY,
    last_eval_ms INTEGER NOT NULL
);
";

/// The persisted state of one active alert (pending, firing, or resolved and still being re-sent).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StoredAlert {
    /// Which rule: `file \u{1f} group \u{1f} alertname`.
    pub rule_key: String,
    pub fingerprint: String,
    pub labels: BTreeMap<String, String>,
    /// `pending`, `firing` or `inactive` (resolved).
    pub state: String,
    pub active_at_ms: TimestampMs,
    pub fired_at_ms: Option<TimestampMs>,
    pub resolved_at_ms: Option<TimestampMs>,
    pub keep_firing_since_ms: Option<TimestampMs>,
    pub last_sent_at_ms: Option<TimestampMs>,
    pub value: Option<f64>,
    pub updated_at_ms: TimestampMs,
}

/// An alert's state in the transition history: the rule's three states,
/// plus `keep_firing` (firing only because of `keep_firing_for`) and
/// `resolved` (firing, then inactive). Stored as these snake_case words.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TransitionState {
    Inactive,
    Pending,
    Firing,
    KeepFiring,
    Resolved,
}

impl TransitionState {
    pub fn as_str(self) -> &'static str {
        match self {
            TransitionState::Inactive => "inactive",
            TransitionState::Pending => "pending",
            TransitionState::Firing => "firing",
            TransitionState::KeepFiring => "keep_firing",
            TransitionState::Resolved => "resolved",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "inactive" => TransitionState::Inactive,
            "pending" => TransitionState::Pending,
            "firing" => TransitionState::Firing,
            "keep_firing" => TransitionState::KeepFiring,
            "resolved" => TransitionState::Resolved,
            _ => return None,
        })
    }
}

impl std::fmt::Display for TransitionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// A stored state word this version does not know (a newer version wrote
/// it, or the row was edited by hand): the row is refused with a message
/// rather than read as some other state.
fn transition_state(column: usize, word: String) -> rusqlite::Result<TransitionState> {
    TransitionState::parse(&word).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            column,
            rusqlite::types::Type::Text,
            format!("unknown alert transition state {word:?}").into(),
        )
    })
}

/// A change of an alert's state, as recorded in the history.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AlertTransition {
    pub rule_key: String,
    pub fingerprint: String,
    pub labels: BTreeMap<String, String>,
    pub from_state: TransitionState,
    pub to_state: TransitionState,
    pub at_ms: TimestampMs,
    pub value: Option<f64>,
}

/// Everything one group evaluation changed, written in one transaction.
#[derive(Clone, Debug, Default)]
pub struct AlertChanges {
    pub group_key: String,
    pub eval_ms: TimestampMs,
    pub upserts: Vec<StoredAlert>,
    /// (rule_key, fingerprint) of alerts no longer kept.
    pub deletes: Vec<(String, String)>,
    pub transitions: Vec<AlertTransition>,
}

fn finite(v: Option<f64>) -> Option<f64> {
    v.filter(|x| x.is_finite())
}

impl Store {
    /// Applies one evaluation's alert changes atomically (before anything is sent on).
    pub async fn apply_alert_changes(&self, ch: AlertChanges) -> Result<(), StoreError> {
        self.call(move |c| {
            let tx = c.transaction()?;
            {
                let mut up = tx.prepare_cached(
                    "INSERT INTO rule_alerts (rule_key, fingerprint, labels, state, active_at_ms, fired_at_ms,
                        resolved_at_ms, keep_firing_since_ms, last_sent_at_ms, value, updated_at_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
                     ON CONFLICT (rule_key, fingerprint) DO UPDATE SET labels = excluded.labels,
                        state = excluded.state, active_at_ms = excluded.active_at_ms,
                        fired_at_ms = excluded.fired_at_ms, resolved_at_ms = excluded.resolved_at_ms,
                        keep_firing_since_ms = excluded.keep_firing_since_ms,
                        last_sent_at_ms = excluded.last_sent_at_ms, value = excluded.value,
                        updated_at_ms = excluded.updated_at_ms",
                )?;
                for a in &ch.upserts {
                    let labels = serde_json::to_string(&a.labels).unwrap_or_else(|_| "{}".into());
                    up.execute(params![
                        a.rule_key,
                        a.fingerprint,
                        labels,
                        a.state,
                        a.active_at_ms,
                        a.fired_at_ms,
                        a.resolved_at_ms,
                        a.keep_firing_since_ms,
                        a.last_sent_at_ms,
                        finite(a.value),
                        a.updated_at_ms
                    ])?;
                }
                let mut del = tx.prepare_cached("DELETE FROM rule_alerts WHERE rule_key = ?1 AND fingerprint = ?2")?;
                for (k, f) in &ch.deletes {
                    del.execute(params![k, f])?;
                }
                let mut tr = tx.prepare_cached(
                    "INSERT INTO rule_alert_transitions (rule_key, fingerprint, labels, from_state, to_state, at_ms, value)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?;
                for t in &ch.transitions {
                    let labels = serde_json::to_string(&t.labels).unwrap_or_else(|_| "{}".into());
                    tr.execute(params![
                        t.rule_key,
                        t.fingerprint,
                        labels,
                        t.from_state.as_str(),
                        t.to_state.as_str(),
                        t.at_ms,
                        finite(t.value)
                    ])?;
                }
                tx.execute(
                    "INSERT INTO rule_group_evaluations (group_key, last_eval_ms) VALUES (?1, ?2)
                     ON CONFLICT (group_key) DO UPDATE SET last_eval_ms = excluded.last_eval_ms",
                    params![ch.group_key, ch.eval_ms],
                )?;
            }
            tx.commit()
        })
        .await
    }

    /// Every persisted active alert.
    pub async fn load_alerts(&self) -> Result<Vec<StoredAlert>, StoreError> {
        self.call(|c| {
            let mut st = c.prepare(
                "SELECT rule_key, fingerprint, labels, state, active_at_ms, fired_at_ms, resolved_at_ms,
                        keep_firing_since_ms, last_sent_at_ms, value, updated_at_ms
                 FROM rule_alerts ORDER BY rule_key, fingerprint",
            )?;
            let rows = st.query_map([], |r| {
                let labels: String = r.get(2)?;
                Ok(StoredAlert {
                    rule_key: r.get(0)?,
                    fingerprint: r.get(1)?,
                    labels: serde_json::from_str(&labels).unwrap_or_default(),
                    state: r.get(3)?,
                    active_at_ms: r.get(4)?,
                    fired_at_ms: r.get(5)?,
                    resolved_at_ms: r.get(6)?,
                    keep_firing_since_ms: r.get(7)?,
                    last_sent_at_ms: r.get(8)?,
                    value: r.get(9)?,
                    updated_at_ms: r.get(10)?,
                })
            })?;
            rows.collect()
        })
        .await
    }

    /// Forgets the alerts of rules that no longer exist (`keep`: the rule keys that do).
    pub async fn delete_alerts_of_other_rules(
        &self,
        keep: Vec<String>,
    ) -> Result<usize, StoreError> {
        self.call(move |c| {
            let tx = c.transaction()?;
            let mut n = 0;
            {
                let mut st = tx.prepare("SELECT DISTINCT rule_key FROM rule_alerts")?;
                let keys: Vec<String> =
                    st.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
                let mut del = tx.prepare("DELETE FROM rule_alerts WHERE rule_key = ?1")?;
                for k in keys.iter().filter(|k| !keep.contains(k)) {
                    n += del.execute(params![k])?;
                }
            }
            tx.commit()?;
            Ok(n)
        })
        .await
    }

    /// When the group was last evaluated (before a restart).
    pub async fn last_group_evaluation(
        &self,
        group_key: &str,
    ) -> Result<Option<TimestampMs>, StoreError> {
        let k = group_key.to_string();
        self.call(move |c| {
            c.query_row(
                "SELECT last_eval_ms FROM rule_group_evaluations WHERE group_key = ?1",
                params![k],
                |r| r.get(0),
            )
            .optional()
        })
        .await
    }

    /// The newest alert transitions, newest last.
    pub async fn alert_history(&self, limit: usize) -> Result<Vec<AlertTransition>, StoreError> {
        self.call(move |c| {
            let mut st = c.prepare(
                "SELECT rule_key, fingerprint, labels, from_state, to_state, at_ms, value FROM
                   (SELECT * FROM rule_alert_transitions ORDER BY id DESC LIMIT ?1) ORDER BY id",
            )?;
            let rows = st.query_map(params![limit as i64], |r| {
                let labels: String = r.get(2)?;
                Ok(AlertTransition {
                    rule_key: r.get(0)?,
                    fingerprint: r.get(1)?,
                    labels: serde_json::from_str(&labels).unwrap_or_default(),
                    from_state: transition_state(3, r.get(3)?)?,
                    to_state: transition_state(4, r.get(4)?)?,
                    at_ms: r.get(5)?,
                    value: r.get(6)?,
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

    fn alert(state: &str, at: i64) -> StoredAlert {
        StoredAlert {
            rule_key: "f\u{1f}g\u{1f}A".into(),
            fingerprint: "00000000000000aa".into(),
            labels: BTreeMap::from([("alertname".into(), "A".into())]),
            state: state.into(),
            active_at_ms: 1000,
            fired_at_ms: (state == "firing").then_some(at),
            resolved_at_ms: None,
            keep_firing_since_ms: None,
            last_sent_at_ms: None,
            value: Some(f64::NAN),
            updated_at_ms: at,
        }
    }

    #[tokio::test]
    async fn upsert_transition_delete() {
        let s = Store::open_in_memory().unwrap();
        let mut ch = AlertChanges {
            group_key: "f\u{1f}g".into(),
            eval_ms: 1000,
            upserts: vec![alert("pending", 1000)],
            ..Default::default()
        };
        s.apply_alert_changes(ch.clone()).await.unwrap();
        ch.upserts = vec![alert("firing", 2000)];
        ch.eval_ms = 2000;
        ch.transitions = vec![AlertTransition {
            rule_key: "f\u{1f}g\u{1f}A".into(),
            fingerprint: "00000000000000aa".into(),
            labels: BTreeMap::new(),
            from_state: TransitionState::Pending,
            to_state: TransitionState::Firing,
            at_ms: 2000,
            value: Some(3.5),
        }];
        s.apply_alert_changes(ch.clone()).await.unwrap();
        let all = s.load_alerts().await.unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].state, "firing");
        assert_eq!(all[0].active_at_ms, 1000);
        assert_eq!(all[0].fired_at_ms, Some(2000));
        assert_eq!(all[0].value, None, "NaN is stored as NULL");
        assert_eq!(
            s.last_group_evaluation("f\u{1f}g").await.unwrap(),
            Some(2000)
        );
        assert_eq!(s.alert_history(10).await.unwrap()[0].value, Some(3.5));
        ch.upserts.clear();
        ch.transitions.clear();
        ch.deletes = vec![("f\u{1f}g\u{1f}A".into(), "00000000000000aa".into())];
        s.apply_alert_changes(ch.clone()).await.unwrap();
        assert!(s.load_alerts().await.unwrap().is_empty());
        ch.deletes.clear();
        ch.upserts = vec![alert("firing", 3000)];
        s.apply_alert_changes(ch).await.unwrap();
        assert_eq!(
            s.delete_alerts_of_other_rules(vec!["f\u{1f}g\u{1f}A".into()])
                .await
                .unwrap(),
            0
        );
        assert_eq!(s.delete_alerts_of_other_rules(vec![]).await.unwrap(), 1);
        assert!(s.load_alerts().await.unwrap().is_empty());
    }
}
