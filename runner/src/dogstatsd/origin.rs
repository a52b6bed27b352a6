//! Origin detection: which container sent a datagram, from the sender's pid.
//!
//! Over a Unix socket with `SO_PASSCRED`, the kernel attaches the sending process's pid to each
//! datagram. The pid's cgroup (`<procfs>/<pid>/cgroup`) names its container: Docker, containerd
//! and CRI-O put the 64-hex-digit container id in the cgroup path, in both the cgroup v1
//! (`12:memory:/docker/<id>`) and v2 (`0::/system.slice/docker-<id>.scope`) forms. Unlike a
//! client's `|c:` field, this cannot be spoofed by the sender.
//!
//! Answers, including "not in a container", are cached per pid for [`CACHE_TTL`] (the Datadog
//! Agent's one minute): a pid is reused only after its process exits, and a process does not
//! change container. The cache holds at most [`MAX_ENTRIES`] pids; past that, expired entries are
//! dropped, and if none are, the whole cache is (a burst of short-lived senders must not grow it
//! without bound).
//!
//! The procfs root is configuration (`procfs_root`), `/host/proc` when the runner itself runs
//! in a container with the host's procfs mounted there.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const CACHE_TTL: Duration = Duration::from_secs(60);
pub const MAX_ENTRIES: usize = 16_384;

/// Where a datagram came from, as far as the kernel says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// No credentials came with it (UDP, or origin detection off).
    Unknown,
    /// A process outside any container.
    Host,
    /// A process in this container (its full id).
    Container(Arc<str>),
}

/// Why a pid could not be mapped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OriginError {
    #[error(
        "the sender's pid is 0: it is in another pid namespace (run the runner in the host's pid namespace)"
    )]
    OtherNamespace,
    #[error("cannot read {path}: {reason}")]
    Unreadable { path: String, reason: String },
}

/// Maps pids to containers, with a cache.
pub struct OriginResolver {
    procfs: PathBuf,
    cache: HashMap<u32, (Origin, Instant)>,
}

impl OriginResolver {
    pub fn new(procfs: PathBuf) -> Self {
        Self {
            procfs,
            cache: HashMap::new(),
        }
    }

    /// The origin of a datagram sent by `pid`, at `now`.
    pub fn resolve(&mut self, pid: u32, now: Instant) -> Result<Origin, OriginError> {
        if pid == 0 {
            return Err(OriginError::OtherNamespace);
        }
        if let Some((origin, at)) = self.cache.get(&pid)
            && now.duration_since(*at) < CACHE_TTL
        {
            return Ok(origin.clone());
        }
        let path = self.procfs.join(pid.to_string()).join("cgroup");
        let text = std::fs::read_to_string(&path).map_err(|e| OriginError::Unreadable {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let origin = match container_id(&text) {
            Some(id) => Origin::Container(id.into()),
            None => Origin::Host,
        };
        if self.cache.len() >= MAX_ENTRIES {
            self.cache
                .retain(|_, (_, at)| now.duration_since(*at) < CACHE_TTL);
            if self.cache.len() >= MAX_ENTRIES {
                self.cache.clear();
            }
        }
        self.cache.insert(pid, (origin.clone(), now));
        Ok(origin)
    }
}

/// The container id in a `/proc/<pid>/cgroup` file: the last 64-hex-digit path segment (or
/// segment part, as in `docker-<id>.scope`) of any line.
pub fn container_id(cgroup: &str) -> Option<&str> {
    cgroup.lines().rev().find_map(|line| {
        let path = line.splitn(3, ':').nth(2)?;
        path.rsplit('/').find_map(|segment| {
            let segment = segment.strip_suffix(".scope").unwrap_or(segment);
            let candidate = segment.rsplit(['-', ':']).next()?;
            (candidate.len() == 64 && candidate.bytes().all(|b| b.is_ascii_hexdigit()))
                .then_some(candidate)
        })
    })
}

/// The cgroup path holding container `id` in a `/proc/<pid>/cgroup` text: the unified (v2)
/// hierarchy's if it names the container, else the memory controller's, else the first that
/// does.
pub fn container_cgroup<'a>(cgroup: &'a str, id: &str) -> Option<&'a str> {
    let paths: Vec<(&str, &str)> = cgroup
        .lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            path.contains(id).then_some((controllers, path))
        })
        .collect();
    paths
        .iter()
        .find(|(controllers, _)| controllers.is_empty())
        .or_else(|| {
            paths
                .iter()
                .find(|(controllers, _)| controllers.split(',').any(|c| c == "memory"))
        })
        .or_else(|| paths.first())
        .map(|(_, path)| *path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_containers_cgroup_path_prefers_v2_then_memory() {
        let v1 = format!("12:cpu,cpuacct:/docker/{ID}\n4:memory:/docker/{ID}\n0::/\n");
        assert_eq!(
            container_cgroup(&v1, ID),
            Some(format!("/docker/{ID}").as_str())
        );
        let v2 = format!("0::/system.slice/docker-{ID}.scope\n");
        assert_eq!(
            container_cgroup(&v2, ID),
            Some(format!("/system.slice/docker-{ID}.scope").as_str())
        );
        assert_eq!(container_cgroup("0::/user.slice\n", ID), None);
    }

    const ID: &str = "3f1b2c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f809";

    #[test]
    fn container_ids_are_found_in_cgroup_v1_and_v2_paths() {
        for cgroup in [
            format!("12:memory:/docker/{ID}\n11:cpu,cpuacct:/docker/{ID}\n"),
            format!("0::/system.slice/docker-{ID}.scope\n"),
            format!("0::/kubepods.slice/kubepods-burstable.slice/cri-containerd-{ID}.scope\n"),
            format!("0::/machine.slice/libpod-{ID}.scope/container\n"),
            format!("1:name=systemd:/kubepods/besteffort/pod1234/{ID}\n"),
        ] {
            assert_eq!(container_id(&cgroup), Some(ID), "{cgroup}");
        }
    }

    #[test]
    fn host_processes_have_no_container() {
        for cgroup in [
            "0::/user.slice/user-0.slice/session-1.scope\n",
            "0::/\n",
            "12:memory:/system.slice/ssh.service\n",
            "",
        ] {
            assert_eq!(container_id(cgroup), None, "{cgroup}");
        }
    }

    #[test]
    fn resolver_reads_procfs_and_caches_answers() {
        let procfs = std::env::temp_dir().join(format!("kennel-origin-{}", std::process::id()));
        std::fs::create_dir_all(procfs.join("42")).unwrap();
        std::fs::write(procfs.join("42/cgroup"), format!("0::/docker/{ID}\n")).unwrap();
        let mut resolver = OriginResolver::new(procfs.clone());
        let now = Instant::now();
        assert_eq!(
            resolver.resolve(42, now).unwrap(),
            Origin::Container(ID.into())
        );
        std::fs::write(procfs.join("42/cgroup"), "0::/\n").unwrap();
        assert_eq!(
            resolver.resolve(42, now + Duration::from_secs(1)).unwrap(),
            Origin::Container(ID.into()),
            "cached"
        );
        assert_eq!(
            resolver.resolve(42, now + CACHE_TTL).unwrap(),
            Origin::Host,
            "expired"
        );
        assert!(matches!(
            resolver.resolve(43, now),
            Err(OriginError::Unreadable { .. })
        ));
        assert_eq!(resolver.resolve(0, now), Err(OriginError::OtherNamespace));
        std::fs::remove_dir_all(procfs).unwrap();
    }
}
