//! What a cache entry holds, and its bytes.
//!
//! Layout: a magic byte, a layout version byte, then the [`Entry`] in postcard,
//! which must take every remaining byte. A value in a shared store is
//! followed by its seal ([`crate::seal`]). Bytes that do not decode (garbage,
//! truncation, trailing bytes, an older layout) are [`Decoded::Garbage`]: the
//! read path treats them as a miss and refills.

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::time::{SystemTime, UNIX_EPOCH};

const MAGIC: u8 = 0xF1;
const LAYOUT: u8 = 2;

/// One cache entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Entry {
    /// A filled value: the class's dynamic version at fill time, the fill time
    /// (ms since the Unix epoch) and the class's payload (lz4 when `compressed`).
    Value {
        /// The class's dynamic version when the value was filled.
        version: i64,
        /// When the value was filled, in ms since the Unix epoch.
        filled_ms: u64,
        /// The fingerprint of the class's value layout
        /// ([`crate::ClassSpec::layout`]) in the process that filled it.
        layout: u64,
        /// Is `payload` lz4-compressed?
        compressed: bool,
        /// The class's result, encoded by [`encode_payload`].
        payload: Vec<u8>,
    },
    /// Written by an invalidation. The nonce makes every marker unique, so a
    /// compare-and-swap against an older marker fails.
    Stale {
        /// When the marker was written, in ms since the Unix epoch.
        at_ms: u64,
        /// Random, so that no two markers are the same bytes.
        nonce: u64,
    },
    /// Taken by the one reader that fills a missing key; the fill only lands
    /// if this very lease is still there.
    Lease {
        /// Random, so that no two leases are the same bytes.
        token: u64,
        /// When the lease was taken, in ms since the Unix epoch.
        at_ms: u64,
    },
    /// Written over a DYNAMIC class's stale marker by the refresh that
    /// replaced the marked value: "the value whose bytes hash to `value_hash`
    /// is newer than the invalidation". A marker is not simply deleted: a
    /// reader whose multi-get saw the old value and then (the marker deleted)
    /// no marker would serve the old value. With this, a reader serves only
    /// the value this marker names, whatever order its reads landed in.
    Fresh {
        /// [`value_hash`] of the refreshed value's bytes.
        value_hash: u64,
    },
}

/// [`Entry`] as read on the hot path: the payload borrowed from the cache
/// bytes instead of copied. Same variants and fields in the same order, so the
/// same bytes.
#[derive(Debug, Deserialize)]
#[allow(missing_docs)] // The fields are those of `Entry`.
pub enum EntryRef<'a> {
    /// [`Entry::Value`], its payload borrowed.
    Value {
        version: i64,
        filled_ms: u64,
        layout: u64,
        compressed: bool,
        #[serde(borrow)]
        payload: &'a [u8],
    },
    /// [`Entry::Stale`].
    Stale { at_ms: u64, nonce: u64 },
    /// [`Entry::Lease`].
    Lease { token: u64, at_ms: u64 },
    /// [`Entry::Fresh`].
    Fresh { value_hash: u64 },
}

/// A stable hash of a value's cache bytes (the first 8 bytes of their
/// SHA-256): the identity an [`Entry::Fresh`] marker names.
pub fn value_hash(bytes: &[u8]) -> u64 {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(bytes);
    u64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
}

/// Does the stale-marker slot of a DYNAMIC key (`marker`) mark the value
/// read beside it (`value`) as stale? Yes for a stale marker, and for a
/// [`Entry::Fresh`] that names other bytes (the value read is older, or
/// newer, than the refresh that wrote it: either way not known fresh).
/// Unreadable bytes count as a marker.
pub fn marks_stale(marker: Option<&[u8]>, value: &[u8]) -> bool {
    match marker {
        None => false,
        Some(m) => match decode_entry_ref(m) {
            Some(EntryRef::Fresh { value_hash: h }) => h != value_hash(value),
            _ => true,
        },
    }
}

/// The first bytes of every [`Entry::Stale`] (the format's header and the
/// variant): what a lookup's first read may replace with its lease.
pub fn stale_prefix() -> &'static [u8] {
    static PREFIX: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    PREFIX.get_or_init(|| encode_entry(&Entry::Stale { at_ms: 0, nonce: 0 })[..3].to_vec())
}

/// Decodes without copying the payload; `None` for garbage (trailing bytes
/// included).
pub fn decode_entry_ref(bytes: &[u8]) -> Option<EntryRef<'_>> {
    match bytes {
        // A value, read on every hit: its fields read directly, as postcard
        // lays them out (serde's enum machinery cost a hit about 300
        // instructions). The same bytes decode the same way as through
        // postcard (test `the_value_fast_path_agrees_with_postcard`).
        [MAGIC, LAYOUT, 0, rest @ ..] => value_ref(rest),
        [MAGIC, LAYOUT, rest @ ..] => match postcard::take_from_bytes::<EntryRef<'_>>(rest) {
            Ok((e, [])) => Some(e),
            _ => None,
        },
        _ => None,
    }
}

/// The fields of an [`EntryRef::Value`] after its variant index: zigzag
/// varint version, varint fill time and layout, a 0/1 bool, a varint length
/// and exactly that many payload bytes.
fn value_ref(b: &[u8]) -> Option<EntryRef<'_>> {
    let (zz, b) = varint(b)?;
    let version = ((zz >> 1) as i64) ^ -((zz & 1) as i64);
    let (filled_ms, b) = varint(b)?;
    let (layout, b) = varint(b)?;
    let (compressed, b) = match b {
        [0, rest @ ..] => (false, rest),
        [1, rest @ ..] => (true, rest),
        _ => return None,
    };
    let (len, payload) = varint(b)?;
    if usize::try_from(len).ok()? != payload.len() {
        return None;
    }
    Some(EntryRef::Value {
        version,
        filled_ms,
        layout,
        compressed,
        payload,
    })
}

/// A postcard (LEB128) varint of a u64 and the bytes after it; `None` when
/// cut or over 64 bits, as postcard refuses it.
#[inline]
fn varint(b: &[u8]) -> Option<(u64, &[u8])> {
    // One byte (a small number) is the common case of every field but the
    // fill time and the layout.
    if let [byte @ 0..=0x7f, rest @ ..] = b {
        return Some((u64::from(*byte), rest));
    }
    // Those two (6 and up to 10 bytes) are read eight bytes at a time:
    // a byte at a time was a tenth of an in-process hit.
    let Some(word) = b.first_chunk::<8>() else {
        return varint_bytewise(b);
    };
    let x = u64::from_le_bytes(*word);
    let ends = !x & 0x8080_8080_8080_8080;
    if ends != 0 {
        let n = (ends.trailing_zeros() / 8 + 1) as usize;
        let x = match n {
            8 => x,
            n => x & ((1u64 << (8 * n)) - 1),
        };
        return Some((gather7(x), &b[n..]));
    }
    // Eight bytes with their continuation bit: 56 bits, then the last two
    // at most, the tenth holding bit 63 alone.
    let low = gather7(x);
    match &b[8..] {
        [b8 @ 0..=0x7f, rest @ ..] => Some((low | u64::from(*b8) << 56, rest)),
        [b8, b9 @ 0..=1, rest @ ..] => Some((
            low | u64::from(b8 & 0x7f) << 56 | u64::from(*b9) << 63,
            rest,
        )),
        _ => None,
    }
}

/// The low seven bits of each of the eight bytes of `x` (little-endian),
/// packed: the value bits of eight varint bytes.
#[inline]
fn gather7(x: u64) -> u64 {
    let x = x & 0x7f7f_7f7f_7f7f_7f7f;
    let x = (x & 0x007f_007f_007f_007f) | ((x & 0x7f00_7f00_7f00_7f00) >> 1);
    let x = (x & 0x0000_3fff_0000_3fff) | ((x & 0x3fff_0000_3fff_0000) >> 2);
    (x & 0x0000_0000_0fff_ffff) | ((x & 0x0fff_ffff_0000_0000) >> 4)
}

/// [`varint`] a byte at a time (fewer than eight bytes left).
fn varint_bytewise(b: &[u8]) -> Option<(u64, &[u8])> {
    let mut v = 0u64;
    let mut shift = 0u32;
    let mut rest = b;
    while let [byte, tail @ ..] = rest {
        rest = tail;
        if shift == 63 && *byte > 1 {
            return None;
        }
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some((v, rest));
        }
        shift += 7;
        if shift > 63 {
            return None;
        }
    }
    None
}

/// Whether `bytes` may hold an [`Entry::Value`] (sealed or not): they do
/// not start like a lease or a marker of this format. Lets the read path tell
/// the values it must check from the entries that are not values at all.
pub fn may_be_value(bytes: &[u8]) -> bool {
    // The third byte is postcard's variant index; `Value` is the first.
    !matches!(bytes, [MAGIC, LAYOUT, v, ..] if *v != 0)
}

/// The result of decoding raw cache bytes.
#[derive(Debug)]
pub enum Decoded {
    /// The bytes hold this entry.
    Entry(Entry),
    /// The bytes are not an entry of this layout (a miss for the read path).
    Garbage,
}

/// The bytes of an entry: magic, layout version, postcard.
pub fn encode_entry(e: &Entry) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        16 + if let Entry::Value { payload, .. } = e {
            payload.len()
        } else {
            0
        },
    );
    out.push(MAGIC);
    out.push(LAYOUT);
    // Encoding into a Vec cannot fail for these plain types.
    postcard::to_io(e, &mut out).expect("postcard encodes into a Vec");
    out
}

/// Decodes cache bytes, copying the payload (see [`decode_entry_ref`]).
pub fn decode_entry(bytes: &[u8]) -> Decoded {
    match bytes {
        [MAGIC, LAYOUT, rest @ ..] => match postcard::take_from_bytes::<Entry>(rest) {
            Ok((e, [])) => Decoded::Entry(e),
            _ => Decoded::Garbage,
        },
        _ => Decoded::Garbage,
    }
}

/// Encodes a class's result for the payload of an [`Entry::Value`].
pub fn encode_payload<T: Serialize>(v: &T) -> Result<Vec<u8>, postcard::Error> {
    postcard::to_allocvec(v)
}

/// Decodes a payload; `None` when the bytes are not a `T` (e.g. the row type
/// changed without a version bump): the read path refills.
pub fn decode_payload<T: DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    postcard::from_bytes(bytes).ok()
}

/// Compresses a payload (lz4, size-prepended).
pub fn compress(payload: &[u8]) -> Vec<u8> {
    lz4_flex::compress_prepend_size(payload)
}

/// Decompresses a payload; `None` on corrupt input.
pub fn decompress(bytes: &[u8]) -> Option<Vec<u8>> {
    lz4_flex::decompress_size_prepended(bytes).ok()
}

/// The clock of entries: milliseconds since the Unix epoch (0 if the clock is
/// before it). Wall time, not `Instant`: entries are compared across processes.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What postcard itself makes of `bytes` (the reference).
    fn through_postcard(bytes: &[u8]) -> Option<EntryRef<'_>> {
        match bytes {
            [MAGIC, LAYOUT, rest @ ..] => match postcard::take_from_bytes::<EntryRef<'_>>(rest) {
                Ok((e, [])) => Some(e),
                _ => None,
            },
            _ => None,
        }
    }

    #[test]
    fn varints_read_eight_bytes_at_a_time_agree_with_postcard() {
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut cases: Vec<Vec<u8>> = Vec::new();
        for shift in 0..64 {
            for v in [
                1u64 << shift,
                (1u64 << shift) - 1,
                next() >> shift,
                u64::MAX,
            ] {
                let mut b = postcard::to_allocvec(&v).unwrap();
                b.extend_from_slice(&[0x85, 3]);
                cases.push(b);
            }
        }
        // Arbitrary bytes: long runs of continuation bits, non-canonical
        // forms, tenth bytes over 1, cuts.
        for _ in 0..20_000 {
            let len = (next() % 13) as usize;
            let high = next();
            cases.push(
                (0..len)
                    .map(|i| (next() as u8 & 0x7f) | if high >> i & 1 == 1 { 0x80 } else { 0 })
                    .collect(),
            );
        }
        for b in cases {
            let by_postcard = postcard::take_from_bytes::<u64>(&b).ok();
            assert_eq!(varint(&b), by_postcard, "{b:02x?}");
            assert_eq!(varint_bytewise(&b), by_postcard, "{b:02x?}");
        }
    }

    #[test]
    fn the_value_fast_path_agrees_with_postcard() {
        let same =
            |a: Option<EntryRef<'_>>, b: Option<EntryRef<'_>>| format!("{a:?}") == format!("{b:?}");
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut checked = 0;
        for version in [0i64, 1, -1, 63, -64, 300, i64::MIN, i64::MAX] {
            for payload_len in [0usize, 1, 127, 128, 300] {
                let e = Entry::Value {
                    version,
                    filled_ms: next() >> (next() % 64),
                    layout: next(),
                    compressed: next() % 2 == 0,
                    payload: (0..payload_len).map(|i| i as u8).collect(),
                };
                let bytes = encode_entry(&e);
                assert!(matches!(
                    decode_entry_ref(&bytes),
                    Some(EntryRef::Value { .. })
                ));
                // Every cut, every extension, and bytes changed one at a time.
                for cut in 0..bytes.len() + 2 {
                    let mut b = bytes[..cut.min(bytes.len())].to_vec();
                    if cut > bytes.len() {
                        b.push(0);
                    }
                    assert!(same(decode_entry_ref(&b), through_postcard(&b)), "{b:?}");
                    checked += 1;
                }
                for i in 3..bytes.len() {
                    for v in [0u8, 1, 2, 0x7f, 0x80, 0xff] {
                        let mut b = bytes.clone();
                        b[i] = v;
                        assert!(same(decode_entry_ref(&b), through_postcard(&b)), "{b:?}");
                        checked += 1;
                    }
                }
            }
        }
        // Random bytes after a value's header.
        for _ in 0..20_000 {
            let n = (next() % 40) as usize;
            let mut b = vec![MAGIC, LAYOUT, 0];
            b.extend((0..n).map(|_| next() as u8));
            assert!(same(decode_entry_ref(&b), through_postcard(&b)), "{b:?}");
            checked += 1;
        }
        assert!(checked > 20_000);
    }

    #[test]
    fn round_trip() {
        let e = Entry::Value {
            version: 3,
            filled_ms: 17,
            layout: 9,
            compressed: false,
            payload: encode_payload(&("a", 1u32)).unwrap(),
        };
        let bytes = encode_entry(&e);
        match decode_entry(&bytes) {
            Decoded::Entry(d) => assert_eq!(d, e),
            Decoded::Garbage => panic!("did not decode"),
        }
    }

    #[test]
    fn the_borrowed_view_reads_the_same_bytes() {
        let payload = encode_payload(&("row", 7u32)).unwrap();
        let e = Entry::Value {
            version: -2,
            filled_ms: 99,
            layout: 5,
            compressed: true,
            payload: payload.clone(),
        };
        match decode_entry_ref(&encode_entry(&e)) {
            Some(EntryRef::Value {
                version,
                filled_ms,
                layout: 5,
                compressed,
                payload: p,
            }) => {
                assert_eq!(
                    (version, filled_ms, compressed, p),
                    (-2, 99, true, &payload[..])
                );
            }
            other => panic!("{other:?}"),
        }
        let lease = Entry::Lease { token: 5, at_ms: 6 };
        assert!(matches!(
            decode_entry_ref(&encode_entry(&lease)),
            Some(EntryRef::Lease { token: 5, at_ms: 6 })
        ));
        assert!(decode_entry_ref(b"garbage").is_none());
    }

    #[test]
    fn garbage_truncation_and_old_layouts_are_garbage() {
        let e = Entry::Value {
            version: 3,
            filled_ms: 17,
            layout: 1,
            compressed: false,
            payload: vec![1; 40],
        };
        let bytes = encode_entry(&e);
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(matches!(decode_entry(&trailing), Decoded::Garbage));
        assert!(decode_entry_ref(&trailing).is_none());
        for cut in 0..bytes.len() {
            assert!(
                matches!(decode_entry(&bytes[..cut]), Decoded::Garbage),
                "cut at {cut}"
            );
        }
        let mut old = bytes.clone();
        old[1] = 0;
        assert!(matches!(decode_entry(&old), Decoded::Garbage));
        assert!(matches!(decode_entry(b"hello world"), Decoded::Garbage));
        assert!(matches!(decode_entry(&[]), Decoded::Garbage));
    }

    #[test]
    fn compression_round_trips_and_rejects_garbage() {
        let payload = vec![7u8; 10_000];
        let c = compress(&payload);
        assert!(c.len() < 1000);
        assert_eq!(decompress(&c).as_deref(), Some(&payload[..]));
        assert_eq!(decompress(&[255, 255, 255, 127, 1, 2]), None);
    }

    #[test]
    fn payload_of_wrong_type_is_none() {
        let bytes = encode_payload(&"text").unwrap();
        assert_eq!(decode_payload::<Vec<(u64, u64, u64)>>(&bytes), None);
    }
}
