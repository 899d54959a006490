//! A miss and its lease in one request: `mg <key> v c N<ttl> R<max>`
//! (vivify on a miss; recache on an item that has a TTL; the `W` flag for
//! the one winner), and the fill over the won placeholder or marker by its
//! CAS value.

use crate::{exptime, refused_is_false, McError, MemcacheBackend};
use async_memcached::{Client, MetaProtocol, MetaValue};
use flash_core::codec::stale_prefix;
use flash_core::{Backend, BackendError, Bytes, Lease, LeaseRead};
use std::time::Duration;

/// The bytes flash is shown for an item read: a write's marker whose one
/// `W` went to a lease read (memcached then flags every other read `Z`) is
/// shown as memcached's empty placeholder, a lease held by another reader:
/// readers wait for its fill, and after `Settings::lease_wait` take it over
/// with `compare_and_swap` from empty, as they take over a vivified
/// placeholder whose winner died. A value, which a lease read may also have
/// been handed the `W` of, is shown as it is.
pub(crate) fn seen(item: MetaValue) -> Bytes {
    let data = item.data.unwrap_or_default();
    let held = item.is_recache_winner == Some(false) && data.starts_with(stale_prefix());
    match held {
        true => Bytes::new(),
        false => Bytes::from(data),
    }
}

/// `R` with a window no TTL reaches (memcached compares it with the
/// item's remaining seconds): every item that expires may be won once.
const RECACHE_ANY: &str = "R2147483647";

impl MemcacheBackend {
    /// `mg <key> v c N<ttl> R<max>`: on a miss memcached creates an empty
    /// item (vivify) and answers the first such reader with `W` (won) and
    /// the item's CAS value, every other with `Z`: the lease in the read's
    /// one request. `R` with a window longer than any TTL makes memcached
    /// hand out the same one `W` on an item that exists and expires, which
    /// every invalidation's marker does (`Settings::stale_ttl`): the lease
    /// over a write's marker is one request too. On a value or another
    /// reader's lease the `W` is not taken (the value is served; the lease is
    /// waited for); `R` only ever decides who wins, and plain reads (`mg v`,
    /// the batches') neither win nor spend it. A marker whose `W` went to
    /// another reader is leased over by its CAS value (`ms`, a second
    /// request), as every marker was before. The other keys (a stale marker)
    /// are read concurrently, so the caller still waits for one round trip.
    pub(crate) async fn read_or_lease(
        &self,
        keys: &[String],
        lease: &[u8],
        over: &[u8],
        ttl: Duration,
    ) -> Result<LeaseRead, BackendError> {
        let Some((first, rest)) = keys.split_first() else {
            return Ok(LeaseRead {
                values: Vec::new(),
                lease: None,
                round_trips: 1,
            });
        };
        let n = format!("N{}", exptime(ttl).max(1));
        let read_first = self.server(first).with_conn(async |c: &mut Client| {
            c.meta_get(first, false, None, Some(&["v", "c", &n, RECACHE_ANY]))
                .await
        });
        let (item, others) = if rest.is_empty() {
            (read_first.await?, Vec::new())
        } else {
            let (item, others) = futures::join!(read_first, self.get_many(rest));
            (item?, others?)
        };
        // With `N` there is no miss: the item exists, vivified if need be.
        let item = item.ok_or_else(|| McError::Unexpected {
            addr: self.server(first).addr.clone(),
            what: "mg with N answered a miss".into(),
        })?;
        let mut values = Vec::with_capacity(keys.len());
        let mut round_trips = 1;
        // What the item holds: memcached's placeholder (the client reports
        // its zero length as no data) or a marker is free to lease; a value
        // is served, another reader's lease waited for.
        let leasable = match item.data.as_deref() {
            None | Some([]) => true,
            Some(d) => !over.is_empty() && d.starts_with(over),
        };
        let lease = match (item.is_recache_winner, item.cas) {
            (Some(true), Some(cas)) if leasable => {
                values.push(None);
                Some(Lease::Token(cas))
            }
            (Some(true), None) if leasable => {
                return Err(McError::Unexpected {
                    addr: self.server(first).addr.clone(),
                    what: "mg won without the requested cas token".into(),
                }
                .into())
            }
            // A marker whose `W` went to another reader: its lease, held.
            (Some(false), _) if leasable => {
                values.push(Some(Bytes::new()));
                None
            }
            // A marker memcached hands no `W` for (one without a TTL):
            // replaced by the lease if nobody wrote since (`C<cas>`), a
            // second request.
            (_, Some(cas))
                if !over.is_empty()
                    && item.data.as_deref().is_some_and(|d| d.starts_with(over)) =>
            {
                let c_flag = format!("C{cas}");
                let t = format!("T{}", exptime(ttl));
                let took = self
                    .server(first)
                    .with_conn(async |c: &mut Client| {
                        refused_is_false(
                            c.meta_set(first, lease, false, None, Some(&[&c_flag, &t]))
                                .await,
                        )
                    })
                    .await?;
                round_trips = 2;
                values.push(item.data.map(Bytes::from));
                took.then(|| Lease::Bytes(lease.to_vec()))
            }
            // The client reports a zero-length value (a placeholder) as no data.
            _ => {
                values.push(Some(Bytes::from(item.data.unwrap_or_default())));
                None
            }
        };
        values.extend(others);
        Ok(LeaseRead {
            values,
            lease,
            round_trips,
        })
    }

    /// `ms`/`md` with `C<cas>` for a token: written only if the item is still
    /// the placeholder this caller won (any write since changed its CAS value).
    pub(crate) async fn swap_token(
        &self,
        key: &str,
        cas: u64,
        new: Option<&[u8]>,
        ttl: Duration,
    ) -> Result<bool, BackendError> {
        if let Some(v) = new {
            self.check_size(v)?;
        }
        let c_flag = format!("C{cas}");
        let t = format!("T{}", exptime(ttl));
        let swapped = self
            .server(key)
            .with_conn(async |c: &mut Client| match new {
                Some(v) => {
                    refused_is_false(c.meta_set(key, v, false, None, Some(&[&c_flag, &t])).await)
                }
                None => refused_is_false(c.meta_delete(key, false, None, Some(&[&c_flag])).await),
            })
            .await?;
        Ok(swapped)
    }
}
