//! The built-in collector: every container's resource use, read from cgroups and network
//! namespaces, and the host's own metrics, on a fixed interval.

pub(crate) mod cgroup;
pub mod host;
pub(crate) mod names;
pub(crate) mod net;

use serde::Deserialize;

/// A family of container metric names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// The Agent's generic container check: `container.cpu.usage`, `container.memory.usage`, ...
    Container,
    /// The Agent's Docker check: `docker.cpu.usage`, `docker.mem.rss`, `docker.mem.in_use`, ...
    Docker,
}
