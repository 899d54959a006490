//! # flash-redis
//!
//! Redis backends for flash: [`RedisBackend`] for a standalone server (or a
//! primary behind a proxy) and [`RedisClusterBackend`] for Redis Cluster.
//!
//! Both speak the same commands: `MGET` for lookups (on a cluster, one script
//! call per master that reads all of that node's keys), `SET … PX` for fills,
//! `SET … NX PX` for leases, and a small Lua script for compare-and-swap, so
//! that a lease check and the write that follows are one atomic step.

use async_trait::async_trait;
use flash_core::{Backend, BackendError};
use redis::aio::ConnectionLike;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, RedisError, Script};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Redis' own limit on a string value (`proto-max-bulk-len`, 512 MB).
const REDIS_MAX_VALUE: usize = 512 * 1024 * 1024;

/// How long connecting to a server may take before it counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a server may take to answer a command. Generous on purpose: the
/// tight, per-lookup deadline belongs to `flash_core::resilient::ResilientBackend`;
/// this one only guarantees that no operation can hang forever.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Compare-and-swap: `KEYS[1]` is replaced by `ARGV[3]` (with a TTL of `ARGV[4]`
/// milliseconds, none when 0) or deleted (when `ARGV[2]` is `"0"`), only if it
/// currently holds exactly the bytes `ARGV[1]`. Lua strings are byte strings, so
/// the comparison is exact for binary values. Returns 1 when it swapped.
const CAS_SCRIPT: &str = r#"
local current = redis.call('GET', KEYS[1])
if current == false or current ~= ARGV[1] then
  return 0
end
if ARGV[2] == '1' then
  local ttl = tonumber(ARGV[4])
  if ttl > 0 then
    redis.call('SET', KEYS[1], ARGV[3], 'PX', ttl)
  else
    redis.call('SET', KEYS[1], ARGV[3])
  end
else
  redis.call('DEL', KEYS[1])
end
return 1
"#;

/// Multi-get of keys from many hash slots that all live on one cluster node.
/// `KEYS[1]` is the first of them (declared so that the client routes the call
/// to that node and the server checks that it owns it); `ARGV` holds all of
/// them. Declared keys must share one slot (Redis answers `CROSSSLOT`
/// otherwise, even with the flag), and so must the keys of one `MGET` inside a
/// script, hence a loop of `GET`s over undeclared keys, which
/// `allow-cross-slot-keys` permits as long as they are local to the node (a
/// non-local key fails the whole script, and the caller falls back). A missing
/// key is `false`, which Redis turns into a nil reply; Lua strings are byte
/// strings, so values are binary-safe.
const GET_MANY_SCRIPT: &str = r#"#!lua flags=allow-cross-slot-keys,no-writes
local values = {}
for i = 1, #ARGV do
  values[i] = redis.call('GET', ARGV[i])
end
return values
"#;

/// Keys per script call: bounds the time one call blocks a node and the size of
/// one request. A node's group larger than this is split (calls in parallel).
const GET_MANY_CHUNK: usize = 2048;

/// Number of hash slots in a Redis Cluster.
const CLUSTER_SLOTS: usize = 16384;

/// CRC16-CCITT (XMODEM): polynomial 0x1021, initial value 0, as Redis Cluster
/// uses for key slots.
fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in bytes {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The hash slot of a key: CRC16 of the key, or of its hash tag (what is
/// between the first `{` and the next `}`, when that is not empty), mod 16384.
fn key_slot(key: &[u8]) -> u16 {
    let hashed = match key.iter().position(|&b| b == b'{') {
        Some(open) => match key[open + 1..].iter().position(|&b| b == b'}') {
            Some(len) if len > 0 => &key[open + 1..open + 1 + len],
            _ => key,
        },
        None => key,
    };
    crc16(hashed) % CLUSTER_SLOTS as u16
}

/// Which master serves each hash slot, as last read with `CLUSTER SLOTS`.
#[derive(Debug, Default)]
struct SlotMap {
    /// `"host:port"` of each master.
    nodes: Vec<String>,
    /// Index into `nodes` for each slot; `None` when no node was listed for it.
    slots: Vec<Option<usize>>,
}

impl SlotMap {
    /// Parses a `CLUSTER SLOTS` reply: `[[start, end, [host, port, id, …], replica…], …]`.
    fn from_cluster_slots(reply: &redis::Value) -> Option<SlotMap> {
        use redis::Value;
        let Value::Array(ranges) = reply else {
            return None;
        };
        let mut map = SlotMap {
            nodes: Vec::new(),
            slots: vec![None; CLUSTER_SLOTS],
        };
        let mut index: HashMap<String, usize> = HashMap::new();
        for range in ranges {
            let Value::Array(range) = range else {
                return None;
            };
            let (Some(Value::Int(start)), Some(Value::Int(end)), Some(Value::Array(master))) =
                (range.first(), range.get(1), range.get(2))
            else {
                return None;
            };
            let host = match master.first()? {
                Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                Value::SimpleString(s) => s.clone(),
                _ => return None,
            };
            let Value::Int(port) = master.get(1)? else {
                return None;
            };
            let addr = format!("{host}:{port}");
            let next = index.len();
            let node = *index.entry(addr.clone()).or_insert_with(|| {
                map.nodes.push(addr);
                next
            });
            let (start, end) = (usize::try_from(*start).ok()?, usize::try_from(*end).ok()?);
            for slot in map.slots.get_mut(start..=end)? {
                *slot = Some(node);
            }
        }
        Some(map)
    }

    /// Every slot on the node `addr` (a deliberately wrong map, for tests).
    fn all_on(addr: &str) -> SlotMap {
        SlotMap {
            nodes: vec![addr.to_owned()],
            slots: vec![Some(0); CLUSTER_SLOTS],
        }
    }

    /// Positions of `keys` grouped by node; `None` when some slot has no node.
    fn group(&self, keys: &[String]) -> Option<Vec<Vec<usize>>> {
        let mut groups: Vec<Vec<usize>> = vec![Vec::new(); self.nodes.len()];
        for (i, key) in keys.iter().enumerate() {
            let node = (*self.slots.get(usize::from(key_slot(key.as_bytes())))?)?;
            groups[node].push(i);
        }
        groups.retain(|g| !g.is_empty());
        Some(groups)
    }
}

/// Errors after which the slot map is presumed stale: redirections, slots on the
/// move or unserved, a node the client does not know, or the script finding a
/// key that is not local to the node it ran on.
fn is_topology_error(e: &RedisError) -> bool {
    use redis::{ErrorKind, ServerErrorKind};
    if e.is_cluster_error() {
        return true;
    }
    match e.kind() {
        ErrorKind::Server(ServerErrorKind::CrossSlot | ServerErrorKind::MasterDown)
        | ErrorKind::ClusterConnectionNotFound => true,
        _ => {
            let text = e.to_string();
            text.contains("non local key")
                || text.contains("do not hash to the same slot")
                || text.contains("cluster is down")
        }
    }
}

/// Why a cache URL was refused (reported as [`BackendError::BadUrl`]).
#[derive(Debug, thiserror::Error)]
enum UrlError {
    #[error("expected a redis+cluster:// (or rediss+cluster://) URL")]
    NotCluster,
    #[error("no node addresses")]
    NoNodes,
    #[error("empty node address")]
    EmptyNode,
    #[error(transparent)]
    Redis(#[from] RedisError),
}

fn bad_url(url: &str, e: impl Into<UrlError>) -> BackendError {
    BackendError::BadUrl {
        url: url.to_owned(),
        reason: e.into().to_string(),
    }
}

/// Maps a client error to the backend's error kinds: connection trouble is
/// `Unreachable`, an expired deadline is `Timeout`, anything the server said
/// (or a reply of the wrong shape) is `Protocol`.
fn map_err(e: RedisError) -> BackendError {
    if e.is_timeout() {
        BackendError::Timeout(RESPONSE_TIMEOUT)
    } else if e.is_io_error()
        || e.is_connection_refusal()
        || e.is_connection_dropped()
        || e.is_cluster_error()
    {
        BackendError::Unreachable(e.to_string())
    } else {
        BackendError::Protocol(e.to_string())
    }
}

/// Milliseconds for `PX`; `None` means no expiry. Sub-millisecond TTLs round up,
/// since `PX 0` is an error and "no expiry" would be the opposite of what was asked.
fn ttl_millis(ttl: Duration) -> Option<u64> {
    if ttl.is_zero() {
        None
    } else {
        Some(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1))
    }
}

fn set_cmd(key: &str, value: &[u8], ttl: Duration) -> Cmd {
    let mut cmd = redis::cmd("SET");
    cmd.arg(key).arg(value);
    if let Some(ms) = ttl_millis(ttl) {
        cmd.arg("PX").arg(ms);
    }
    cmd
}

fn add_cmd(key: &str, value: &[u8], ttl: Duration) -> Cmd {
    let mut cmd = set_cmd(key, value, ttl);
    cmd.arg("NX");
    cmd
}

fn mget_cmd(keys: &[String]) -> Cmd {
    let mut cmd = redis::cmd("MGET");
    cmd.arg(keys);
    cmd
}

fn check_len(got: Vec<Option<Vec<u8>>>, want: usize) -> Result<Vec<Option<Vec<u8>>>, BackendError> {
    if got.len() == want {
        Ok(got)
    } else {
        Err(BackendError::Protocol(format!(
            "MGET of {want} keys answered {} values",
            got.len()
        )))
    }
}

/// What both backends share: a cloneable multiplexed connection and the script.
#[derive(Clone)]
struct Conn<C> {
    conn: C,
    cas: Arc<Script>,
}

impl<C: ConnectionLike + Clone + Send + Sync> Conn<C> {
    fn new(conn: C) -> Self {
        Conn {
            conn,
            cas: Arc::new(Script::new(CAS_SCRIPT)),
        }
    }

    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, BackendError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let values = mget_cmd(keys)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(map_err)?;
        check_len(values, keys.len())
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), BackendError> {
        set_cmd(key, value, ttl)
            .query_async::<()>(&mut self.conn.clone())
            .await
            .map_err(map_err)
    }

    async fn add(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool, BackendError> {
        // `SET NX` answers OK when it stored, nil when the key existed.
        let reply: Option<String> = add_cmd(key, value, ttl)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(map_err)?;
        Ok(reply.is_some())
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expected: &[u8],
        new: Option<&[u8]>,
        ttl: Duration,
    ) -> Result<bool, BackendError> {
        let mut invocation = self.cas.key(key);
        invocation
            .arg(expected)
            .arg(if new.is_some() { "1" } else { "0" })
            .arg(new.unwrap_or_default())
            .arg(ttl_millis(ttl).unwrap_or(0));
        // EVALSHA; the client loads the script (and retries) on NOSCRIPT.
        let swapped: i64 = invocation
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(map_err)?;
        Ok(swapped == 1)
    }

    async fn delete(&self, key: &str) -> Result<(), BackendError> {
        redis::cmd("DEL")
            .arg(key)
            .query_async::<()>(&mut self.conn.clone())
            .await
            .map_err(map_err)
    }
}

/// A standalone Redis server as a flash cache backend.
///
/// Holds one multiplexed connection ([`ConnectionManager`]) that all tasks share
/// and that reconnects by itself after a failure; cloning is cheap.
#[derive(Clone)]
pub struct RedisBackend {
    inner: Conn<ConnectionManager>,
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend").finish_non_exhaustive()
    }
}

impl RedisBackend {
    /// Connects to `redis://[[user]:pass@]host:port[/db]` (`rediss://` for TLS
    /// when built with the `tls` feature). Fails when the server cannot be
    /// reached now; see [`Self::connect_lazy`] for a start that never fails.
    pub async fn connect(url: &str) -> Result<Self, BackendError> {
        let client = redis::Client::open(url).map_err(|e| bad_url(url, e))?;
        // One retry only: at start-up, an unreachable cache should be reported
        // promptly rather than after a long backoff.
        let config = Self::config().set_number_of_retries(1);
        let conn = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(map_err)?;
        Ok(Self::from_connection(conn))
    }

    /// Like [`Self::connect`] but connects on first use: an application can start
    /// while its cache is down (its lookups then fail over to the database).
    /// Only a malformed URL is an error.
    pub fn connect_lazy(url: &str) -> Result<Self, BackendError> {
        let client = redis::Client::open(url).map_err(|e| bad_url(url, e))?;
        let conn =
            ConnectionManager::new_lazy_with_config(client, Self::config()).map_err(map_err)?;
        Ok(Self::from_connection(conn))
    }

    /// Wraps an existing connection manager (for custom connection settings).
    pub fn from_connection(conn: ConnectionManager) -> Self {
        RedisBackend {
            inner: Conn::new(conn),
        }
    }

    fn config() -> ConnectionManagerConfig {
        ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            // After a failed command the manager reconnects in the background,
            // and commands wait for it. One attempt, no backoff: while a server
            // is down a command then fails at once instead of waiting out the
            // client's retry schedule (100 ms doubling by default, longer than
            // an operation's 50 ms deadline), and when it is back the next
            // command reconnects at once. The circuit breaker and flash's own
            // retries decide when to try again.
            .set_number_of_retries(0)
    }
}

#[async_trait]
impl Backend for RedisBackend {
    fn name(&self) -> &'static str {
        "redis"
    }

    /// One `MGET`: one round trip.
    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, BackendError> {
        self.inner.get_many(keys).await
    }

    /// One pipeline of `SET`s: one round trip.
    async fn set_many(
        &self,
        items: &[(String, Vec<u8>)],
        ttl: Duration,
    ) -> Result<(), BackendError> {
        if items.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for (k, v) in items {
            pipe.add_command(set_cmd(k, v, ttl)).ignore();
        }
        pipe.query_async::<()>(&mut self.inner.conn.clone())
            .await
            .map_err(map_err)
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), BackendError> {
        self.inner.set(key, value, ttl).await
    }

    async fn add(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool, BackendError> {
        self.inner.add(key, value, ttl).await
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expected: &[u8],
        new: Option<&[u8]>,
        ttl: Duration,
    ) -> Result<bool, BackendError> {
        self.inner.compare_and_swap(key, expected, new, ttl).await
    }

    async fn delete(&self, key: &str) -> Result<(), BackendError> {
        self.inner.delete(key).await
    }

    fn max_value_size(&self) -> usize {
        REDIS_MAX_VALUE
    }
}

/// A Redis Cluster as a flash cache backend.
///
/// Keys are spread over the masters by hash slot. The client keeps one
/// multiplexed connection per node, follows `MOVED`/`ASK` redirections and
/// refreshes its slot map by itself; cloning is cheap. The backend keeps a
/// slot map of its own as well (from `CLUSTER SLOTS`), to send a multi-get as
/// one request per master.
#[derive(Clone)]
pub struct RedisClusterBackend {
    inner: Conn<ClusterConnection>,
    /// Our own copy of the slot map, to group a multi-get by node.
    slots: Arc<RwLock<Arc<SlotMap>>>,
    /// Completed reloads of the slot map, and a lock held during one:
    /// concurrent multi-gets that find the map stale wait for one reload
    /// instead of each sending its own `CLUSTER SLOTS`.
    reloads: Arc<AtomicU64>,
    reloading: Arc<tokio::sync::Mutex<()>>,
    get_many_script: Arc<Script>,
}

impl std::fmt::Debug for RedisClusterBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisClusterBackend")
            .finish_non_exhaustive()
    }
}

impl RedisClusterBackend {
    /// Connects to `redis+cluster://[[user]:pass@]h1:p1,h2:p2,…` (any reachable
    /// subset of the nodes will do: the rest are discovered). `rediss+cluster://`
    /// asks for TLS (with the `tls` feature).
    pub async fn connect(url: &str) -> Result<Self, BackendError> {
        let nodes = cluster_node_urls(url).map_err(|e| bad_url(url, e))?;
        let client = ClusterClient::builder(nodes)
            .connection_timeout(CONNECT_TIMEOUT)
            .response_timeout(RESPONSE_TIMEOUT)
            .retries(2)
            .build()
            .map_err(|e| bad_url(url, e))?;
        let conn = client.get_async_connection().await.map_err(map_err)?;
        let backend = RedisClusterBackend {
            inner: Conn::new(conn),
            slots: Arc::new(RwLock::new(Arc::new(SlotMap::default()))),
            reloads: Arc::new(AtomicU64::new(0)),
            reloading: Arc::new(tokio::sync::Mutex::new(())),
            get_many_script: Arc::new(Script::new(GET_MANY_SCRIPT)),
        };
        backend.refresh_slots(0).await;
        Ok(backend)
    }

    fn slot_map(&self) -> Arc<SlotMap> {
        Arc::clone(&self.slots.read().unwrap_or_else(|e| e.into_inner()))
    }

    fn set_slot_map(&self, map: SlotMap) {
        *self.slots.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(map);
    }

    /// Reloads the slot map with `CLUSTER SLOTS` (through the cluster
    /// connection, so from any reachable node), unless a reload finished since
    /// the caller read `seen` from `reloads` (it then uses that one). On failure the old map
    /// stays and the next multi-get that trips over it tries again.
    async fn refresh_slots(&self, seen: u64) {
        let _one_at_a_time = self.reloading.lock().await;
        if self.reloads.load(Ordering::Acquire) != seen {
            return;
        }
        let reply: Result<redis::Value, _> = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async(&mut self.inner.conn.clone())
            .await;
        match reply {
            Ok(reply) => match SlotMap::from_cluster_slots(&reply) {
                Some(map) => self.set_slot_map(map),
                None => tracing::warn!("unexpected CLUSTER SLOTS reply: {reply:?}"),
            },
            Err(e) => tracing::warn!("CLUSTER SLOTS failed: {e}"),
        }
        self.reloads.fetch_add(1, Ordering::Release);
    }

    /// Testing aid: pretends that every hash slot is on the node `addr`
    /// (`"host:port"`), as a stale slot map would, until the next refresh.
    #[doc(hidden)]
    pub fn test_point_all_slots_at(&self, addr: &str) {
        self.set_slot_map(SlotMap::all_on(addr));
    }

    /// Testing aid: the masters (`"host:port"`) in the current slot map.
    #[doc(hidden)]
    pub fn test_slot_map_nodes(&self) -> Vec<String> {
        self.slot_map().nodes.clone()
    }

    /// One script call per node (per chunk of [`GET_MANY_CHUNK`] keys), all in
    /// parallel. `Ok(None)` when the slot map does not cover some key.
    async fn get_many_by_node(
        &self,
        keys: &[String],
    ) -> Result<Option<Vec<Option<Vec<u8>>>>, RedisError> {
        let Some(groups) = self.slot_map().group(keys) else {
            return Ok(None);
        };
        let calls = groups
            .iter()
            .flat_map(|group| group.chunks(GET_MANY_CHUNK))
            .map(|positions| {
                let mut conn = self.inner.conn.clone();
                let script = &self.get_many_script;
                async move {
                    let mut invocation = script.key(&keys[positions[0]]);
                    for &i in positions {
                        invocation.arg(&keys[i]);
                    }
                    let values: Vec<Option<Vec<u8>>> = invocation.invoke_async(&mut conn).await?;
                    Ok::<_, RedisError>((positions, values))
                }
            });
        let answers = futures::future::try_join_all(calls).await?;
        let mut out: Vec<Option<Vec<u8>>> = vec![None; keys.len()];
        for (positions, values) in answers {
            if values.len() != positions.len() {
                return Err(RedisError::from((
                    redis::ErrorKind::Parse,
                    "multi-get script answered the wrong number of values",
                )));
            }
            for (&i, v) in positions.iter().zip(values) {
                out[i] = v;
            }
        }
        Ok(Some(out))
    }
}

/// `redis+cluster://auth@h1:p1,h2:p2/` → `["redis://auth@h1:p1", "redis://auth@h2:p2"]`.
fn cluster_node_urls(url: &str) -> Result<Vec<String>, UrlError> {
    let (scheme, rest) = if let Some(rest) = url.strip_prefix("redis+cluster://") {
        ("redis", rest)
    } else if let Some(rest) = url.strip_prefix("rediss+cluster://") {
        ("rediss", rest)
    } else {
        return Err(UrlError::NotCluster);
    };
    // Cluster mode has only database 0, so a path other than "/" or "/0" is ignored
    // by Redis anyway; drop it along with any query.
    let rest = rest.split(['/', '?']).next().unwrap_or_default();
    let (auth, hosts) = match rest.rsplit_once('@') {
        Some((auth, hosts)) => (Some(auth), hosts),
        None => (None, rest),
    };
    if hosts.is_empty() {
        return Err(UrlError::NoNodes);
    }
    let mut nodes = Vec::new();
    for host in hosts.split(',') {
        let host = host.trim();
        if host.is_empty() {
            return Err(UrlError::EmptyNode);
        }
        let node = match auth {
            Some(auth) => format!("{scheme}://{auth}@{host}"),
            None => format!("{scheme}://{host}"),
        };
        // Validate each node now so that a typo is a BadUrl, not a connect failure.
        redis::Client::open(node.as_str())?;
        nodes.push(node);
    }
    Ok(nodes)
}

#[async_trait]
impl Backend for RedisClusterBackend {
    fn name(&self) -> &'static str {
        "redis-cluster"
    }

    /// One request per master, in parallel: the keys are grouped by node with
    /// our own slot map, and each node gets one `EVALSHA` of a script that reads
    /// all of its keys (Redis refuses a cross-slot `MGET`, even inside a script,
    /// but a script flagged `allow-cross-slot-keys` may read any local key).
    /// Answers come back in key order. When the slot map proves stale (a
    /// redirection, a non-local key, an unknown slot) it is reloaded and the
    /// call is retried once the slow way: an `MGET` that the cluster client
    /// splits per hash slot.
    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, BackendError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let seen = self.reloads.load(Ordering::Acquire);
        match self.get_many_by_node(keys).await {
            Ok(Some(values)) => return Ok(values),
            Ok(None) => tracing::debug!("slot map incomplete; reloading it"),
            Err(e) if is_topology_error(&e) => {
                tracing::debug!("slot map stale ({e}); reloading it");
            }
            Err(e) => return Err(map_err(e)),
        }
        self.refresh_slots(seen).await;
        self.inner.get_many(keys).await
    }

    /// All `SET`s at once: a cluster pipeline must stay within one slot, so
    /// instead each command is routed to its node and they are all in flight
    /// together (pipelined on each node's connection, nodes in parallel).
    async fn set_many(
        &self,
        items: &[(String, Vec<u8>)],
        ttl: Duration,
    ) -> Result<(), BackendError> {
        let writes = items.iter().map(|(k, v)| {
            let mut conn = self.inner.conn.clone();
            let cmd = set_cmd(k, v, ttl);
            async move { cmd.query_async::<()>(&mut conn).await }
        });
        futures::future::try_join_all(writes)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), BackendError> {
        self.inner.set(key, value, ttl).await
    }

    async fn add(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool, BackendError> {
        self.inner.add(key, value, ttl).await
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expected: &[u8],
        new: Option<&[u8]>,
        ttl: Duration,
    ) -> Result<bool, BackendError> {
        self.inner.compare_and_swap(key, expected, new, ttl).await
    }

    async fn delete(&self, key: &str) -> Result<(), BackendError> {
        self.inner.delete(key).await
    }

    fn max_value_size(&self) -> usize {
        REDIS_MAX_VALUE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_urls() {
        assert_eq!(
            cluster_node_urls("redis+cluster://127.0.0.1:7001,127.0.0.1:7002").unwrap(),
            vec!["redis://127.0.0.1:7001", "redis://127.0.0.1:7002"]
        );
        assert_eq!(
            cluster_node_urls("redis+cluster://:secret@a:1,b:2/").unwrap(),
            vec!["redis://:secret@a:1", "redis://:secret@b:2"]
        );
        assert!(matches!(
            cluster_node_urls("redis://a:1"),
            Err(UrlError::NotCluster)
        ));
        assert!(matches!(
            cluster_node_urls("redis+cluster://"),
            Err(UrlError::NoNodes)
        ));
        assert!(matches!(
            cluster_node_urls("redis+cluster://a:1,,b:2"),
            Err(UrlError::EmptyNode)
        ));
    }

    #[test]
    fn crc16_and_key_slots() {
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(key_slot(b"123456789"), 12739); // 0x31C3 < 16384
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b""), 0);
        // Hash tags: only the part between the first `{` and the next `}` counts…
        assert_eq!(
            key_slot(b"{user1000}.following"),
            key_slot(b"{user1000}.followers")
        );
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"foo{bar}{zap}"), key_slot(b"bar"));
        assert_eq!(key_slot(b"{foo}{bar}"), key_slot(b"foo"));
        // …unless it is empty or unclosed, when the whole key does.
        assert_eq!(key_slot(b"foo{}{bar}"), crc16(b"foo{}{bar}") % 16384);
        assert_eq!(key_slot(b"foo{bar"), crc16(b"foo{bar") % 16384);
        assert_eq!(key_slot(b"{{bar}}"), key_slot(b"{bar"));
    }

    #[test]
    fn slot_map_from_cluster_slots() {
        use redis::Value;
        let node = |host: &str, port: i64| {
            Value::Array(vec![
                Value::BulkString(host.as_bytes().to_vec()),
                Value::Int(port),
                Value::BulkString(b"id".to_vec()),
            ])
        };
        let reply = Value::Array(vec![
            Value::Array(vec![
                Value::Int(0),
                Value::Int(5460),
                node("h", 1),
                node("r", 9),
            ]),
            Value::Array(vec![Value::Int(5461), Value::Int(10922), node("h", 2)]),
            Value::Array(vec![Value::Int(10923), Value::Int(16383), node("h", 1)]),
        ]);
        let map = SlotMap::from_cluster_slots(&reply).unwrap();
        assert_eq!(map.nodes, vec!["h:1", "h:2"]);
        assert_eq!(map.slots[0], Some(0));
        assert_eq!(map.slots[5461], Some(1));
        assert_eq!(map.slots[16383], Some(0));
        // "bar" (5061) and "foo" (12182) on h:1, "qux" (9995) on h:2.
        let keys: Vec<String> = ["foo", "qux", "bar"].map(String::from).to_vec();
        assert_eq!(map.group(&keys).unwrap(), vec![vec![0, 2], vec![1]]);
        assert!(SlotMap::default().group(&keys).is_none());
        assert!(SlotMap::from_cluster_slots(&Value::Int(1)).is_none());
    }

    #[test]
    fn ttls() {
        assert_eq!(ttl_millis(Duration::ZERO), None);
        assert_eq!(ttl_millis(Duration::from_micros(10)), Some(1));
        assert_eq!(ttl_millis(Duration::from_secs(2)), Some(2000));
    }

    #[tokio::test]
    async fn bad_urls_are_bad_url_errors() {
        for url in ["http://x", "redis://host:notaport", "", "redis+cluster://"] {
            let err = if url.contains("cluster") {
                RedisClusterBackend::connect(url).await.unwrap_err()
            } else {
                RedisBackend::connect(url).await.unwrap_err()
            };
            assert!(matches!(err, BackendError::BadUrl { .. }), "{url}: {err:?}");
        }
        assert!(matches!(
            RedisBackend::connect_lazy("nope://").unwrap_err(),
            BackendError::BadUrl { .. }
        ));
    }
}
