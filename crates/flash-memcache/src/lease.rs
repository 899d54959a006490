//! A miss and its lease in one request: `mg <key> v c N<ttl>` (vivify on
//! miss, the `W` flag for the winner), and the fill over the won
//! placeholder by its CAS value.

use crate::{exptime, refused_is_false, McError, MemcacheBackend};
use async_memcached::{Client, MetaProtocol};
use flash_core::{Backend, BackendError, Bytes, Lease, LeaseRead};
use std::time::Duration;

impl MemcacheBackend {
    /// `mg <key> v c N<ttl>`: on a miss memcached creates an empty item
    /// (vivify) and answers the first such reader with `W` (won) and the
    /// item's CAS value, every other with `Z`: the lease in the read's one
    /// request. The other keys (a stale marker) are read concurrently, so
    /// the caller still waits for one round trip. A key that holds an
    /// invalidation's marker takes a second request (`ms` over it with its
    /// CAS value): vivify acts on misses only.
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
            c.meta_get(first, false, None, Some(&["v", "c", &n])).await
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
        let lease = match (item.is_recache_winner, item.cas) {
            (Some(true), Some(cas)) => {
                values.push(None);
                Some(Lease::Token(cas))
            }
            (Some(true), None) => {
                return Err(McError::Unexpected {
                    addr: self.server(first).addr.clone(),
                    what: "mg won without the requested cas token".into(),
                }
                .into())
            }
            // An invalidation's marker: replaced by the lease if nobody wrote
            // since (`C<cas>`), a second request (vivify works on misses only).
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
