//! One module per command of `flash`. Each takes its parsed arguments and
//! returns when done; the output is the command's (stdout), errors go back to
//! `main`, which prints them and sets the exit code.

pub mod bench;
pub mod demo;
pub mod ops;
pub mod stress;
