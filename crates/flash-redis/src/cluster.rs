//! [`RedisClusterBackend`]: a Redis Cluster, its multi-gets grouped by master.

use crate::conn::{
    bad_url, impl_backend, map_err, set_cmd, Conn, UrlError, CONNECT_TIMEOUT, RESPONSE_TIMEOUT,
};
use crate::slots::{is_topology_error, SlotMap};
use flash_core::{BackendError, Bytes, LeaseRead};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{RedisError, Script};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

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
    ) -> Result<Option<Vec<Option<Bytes>>>, RedisError> {
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
                    let values: Vec<Option<Bytes>> = invocation.invoke_async(&mut conn).await?;
                    Ok::<_, RedisError>((positions, values))
                }
            });
        let answers = futures::future::try_join_all(calls).await?;
        let mut out: Vec<Option<Bytes>> = vec![None; keys.len()];
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

impl_backend!(RedisClusterBackend {
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
    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Bytes>>, BackendError> {
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

    /// The script on the first key's node, the other keys (a stale marker,
    /// in another slot) read at the same time: one round trip of waiting.
    async fn get_or_lease(
        &self,
        keys: &[String],
        lease: &[u8],
        over: &[u8],
        ttl: Duration,
    ) -> Result<LeaseRead, BackendError> {
        if keys.len() <= 1 {
            return self.inner.get_or_lease(keys, lease, over, ttl).await;
        }
        let (first, others) = futures::join!(
            self.inner.get_or_lease(&keys[..1], lease, over, ttl),
            self.get_many(&keys[1..])
        );
        let mut read = first?;
        read.values.extend(others?);
        Ok(read)
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
});

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
}
