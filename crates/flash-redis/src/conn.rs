//! What both backends share: the connection wrapper with the commands on one
//! key, the compare-and-swap script, the mapping of client errors, and the
//! limits and timeouts.

use flash_core::{BackendError, Bytes, Lease, LeaseRead};
use redis::aio::ConnectionLike;
use redis::{Cmd, RedisError, Script};
use std::sync::Arc;
use std::time::Duration;

/// Redis' own limit on a string value (`proto-max-bulk-len`, 512 MB).
pub(crate) const REDIS_MAX_VALUE: usize = 512 * 1024 * 1024;

/// How long connecting to a server may take before it counts as unreachable.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a server may take to answer a command. Generous on purpose: the
/// tight, per-lookup deadline belongs to `flash_core::resilient::ResilientBackend`;
/// this one only guarantees that no operation can hang forever.
pub(crate) const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Compare-and-swap: `KEYS[1]` is replaced by `ARGV[3]` (with a TTL of `ARGV[4]`
/// milliseconds, none when 0) or deleted (when `ARGV[2]` is `"0"`), only if it
/// currently holds exactly the bytes `ARGV[1]`. Lua strings are byte strings, so
/// the comparison is exact for binary values. Returns 1 when it swapped.
pub(crate) const CAS_SCRIPT: &str = r#"
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

/// Read-or-lease: when `KEYS[1]` holds nothing, or a value that starts with
/// `ARGV[3]` (an invalidation's marker; when not empty), it is set to the
/// lease `ARGV[1]` (for `ARGV[2]` milliseconds, none when 0). Answers the won flag
/// (`"1"` or `"0"`) then the value of every key as it was before: one
/// request for a miss and its lease. All replies are bulk strings (a missing
/// key `false`, which Redis turns into nil), so they decode as one list.
pub(crate) const GET_OR_LEASE_SCRIPT: &str = r#"
local out = {'0'}
for i = 1, #KEYS do
  out[i + 1] = redis.call('GET', KEYS[i])
end
if out[2] == false or (#ARGV[3] > 0 and string.sub(out[2], 1, #ARGV[3]) == ARGV[3]) then
  local ttl = tonumber(ARGV[2])
  if ttl > 0 then
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
  else
    redis.call('SET', KEYS[1], ARGV[1])
  end
  out[1] = '1'
end
return out
"#;

/// Why a cache URL was refused (reported as [`BackendError::BadUrl`]).
#[derive(Debug, thiserror::Error)]
pub(crate) enum UrlError {
    #[error("expected a redis+cluster:// (or rediss+cluster://) URL")]
    NotCluster,
    #[error("no node addresses")]
    NoNodes,
    #[error("empty node address")]
    EmptyNode,
    #[error(transparent)]
    Redis(#[from] RedisError),
}

pub(crate) fn bad_url(url: &str, e: impl Into<UrlError>) -> BackendError {
    BackendError::BadUrl {
        url: url.to_owned(),
        reason: e.into().to_string(),
    }
}

/// Maps a client error to the backend's error kinds: connection trouble is
/// `Unreachable`, an expired deadline is `Timeout`, anything the server said
/// (or a reply of the wrong shape) is `Protocol`.
pub(crate) fn map_err(e: RedisError) -> BackendError {
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
pub(crate) fn ttl_millis(ttl: Duration) -> Option<u64> {
    if ttl.is_zero() {
        None
    } else {
        Some(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1))
    }
}

pub(crate) fn set_cmd(key: &str, value: &[u8], ttl: Duration) -> Cmd {
    let mut cmd = redis::cmd("SET");
    cmd.arg(key).arg(value);
    if let Some(ms) = ttl_millis(ttl) {
        cmd.arg("PX").arg(ms);
    }
    cmd
}

pub(crate) fn add_cmd(key: &str, value: &[u8], ttl: Duration) -> Cmd {
    let mut cmd = set_cmd(key, value, ttl);
    cmd.arg("NX");
    cmd
}

pub(crate) fn mget_cmd(keys: &[String]) -> Cmd {
    let mut cmd = redis::cmd("MGET");
    cmd.arg(keys);
    cmd
}

pub(crate) fn check_len(
    got: Vec<Option<Bytes>>,
    want: usize,
) -> Result<Vec<Option<Bytes>>, BackendError> {
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
pub(crate) struct Conn<C> {
    pub(crate) conn: C,
    cas: Arc<Script>,
    get_or_lease: Arc<Script>,
}

impl<C: ConnectionLike + Clone + Send + Sync> Conn<C> {
    pub(crate) fn new(conn: C) -> Self {
        Conn {
            conn,
            cas: Arc::new(Script::new(CAS_SCRIPT)),
            get_or_lease: Arc::new(Script::new(GET_OR_LEASE_SCRIPT)),
        }
    }

    pub(crate) async fn get_many(
        &self,
        keys: &[String],
    ) -> Result<Vec<Option<Bytes>>, BackendError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let values = mget_cmd(keys)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(map_err)?;
        check_len(values, keys.len())
    }

    pub(crate) async fn set(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) -> Result<(), BackendError> {
        set_cmd(key, value, ttl)
            .query_async::<()>(&mut self.conn.clone())
            .await
            .map_err(map_err)
    }

    pub(crate) async fn add(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) -> Result<bool, BackendError> {
        // `SET NX` answers OK when it stored, nil when the key existed.
        let reply: Option<String> = add_cmd(key, value, ttl)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(map_err)?;
        Ok(reply.is_some())
    }

    pub(crate) async fn compare_and_swap(
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

    /// One `EVALSHA` of [`GET_OR_LEASE_SCRIPT`] over `keys` (which must share
    /// a slot on a cluster).
    pub(crate) async fn get_or_lease(
        &self,
        keys: &[String],
        lease: &[u8],
        over: &[u8],
        ttl: Duration,
    ) -> Result<LeaseRead, BackendError> {
        if keys.is_empty() {
            return Ok(LeaseRead {
                values: Vec::new(),
                lease: None,
                round_trips: 1,
            });
        }
        let mut invocation = self.get_or_lease.key(keys);
        invocation
            .arg(lease)
            .arg(ttl_millis(ttl).unwrap_or(0))
            .arg(over);
        let mut reply: Vec<Option<Bytes>> = invocation
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(map_err)?;
        if reply.len() != keys.len() + 1 {
            return Err(BackendError::Protocol(format!(
                "read-or-lease of {} keys answered {} values",
                keys.len(),
                reply.len()
            )));
        }
        let won = reply.remove(0).as_deref() == Some(b"1");
        Ok(LeaseRead {
            values: reply,
            lease: won.then(|| Lease::Bytes(lease.to_vec())),
            round_trips: 1,
        })
    }

    pub(crate) async fn delete(&self, key: &str) -> Result<(), BackendError> {
        redis::cmd("DEL")
            .arg(key)
            .query_async::<()>(&mut self.conn.clone())
            .await
            .map_err(map_err)
    }
}

/// `impl Backend for $ty` with the given methods (name, multi-key
/// operations) and the operations on one key, which are the same on both
/// backends: forwarded to the shared [`Conn`] in `self.inner`.
macro_rules! impl_backend {
    ($ty:ty { $($own:tt)* }) => {
        #[async_trait::async_trait]
        impl flash_core::Backend for $ty {
            $($own)*

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
                $crate::conn::REDIS_MAX_VALUE
            }
        }
    };
}
pub(crate) use impl_backend;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(crate) fn ttls() {
        assert_eq!(ttl_millis(Duration::ZERO), None);
        assert_eq!(ttl_millis(Duration::from_micros(10)), Some(1));
        assert_eq!(ttl_millis(Duration::from_secs(2)), Some(2000));
    }
}
