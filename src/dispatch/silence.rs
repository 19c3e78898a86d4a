//! Silences, with Alertmanager's semantics: a silence mutes every alert its
//! matchers match while `startsAt <= now < endsAt`. Updating a silence keeps its
//! id when only the comment or end time change (and the start, for a pending
//! one); otherwise the old silence is expired and a new one with a new id takes
//! its place. Expired silences are kept for 5 days (Alertmanager's
//! `--data.retention` 120h), then dropped. Every change reaches the store
//! before it takes effect.

use std::collections::HashMap;
use std::sync::RwLock;

use serde::{Deserialize, Serialize};

use crate::clock::TimestampMs;
use crate::labels::Labels;
use crate::store::silences::{SilenceMatcher, SilenceRecord};
use crate::store::{Store, StoreError};

use crate::matchers::{MatchType, Matcher, Matchers};

/// How long an expired silence is kept.
pub const SILENCE_RETENTION_MS: i64 = 120 * 3_600_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SilenceState {
    Pending,
    Active,
    Expired,
}

impl SilenceState {
    pub fn at(starts_at_ms: TimestampMs, ends_at_ms: TimestampMs, now_ms: TimestampMs) -> Self {
        if now_ms < starts_at_ms {
            SilenceState::Pending
        } else if now_ms < ends_at_ms {
            SilenceState::Active
        } else {
            SilenceState::Expired
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            SilenceState::Pending => "pending",
            SilenceState::Active => "active",
            SilenceState::Expired => "expired",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SilenceError {
    #[error("silence {0} not found")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("silence {0} already expired")]
    AlreadyExpired(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A new silence, or a change to one (`id` set).
#[derive(Clone, Debug, PartialEq)]
pub struct SilenceInput {
    pub id: Option<String>,
    pub matchers: Vec<SilenceMatcher>,
    pub starts_at_ms: TimestampMs,
    pub ends_at_ms: TimestampMs,
    pub created_by: String,
    pub comment: String,
}

#[derive(Clone, Debug)]
struct Entry {
    record: SilenceRecord,
    matchers: Matchers,
}

pub fn compile_matchers(ms: &[SilenceMatcher]) -> Result<Matchers, String> {
    let mut out = Vec::new();
    for m in ms {
        if m.name.is_empty() {
            return Err("matcher with an empty label name".into());
        }
        out.push(Matcher::new(
            &m.name,
            MatchType::from_flags(m.is_regex, m.is_equal),
            &m.value,
        )?);
    }
    Ok(Matchers(out))
}

/// Alertmanager's validation of a silence.
fn validate(input: &SilenceInput) -> Result<Matchers, String> {
    if input.matchers.is_empty() {
        return Err("at least one matcher required".into());
    }
    let ms = compile_matchers(&input.matchers)?;
    if ms.0.iter().all(|m| m.matches_value("")) {
        return Err(
            "at least one matcher must not match the empty string (it would silence every alert)"
                .into(),
        );
    }
    if input.ends_at_ms < input.starts_at_ms {
        return Err("end time must not be before start time".into());
    }
    Ok(ms)
}

/// Whether `new` may replace `prev` in place (same id).
fn can_update(prev: &SilenceRecord, new: &SilenceInput, now_ms: TimestampMs) -> bool {
    if prev.matchers != new.matchers {
        return false;
    }
    match SilenceState::at(prev.starts_at_ms, prev.ends_at_ms, now_ms) {
        SilenceState::Active => new.starts_at_ms == prev.starts_at_ms && new.ends_at_ms >= now_ms,
        SilenceState::Pending => new.starts_at_ms >= now_ms,
        SilenceState::Expired => false,
    }
}

fn new_id() -> String {
    let b: [u8; 16] = rand::random();
    let mut b = b;
    b[6] = (b[6] & 0x0f) | 0x40; // version 4
    b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// The set of silences: in memory for matching, persisted in the store.
pub struct Silences {
    store: Store,
    entries: RwLock<HashMap<String, Entry>>,
    /// Serialises writers so the store and memory change in the same order.
    write: tokio::sync::Mutex<()>,
}

impl Silences {
    /// Loads the stored silences.
    pub async fn load(store: Store) -> Result<Self, StoreError> {
        let mut entries = HashMap::new();
        for record in store.load_silences().await? {
            match compile_matchers(&record.matchers) {
                Ok(matchers) => {
                    entries.insert(record.id.clone(), Entry { record, matchers });
                }
                Err(e) => {
                    tracing::warn!(silence = %record.id, error = %e, "skipping a stored silence with a bad matcher")
                }
            }
        }
        Ok(Self {
            store,
            entries: RwLock::new(entries),
            write: tokio::sync::Mutex::new(()),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Entry>> {
        self.entries.read().unwrap_or_else(|p| p.into_inner())
    }

    async fn put(&self, record: SilenceRecord, matchers: Matchers) -> Result<(), StoreError> {
        self.store.upsert_silence(record.clone()).await?;
        self.entries
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(record.id.clone(), Entry { record, matchers });
        Ok(())
    }

    /// Creates or updates a silence; returns its id (a new one when it could
    /// not be updated in place).
    pub async fn set(
        &self,
        input: SilenceInput,
        now_ms: TimestampMs,
    ) -> Result<String, SilenceError> {
        let matchers = validate(&input).map_err(SilenceError::Invalid)?;
        let _w = self.write.lock().await;
        let prev = match &input.id {
            Some(id) if !id.is_empty() => Some(
                self.get(id)
                    .ok_or_else(|| SilenceError::NotFound(id.clone()))?,
            ),
            _ => None,
        };
        if let Some(prev) = &prev {
            if can_update(prev, &input, now_ms) {
                let record = SilenceRecord {
                    id: prev.id.clone(),
                    matchers: input.matchers,
                    starts_at_ms: input.starts_at_ms,
                    ends_at_ms: input.ends_at_ms,
                    updated_at_ms: now_ms,
                    created_by: input.created_by,
                    comment: input.comment,
                };
                self.put(record, matchers).await?;
                return Ok(prev.id.clone());
            }
            if SilenceState::at(prev.starts_at_ms, prev.ends_at_ms, now_ms) != SilenceState::Expired
            {
                self.expire_locked(prev.clone(), now_ms).await?;
            }
        }
        let record = SilenceRecord {
            id: new_id(),
            matchers: input.matchers,
            starts_at_ms: input.starts_at_ms.max(now_ms),
            ends_at_ms: input.ends_at_ms,
            updated_at_ms: now_ms,
            created_by: input.created_by,
            comment: input.comment,
        };
        let id = record.id.clone();
        self.put(record, matchers).await?;
        Ok(id)
    }

    /// Expires a silence now (a pending one gets start = end = now).
    pub async fn expire(&self, id: &str, now_ms: TimestampMs) -> Result<(), SilenceError> {
        let _w = self.write.lock().await;
        let prev = self
            .get(id)
            .ok_or_else(|| SilenceError::NotFound(id.to_string()))?;
        self.expire_locked(prev, now_ms).await
    }

    async fn expire_locked(
        &self,
        mut rec: SilenceRecord,
        now_ms: TimestampMs,
    ) -> Result<(), SilenceError> {
        match SilenceState::at(rec.starts_at_ms, rec.ends_at_ms, now_ms) {
            SilenceState::Expired => return Err(SilenceError::AlreadyExpired(rec.id)),
            SilenceState::Active => rec.ends_at_ms = now_ms,
            SilenceState::Pending => {
                rec.starts_at_ms = now_ms;
                rec.ends_at_ms = now_ms;
            }
        }
        rec.updated_at_ms = now_ms;
        let matchers = compile_matchers(&rec.matchers).map_err(SilenceError::Invalid)?;
        self.put(rec, matchers).await?;
        Ok(())
    }

    pub fn get(&self, id: &str) -> Option<SilenceRecord> {
        self.read().get(id).map(|e| e.record.clone())
    }

    /// Every silence, newest start first.
    pub fn list(&self) -> Vec<SilenceRecord> {
        let mut v: Vec<SilenceRecord> = self.read().values().map(|e| e.record.clone()).collect();
        v.sort_by(|a, b| {
            b.starts_at_ms
                .cmp(&a.starts_at_ms)
                .then_with(|| a.id.cmp(&b.id))
        });
        v
    }

    /// The ids of the active silences that match `labels`, sorted.
    pub fn mutes(&self, labels: &Labels, now_ms: TimestampMs) -> Vec<String> {
        let mut ids: Vec<String> = self
            .read()
            .values()
            .filter(|e| {
                SilenceState::at(e.record.starts_at_ms, e.record.ends_at_ms, now_ms)
                    == SilenceState::Active
            })
            .filter(|e| e.matchers.matches(labels))
            .map(|e| e.record.id.clone())
            .collect();
        ids.sort();
        ids
    }

    /// How many silences are pending, active and expired.
    pub fn counts(&self, now_ms: TimestampMs) -> [(SilenceState, usize); 3] {
        let mut c = [
            (SilenceState::Active, 0),
            (SilenceState::Pending, 0),
            (SilenceState::Expired, 0),
        ];
        for e in self.read().values() {
            let st = SilenceState::at(e.record.starts_at_ms, e.record.ends_at_ms, now_ms);
            for slot in c.iter_mut() {
                if slot.0 == st {
                    slot.1 += 1;
                }
            }
        }
        c
    }

    /// Drops silences expired for longer than the retention.
    pub async fn gc(&self, now_ms: TimestampMs) -> Result<usize, StoreError> {
        let _w = self.write.lock().await;
        let cutoff = now_ms - SILENCE_RETENTION_MS;
        let n = self.store.delete_silences_ended_before(cutoff).await?;
        self.entries
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, e| e.record.ends_at_ms >= cutoff);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(name: &str, value: &str, is_regex: bool, is_equal: bool) -> SilenceMatcher {
        SilenceMatcher {
            name: name.into(),
            value: value.into(),
            is_regex,
            is_equal,
        }
    }
    fn input(
        id: Option<&str>,
        matchers: Vec<SilenceMatcher>,
        start: i64,
        end: i64,
    ) -> SilenceInput {
        SilenceInput {
            id: id.map(String::from),
            matchers,
            starts_at_ms: start,
            ends_at_ms: end,
            created_by: "alice".into(),
            comment: "deploy".into(),
        }
    }

    #[tokio::test]
    async fn lifecycle_update_in_place_or_replace_and_gc() {
        let store = Store::open_in_memory().unwrap();
        let s = Silences::load(store.clone()).await.unwrap();
        let svc = vec![m("service", "backend", false, true)];
        let lbl = Labels::from_pairs([("service", "backend"), ("alertname", "X")]);
        // Pending, then active.
        let id = s
            .set(input(None, svc.clone(), 1_000, 5_000), 500)
            .await
            .unwrap();
        assert!(
            s.mutes(&lbl, 900).is_empty(),
            "pending silences do not mute"
        );
        assert_eq!(s.mutes(&lbl, 1_000), vec![id.clone()]);
        assert!(s
            .mutes(&Labels::from_pairs([("service", "other")]), 1_000)
            .is_empty());
        // Extending an active silence keeps its id.
        let same = s
            .set(input(Some(&id), svc.clone(), 1_000, 9_000), 2_000)
            .await
            .unwrap();
        assert_eq!(same, id);
        assert_eq!(s.get(&id).unwrap().ends_at_ms, 9_000);
        // Changing the matchers replaces it: the old one expires now.
        let other = vec![m("service", "back.*", true, true)];
        let new = s
            .set(input(Some(&id), other, 1_000, 9_000), 3_000)
            .await
            .unwrap();
        assert_ne!(new, id);
        assert_eq!(s.get(&id).unwrap().ends_at_ms, 3_000);
        assert_eq!(
            s.get(&new).unwrap().starts_at_ms,
            3_000,
            "a start in the past becomes now"
        );
        // Survives a restart.
        let reloaded = Silences::load(store.clone()).await.unwrap();
        assert_eq!(reloaded.mutes(&lbl, 3_500), vec![new.clone()]);
        // Expire, then kept 5 days, then dropped.
        s.expire(&new, 4_000).await.unwrap();
        assert!(matches!(
            s.expire(&new, 4_001).await,
            Err(SilenceError::AlreadyExpired(_))
        ));
        assert!(matches!(
            s.expire("nope", 4_001).await,
            Err(SilenceError::NotFound(_))
        ));
        assert_eq!(s.gc(3_000 + SILENCE_RETENTION_MS).await.unwrap(), 0);
        assert_eq!(s.list().len(), 2);
        assert_eq!(
            s.gc(3_001 + SILENCE_RETENTION_MS).await.unwrap(),
            1,
            "the replaced one, expired at 3000"
        );
        assert_eq!(s.gc(4_001 + SILENCE_RETENTION_MS).await.unwrap(), 1);
        assert!(s.list().is_empty());
        assert!(Silences::load(store).await.unwrap().list().is_empty());
    }

    #[tokio::test]
    async fn validation_follows_alertmanager() {
        let s = Silences::load(Store::open_in_memory().unwrap())
            .await
            .unwrap();
        let err = |r: Result<String, SilenceError>| r.unwrap_err().to_string();
        assert!(err(s.set(input(None, vec![], 0, 10), 0).await).contains("at least one matcher"));
        assert!(err(s
            .set(input(None, vec![m("a", ".*", true, true)], 0, 10), 0)
            .await)
        .contains("empty string"));
        assert!(err(s
            .set(input(None, vec![m("a", "(", true, true)], 0, 10), 0)
            .await)
        .contains("regular expression"));
        assert!(err(s
            .set(input(None, vec![m("a", "b", false, true)], 10, 5), 0)
            .await)
        .contains("before start"));
        assert!(err(s
            .set(
                input(Some("missing"), vec![m("a", "b", false, true)], 0, 10),
                0
            )
            .await)
        .contains("not found"));
        // A pending silence expired before it starts ends at once.
        let id = s
            .set(input(None, vec![m("a", "b", false, true)], 100, 200), 0)
            .await
            .unwrap();
        s.expire(&id, 50).await.unwrap();
        let r = s.get(&id).unwrap();
        assert_eq!((r.starts_at_ms, r.ends_at_ms), (50, 50));
        assert_eq!(s.counts(60)[2], (SilenceState::Expired, 1));
    }
}
