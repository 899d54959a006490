//! Opening the bytes read under a key: the seal, the layout, the entry's
//! header and the row, into a value the read decision can weigh.

use super::Flash;
use crate::class::{CacheValue, ClassSpec};
use crate::codec::{self, EntryRef};
use crate::seal::{Reject, Sealer};

/// A decoded cache value with what the decision needs.
pub(super) struct Found<T> {
    pub(super) value: T,
    pub(super) version: i64,
    pub(super) filled_ms: u64,
}

/// The value in `bytes` read under `key`: `Ok(None)` when they hold no
/// value (a lease, a marker), `Err` when they hold one that must not be
/// served (see [`crate::seal`]).
fn open_value<T: CacheValue>(
    sealer: Option<&Sealer>,
    layout: u64,
    key: &str,
    bytes: &[u8],
) -> Result<Option<Found<T>>, Reject> {
    if !codec::may_be_value(bytes) {
        return Ok(None);
    }
    let body = match sealer {
        Some(s) => s.open(key, bytes)?,
        None => bytes,
    };
    match codec::decode_entry_ref(body) {
        Some(EntryRef::Value {
            version,
            filled_ms,
            layout: filled_layout,
            compressed,
            payload,
        }) => {
            if filled_layout != layout {
                return Err(Reject::Layout);
            }
            let value = if compressed {
                codec::decompress(payload).and_then(|p| codec::decode_payload(&p))
            } else {
                codec::decode_payload(payload)
            }
            .ok_or(Reject::Garbage)?;
            Ok(Some(Found {
                value,
                version,
                filled_ms,
            }))
        }
        Some(_) => Ok(None),
        None => Err(Reject::Garbage),
    }
}

impl Flash {
    /// The value `bytes` read under `key` hold, if they may be served; a
    /// rejected entry is counted (and then refilled like a miss).
    pub(super) fn decode_value<T: CacheValue>(
        &self,
        spec: &ClassSpec,
        key: &str,
        bytes: &[u8],
    ) -> Option<Found<T>> {
        self.decode_value_once(spec, key, bytes, &mut false)
    }

    /// [`Self::decode_value`] counting a rejection only if this lookup
    /// counted none yet (`counted`, then set): a lookup that reads the same
    /// bad entry again (to serve, then to decide; or polling for a fill)
    /// counts it once.
    pub(super) fn decode_value_once<T: CacheValue>(
        &self,
        spec: &ClassSpec,
        key: &str,
        bytes: &[u8],
        counted: &mut bool,
    ) -> Option<Found<T>> {
        match open_value(self.sealer(), spec.layout, key, bytes) {
            Ok(found) => found,
            Err(why) => {
                if !std::mem::replace(counted, true) {
                    self.stats().rejected(spec, why);
                }
                None
            }
        }
    }
}
