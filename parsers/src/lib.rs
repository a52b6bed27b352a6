//! Kennel's parsers of untrusted input, apart from the runner: they need neither wasmtime nor
//! tokio, so their tests and fuzz targets (`fuzz/`) build in seconds rather than in the
//! quarter of an hour the whole runner takes with sanitizer coverage.
//!
//! - [`dogstatsd`]: the DogStatsD wire format, from any bytes a sender can put in a datagram;
//! - [`yaml_bounds`]: the bounds a conf.d file must keep (length, nesting, alias expansion),
//!   checked on libyaml's events before serde expands anything.
//!
//! The runner re-exports them where they are used (`runner::dogstatsd::parser`, the conf.d
//! loader).

pub mod dogstatsd;
pub mod yaml_bounds;
