//! The forwarder: every flush, serialized for the Datadog intake and for Prometheus remote
//! write, delivered to each configured endpoint through its own retry queue.

pub mod compress;
pub mod datadog;
pub(crate) mod payload;
pub(crate) mod protobuf;
pub mod remote_write;
#[cfg(any(test, feature = "intake-schema"))]
pub mod schema;
