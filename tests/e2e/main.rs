//! End-to-end tests: real plugins through the real host, real HTTP servers, the real `runner`
//! binary. One test binary, so the plugin host and wasmtime are linked once.
//!
//! Needs the plugins built first: `make test` does it.

mod chef;
mod cli;
mod collector;
mod confd;
mod containers;
mod deb;
mod dogstatsd;
mod forwarder;
mod health;
mod host_metrics;
mod hostile_confd;
mod hostile_labels;
mod hostile_plugins;
mod http_check;
mod image;
mod live_confd;
mod live_plugins;
mod load;
mod pipeline;
mod postgres;
mod sandbox;
mod scaffold;
mod sql;
