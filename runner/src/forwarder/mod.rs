//! The forwarder: every flush, serialized for the Datadog intake and for Prometheus remote
//! write, delivered to each configured endpoint through its own retry queue.

pub(crate) mod compress;
pub(crate) mod datadog;
pub(crate) mod payload;
pub(crate) mod protobuf;
pub(crate) mod remote_write;
#[cfg(any(test, feature = "intake-schema"))]
pub mod schema;
