//! Seals on the values of a shared cache: every value that a server (which
//! other processes and clients can write) holds ends with a 16-byte tag, a
//! keyed BLAKE3 hash of the key it was stored under and of the entry's
//! bytes. A value read under another key (another row's, another class's,
//! another prefix's or version's), with a flipped byte, cut short or with
//! bytes added, does not match its tag and is a miss, refilled. With a secret
//! ([`crate::FlashBuilder::entry_secret`]) the hash key is derived from it, so
//! the tag is a MAC: a client without the secret cannot write a value that
//! flash serves.
//!
//! The layout fingerprint inside the entry ([`crate::ClassSpec::layout`]) is
//! checked on every store, the in-process one included: old and new code
//! sharing one cache during a rolling deploy read each other's values of a
//! changed model as misses.
//!
//! The in-process store is written by this process only: its values carry
//! no seal, and reading them computes none.

use std::fmt;

/// Inputs up to this size are hashed in one call (BLAKE3's chunk).
const ONE_SHOT: usize = 1024;

thread_local! {
    static ONE_SHOT_BUF: std::cell::RefCell<Vec<u8>> =
        std::cell::RefCell::new(Vec::with_capacity(ONE_SHOT));
}

/// Bytes of the tag at the end of a sealed value.
pub const TAG_LEN: usize = 16;

/// A stable 64-bit fingerprint of a value layout described by `parts` (for
/// a model: each column's name, type and nullability, in field order), for
/// [`crate::ClassSpec::layout`]. The same parts give the same fingerprint in
/// every build and process.
pub fn fingerprint<S: AsRef<str>>(parts: impl IntoIterator<Item = S>) -> u64 {
    let mut h = blake3::Hasher::new_derive_key("flash value layout");
    for p in parts {
        let p = p.as_ref();
        h.update(&(p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    let d = h.finalize();
    let b = d.as_bytes();
    u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

/// Why read bytes were not served (the label of `flash_rejected_entries_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reject {
    /// The tag does not match: another key's or class's value, a changed
    /// byte, a cut or an extension, or a writer without the secret.
    Tag,
    /// The value was filled by code whose model layout differs.
    Layout,
    /// The bytes are not a value entry of this format.
    Garbage,
}

impl Reject {
    /// The reason's name, for metrics.
    pub fn label(self) -> &'static str {
        match self {
            Reject::Tag => "tag",
            Reject::Layout => "layout",
            Reject::Garbage => "garbage",
        }
    }
}

/// The hash key of the tags of one [`crate::Flash`] handle.
#[derive(Clone)]
pub struct Sealer {
    key: [u8; 32],
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sealer(..)")
    }
}

impl Sealer {
    /// Tags without a secret: they check the key and the bytes, and anyone
    /// can compute them.
    pub fn unkeyed() -> Self {
        Sealer {
            key: blake3::derive_key("flash cache entry tag, no secret", b""),
        }
    }

    /// Tags keyed by `secret`: only holders of the secret can make them.
    pub fn with_secret(secret: &[u8]) -> Self {
        Sealer {
            key: blake3::derive_key("flash cache entry tag, keyed", secret),
        }
    }

    fn tag(&self, key: &str, body: &[u8]) -> [u8; TAG_LEN] {
        // The key's length first: no (key, body) pair hashes like another.
        let len = (key.len() as u64).to_le_bytes();
        let total = len.len() + key.len() + body.len();
        // One chunk or less (most rows) is hashed in one call from a
        // thread's buffer: the incremental hasher's bookkeeping cost as much
        // as the hash itself. The tag is the hash's first bytes either way.
        let hash = match total <= ONE_SHOT {
            true => ONE_SHOT_BUF.with_borrow_mut(|buf| {
                buf.clear();
                buf.extend_from_slice(&len);
                buf.extend_from_slice(key.as_bytes());
                buf.extend_from_slice(body);
                blake3::keyed_hash(&self.key, buf)
            }),
            false => {
                let mut h = blake3::Hasher::new_keyed(&self.key);
                h.update(&len);
                h.update(key.as_bytes());
                h.update(body);
                h.finalize()
            }
        };
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(&hash.as_bytes()[..TAG_LEN]);
        out
    }

    /// Appends the tag of `body` stored under `key`.
    pub fn seal(&self, key: &str, mut body: Vec<u8>) -> Vec<u8> {
        let tag = self.tag(key, &body);
        body.extend_from_slice(&tag);
        body
    }

    /// The entry bytes of a sealed value read under `key`, if its tag matches.
    pub fn open<'a>(&self, key: &str, bytes: &'a [u8]) -> Result<&'a [u8], Reject> {
        let cut = bytes.len().checked_sub(TAG_LEN).ok_or(Reject::Tag)?;
        let (body, tag) = bytes.split_at(cut);
        // Constant time: the comparison must not tell a forger how close it got.
        let expected = blake3::Hash::from_bytes({
            let mut full = [0u8; 32];
            full[..TAG_LEN].copy_from_slice(&self.tag(key, body));
            full
        });
        let mut got = [0u8; 32];
        got[..TAG_LEN].copy_from_slice(tag);
        if expected == blake3::Hash::from_bytes(got) {
            Ok(body)
        } else {
            Err(Reject::Tag)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one-shot hash gives the tags values sealed before it carry (the
    /// incremental hasher's output stream), short and long bodies alike.
    #[test]
    fn tags_are_those_of_the_incremental_hash() {
        let s = Sealer::with_secret(b"k");
        for len in [0, 10, 100, ONE_SHOT - 20, ONE_SHOT, 5000] {
            let body = vec![7u8; len];
            let key = "flash:i__default__Event__7__v0";
            let mut h = blake3::Hasher::new_keyed(&s.key);
            h.update(&(key.len() as u64).to_le_bytes());
            h.update(key.as_bytes());
            h.update(&body);
            let mut want = [0u8; TAG_LEN];
            h.finalize_xof().fill(&mut want);
            assert_eq!(s.tag(key, &body), want, "body of {len} bytes");
        }
    }

    #[test]
    fn a_seal_binds_key_bytes_and_secret() {
        let s = Sealer::unkeyed();
        let sealed = s.seal("k1", b"entry".to_vec());
        assert_eq!(s.open("k1", &sealed), Ok(&b"entry"[..]));
        assert_eq!(s.open("k2", &sealed), Err(Reject::Tag));
        let mut flipped = sealed.clone();
        flipped[1] ^= 1;
        assert_eq!(s.open("k1", &flipped), Err(Reject::Tag));
        assert_eq!(s.open("k1", &sealed[..sealed.len() - 1]), Err(Reject::Tag));
        let mut longer = sealed.clone();
        longer.push(0);
        assert_eq!(s.open("k1", &longer), Err(Reject::Tag));
        assert_eq!(s.open("k1", b"short"), Err(Reject::Tag));
        let keyed = Sealer::with_secret(b"s3cret");
        assert_eq!(keyed.open("k1", &sealed), Err(Reject::Tag));
        let by_keyed = keyed.seal("k1", b"entry".to_vec());
        assert_eq!(keyed.open("k1", &by_keyed), Ok(&b"entry"[..]));
        assert_eq!(
            Sealer::with_secret(b"other").open("k1", &by_keyed),
            Err(Reject::Tag)
        );
    }
}
