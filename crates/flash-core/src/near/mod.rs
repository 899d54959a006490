//! The near tier: an in-process copy (moka, bounded in bytes) of entries read
//! from a shared cache server, kept coherent by an invalidation channel
//! ([`NearBus`]) that every process publishes its invalidations on.
//!
//! Coherence, and why each piece is there:
//!
//! * The writing process drops its own near entries for a write's keys
//!   before the invalidation call returns (read-your-writes in that process),
//!   then publishes the keys; every process drops them when they arrive.
//! * A process serves near entries only while its channel is known healthy:
//!   it heard a message (every process publishes a heartbeat) within
//!   [`NearConfig::bound`]. Messages on the channel arrive in the order the
//!   server took them, so having heard a heartbeat taken after an
//!   invalidation means having applied that invalidation. When the channel
//!   goes quiet or drops, the tier is bypassed, and it is emptied before the
//!   first message after the gap marks it healthy again.
//! * A near fill must not outlive an invalidation that arrived while its
//!   remote read was in flight (the read may have returned the bytes the
//!   write replaced): the fill notes the key's generation before the read
//!   and is dropped if an invalidation of the key (or a
//!   clear) changed it by the time it is stored.
//! * Every near entry expires after [`NearConfig::ttl`], whatever happens:
//!   the bound when a publish is lost while the channel stays healthy.

mod tier;

pub(crate) use tier::{Near, NearTier, Token};
pub use tier::{NearBus, NearConfig, NearStats};
