//! The library half of `flash-cli`: the operator commands ([`ops`]), which an
//! application can mount in its own binary.

pub mod decode;
pub mod ops;
