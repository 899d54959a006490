//! Redis Cluster's hash slots: the key-slot function and a slot map of the
//! masters, so that a multi-get can be sent as one request per master.

use redis::RedisError;
use std::collections::HashMap;

/// Number of hash slots in a Redis Cluster.
pub(crate) const CLUSTER_SLOTS: usize = 16384;

/// CRC16-CCITT (XMODEM): polynomial 0x1021, initial value 0, as Redis Cluster
/// uses for key slots.
pub(crate) fn crc16(bytes: &[u8]) -> u16 {
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
pub(crate) fn key_slot(key: &[u8]) -> u16 {
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
pub(crate) struct SlotMap {
    /// `"host:port"` of each master.
    pub(crate) nodes: Vec<String>,
    /// Index into `nodes` for each slot; `None` when no node was listed for it.
    pub(crate) slots: Vec<Option<usize>>,
}

impl SlotMap {
    /// Parses a `CLUSTER SLOTS` reply: `[[start, end, [host, port, id, …], replica…], …]`.
    pub(crate) fn from_cluster_slots(reply: &redis::Value) -> Option<SlotMap> {
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
    pub(crate) fn all_on(addr: &str) -> SlotMap {
        SlotMap {
            nodes: vec![addr.to_owned()],
            slots: vec![Some(0); CLUSTER_SLOTS],
        }
    }

    /// Positions of `keys` grouped by node; `None` when some slot has no node.
    pub(crate) fn group(&self, keys: &[String]) -> Option<Vec<Vec<usize>>> {
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
pub(crate) fn is_topology_error(e: &RedisError) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(crate) fn crc16_and_key_slots() {
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
    pub(crate) fn slot_map_from_cluster_slots() {
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
}
