//! Kennel's runner: runs sandboxed check plugins on a schedule and collects what they emit.
//!
//! One module per box of the data flow: [`config`] (the runner's own file and conf.d),
//! [`plugin`] (the wasmtime host and its capabilities), [`scheduler`] (when each instance runs),
//! [`aggregator`] (the maths between raw check samples and submitted series), and [`cli`]
//! (`runner run`, `runner test-check`), which wires them together.

pub mod aggregator;
pub mod check;
pub mod cli;
pub mod config;
pub mod containers;
pub mod discovery;
pub mod dogstatsd;
pub mod openmetrics;
pub mod plugin;
pub mod scheduler;
pub mod status;
