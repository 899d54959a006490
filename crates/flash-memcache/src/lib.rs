//! # flash-memcache
//!
//! [`MemcacheBackend`]: a pool of memcached servers as a flash cache backend.
//! Keys are spread over the servers by consistent hashing ([`Ring`]), so adding
//! or removing a server only moves about 1/N of the keys.
//!
//! It speaks memcached's meta protocol (through the `async-memcached` client)
//! because the meta commands carry CAS tokens on every operation, delete
//! included: `md <key> C<cas>` makes the "delete if it still holds my lease"
//! step of `compare_and_swap` atomic, which the classic text protocol cannot do.
//!
//! # Layout
//!
//! - `ring`: the ketama ring that maps a key to its server ([`Ring`]).
//! - `lease`: a miss and its lease in one `mg` (vivify-on-miss), and the
//!   fill over the won placeholder by its CAS value.
//! - this file: [`MemcacheBackend`]: the per-server connection pools, the meta
//!   commands, and multi-gets as one pipelined batch per server.

mod lease;
mod ring;

pub use ring::{Ring, POINTS_PER_SERVER};

use async_memcached::{Client, MetaProtocol, MetaValue, Status};
use async_trait::async_trait;
use flash_core::{Backend, BackendError, Bytes, Lease, LeaseRead};
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// memcached's default item size limit (`-I 1m`) less room for the item header,
/// the key (up to 250 bytes) and the CAS value, which count against the limit too.
pub const MAX_VALUE_SIZE: usize = 1024 * 1024 - 1024;

/// Relative TTLs above this many seconds (30 days) are read by memcached as
/// absolute Unix timestamps.
const MAX_RELATIVE_TTL: u64 = 30 * 24 * 60 * 60;

/// How long connecting to a server may take before it counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// How long one exchange with a server may take. Generous: the tight deadline
/// belongs to `flash_core::resilient::ResilientBackend`; this one only
/// guarantees that nothing hangs forever on a server that stopped answering.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Connections per server, by default ([`MemcacheBackend::with_pool_size`]).
/// Each operation takes a connection for itself (memcached answers in order,
/// so a connection is not shared while a request is in flight); more
/// concurrent operations wait for one.
pub const DEFAULT_POOL_SIZE: usize = 16;

/// Why a memcache URL was refused (reported as [`BackendError::BadUrl`]).
#[derive(Debug, thiserror::Error)]
enum UrlError {
    #[error("expected a memcache:// URL")]
    Scheme,
    #[error("no server addresses")]
    NoServers,
    #[error("bad server address {0:?} (expected host:port)")]
    BadAddress(String),
}

/// A client failure, before it becomes a [`BackendError`].
#[derive(Debug, thiserror::Error)]
enum McError {
    #[error("{addr}: {source}")]
    Client {
        addr: String,
        source: async_memcached::Error,
    },
    #[error("{addr}: no answer within {RESPONSE_TIMEOUT:?}")]
    Timeout { addr: String },
    #[error("{addr}: unexpected reply: {what}")]
    Unexpected { addr: String, what: String },
}

impl From<McError> for BackendError {
    fn from(e: McError) -> Self {
        use async_memcached::Error as E;
        match &e {
            McError::Client {
                source: E::Connect(_) | E::Io(_) | E::ConnectionClosed,
                ..
            } => BackendError::Unreachable(e.to_string()),
            McError::Timeout { .. } => BackendError::Timeout(RESPONSE_TIMEOUT),
            McError::Client { .. } | McError::Unexpected { .. } => {
                BackendError::Protocol(e.to_string())
            }
        }
    }
}

/// Whether `e` leaves the connection usable: a server's "no" (not stored,
/// exists, not found) does; an I/O or parse failure does not.
fn connection_survives(e: &async_memcached::Error) -> bool {
    matches!(
        e,
        async_memcached::Error::Protocol(Status::NotStored | Status::Exists | Status::NotFound)
    )
}

fn parse_url(url: &str) -> Result<Vec<String>, UrlError> {
    let rest = url.strip_prefix("memcache://").ok_or(UrlError::Scheme)?;
    let rest = rest.split(['/', '?']).next().unwrap_or_default();
    if rest.is_empty() {
        return Err(UrlError::NoServers);
    }
    rest.split(',')
        .map(|addr| {
            let addr = addr.trim();
            match addr.rsplit_once(':') {
                None if !addr.is_empty() && !addr.contains(['@', ' ']) => {
                    Ok(format!("{addr}:11211"))
                }
                Some((host, port))
                    if !host.is_empty()
                        && !host.contains(['@', ' '])
                        && port.parse::<u16>().is_ok() =>
                {
                    Ok(addr.to_owned())
                }
                _ => Err(UrlError::BadAddress(addr.to_owned())),
            }
        })
        .collect()
}

/// memcached's `exptime` for `ttl`: 0 = never; whole seconds, rounded up so a
/// short TTL does not become "never"; past 30 days an absolute timestamp.
fn exptime(ttl: Duration) -> u64 {
    if ttl.is_zero() {
        return 0;
    }
    let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    if secs <= MAX_RELATIVE_TTL {
        secs
    } else {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        now.saturating_add(secs)
    }
}

/// One memcached server and its idle connections.
struct Server {
    addr: String,
    idle: Mutex<Vec<Client>>,
    /// Connections kept (and open at once) at most.
    pool_size: usize,
    /// Bounds the connections open at once: a burst of requests queues for a
    /// connection instead of opening hundreds (slow, and near memcached's
    /// own connection limit).
    open: tokio::sync::Semaphore,
}

impl Server {
    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Client>> {
        // The vector stays valid whatever panicked while it was held.
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn checkout(&self) -> Result<Client, McError> {
        let pooled = self.idle().pop();
        if let Some(client) = pooled {
            return Ok(client);
        }
        // The client reads a bare `host:port` as a relative URL; the scheme makes it TCP.
        let dsn = format!("tcp://{}", self.addr);
        match tokio::time::timeout(CONNECT_TIMEOUT, Client::new(dsn)).await {
            Ok(Ok(client)) => Ok(client),
            Ok(Err(source)) => Err(McError::Client {
                addr: self.addr.clone(),
                source,
            }),
            Err(_) => Err(McError::Timeout {
                addr: self.addr.clone(),
            }),
        }
    }

    fn checkin(&self, client: Client) {
        if client.is_closed() {
            return;
        }
        let mut idle = self.idle();
        if idle.len() < self.pool_size {
            idle.push(client);
        }
    }

    /// Runs `op` on a pooled connection, under [`RESPONSE_TIMEOUT`]. The
    /// connection goes back to the pool unless the exchange broke it (a
    /// dropped, timed-out exchange leaves unread bytes: the client closes it).
    async fn with_conn<T, F>(&self, op: F) -> Result<T, McError>
    where
        F: for<'c> AsyncFnOnce(&'c mut Client) -> Result<T, async_memcached::Error>,
    {
        let _permit = self.open.acquire().await.map_err(|_| McError::Timeout {
            addr: self.addr.clone(),
        })?;
        let mut client = self.checkout().await?;
        let result = tokio::time::timeout(RESPONSE_TIMEOUT, op(&mut client)).await;
        match result {
            Ok(Ok(v)) => {
                self.checkin(client);
                Ok(v)
            }
            Ok(Err(source)) => {
                if connection_survives(&source) {
                    self.checkin(client);
                } else if matches!(source, async_memcached::Error::Io(_)) {
                    // A broken connection usually means the server went away
                    // (a restart): the idle ones are as dead. Dropping them all
                    // lets the next request reconnect instead of failing once
                    // per stale connection, which would keep the breaker open.
                    self.idle().clear();
                }
                Err(McError::Client {
                    addr: self.addr.clone(),
                    source,
                })
            }
            Err(_) => Err(McError::Timeout {
                addr: self.addr.clone(),
            }),
        }
    }
}

/// A pool of memcached servers as a flash cache backend.
///
/// Built from `memcache://host1:port1,host2:port2`. Each key lives on one
/// server, chosen by a consistent-hash [`Ring`] over the server addresses.
/// Connections are opened on demand, kept idle for reuse, and replaced after
/// a failure; cloning is cheap and shares them.
#[derive(Clone)]
pub struct MemcacheBackend {
    servers: Arc<[Server]>,
    ring: Arc<Ring>,
}

impl std::fmt::Debug for MemcacheBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemcacheBackend")
            .field("servers", &self.server_addrs())
            .finish()
    }
}

type Item = (String, Vec<u8>);

impl MemcacheBackend {
    /// Parses the URL and checks that every server answers (so a typo or a
    /// dead server shows at start-up). See [`Self::new`] for a start that
    /// never waits.
    pub async fn connect(url: &str) -> Result<Self, BackendError> {
        let backend = Self::new(url)?;
        let checks = backend
            .servers
            .iter()
            .map(|s| s.with_conn(async |c: &mut Client| c.version().await));
        for result in futures::future::join_all(checks).await {
            result?;
        }
        Ok(backend)
    }

    /// Parses the URL; connections are made on first use. Only a malformed URL
    /// is an error.
    pub fn new(url: &str) -> Result<Self, BackendError> {
        Self::with_pool_size(url, DEFAULT_POOL_SIZE)
    }

    /// Like [`Self::new`], with at most `pool_size` connections per server
    /// (at least 1).
    pub fn with_pool_size(url: &str, pool_size: usize) -> Result<Self, BackendError> {
        let pool_size = pool_size.max(1);
        let addrs = parse_url(url).map_err(|e| BackendError::BadUrl {
            url: url.to_owned(),
            reason: e.to_string(),
        })?;
        let ring = Ring::new(&addrs);
        let servers = addrs
            .into_iter()
            .map(|addr| Server {
                addr,
                idle: Mutex::new(Vec::new()),
                pool_size,
                open: tokio::sync::Semaphore::new(pool_size),
            })
            .collect();
        Ok(MemcacheBackend {
            servers,
            ring: Arc::new(ring),
        })
    }

    /// The server addresses, in URL order.
    pub fn server_addrs(&self) -> Vec<&str> {
        self.servers.iter().map(|s| s.addr.as_str()).collect()
    }

    /// The index (into [`Self::server_addrs`]) of the server that holds `key`.
    pub fn server_for(&self, key: &str) -> usize {
        self.ring.server_for(key)
    }

    fn server(&self, key: &str) -> &Server {
        &self.servers[self.server_for(key)]
    }

    /// Positions of `keys` grouped by server: `(server index, positions)`.
    fn group<'k, T>(&self, keys: impl Iterator<Item = (&'k str, T)>) -> HashMap<usize, Vec<T>> {
        let mut groups: HashMap<usize, Vec<T>> = HashMap::new();
        for (key, v) in keys {
            groups.entry(self.server_for(key)).or_default().push(v);
        }
        groups
    }

    /// Runs one request per server concurrently; the first failure wins.
    async fn on_each_server<'a, T, Fut>(
        &'a self,
        groups: HashMap<usize, T>,
        request: impl Fn(&'a Server, T) -> Fut,
    ) -> Result<(), BackendError>
    where
        Fut: Future<Output = Result<(), McError>>,
    {
        let requests = groups
            .into_iter()
            .map(|(i, group)| request(&self.servers[i], group));
        futures::future::try_join_all(requests).await?;
        Ok(())
    }

    fn check_size(&self, value: &[u8]) -> Result<(), BackendError> {
        if value.len() > MAX_VALUE_SIZE {
            return Err(BackendError::TooLarge {
                size: value.len(),
                limit: MAX_VALUE_SIZE,
            });
        }
        Ok(())
    }
}

/// Turns a "not stored"/"exists"/"not found" answer into `Ok(false)`.
fn refused_is_false(
    r: Result<Option<MetaValue>, async_memcached::Error>,
) -> Result<bool, async_memcached::Error> {
    match r {
        Ok(_) => Ok(true),
        Err(async_memcached::Error::Protocol(
            Status::NotStored | Status::Exists | Status::NotFound,
        )) => Ok(false),
        Err(e) => Err(e),
    }
}

#[async_trait]
impl Backend for MemcacheBackend {
    fn name(&self) -> &'static str {
        "memcache"
    }

    /// One pipelined batch of `mg` per server (all servers queried concurrently):
    /// one round trip per server involved.
    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Bytes>>, BackendError> {
        let mut out = vec![None; keys.len()];
        let groups = self.group(keys.iter().enumerate().map(|(pos, k)| (k.as_str(), pos)));
        let found = Mutex::new(Vec::new());
        self.on_each_server(groups, |server, positions| {
            let found = &found;
            async move {
                let batch: Vec<&str> = positions.iter().map(|&p| keys[p].as_str()).collect();
                // Only hits come back, each carrying its key (`k`): match by key.
                let hits = server
                    .with_conn(async |c: &mut Client| c.meta_get_multi(&batch, Some(&["v"])).await)
                    .await?;
                let mut by_key: HashMap<Vec<u8>, Bytes> = HashMap::with_capacity(hits.len());
                for hit in hits {
                    let Some(k) = hit.key else {
                        return Err(McError::Unexpected {
                            addr: server.addr.clone(),
                            what: "mg hit without its key".into(),
                        });
                    };
                    // The client reports a zero-length value as no data.
                    by_key.insert(k, Bytes::from(hit.data.unwrap_or_default()));
                }
                let mut found = found.lock().unwrap_or_else(|e| e.into_inner());
                // Values are moved out, not copied; a key asked for twice
                // shares the buffer its first position took.
                let mut taken: HashMap<&str, usize> = HashMap::new();
                for p in positions {
                    let key = keys[p].as_str();
                    if let Some(v) = by_key.remove(key.as_bytes()) {
                        taken.insert(key, found.len());
                        found.push((p, v));
                    } else if let Some(&i) = taken.get(key) {
                        let v = found[i].1.clone();
                        found.push((p, v));
                    }
                }
                Ok(())
            }
        })
        .await?;
        for (p, v) in found.into_inner().unwrap_or_else(|e| e.into_inner()) {
            out[p] = Some(v);
        }
        Ok(out)
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), BackendError> {
        self.check_size(value)?;
        let t = format!("T{}", exptime(ttl));
        self.server(key)
            .with_conn(async |c: &mut Client| {
                c.meta_set(key, value, false, None, Some(&[&t])).await
            })
            .await?;
        Ok(())
    }

    /// `ms` in add mode (`ME`): stored only when the key is absent.
    async fn add(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool, BackendError> {
        self.check_size(value)?;
        let t = format!("T{}", exptime(ttl));
        let stored = self
            .server(key)
            .with_conn(async |c: &mut Client| {
                refused_is_false(c.meta_set(key, value, false, None, Some(&["ME", &t])).await)
            })
            .await?;
        Ok(stored)
    }

    /// `mg` with the CAS token, compare the bytes here, then `ms` or `md` with
    /// `C<cas>`: the write happens only if nobody wrote the key in between.
    async fn compare_and_swap(
        &self,
        key: &str,
        expected: &[u8],
        new: Option<&[u8]>,
        ttl: Duration,
    ) -> Result<bool, BackendError> {
        if let Some(v) = new {
            self.check_size(v)?;
        }
        let t = format!("T{}", exptime(ttl));
        let server = self.server(key);
        let swapped = server
            .with_conn(async |c: &mut Client| {
                let Some(current) = c.meta_get(key, false, None, Some(&["v", "c"])).await? else {
                    return Ok(false);
                };
                let Some(cas) = current.cas else {
                    return Err(async_memcached::Error::Protocol(Status::Error(
                        async_memcached::ErrorKind::Protocol(Some(
                            "mg answered without the requested cas token".into(),
                        )),
                    )));
                };
                // The client reports a zero-length value as no data.
                let data = current.data.unwrap_or_default();
                if data != expected {
                    return Ok(false);
                }
                let c_flag = format!("C{cas}");
                match new {
                    Some(v) => refused_is_false(
                        c.meta_set(key, v, false, None, Some(&[&c_flag, &t])).await,
                    ),
                    None => {
                        refused_is_false(c.meta_delete(key, false, None, Some(&[&c_flag])).await)
                    }
                }
            })
            .await?;
        Ok(swapped)
    }

    /// See `lease.rs`: `mg` with vivify-on-miss.
    async fn get_or_lease(
        &self,
        keys: &[String],
        lease: &[u8],
        over: &[u8],
        ttl: Duration,
    ) -> Result<LeaseRead, BackendError> {
        self.read_or_lease(keys, lease, over, ttl).await
    }

    /// See `lease.rs`: `ms`/`md` with the won CAS value.
    async fn swap_lease(
        &self,
        key: &str,
        lease: &Lease,
        new: Option<&[u8]>,
        ttl: Duration,
    ) -> Result<bool, BackendError> {
        match lease {
            Lease::Token(cas) => self.swap_token(key, *cas, new, ttl).await,
            Lease::Bytes(b) => self.compare_and_swap(key, b, new, ttl).await,
        }
    }

    async fn delete(&self, key: &str) -> Result<(), BackendError> {
        self.server(key)
            .with_conn(async |c: &mut Client| {
                refused_is_false(c.meta_delete(key, false, None, None).await)
            })
            .await?;
        Ok(())
    }

    /// One pipelined batch of quiet `ms` per server, servers concurrently.
    async fn set_many(
        &self,
        items: &[(String, Vec<u8>)],
        ttl: Duration,
    ) -> Result<(), BackendError> {
        for (_, v) in items {
            self.check_size(v)?;
        }
        let t = format!("T{}", exptime(ttl));
        let groups = self.group(items.iter().map(|item| (item.0.as_str(), item)));
        self.on_each_server(groups, |server, batch: Vec<&Item>| {
            let t = &t;
            async move {
                let pairs: Vec<(&str, &[u8])> = batch
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_slice()))
                    .collect();
                server
                    .with_conn(async |c: &mut Client| {
                        c.meta_set_multi(&pairs, Some(&[t.as_str()])).await
                    })
                    .await?;
                Ok(())
            }
        })
        .await
    }

    fn max_value_size(&self) -> usize {
        MAX_VALUE_SIZE
    }
}

#[cfg(test)]
mod tests;
