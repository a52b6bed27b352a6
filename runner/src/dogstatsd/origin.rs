//! Origin detection: which container sent a datagram, from the sender's pid.
//!
//! Over a Unix socket with `SO_PASSCRED`, the kernel attaches the sending process's pid to each
//! datagram. The pid's cgroup (`<procfs>/<pid>/cgroup`) names its container (read by
//! [`cgroup::container_id`]). Unlike a client's `|c:` field, this cannot be spoofed by the
//! sender.
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

use crate::containers::cgroup;

pub(crate) const CACHE_TTL: Duration = Duration::from_secs(60);
pub(crate) const MAX_ENTRIES: usize = 16_384;

/// Where a datagram came from, as far as the kernel says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// No credentials came with it (UDP, or origin detection off).
    Unknown,
    /// A process outside any container (its pid).
    Host(u32),
    /// A process in this container (its full id).
    Container(Arc<str>),
}

/// Why a pid could not be mapped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum OriginError {
    #[error(
        "the sender's pid is 0: it is in another pid namespace (run the runner in the host's pid namespace)"
    )]
    OtherNamespace,
    #[error("cannot read {path}: {reason}")]
    Unreadable { path: String, reason: String },
}

/// Maps pids to containers, with a cache.
pub(crate) struct OriginResolver {
    procfs: PathBuf,
    cache: HashMap<u32, (Origin, Instant)>,
}

impl OriginResolver {
    pub(crate) fn new(procfs: PathBuf) -> Self {
        Self {
            procfs,
            cache: HashMap::new(),
        }
    }

    /// The origin of a datagram sent by `pid`, at `now`.
    pub(crate) fn resolve(&mut self, pid: u32, now: Instant) -> Result<Origin, OriginError> {
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
        let origin = match cgroup::container_id(&text) {
            Some(id) => Origin::Container(id.into()),
            None => Origin::Host(pid),
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

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f1b2c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f809";

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
            Origin::Host(42),
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
