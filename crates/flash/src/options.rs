//! The settings of a cache server's client and its resilient wrapper, from
//! the builder ([`CacheOptions`]) or the cache URL's query
//! (`redis://host:6379/0?timeout_ms=100&retries=1`).

use std::time::Duration;

/// What the cache URL's query may set, and the defaults. Each is also a
/// method of [`CacheOptions`].
///
/// | query key | meaning | default |
/// |---|---|---|
/// | `timeout_ms` | deadline of one cache operation | 50 |
/// | `retries` | extra attempts of a read or an invalidation the server refused | 0 |
/// | `breaker_failures` | consecutive failures that open the circuit breaker | 5 |
/// | `breaker_cool_down_ms` | how long the breaker stays open before a probe | 1000 |
/// | `pool_size` | memcached: connections per server | 16 |
pub const QUERY_KEYS: [&str; 5] = [
    "timeout_ms",
    "retries",
    "breaker_failures",
    "breaker_cool_down_ms",
    "pool_size",
];

/// A cache setting that could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OptionError {
    /// A value that is not a number in range.
    #[error("cache option {key}={value:?}: {reason}")]
    BadValue {
        key: String,
        value: String,
        reason: &'static str,
    },
    /// A setting this kind of cache has no use for.
    #[error("cache option {key} does not apply to {scheme}:// caches")]
    NotApplicable { key: String, scheme: String },
    /// A setting given twice in one URL.
    #[error("cache option {0} is given twice")]
    Repeated(String),
}

/// Settings of the client of a cache server and of the timeout and circuit
/// breaker around it ([`crate::ResilientBackend`]). The defaults are those
/// of [`QUERY_KEYS`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheOptions {
    /// Deadline of one cache operation.
    pub timeout: Duration,
    /// Extra attempts of a read or an invalidation that failed.
    pub retries: u32,
    /// Consecutive failures that open the breaker (at least 1).
    pub breaker_failures: u32,
    /// How long the breaker stays open before it lets a probe through.
    pub breaker_cool_down: Duration,
    /// memcached: connections per server (`None`: the client's default, 16).
    pub pool_size: Option<usize>,
}

impl Default for CacheOptions {
    fn default() -> Self {
        CacheOptions {
            timeout: Duration::from_millis(50),
            retries: 0,
            breaker_failures: 5,
            breaker_cool_down: Duration::from_secs(1),
            pool_size: None,
        }
    }
}

impl CacheOptions {
    /// See [`Self::timeout`](field@Self::timeout).
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }
    /// See [`Self::retries`](field@Self::retries).
    pub fn retries(mut self, n: u32) -> Self {
        self.retries = n;
        self
    }
    /// See [`Self::breaker_failures`](field@Self::breaker_failures).
    pub fn breaker_failures(mut self, n: u32) -> Self {
        self.breaker_failures = n;
        self
    }
    /// See [`Self::breaker_cool_down`](field@Self::breaker_cool_down).
    pub fn breaker_cool_down(mut self, t: Duration) -> Self {
        self.breaker_cool_down = t;
        self
    }
    /// See [`Self::pool_size`](field@Self::pool_size).
    pub fn pool_size(mut self, n: usize) -> Self {
        self.pool_size = Some(n);
        self
    }

    /// Applies the settings of `url`'s query over these and gives the URL
    /// without them (the other query parameters stay, for the client).
    pub fn apply_url(mut self, url: &str) -> Result<(Self, String), OptionError> {
        let Some((base, query)) = url.split_once('?') else {
            return Ok((self, url.to_owned()));
        };
        let mut rest = form_urlencoded::Serializer::new(String::new());
        let mut seen: Vec<String> = Vec::new();
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            if !QUERY_KEYS.contains(&key.as_ref()) {
                rest.append_pair(&key, &value);
                continue;
            }
            if seen.iter().any(|k| *k == key) {
                return Err(OptionError::Repeated(key.into_owned()));
            }
            seen.push(key.to_string());
            let bad = |reason| OptionError::BadValue {
                key: key.to_string(),
                value: value.to_string(),
                reason,
            };
            let n: u64 = value.parse().map_err(|_| bad("expected a whole number"))?;
            let small = |n: u64| u32::try_from(n).map_err(|_| bad("too large"));
            match key.as_ref() {
                "timeout_ms" if n == 0 => return Err(bad("must be at least 1")),
                "timeout_ms" => self.timeout = Duration::from_millis(n),
                "retries" if n > 10 => return Err(bad("at most 10")),
                "retries" => self.retries = small(n)?,
                "breaker_failures" if n == 0 => return Err(bad("must be at least 1")),
                "breaker_failures" => self.breaker_failures = small(n)?,
                "breaker_cool_down_ms" => self.breaker_cool_down = Duration::from_millis(n),
                "pool_size" if n == 0 || n > 1024 => return Err(bad("1 to 1024")),
                _ => self.pool_size = Some(n as usize),
            }
        }
        let rest = rest.finish();
        let url = if rest.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{rest}")
        };
        Ok((self, url))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_settings_override_and_leave_the_rest() {
        let (o, url) = CacheOptions::default()
            .retries(3)
            .apply_url("redis://h:1/0?timeout_ms=120&protocol=resp3&breaker_failures=2&breaker_cool_down_ms=300")
            .unwrap();
        assert_eq!(
            o,
            CacheOptions {
                timeout: Duration::from_millis(120),
                retries: 3,
                breaker_failures: 2,
                breaker_cool_down: Duration::from_millis(300),
                pool_size: None,
            }
        );
        assert_eq!(url, "redis://h:1/0?protocol=resp3");
        let (o, url) = CacheOptions::default()
            .apply_url("memcache://a:1,b:2?pool_size=4&retries=1")
            .unwrap();
        assert_eq!(
            (o.pool_size, o.retries, url.as_str()),
            (Some(4), 1, "memcache://a:1,b:2")
        );
    }

    #[test]
    fn bad_values_are_typed_errors() {
        for (q, key) in [
            ("timeout_ms=fast", "timeout_ms"),
            ("timeout_ms=0", "timeout_ms"),
            ("timeout_ms=-5", "timeout_ms"),
            ("retries=99", "retries"),
            ("breaker_failures=0", "breaker_failures"),
            ("breaker_failures=99999999999", "breaker_failures"),
            ("pool_size=0", "pool_size"),
        ] {
            match CacheOptions::default().apply_url(&format!("redis://h?{q}")) {
                Err(OptionError::BadValue { key: k, .. }) => assert_eq!(k, key, "{q}"),
                other => panic!("{q}: {other:?}"),
            }
        }
        assert_eq!(
            CacheOptions::default().apply_url("redis://h?retries=1&retries=2"),
            Err(OptionError::Repeated("retries".into()))
        );
    }
}
