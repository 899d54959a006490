//! Floors: what any cache read of the same entries costs without flash's
//! read path, the bytes read and decoded into rows with flash's own codec
//! (`flash_core::codec`, the calls the read path makes). A server's values
//! end with a seal's tag ([`flash_core::seal`]): the floor cuts it off
//! unchecked, so checking it counts as flash's cost (scenario 11 times it).

use flash_core::codec::{decode_entry_ref, decode_payload, decompress, EntryRef};
use flash_core::seal::{Sealer, TAG_LEN};
use serde::de::DeserializeOwned;

/// The row in an entry's bytes as the read path decodes it; `sealed`: the
/// bytes end with a tag (a shared store's). `None`: not a value entry.
pub fn decode_row<T: DeserializeOwned>(bytes: &[u8], sealed: bool) -> Option<T> {
    let body = match sealed {
        true => &bytes[..bytes.len().checked_sub(TAG_LEN)?],
        false => bytes,
    };
    match decode_entry_ref(body)? {
        EntryRef::Value {
            payload,
            compressed: false,
            ..
        } => decode_payload(payload),
        EntryRef::Value { payload, .. } => decode_payload(&decompress(payload)?),
        _ => None,
    }
}

/// [`decode_row`] of a server's value whose seal is checked first, as the
/// read path checks it (the default, unkeyed seal).
pub fn decode_sealed_row<T: DeserializeOwned>(
    key: &str,
    bytes: &[u8],
    sealer: &Sealer,
) -> Option<T> {
    decode_row(sealer.open(key, bytes).ok()?, false)
}
