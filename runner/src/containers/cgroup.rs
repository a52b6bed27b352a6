//! Reading a process's cgroup membership (`/proc/<pid>/cgroup`): which container it is in, and
//! where that container's cgroup is. Origin detection uses the first, the container store (and
//! the resource collector, through it) the second.
//!
//! Docker, containerd and CRI-O put the 64-hex-digit container id in the cgroup path, in both
//! the cgroup v1 (`12:memory:/docker/<id>`) and v2 (`0::/system.slice/docker-<id>.scope`)
//! forms.

/// The container id in a `/proc/<pid>/cgroup` file: the last 64-hex-digit path segment (or
/// segment part, as in `docker-<id>.scope`) of any line.
pub(crate) fn container_id(cgroup: &str) -> Option<&str> {
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
pub(crate) fn container_cgroup<'a>(cgroup: &'a str, id: &str) -> Option<&'a str> {
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
}
