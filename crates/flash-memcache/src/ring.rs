//! Consistent hashing of keys onto servers: a ketama-style ring.
//!
//! Each server owns [`POINTS_PER_SERVER`] points on a 64-bit circle; a key goes
//! to the server owning the first point at or after the key's hash. Adding a
//! server takes over only the arcs just before its own points, so about 1/N of
//! the keys move (with modulo hashing, nearly all of them would, and the cache
//! would go cold at once).

use sha2::{Digest, Sha256};

/// Virtual nodes per server: enough for an even spread (a few % imbalance).
pub const POINTS_PER_SERVER: usize = 160;

/// A hash ring over server indices `0..n`.
#[derive(Debug, Clone)]
pub struct Ring {
    /// `(point, server index)`, sorted by point.
    points: Vec<(u64, usize)>,
}

fn hash64(bytes: &[u8]) -> u64 {
    let digest = Sha256::digest(bytes);
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

impl Ring {
    /// A ring over `servers` (their names, e.g. `host:port`, place their points,
    /// so a server keeps its keys whatever its position in the list).
    pub fn new<S: AsRef<str>>(servers: &[S]) -> Self {
        let mut points = Vec::with_capacity(servers.len() * POINTS_PER_SERVER);
        for (index, name) in servers.iter().enumerate() {
            for point in 0..POINTS_PER_SERVER {
                points.push((
                    hash64(format!("{}-{point}", name.as_ref()).as_bytes()),
                    index,
                ));
            }
        }
        points.sort_unstable();
        Ring { points }
    }

    /// The index of the server that holds `key` (0 for an empty ring).
    pub fn server_for(&self, key: &str) -> usize {
        let h = hash64(key.as_bytes());
        let at = self.points.partition_point(|&(p, _)| p < h);
        // Past the last point wraps around to the first.
        self.points
            .get(at)
            .or_else(|| self.points.first())
            .map_or(0, |&(_, s)| s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("10.0.0.{i}:11211")).collect()
    }

    #[test]
    fn adding_a_server_moves_about_a_quarter_of_the_keys() {
        let keys: Vec<String> = (0..10_000).map(|i| format!("flash:v1:user:{i}")).collect();
        let three = Ring::new(&names(3));
        let four = Ring::new(&names(4));
        let mut moved = 0;
        for k in &keys {
            let (before, after) = (three.server_for(k), four.server_for(k));
            if before != after {
                // A key that moves can only move to the new server.
                assert_eq!(after, 3, "{k} moved between old servers");
                moved += 1;
            }
        }
        // Ideal is 1/4 = 2500; allow for the ring's imbalance.
        assert!(
            (1_800..=3_200).contains(&moved),
            "{moved} of 10000 keys moved"
        );
    }

    #[test]
    fn keys_spread_evenly_and_deterministically() {
        let ring = Ring::new(&names(4));
        let mut counts = [0usize; 4];
        for i in 0..10_000 {
            counts[ring.server_for(&format!("k{i}"))] += 1;
        }
        for c in counts {
            assert!((1_800..=3_200).contains(&c), "uneven spread {counts:?}");
        }
        // Order of the server list does not matter: names place the points.
        let mut reversed = names(4);
        reversed.reverse();
        let other = Ring::new(&reversed);
        for i in 0..1_000 {
            let k = format!("k{i}");
            assert_eq!(
                names(4)[ring.server_for(&k)],
                reversed[other.server_for(&k)]
            );
        }
    }

    #[test]
    fn single_and_empty_rings() {
        assert_eq!(Ring::new(&names(1)).server_for("x"), 0);
        assert_eq!(Ring::new::<String>(&[]).server_for("x"), 0);
    }
}
