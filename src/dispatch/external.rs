//! Alerts from external senders (Prometheus, Thanos or Mimir rulers, Google's
//! managed rule evaluator) posted to `POST /api/v2/alerts`, as Alertmanager
//! takes them:
//!
//! - a missing `startsAt` is now (or `endsAt` when only that is given); a
//!   missing `endsAt` is now + `resolve_timeout` and marks the alert as
//!   "resolves by timeout" (Alertmanager's `api/v2/api.go`, `postAlertsHandler`);
//! - an update that overlaps the alert held for the same labels merges with it
//!   (earliest `startsAt`; a sender's explicit `endsAt` beats a timeout), so an
//!   HA pair posting the same alert makes one alert (Alertmanager's
//!   `types.Alert.Merge` and `provider/mem` `Put`);
//! - every accepted alert is persisted before it reaches the dispatcher, so a
//!   restart finds it again.
//!
//! Unlike Alertmanager, a batch with one invalid alert is refused whole: the
//! sender gets the 400 and nothing is stored, so a half-applied batch never
//! has to be reasoned about.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, FixedOffset};
use serde::Deserialize;

use super::dispatcher::{Dispatcher, ExternalUpdate};
use crate::alert::Alert;
use crate::clock::{Clock, TimestampMs};
use crate::labels::Labels;
use crate::store::external_alerts::ExternalAlertRecord;
use crate::store::{Store, StoreError};

/// The most alerts one request may carry (Prometheus sends at most 64 per
/// request by default; a much larger batch is a misconfigured sender).
pub const MAX_ALERTS_PER_REQUEST: usize = 10_000;
/// Resolved external alerts are kept this long (Prometheus re-sends resolved alerts for 15m).
const RESOLVED_RETENTION_MS: i64 = 15 * 60_000;
const GC_EVERY_MS: i64 = 60_000;

/// Alertmanager's `postableAlert`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PostableAlert {
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub starts_at: Option<DateTime<FixedOffset>>,
    #[serde(default)]
    pub ends_at: Option<DateTime<FixedOffset>>,
    #[serde(default, rename = "generatorURL")]
    pub generator_url: Option<String>,
}

/// Why a batch was refused; the text is Alertmanager's where it has one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PostError {
    #[error("{0}")]
    Invalid(String),
    #[error("too many alerts in one request: {0} (at most {MAX_ALERTS_PER_REQUEST})")]
    TooMany(usize),
}

fn valid_label_name(n: &str) -> bool {
    let mut c = n.chars();
    matches!(c.next(), Some(f) if f.is_ascii_alphabetic() || f == '_')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
}

fn validate_label_set(set: &BTreeMap<String, String>) -> Result<(), String> {
    for name in set.keys() {
        if !valid_label_name(name) {
            return Err(format!("invalid name {name:?}"));
        }
    }
    Ok(())
}

/// Turns a posted batch into records as of `now_ms`, or refuses it whole.
/// Mirrors Alertmanager's defaults and `types.Alert.Validate`.
pub fn accept_batch(
    batch: Vec<PostableAlert>,
    now_ms: TimestampMs,
    resolve_timeout_ms: i64,
) -> Result<Vec<ExternalAlertRecord>, PostError> {
    if batch.len() > MAX_ALERTS_PER_REQUEST {
        return Err(PostError::TooMany(batch.len()));
    }
    let mut out = Vec::with_capacity(batch.len());
    for mut p in batch {
        // Alertmanager's removeEmptyLabels: an empty value means no label.
        p.labels.retain(|_, v| !v.is_empty());
        let ends = p.ends_at.map(|t| t.timestamp_millis());
        let starts = p
            .starts_at
            .map(|t| t.timestamp_millis())
            .or(ends)
            .unwrap_or(now_ms);
        if let Some(e) = ends {
            if e < starts {
                return Err(PostError::Invalid(
                    "start time must be before end time".to_string(),
                ));
            }
        }
        if p.labels.is_empty() {
            return Err(PostError::Invalid(
                "at least one label pair required".to_string(),
            ));
        }
        validate_label_set(&p.labels)
            .map_err(|e| PostError::Invalid(format!("invalid label set: {e}")))?;
        validate_label_set(&p.annotations)
            .map_err(|e| PostError::Invalid(format!("invalid annotations: {e}")))?;
        if let Some(u) = &p.generator_url {
            if !u.is_empty() && url::Url::parse(u).is_err() {
                return Err(PostError::Invalid(format!(
                    "generatorURL in body should be a valid URI: {u:?}"
                )));
            }
        }
        let labels = Labels::from_map(&p.labels);
        out.push(ExternalAlertRecord {
            fingerprint: labels.fingerprint(),
            labels: p.labels,
            annotations: p.annotations,
            starts_at_ms: starts,
            ends_at_ms: ends.unwrap_or(now_ms + resolve_timeout_ms),
            ends_by_timeout: ends.is_none(),
            updated_at_ms: now_ms,
            generator_url: p.generator_url.unwrap_or_default(),
        });
    }
    Ok(out)
}

/// Combines an update with the alert held for the same labels, as
/// Alertmanager's in-memory store does: when the two overlap in time they
/// merge (earliest start; for a firing update, the later explicit end wins
/// over a timeout; for a resolved one, the later explicit end), otherwise the
/// update replaces the old alert (a new occurrence).
pub fn merge(old: Option<&ExternalAlertRecord>, new: ExternalAlertRecord) -> ExternalAlertRecord {
    let Some(old) = old else { return new };
    let overlaps = (new.ends_at_ms > old.starts_at_ms && new.ends_at_ms < old.ends_at_ms)
        || (new.starts_at_ms < old.ends_at_ms && new.starts_at_ms > old.starts_at_ms)
        || (new.starts_at_ms == old.starts_at_ms);
    if !overlaps {
        return new;
    }
    // `newer` is the younger update; ties go to the new one.
    let (older, newer) = if new.updated_at_ms < old.updated_at_ms {
        (&new, old.clone())
    } else {
        (old, new.clone())
    };
    let mut res = newer.clone();
    res.starts_at_ms = older.starts_at_ms.min(newer.starts_at_ms);
    let now = newer.updated_at_ms;
    let newer_resolved = newer.ends_at_ms <= now;
    let older_resolved = older.ends_at_ms <= now;
    if newer_resolved {
        if older_resolved && older.ends_at_ms > newer.ends_at_ms {
            res.ends_at_ms = older.ends_at_ms;
        }
    } else if older.ends_at_ms > newer.ends_at_ms && !older.ends_by_timeout {
        res.ends_at_ms = older.ends_at_ms;
        res.ends_by_timeout = false;
    }
    res
}

/// The record as the dispatcher takes it, as of `now_ms`.
fn to_update(r: &ExternalAlertRecord, now_ms: TimestampMs) -> ExternalUpdate {
    let resolved = r.ends_at_ms <= now_ms;
    ExternalUpdate {
        alert: Alert {
            labels: Labels::from_map(&r.labels),
            annotations: r.annotations.clone(),
            // The evidence window of a rollback starts when the sender says the alert started.
            active_at_ms: r.starts_at_ms,
            starts_at_ms: r.starts_at_ms,
            ends_at_ms: resolved.then_some(r.ends_at_ms),
            // External senders do not send the expression's value.
            value: f64::NAN,
            generator_url: r.generator_url.clone(),
        },
        valid_until_ms: r.ends_at_ms,
        updated_at_ms: r.updated_at_ms,
    }
}

/// The external alerts: validated, merged, persisted, then dispatched.
pub struct ExternalAlerts {
    store: Store,
    clock: Clock,
    dispatcher: Arc<Dispatcher>,
    resolve_timeout_ms: i64,
    held: Mutex<HashMap<u64, ExternalAlertRecord>>,
    /// Serializes posts so concurrent senders (an HA pair) merge in order.
    writes: tokio::sync::Mutex<TimestampMs>,
}

impl ExternalAlerts {
    /// Loads the stored alerts and hands them to the dispatcher again.
    pub async fn start(
        store: Store,
        clock: Clock,
        dispatcher: Arc<Dispatcher>,
        resolve_timeout: std::time::Duration,
    ) -> Result<Arc<Self>, StoreError> {
        let now = clock.now_ms();
        let records = store.load_external_alerts().await?;
        let held: HashMap<u64, ExternalAlertRecord> = records
            .into_iter()
            .filter(|r| r.ends_at_ms + RESOLVED_RETENTION_MS > now)
            .map(|r| (r.fingerprint, r))
            .collect();
        dispatcher.send_external(held.values().map(|r| to_update(r, now)).collect());
        if !held.is_empty() {
            tracing::info!(alerts = held.len(), "restored external alerts");
        }
        Ok(Arc::new(Self {
            store,
            clock,
            dispatcher,
            resolve_timeout_ms: resolve_timeout.as_millis() as i64,
            held: Mutex::new(held),
            writes: tokio::sync::Mutex::new(now),
        }))
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<u64, ExternalAlertRecord>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Validates, merges, persists and dispatches a posted batch.
    pub async fn post(&self, batch: Vec<PostableAlert>) -> Result<usize, PostBatchError> {
        let now = self.clock.now_ms();
        let accepted = accept_batch(batch, now, self.resolve_timeout_ms)?;
        let mut last_gc = self.writes.lock().await;
        let merged: Vec<ExternalAlertRecord> = {
            let held = self.held();
            let mut merged: HashMap<u64, ExternalAlertRecord> = HashMap::new();
            for r in accepted {
                let prev = merged.get(&r.fingerprint).or(held.get(&r.fingerprint));
                let m = merge(prev, r);
                merged.insert(m.fingerprint, m);
            }
            merged.into_values().collect()
        };
        self.store.upsert_external_alerts(merged.clone()).await?;
        let n = merged.len();
        {
            let mut held = self.held();
            for r in &merged {
                held.insert(r.fingerprint, r.clone());
            }
        }
        self.dispatcher
            .send_external(merged.iter().map(|r| to_update(r, now)).collect());
        if now - *last_gc >= GC_EVERY_MS {
            *last_gc = now;
            let cutoff = now - RESOLVED_RETENTION_MS;
            self.held().retain(|_, r| r.ends_at_ms >= cutoff);
            if let Err(e) = self.store.delete_external_alerts_ended_before(cutoff).await {
                tracing::warn!(error = %e, "cannot delete old external alerts");
            }
        }
        Ok(n)
    }

    /// Whether the external alert with this fingerprint fires now; `None`
    /// when no sender posted it (then it is not an external alert).
    pub fn is_firing(&self, fingerprint: u64) -> Option<bool> {
        let now = self.clock.now_ms();
        self.held()
            .get(&fingerprint)
            .map(|r| r.starts_at_ms <= now && r.ends_at_ms > now)
    }

    /// The record held for a fingerprint.
    pub fn get(&self, fingerprint: u64) -> Option<ExternalAlertRecord> {
        self.held().get(&fingerprint).cloned()
    }
}

/// Why a post failed: the batch (400) or the store (500).
#[derive(Debug, thiserror::Error)]
pub enum PostBatchError {
    #[error(transparent)]
    Batch(#[from] PostError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn post(json: &str) -> Vec<PostableAlert> {
        serde_json::from_str(json).unwrap()
    }

    const NOW: TimestampMs = 1_700_000_000_000;
    const TIMEOUT: i64 = 300_000;

    #[test]
    fn defaults_follow_alertmanager() {
        let r = accept_batch(
            post(r#"[{"labels":{"alertname":"A","empty":""}}]"#),
            NOW,
            TIMEOUT,
        )
        .unwrap();
        assert_eq!(r[0].starts_at_ms, NOW);
        assert_eq!(r[0].ends_at_ms, NOW + TIMEOUT);
        assert!(r[0].ends_by_timeout);
        assert_eq!(r[0].labels.len(), 1, "empty labels are dropped");
        let r = accept_batch(
            post(r#"[{"labels":{"a":"b"},"endsAt":"2023-11-14T22:13:20Z"}]"#),
            NOW,
            TIMEOUT,
        )
        .unwrap();
        assert_eq!(
            r[0].starts_at_ms, r[0].ends_at_ms,
            "startsAt defaults to endsAt"
        );
        assert!(!r[0].ends_by_timeout);
    }

    #[test]
    fn refuses_bad_alerts_whole() {
        let bad = [
            (r#"[{"labels":{}}]"#, "at least one label pair required"),
            (
                r#"[{"labels":{"a":""}}]"#,
                "at least one label pair required",
            ),
            (
                r#"[{"labels":{"a":"b"},"startsAt":"2024-01-02T00:00:00Z","endsAt":"2024-01-01T00:00:00Z"}]"#,
                "start time must be before end time",
            ),
            (
                r#"[{"labels":{"a-b":"c"}}]"#,
                "invalid label set: invalid name \"a-b\"",
            ),
            (
                r#"[{"labels":{"a":"b"},"annotations":{"1x":"y"}}]"#,
                "invalid annotations: invalid name \"1x\"",
            ),
        ];
        for (body, msg) in bad {
            let batch = post(&format!(r#"[{{"labels":{{"ok":"1"}}}}, {}"#, &body[1..]));
            assert_eq!(
                accept_batch(batch, NOW, TIMEOUT).unwrap_err().to_string(),
                msg,
                "{body}"
            );
        }
        let many = vec![post(r#"[{"labels":{"a":"b"}}]"#).remove(0); MAX_ALERTS_PER_REQUEST + 1];
        assert!(matches!(
            accept_batch(many, NOW, TIMEOUT),
            Err(PostError::TooMany(_))
        ));
    }

    fn rec(starts: i64, ends: i64, updated: i64, by_timeout: bool) -> ExternalAlertRecord {
        ExternalAlertRecord {
            fingerprint: 1,
            labels: BTreeMap::from([("a".into(), "b".into())]),
            annotations: BTreeMap::new(),
            starts_at_ms: starts,
            ends_at_ms: ends,
            ends_by_timeout: by_timeout,
            updated_at_ms: updated,
            generator_url: String::new(),
        }
    }

    #[test]
    fn ha_pair_updates_merge() {
        // Replica B saw the alert start later; the earliest start is kept.
        let a = rec(1_000, 250_000, 10_000, false);
        let b = rec(5_000, 240_000, 11_000, false);
        let m = merge(Some(&a), b);
        assert_eq!(m.starts_at_ms, 1_000);
        assert_eq!(m.ends_at_ms, 250_000, "the later explicit end wins");
        // A timeout end does not outlive an explicit one.
        let t = rec(1_000, 400_000, 10_000, true);
        let m = merge(Some(&t), rec(1_000, 240_000, 11_000, false));
        assert_eq!(m.ends_at_ms, 240_000);
        // A new occurrence after the old one ended replaces it.
        let m = merge(Some(&a), rec(300_000, 500_000, 300_000, false));
        assert_eq!(m.starts_at_ms, 300_000);
        // A resolve overlapping the alert resolves it.
        let m = merge(Some(&a), rec(1_000, 20_000, 20_000, false));
        assert_eq!((m.starts_at_ms, m.ends_at_ms), (1_000, 20_000));
    }
}
