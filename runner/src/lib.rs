//! Kennel's runner: runs sandboxed check plugins on a schedule, serves DogStatsD, aggregates
//! everything and hands it to its outputs.
//!
//! One module per box of the data flow, wired in one place, [`pipeline`]:
//! - inputs: [`dogstatsd`] (listen, decode into samples), [`scheduler`] running [`plugin`]s
//!   (the wasmtime host and its capabilities) for the instances [`discovery`] resolves from
//!   [`config`] (the runner's file and conf.d) and from containers;
//! - [`aggregator`]: contexts, buckets and the aggregation loop;
//! - outputs ([`sink`]): [`openmetrics`] (the `/metrics` page) and [`forwarder`] (the Datadog
//!   intake and Prometheus remote write, a retry queue per endpoint);
//! - read by all, depending on none: [`check`] (instances and run reports), [`containers`]
//!   (the container store, tags, cgroups), [`telemetry`] (the runner's own metrics) and
//!   [`health`] (each component's state);
//! - [`status`] and [`endpoint`] serve `/health` and `/status`; [`cli`] parses the command line.

pub mod aggregator;
pub mod check;
pub mod cli;
pub mod collector;
pub mod config;
pub mod containers;
pub mod discovery;
pub mod dogstatsd;
pub(crate) mod endpoint;
pub mod forwarder;
pub mod health;
pub mod openmetrics;
pub mod pipeline;
pub mod plugin;
pub mod scheduler;
pub mod sink;
pub(crate) mod status;
pub mod telemetry;
