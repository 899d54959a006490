//! Several lookups read without waiting, one after the other, under one
//! timer: the hits of a page (a row and the rows it points at) from the
//! in-process store. Each hit is counted as a hit of its own class, as a
//! lookup's; only the clock is shared (read when the first lookup starts
//! and when the hits are recorded), and the time is split evenly among
//! the hits. A lookup that is not such a hit is left to the caller's
//! ordinary lookup, which reads, decides and counts it as it always does.
//! A lookup's span is not even made when nothing could see it (most of a
//! hit's cost besides the read and the decode).

use super::Flash;
use crate::class::{CacheValue, Class, ClassSpec};
use crate::key::with_key_buf;
use crate::stats::Outcome;
use crate::value::FieldValue;
use std::time::Instant;

/// Hits timed together (a page has a row and a few related rows).
const TIMED: usize = 4;

/// The hits of a page ([`Flash::page_reads`]); their time is recorded when
/// a lookup is not a hit and when this is dropped.
pub struct PageReads<'a> {
    flash: &'a Flash,
    timed: bool,
    /// No subscriber takes a lookup's span and no logger its lines.
    unseen: bool,
    started: Option<Instant>,
    hits: [Option<&'a ClassSpec>; TIMED],
    n: usize,
}

impl Flash {
    /// Lookups served together without waiting (see [`PageReads::hit`]).
    pub fn page_reads(&self) -> PageReads<'_> {
        PageReads {
            flash: self,
            timed: self.settings().time_lookups,
            unseen: spans_unseen(),
            started: None,
            hits: [None; TIMED],
            n: 0,
        }
    }
}

impl<'a> PageReads<'a> {
    /// The value of `class` for `values` when the store answers without
    /// waiting and the entry is served as is; counted as a hit of `class`.
    /// `None` for anything else (a miss, a stale entry, a bad key, bypass,
    /// the near tier, an enabled span, a store that would make it wait):
    /// nothing is counted, and the caller's ordinary lookup does the rest.
    pub fn hit<T: CacheValue>(&mut self, class: &'a Class<T>, values: &[FieldValue]) -> Option<T> {
        let flash = self.flash;
        let spec = &*class.spec;
        if !flash.may_read_now(spec) {
            return None;
        }
        if self.timed && self.started.is_none() {
            self.started = Some(Instant::now());
        }
        let hit = with_key_buf(|buf| {
            if !flash.key_in(spec, values, buf) {
                return None;
            }
            let key = buf.as_str();
            // A span someone wants: the ordinary lookup, inside it.
            let span = match self.unseen {
                true => tracing::Span::none(),
                false => flash.lookup_span(spec, key),
            };
            if !span.is_disabled() {
                return None;
            }
            let now = flash.read_now(spec, key)?;
            let v = flash.try_serve::<T>(spec, key, now.raw(), now.epoch)?;
            flash.lookup_done(spec, key, Outcome::Hit, None, &span);
            Some(v)
        });
        match hit {
            Some(v) => {
                if self.n == TIMED {
                    self.record();
                    self.started = self.timed.then(Instant::now);
                }
                self.hits[self.n] = Some(spec);
                self.n += 1;
                Some(v)
            }
            None => {
                // The ordinary lookup times itself: the hits so far end here.
                self.record();
                None
            }
        }
    }

    /// Records the hits' time (an even share each) and stops the timer.
    fn record(&mut self) {
        let n = std::mem::take(&mut self.n);
        let Some(t) = self.started.take() else {
            return;
        };
        if n == 0 {
            return;
        }
        let each = t.elapsed() / n as u32;
        for spec in self.hits[..n].iter().flatten() {
            self.flash.stats().lookup_seconds(spec, each);
        }
    }
}

/// Would a lookup's span be seen by no one? No subscriber takes DEBUG (a
/// span is then disabled) and no `log` logger takes it (tracing's `log`
/// compatibility logs the lines of disabled spans).
fn spans_unseen() -> bool {
    !tracing::level_enabled!(tracing::Level::DEBUG) && log::max_level() < log::LevelFilter::Debug
}

impl Drop for PageReads<'_> {
    fn drop(&mut self) {
        self.record();
    }
}
