//! The read without waiting: a lookup's first read where the backend answers
//! at once (the in-process store, [`crate::Backend::get_now`]), and its hit
//! decided on that read, with no future.

use super::Flash;
use crate::backend::Bytes;
use crate::class::{CacheValue, Class, ClassSpec, Invalidation};
use crate::key::stale_key;
use crate::stats::Outcome;
use crate::value::FieldValue;
use std::time::Instant;

/// A lookup's first read answered without waiting ([`Flash::read_now`]):
/// the bytes of its keys, in `get_many`'s order, on the stack.
pub(super) struct ReadNow {
    raw: [Option<Bytes>; 2],
    len: usize,
    pub(super) epoch: u64,
}

impl ReadNow {
    pub(super) fn raw(&self) -> &[Option<Bytes>] {
        &self.raw[..self.len]
    }
    pub(super) fn into_raw(self) -> Vec<Option<Bytes>> {
        self.raw.into_iter().take(self.len).collect()
    }
}

/// How [`Flash::lookup_now`] ended.
pub(super) enum Now<T> {
    /// A hit, counted.
    Hit(T),
    /// No hit: the lookup's span, and what it read if it could.
    Read(tracing::Span, Option<ReadNow>),
    /// A wrong number of values: the key is for the rest of the lookup to refuse.
    NoKey,
}

impl Flash {
    /// The synchronous start of a lookup (see [`Self::may_read_now`]):
    /// its key built in `buf`, its span, its first read where the backend
    /// answers without waiting, and its hit decided on that read.
    pub(super) fn lookup_now<T: CacheValue>(
        &self,
        class: &Class<T>,
        values: &[FieldValue],
        started: Option<Instant>,
        buf: &mut String,
    ) -> Now<T> {
        let spec = &class.spec;
        if !self.key_in(spec, values, buf) {
            return Now::NoKey;
        }
        let key = buf.as_str();
        let span = self.lookup_span(spec, key);
        let first = match span.is_disabled() {
            true => self.read_now(spec, key),
            false => None,
        };
        if let Some(now) = &first {
            if let Some(v) = self.try_serve::<T>(spec, key, now.raw(), now.epoch) {
                self.lookup_done(spec, key, Outcome::Hit, started, &span);
                return Now::Hit(v);
            }
        }
        Now::Read(span, first)
    }

    /// May a lookup of `spec` read the key first and without waiting? Not
    /// when something else comes first: bypass, the near tier, a lease
    /// taken with the read (a cache server's).
    pub(super) fn may_read_now(&self, spec: &ClassSpec) -> bool {
        !self.is_bypassed() && self.near_for(spec).is_none() && !self.leases_in_first_read()
    }

    /// The first read of a lookup done without waiting (see
    /// [`Self::may_read_now`]), when the backend can
    /// ([`crate::Backend::get_now`]): the bytes of the key and, for
    /// DYNAMIC, of its stale marker.
    pub(super) fn read_now(&self, spec: &ClassSpec, key: &str) -> Option<ReadNow> {
        // Noted before the read, as for any other (see `read_epoch`).
        let epoch = self.read_epoch();
        let backend = self.backend();
        let value = backend.get_now(key)?;
        let marker = match spec.invalidation {
            Invalidation::Dynamic => Some(backend.get_now(&stale_key(key))?),
            _ => None,
        };
        Some(ReadNow {
            raw: [value, marker.flatten()],
            len: if spec.invalidation == Invalidation::Dynamic {
                2
            } else {
                1
            },
            epoch,
        })
    }
}
