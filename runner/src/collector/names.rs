//! Container metric names: the Agent's generic `container.*` family, and its Docker check's
//! `docker.*` family derived from it as the Agent derives it (`docker/adapter.go`): renamed,
//! CPU times converted from nanoseconds to USER_HZ (1/100 s, so a rate of 100 is one whole
//! core), some generic names left out (`container.memory.usage`, `container.net.*`), and the
//! Docker check's own additions (`docker.mem.in_use`, `docker.mem.sw_in_use`,
//! `docker.mem.sw_limit`, `docker.cpu.shares`, `docker.net.bytes_*`, every one tagged
//! `runtime:docker`).

use crate::check::MetricType;

/// One container metric, by its generic name, before a family is chosen.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Reading {
    /// A generic `container.*` name, or a `docker.*` name only the Docker family has.
    pub(crate) name: &'static str,
    pub(crate) kind: MetricType,
    pub(crate) value: f64,
    /// Tags beside the container's (`device:sda`, `interface:eth0`).
    pub(crate) tags: Vec<String>,
}

impl Reading {
    pub(crate) fn new(name: &'static str, kind: MetricType, value: f64) -> Self {
        Self {
            name,
            kind,
            value,
            tags: Vec::new(),
        }
    }

    pub(crate) fn tagged(mut self, tags: Vec<String>) -> Self {
        self.tags = tags;
        self
    }
}

/// Nanoseconds to USER_HZ, the Agent's `ConvertNanosecondsToHz`.
const NANOS_PER_HZ: f64 = 1e7;

/// The name (and value factor) a generic reading has in the Docker family; `None` when the
/// Docker check does not report it.
pub(crate) fn docker(name: &str) -> Option<(&'static str, f64)> {
    let renamed = match name {
        "container.uptime" => "docker.uptime",
        "container.cpu.usage" => return Some(("docker.cpu.usage", 1.0 / NANOS_PER_HZ)),
        "container.cpu.user" => return Some(("docker.cpu.user", 1.0 / NANOS_PER_HZ)),
        "container.cpu.system" => return Some(("docker.cpu.system", 1.0 / NANOS_PER_HZ)),
        "container.cpu.throttled" => {
            return Some(("docker.cpu.throttled.time", 1.0 / NANOS_PER_HZ));
        }
        "container.cpu.limit" => return Some(("docker.cpu.limit", 1.0 / NANOS_PER_HZ)),
        "container.cpu.throttled.periods" => "docker.cpu.throttled",
        "container.memory.kernel" => "docker.kmem.usage",
        "container.memory.limit" => "docker.mem.limit",
        "container.memory.soft_limit" => "docker.mem.soft_limit",
        "container.memory.rss" => "docker.mem.rss",
        "container.memory.cache" => "docker.mem.cache",
        "container.memory.swap" => "docker.mem.swap",
        "container.memory.oom_events" => "docker.mem.failed_count",
        "container.memory.working_set" => "docker.mem.working_set",
        "container.io.read" => "docker.io.read_bytes",
        "container.io.read.operations" => "docker.io.read_operations",
        "container.io.write" => "docker.io.write_bytes",
        "container.io.write.operations" => "docker.io.write_operations",
        "container.pid.thread_count" => "docker.thread.count",
        "container.pid.thread_limit" => "docker.thread.limit",
        "container.pid.open_files" => "docker.container.open_fds",
        "docker.mem.in_use" => "docker.mem.in_use",
        "docker.mem.sw_in_use" => "docker.mem.sw_in_use",
        "docker.mem.sw_limit" => "docker.mem.sw_limit",
        "docker.cpu.shares" => "docker.cpu.shares",
        "docker.net.bytes_sent" => "docker.net.bytes_sent",
        "docker.net.bytes_rcvd" => "docker.net.bytes_rcvd",
        _ => return None,
    };
    Some((renamed, 1.0))
}

/// Whether a reading belongs to the generic family (the `docker.*` additions do not).
pub(crate) fn generic(name: &str) -> bool {
    name.starts_with("container.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_names_follow_the_agents_adapter() {
        assert_eq!(
            docker("container.cpu.usage"),
            Some(("docker.cpu.usage", 1e-7))
        );
        assert_eq!(
            docker("container.memory.oom_events"),
            Some(("docker.mem.failed_count", 1.0))
        );
        assert_eq!(
            docker("container.io.write"),
            Some(("docker.io.write_bytes", 1.0))
        );
        assert_eq!(
            docker("container.memory.usage"),
            None,
            "not in the Docker check"
        );
        assert_eq!(docker("container.net.sent"), None, "docker.net.* instead");
        assert_eq!(
            docker("docker.mem.in_use"),
            Some(("docker.mem.in_use", 1.0))
        );
        assert!(generic("container.memory.usage") && !generic("docker.mem.in_use"));
    }
}
