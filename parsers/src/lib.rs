//! Kennel's parsers of untrusted input, apart from the runner: they need neither wasmtime nor
//! tokio, so their tests and fuzz targets (`fuzz/`) build in seconds rather than in the
//! quarter of an hour the whole runner takes with sanitizer coverage.
//!
//! - [`dogstatsd`]: the DogStatsD wire format, from any bytes a sender can put in a datagram;
//! - [`yaml_bounds`]: the bounds a conf.d file must keep (length, nesting, alias expansion),
//!   checked on libyaml's events before serde expands anything;
//! - [`confd`]: one conf.d file's text, its reserved keys checked, errors that never quote it;
//! - [`autodiscovery`]: check templates from a container's labels, and template variables
//!   resolved against a container's facts.
//!
//! The runner re-exports them where they are used (`runner::dogstatsd::parser`,
//! `runner::config::confd`, `runner::discovery::template`).

pub mod autodiscovery;
pub mod confd;
pub mod dogstatsd;
pub mod yaml_bounds;
