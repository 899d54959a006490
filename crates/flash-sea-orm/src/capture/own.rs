//! The writes through flash whose invalidation their process applied
//! itself, known by transaction id (PostgreSQL records it with each
//! change): the drain of that process deletes their records without
//! applying them again.

use crate::related::Seeds;
use flash_core::KeySet;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How many writers' transactions a drain remembers, and for how long: a
/// record not found here (taken by another process's drain, or older) is
/// applied again, which is harmless.
const REMEMBERED: usize = 4096;
const MEMORY: Duration = Duration::from_secs(10);

/// What a write through flash invalidated itself: per model, the keys and
/// the seeds of the reverse queries it ran, and when.
struct Applied {
    at: Instant,
    models: BTreeMap<String, (KeySet, Seeds)>,
}

/// The transactions of this process's writes that applied their own
/// invalidation. std Mutex: never held across an await.
#[derive(Default)]
pub(crate) struct OwnWrites(Mutex<HashMap<i64, Applied>>);

impl OwnWrites {
    /// Transaction `txid` applied `keys` of `model` (and its related keys,
    /// found from `seeds`).
    pub(crate) fn record(&self, txid: i64, model: &str, keys: &KeySet, seeds: &Seeds) {
        let Ok(mut w) = self.0.lock() else {
            return;
        };
        if w.len() >= REMEMBERED {
            w.retain(|_, a| a.at.elapsed() < MEMORY);
            if w.len() >= REMEMBERED {
                w.clear();
            }
        }
        let a = w.entry(txid).or_insert_with(|| Applied {
            at: Instant::now(),
            models: BTreeMap::new(),
        });
        let (k, s) = a.models.entry(model.to_owned()).or_default();
        k.extend(keys.clone());
        s.extend(seeds.clone());
    }

    /// Did a write of transaction `txid` already apply `keys` and `seeds` of
    /// `model`? Only then may its record go unapplied: a record of the same
    /// transaction that the write does not cover (a cascade, a raw statement)
    /// is applied as any other.
    pub(crate) fn covers(
        &self,
        txid: Option<i64>,
        model: &str,
        keys: &KeySet,
        seeds: &Seeds,
    ) -> bool {
        let (Some(txid), Ok(w)) = (txid, self.0.lock()) else {
            return false;
        };
        w.get(&txid)
            .and_then(|a| a.models.get(model))
            .is_some_and(|(k, s)| {
                keys.unset.is_subset(&k.unset)
                    && keys.dynamic.is_subset(&k.dynamic)
                    && seeds.is_subset(s)
            })
    }

    /// Is every one of `txids` a transaction recorded here?
    pub(crate) fn all_known(&self, txids: &[Option<i64>]) -> bool {
        let Ok(w) = self.0.lock() else {
            return false;
        };
        txids.iter().all(|t| t.is_some_and(|t| w.contains_key(&t)))
    }
}
