//! Invalidation: from changed rows to the keys they affect, and the markers
//! written over them.

use super::Flash;
use crate::class::Invalidation;
use crate::codec::{encode_entry, now_ms, Entry};
use crate::error::BackendError;
use crate::key::stale_key;
use crate::stats::FlashEvent;
use crate::value::{FieldValue, Record};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

/// The keys one write must invalidate. Serialisable, so that it can be kept in
/// the durable outbox until applied.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeySet {
    /// Keys of UNSET classes: overwritten with a stale marker.
    pub unset: BTreeSet<String>,
    /// Keys of DYNAMIC classes: their `__stale` marker is set.
    pub dynamic: BTreeSet<String>,
}

impl KeySet {
    /// No key at all?
    pub fn is_empty(&self) -> bool {
        self.unset.is_empty() && self.dynamic.is_empty()
    }
    /// Number of keys, of both kinds.
    pub fn len(&self) -> usize {
        self.unset.len() + self.dynamic.len()
    }
    /// Adds the keys of `other`.
    pub fn extend(&mut self, other: KeySet) {
        self.unset.extend(other.unset);
        self.dynamic.extend(other.dynamic);
    }
}

impl Flash {
    /// The keys affected by `rows` of `model` (pass old and new versions of
    /// every changed row), for every class on the model that is not OFF.
    pub fn keys_for_rows(&self, model: &str, rows: &[&dyn Record]) -> KeySet {
        let mut set = KeySet::default();
        for spec in self.classes_of_model(model) {
            if spec.invalidation == Invalidation::Off {
                continue;
            }
            for row in rows {
                let values: Option<Vec<FieldValue>> =
                    spec.key_fields.iter().map(|f| row.field(f)).collect();
                let Some(values) = values else {
                    tracing::warn!(class = %spec.name, "row lacks a key field; not invalidated");
                    continue;
                };
                let key = self.key_for_spec(spec, &values);
                match spec.invalidation {
                    Invalidation::Dynamic => set.dynamic.insert(key),
                    _ => set.unset.insert(key),
                };
            }
        }
        set
    }

    /// Writes the markers for `keys` (one pipelined write per marker kind).
    /// Invalidation is applied even when the cache is bypassed: it only ever
    /// removes, and a later switch back must not find old values.
    ///
    /// When the cache refuses the write (connection refused or broken), it is
    /// retried [`crate::Settings::invalidation_retries`] times (not after a
    /// timeout); if it still fails, the
    /// keys are kept in this process and re-applied in the background until
    /// the cache takes them; meanwhile lookups of those keys go to the
    /// database, so this process never serves what the write replaced.
    pub async fn apply_invalidation(&self, model: &str, keys: &KeySet) -> Result<(), BackendError> {
        // This process's near entries go first, so that no lookup here
        // serves them once the write call returned; the other processes'
        // go when the keys reach them on the channel, after the markers.
        if let Some(near) = self.near() {
            near.invalidate(keys.unset.iter().chain(&keys.dynamic).map(String::as_str));
        }
        let mut result = self.write_markers(model, keys).await;
        let mut pause = Duration::from_millis(2);
        for _ in 0..self.settings().invalidation_retries {
            // A refused or broken connection is worth another try (a client
            // reconnects to a restarted server on the next command); a hung
            // server would only make each attempt wait out its deadline.
            if matches!(result, Ok(()) | Err(BackendError::Timeout(_))) {
                break;
            }
            tokio::time::sleep(pause).await;
            pause *= 4;
            result = self.write_markers(model, keys).await;
        }
        if result.is_err() {
            self.invalidator().defer(keys);
        }
        self.publish_near(keys).await;
        result
    }

    /// Sends `keys` to the other processes' near tiers (sent even when the
    /// cache refused the markers: dropping a near entry is always safe).
    async fn publish_near(&self, keys: &KeySet) {
        if let Some(near) = self.near() {
            let all: Vec<&str> = keys
                .unset
                .iter()
                .chain(&keys.dynamic)
                .map(String::as_str)
                .collect();
            near.publish(&all).await;
        }
    }

    /// Re-applies the pending invalidations (the retry task calls this).
    pub async fn retry_pending(&self) -> Result<usize, BackendError> {
        let Some(keys) = self.invalidator().pending() else {
            return Ok(0);
        };
        self.write_markers("(retry)", &keys).await?;
        self.invalidator().applied(&keys);
        self.publish_near(&keys).await;
        tracing::info!(keys = keys.len(), "pending invalidations applied");
        Ok(keys.len())
    }

    async fn write_markers(&self, model: &str, keys: &KeySet) -> Result<(), BackendError> {
        if keys.is_empty() {
            return Ok(());
        }
        let marker = encode_entry(&Entry::Stale {
            at_ms: now_ms(),
            nonce: rand::random(),
        });
        let backend = self.backend();
        let s = self.settings();
        let unset: Vec<(String, Vec<u8>)> = keys
            .unset
            .iter()
            .map(|k| (k.clone(), marker.clone()))
            .collect();
        let dynamic: Vec<(String, Vec<u8>)> = keys
            .dynamic
            .iter()
            .map(|k| (stale_key(k), marker.clone()))
            .collect();
        // The two kinds of marker differ in TTL: two writes, sent together.
        let write = |items: Vec<(String, Vec<u8>)>, ttl| async move {
            if items.is_empty() {
                Ok(())
            } else {
                backend.set_many(&items, ttl).await
            }
        };
        let (a, b) = futures::join!(write(unset, s.stale_ttl), write(dynamic, s.default_timeout));
        let result = a.and(b);
        match &result {
            Ok(()) => {
                self.stats()
                    .invalidated_keys
                    .fetch_add(keys.len() as u64, Relaxed);
                metrics::counter!("flash_invalidated_keys_total", "model" => model.to_owned())
                    .increment(keys.len() as u64);
                let all: Vec<String> = keys
                    .unset
                    .iter()
                    .chain(keys.dynamic.iter())
                    .cloned()
                    .collect();
                self.emit(FlashEvent::Invalidate { model, keys: &all });
            }
            Err(e) => self.stats().backend_error("invalidate", e),
        }
        result
    }

    /// Invalidates every class's keys for `rows` of `model` (manual
    /// invalidation, and what the ORM adapter calls after a write).
    pub async fn invalidate_rows(
        &self,
        model: &str,
        rows: &[&dyn Record],
    ) -> Result<KeySet, BackendError> {
        let keys = self.keys_for_rows(model, rows);
        self.apply_invalidation(model, &keys).await?;
        Ok(keys)
    }
}
