//! Per-container network readings: each container's interfaces, read once per network namespace.
//!
//! What is read, and why (all under the configured `procfs_root`, so that a runner in a
//! container reads the host's `/host/proc`):
//! - the inode of `<procfs>/<pid>/net/dev`, which names the network namespace the pid is in:
//!   the kernel makes one `dev` entry per namespace, with an inode number from the same pool
//!   as the namespaces' own, unique while the namespace lives. It groups containers and finds
//!   host-network ones. Read for every container each pass with one `stat`. The Agent reads
//!   the namespace link `<pid>/ns/net` instead, which needs `CAP_SYS_PTRACE` over the target
//!   (root and more, for another user's process); `net/dev` is world-readable, so the runner
//!   collects every container's network as an unprivileged user.
//! - the same for pid 1: the host's namespace. Where pid 1 is closed to the runner (some
//!   sandboxes hide it), pid 2 is read instead: `kthreadd`, a kernel thread, always lives in
//!   the initial namespace.
//! - `<procfs>/<pid>/net/dev`: the kernel's per-interface counters of the namespace the pid is
//!   in, once per namespace. Two header lines, then per interface receive bytes, packets,
//!   errors, drops and transmit bytes, packets, errors, drops (columns 1–4 and 9–12).
//! - `<procfs>/<pid>/net/route`: the IPv4 routing table, to tell which interface is on which
//!   Docker network (below). Read only when the container has an IPv4 address.
//!
//! Following the Agent (`pkg/util/containers/metrics/system/collector_network_linux.go` for
//! the readings, `pkg/collector/corechecks/containers/generic/processor_network.go` for the
//! grouping, `pkg/collector/corechecks/containers/docker/check_network.go` for the mapping):
//! `lo` is skipped; a container in the host's namespace reports nothing (its counters are the
//! host's, reported by the host metrics); an interface is on a Docker network when one of its
//! non-default routes covers the container's address on that network.
//!
//! Where Kennel differs from the Agent, and why:
//! - **Shared namespaces are counted once, attributed to the namespace's owner.** The Agent
//!   emits a namespace shared by several containers only for a Kubernetes pod, under the pod's
//!   tags, and drops it otherwise. Kennel has no pods, and a user who runs a sidecar with
//!   `--network container:<web>` still wants `web`'s traffic, so the reading goes to one
//!   container, chosen deterministically: the one with a Docker network address (Docker gives
//!   an endpoint to the container that created the namespace, never to one that joined it
//!   with `container:<id>`), and among several (or none) the lowest id. The others are listed
//!   in [`NetnsReading::sharing`].
//! - **An interface on no known network gets no `docker_network`.** The Agent tags it with the
//!   interface's own name (`docker_network:eth0`), which reads like a network called `eth0`.
//!   And `--network none` has only `lo`, so it yields no reading at all (the Agent's legacy
//!   `eth0` → `bridge` mapping for `none` has nothing to apply to).
//! - **The most specific route wins.** The Agent maps every route that covers an address, in
//!   map order; Kennel takes, per network, the longest-prefix route, so overlapping subnets map
//!   the same way every pass.
//! - **Route addresses are read in the machine's byte order**, as the kernel prints them; the
//!   Agent assumes little-endian.
//! - **Without the host's namespace there are no readings.** The Agent then reports
//!   host-network containers with the host's counters; Kennel says what it could not read
//!   instead, since a wrong number is worse than a missing one.
//!
//! What is missing: IPv6-only networks get no `docker_network` tag (`net/ipv6_route` is not
//! read, as in the Agent). A pid recycled between the store's inspect and this read is read as
//! whatever now holds it, until the store catches up.
//!
//! Errors: a process gone between list and read (`ENOENT`, `ESRCH`) is [`NetError::Gone`],
//! counted and silent; anything else carries the path, for the caller to say once.

// Until the collection loop (written alongside, issue 11) calls this module; the expectation
// fails once it does, so it cannot outstay its reason.
#![cfg_attr(
    not(test),
    expect(dead_code, reason = "the collection loop is being wired")
)]

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read as _};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::containers::Container;

/// One interface's counters, as `net/dev` has them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct InterfaceStats {
    pub(crate) name: String,
    pub(crate) rx_bytes: u64,
    pub(crate) rx_packets: u64,
    pub(crate) rx_errors: u64,
    pub(crate) rx_dropped: u64,
    pub(crate) tx_bytes: u64,
    pub(crate) tx_packets: u64,
    pub(crate) tx_errors: u64,
    pub(crate) tx_dropped: u64,
}

/// One IPv4 route, as `net/route` has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Route<'a> {
    pub(crate) interface: &'a str,
    pub(crate) destination: Ipv4Addr,
    pub(crate) mask: Ipv4Addr,
}

impl Route<'_> {
    fn covers(&self, address: Ipv4Addr) -> bool {
        u32::from(address) & u32::from(self.mask) == u32::from(self.destination)
    }
}

/// Why a reading failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum NetError {
    /// The process exited between the container list and the read: normal, and silent.
    #[error("the process is gone")]
    Gone,
    #[error("permission denied reading {}", path.display())]
    PermissionDenied { path: PathBuf },
    #[error("cannot read {}: {reason}", path.display())]
    Unreadable { path: PathBuf, reason: String },
    #[error("{}: unexpected content {line:?}", path.display())]
    Malformed { path: PathBuf, line: String },
    #[error(
        "no host network namespace under {} (neither pid 1 nor pid 2 has `net/dev`): set `procfs_root` to the host's procfs",
        procfs_root.display()
    )]
    NoHostNamespace { procfs_root: PathBuf },
}

impl NetError {
    fn io(path: PathBuf, error: &io::Error) -> Self {
        match error.raw_os_error() {
            Some(libc::ENOENT | libc::ESRCH) => Self::Gone,
            Some(libc::EACCES | libc::EPERM) => Self::PermissionDenied { path },
            _ => Self::Unreadable {
                path,
                reason: error.to_string(),
            },
        }
    }
}

/// The interfaces of the namespace `pid` is in, `lo` left out. `buf` is reused between calls.
pub(crate) fn read_interfaces(
    procfs_root: &Path,
    pid: u32,
    buf: &mut String,
) -> Result<Vec<InterfaceStats>, NetError> {
    let path = pid_path(procfs_root, pid, "net/dev")?;
    read_into(&path, buf)?;
    parse_net_dev(buf).map_err(|line| NetError::Malformed {
        path,
        line: line.to_owned(),
    })
}

/// What names the network namespace `pid` is in: its `net/dev` entry's inode (see the module
/// docs).
pub(crate) fn netns_inode(procfs_root: &Path, pid: u32) -> Result<u64, NetError> {
    use std::os::unix::fs::MetadataExt as _;
    let path = pid_path(procfs_root, pid, "net/dev")?;
    std::fs::metadata(&path)
        .map(|metadata| metadata.ino())
        .map_err(|error| NetError::io(path, &error))
}

/// What names the host's network namespace: pid 1's, else pid 2's (see the module docs).
pub(crate) fn host_netns_inode(procfs_root: &Path) -> Result<u64, NetError> {
    let first = match netns_inode(procfs_root, 1) {
        Ok(inode) => return Ok(inode),
        Err(error) => error,
    };
    match netns_inode(procfs_root, 2) {
        Ok(inode) => Ok(inode),
        Err(_) if first != NetError::Gone => Err(first),
        // Pids 1 and 2 never exit: their absence means the root is not a procfs.
        Err(NetError::Gone) => Err(NetError::NoHostNamespace {
            procfs_root: procfs_root.to_owned(),
        }),
        Err(second) => Err(second),
    }
}

/// The network each interface is on: for each IPv4 address in `networks`, the most specific
/// route covering it, the default route left out (it covers every address). Interfaces on no
/// known network are absent; so are IPv6 addresses, which this table does not route.
pub(crate) fn docker_networks<'r, 'n>(
    routes: &[Route<'r>],
    networks: &'n BTreeMap<String, IpAddr>,
) -> BTreeMap<&'r str, &'n str> {
    let mut by_interface = BTreeMap::new();
    for (name, address) in networks {
        let IpAddr::V4(address) = *address else {
            continue;
        };
        let best = routes
            .iter()
            .filter(|route| !route.mask.is_unspecified() && route.covers(address))
            .max_by_key(|route| u32::from(route.mask).count_ones());
        if let Some(route) = best {
            // Two networks on one interface cannot happen with Docker; the first by name stays.
            by_interface.entry(route.interface).or_insert(name.as_str());
        }
    }
    by_interface
}

/// A container as the grouping sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NetnsMember<'a> {
    pub(crate) id: &'a str,
    pub(crate) netns: u64,
    /// Docker gave it an address: it created its namespace rather than joining another's.
    pub(crate) has_address: bool,
}

/// Containers sharing one namespace, as indexes into the members given to [`group_by_netns`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NetnsGroup {
    pub(crate) netns: u64,
    /// The member the namespace's reading is attributed to.
    pub(crate) owner: usize,
    /// The other members, by ascending id.
    pub(crate) sharing: Vec<usize>,
}

/// The members grouped by namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Grouping {
    /// One group per namespace other than the host's, by ascending owner id.
    pub(crate) groups: Vec<NetnsGroup>,
    /// Members in the host's namespace: no reading.
    pub(crate) host_network: Vec<usize>,
}

/// Groups members by namespace, skipping those in `host_netns`. A group's owner is the member
/// with an address, the lowest id first (see the module docs).
pub(crate) fn group_by_netns(members: &[NetnsMember<'_>], host_netns: u64) -> Grouping {
    let mut grouping = Grouping::default();
    let mut by_netns: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
    for (index, member) in members.iter().enumerate() {
        if member.netns == host_netns {
            grouping.host_network.push(index);
        } else {
            by_netns.entry(member.netns).or_default().push(index);
        }
    }
    for (netns, mut indexes) in by_netns {
        indexes.sort_by_key(|&i| (!members[i].has_address, members[i].id));
        let owner = indexes.remove(0);
        indexes.sort_by_key(|&i| members[i].id);
        grouping.groups.push(NetnsGroup {
            netns,
            owner,
            sharing: indexes,
        });
    }
    grouping.groups.sort_by_key(|group| members[group.owner].id);
    grouping
}

/// One interface of a reading, with the Docker network it is on when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Interface {
    pub(crate) stats: InterfaceStats,
    /// The `docker_network` tag's value; `None` when no network's address is routed through it.
    pub(crate) docker_network: Option<String>,
}

/// One network namespace's counters, attributed to one container.
#[derive(Debug, Clone)]
pub(crate) struct NetnsReading {
    pub(crate) netns: u64,
    /// The container the reading is tagged with: the namespace's owner (see the module docs).
    pub(crate) container: Arc<Container>,
    /// Ids of the other containers in the namespace, ascending; their traffic is in this reading.
    pub(crate) sharing: Vec<String>,
    /// Every interface but `lo`; never empty.
    pub(crate) interfaces: Vec<Interface>,
}

/// What one pass read.
#[derive(Debug, Clone, Default)]
pub(crate) struct NetPass {
    /// One per network namespace with an interface besides `lo`, by ascending container id.
    pub(crate) readings: Vec<NetnsReading>,
    /// Containers skipped because they are in the host's namespace.
    pub(crate) host_network: usize,
    /// Containers gone between list and read: normal, silent.
    pub(crate) gone: usize,
    /// What could not be read, for the caller to count and say once; never [`NetError::Gone`].
    pub(crate) failures: Vec<(Arc<Container>, NetError)>,
}

/// Reads every container's network namespace, each namespace once. Holds the host's namespace
/// once found (it never changes) and one buffer for every file.
#[derive(Debug)]
pub(crate) struct NetReader {
    procfs_root: PathBuf,
    host_netns: Option<u64>,
    buf: String,
}

impl NetReader {
    pub(crate) fn new(procfs_root: PathBuf) -> Self {
        Self {
            procfs_root,
            host_netns: None,
            buf: String::with_capacity(4096),
        }
    }

    /// One pass over `containers`. Fails only when the host's namespace cannot be read, since
    /// then host-network containers cannot be told apart.
    pub(crate) fn read(&mut self, containers: &[Arc<Container>]) -> Result<NetPass, NetError> {
        let host_netns = match self.host_netns {
            Some(inode) => inode,
            None => {
                let inode = host_netns_inode(&self.procfs_root)?;
                self.host_netns = Some(inode);
                inode
            }
        };
        let mut pass = NetPass::default();

        let mut present = Vec::with_capacity(containers.len());
        let mut members = Vec::with_capacity(containers.len());
        for container in containers {
            match netns_inode(&self.procfs_root, container.pid) {
                Ok(netns) => {
                    members.push(NetnsMember {
                        id: &container.id,
                        netns,
                        has_address: !container.networks.is_empty(),
                    });
                    present.push(container);
                }
                Err(NetError::Gone) => pass.gone += 1,
                Err(error) => pass.failures.push((Arc::clone(container), error)),
            }
        }

        let grouping = group_by_netns(&members, host_netns);
        pass.host_network = grouping.host_network.len();
        for group in grouping.groups {
            let owner = present[group.owner];
            // Any process in the namespace reads the same counters: the owner's first, then
            // the others', in case the owner's process is the one that just exited.
            let pids =
                std::iter::once(owner.pid).chain(group.sharing.iter().map(|&i| present[i].pid));
            let mut read = Err(NetError::Gone);
            for pid in pids {
                read = read_interfaces(&self.procfs_root, pid, &mut self.buf)
                    .map(|stats| (pid, stats));
                if !matches!(read, Err(NetError::Gone)) {
                    break;
                }
            }
            let (pid, stats) = match read {
                Ok(read) => read,
                Err(NetError::Gone) => {
                    pass.gone += 1;
                    continue;
                }
                Err(error) => {
                    pass.failures.push((Arc::clone(owner), error));
                    continue;
                }
            };
            if stats.is_empty() {
                continue;
            }

            let mut interfaces: Vec<Interface> = stats
                .into_iter()
                .map(|stats| Interface {
                    stats,
                    docker_network: None,
                })
                .collect();
            if owner.networks.values().any(IpAddr::is_ipv4) {
                match self.map_networks(pid, &owner.networks, &mut interfaces) {
                    Ok(()) => {}
                    Err(NetError::Gone) => {
                        pass.gone += 1;
                        continue;
                    }
                    // The counters are still right; they go out without the network.
                    Err(error) => pass.failures.push((Arc::clone(owner), error)),
                }
            }

            pass.readings.push(NetnsReading {
                netns: group.netns,
                container: Arc::clone(owner),
                sharing: group
                    .sharing
                    .iter()
                    .map(|&i| present[i].id.clone())
                    .collect(),
                interfaces,
            });
        }
        Ok(pass)
    }

    fn map_networks(
        &mut self,
        pid: u32,
        networks: &BTreeMap<String, IpAddr>,
        interfaces: &mut [Interface],
    ) -> Result<(), NetError> {
        let path = pid_path(&self.procfs_root, pid, "net/route")?;
        read_into(&path, &mut self.buf)?;
        let routes = parse_routes(&self.buf).map_err(|line| NetError::Malformed {
            path: path.clone(),
            line: line.to_owned(),
        })?;
        let mapping = docker_networks(&routes, networks);
        for interface in interfaces {
            interface.docker_network = mapping
                .get(interface.stats.name.as_str())
                .map(|&name| name.to_owned());
        }
        Ok(())
    }
}

/// `<procfs>/<pid>/<file>`; pid 0 (a container not running) is gone.
fn pid_path(procfs_root: &Path, pid: u32, file: &str) -> Result<PathBuf, NetError> {
    if pid == 0 {
        return Err(NetError::Gone);
    }
    let mut path = procfs_root.join(pid.to_string());
    path.push(file);
    Ok(path)
}

fn read_into(path: &Path, buf: &mut String) -> Result<(), NetError> {
    buf.clear();
    File::open(path)
        .and_then(|mut file| file.read_to_string(buf))
        .map(drop)
        .map_err(|error| NetError::io(path.to_owned(), &error))
}

/// Parses `net/dev`, `lo` left out; on a line it cannot read, that line.
pub(crate) fn parse_net_dev(text: &str) -> Result<Vec<InterfaceStats>, &str> {
    let mut lines = text.lines();
    for _header in 0..2 {
        lines.next().ok_or(text)?;
    }
    let mut interfaces = Vec::new();
    for line in lines {
        if line.trim().is_empty() {
            continue;
        }
        // Split at the colon, not at whitespace: old kernels print large counters right
        // after it (`eth0:1234567890`), and an interface name cannot hold a colon.
        let (name, counters) = line.split_once(':').ok_or(line)?;
        let name = name.trim();
        if name == "lo" {
            continue;
        }
        let mut fields = [0u64; 12];
        let mut counters = counters.split_ascii_whitespace();
        for field in &mut fields {
            *field = counters.next().and_then(|c| c.parse().ok()).ok_or(line)?;
        }
        let [
            rx_bytes,
            rx_packets,
            rx_errors,
            rx_dropped,
            _,
            _,
            _,
            _,
            tx_bytes,
            tx_packets,
            tx_errors,
            tx_dropped,
        ] = fields;
        interfaces.push(InterfaceStats {
            name: name.to_owned(),
            rx_bytes,
            rx_packets,
            rx_errors,
            rx_dropped,
            tx_bytes,
            tx_packets,
            tx_errors,
            tx_dropped,
        });
    }
    Ok(interfaces)
}

/// Parses `net/route`; on a line it cannot read, that line. The kernel prints each address as
/// the 32-bit number its network-order bytes make in the machine's own order
/// (`000011AC` is 172.17.0.0 on a little-endian machine).
pub(crate) fn parse_routes(text: &str) -> Result<Vec<Route<'_>>, &str> {
    let address = |hex: &str| {
        u32::from_str_radix(hex, 16)
            .ok()
            .map(|n| Ipv4Addr::from(n.to_ne_bytes()))
    };
    let mut routes = Vec::new();
    for line in text.lines().skip(1) {
        let mut fields = line.split_ascii_whitespace();
        let Some(interface) = fields.next() else {
            continue;
        };
        // Columns: Iface Destination Gateway Flags RefCnt Use Metric Mask ...
        let destination = fields.next().and_then(address);
        let mask = fields.nth(5).and_then(address);
        let (Some(destination), Some(mask)) = (destination, mask) else {
            return Err(line);
        };
        routes.push(Route {
            interface,
            destination,
            mask,
        });
    }
    Ok(routes)
}

#[cfg(test)]
mod tests {
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    use super::*;
    use crate::containers::ContainerTags;

    /// `net/dev` as the kernel prints it, with `lo`, a name filling the column, and a counter
    /// printed right after the colon as kernels before 2.6.x did.
    const NET_DEV: &str = "\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo: 324428631235 5893930    0    0    0     0          0         0 324428631235 5893930    0    0    0     0       0          0
  eth0: 1319372245   41987    3    4    0     0          0         0  2348451   27413    5    6    0     0       0          0
docker0: 1782418   20054    0    0    0     0          0         0  1634848   20813    0   12    0     0       0          0
  eth1:18446744073709551615 1    0    0    0     0          0         0        0       0    0    0    0     0       0          0
";

    /// Two Docker networks (`bridge` on eth0, `backend` on eth1), a third subnet on eth2 that
    /// no network of the container's is on, and the default route, from a little-endian machine.
    const ROUTES: &str = "\
Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t010011AC\t0003\t0\t0\t0\t00000000\t0\t0\t0
eth0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0
eth1\t0020A8C0\t00000000\t0001\t0\t0\t0\t00F0FFFF\t0\t0\t0
eth2\t000A0A0A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
";

    fn container(id: &str, pid: u32, networks: &[(&str, &str)]) -> Arc<Container> {
        Arc::new(Container {
            id: id.to_owned(),
            name: format!("name-{id}"),
            image: "busybox".into(),
            labels: BTreeMap::new(),
            env: BTreeMap::new(),
            hostname: id.to_owned(),
            networks: networks
                .iter()
                .map(|(name, ip)| ((*name).to_owned(), ip.parse().unwrap()))
                .collect(),
            ports: Vec::new(),
            pid,
            cgroup: None,
            health: None,
            tags: ContainerTags::default(),
        })
    }

    fn networks(pairs: &[(&str, &str)]) -> BTreeMap<String, IpAddr> {
        pairs
            .iter()
            .map(|(name, ip)| ((*name).to_owned(), ip.parse().unwrap()))
            .collect()
    }

    #[test]
    fn net_dev_gives_every_interface_but_lo_with_its_eight_counters() {
        let interfaces = parse_net_dev(NET_DEV).unwrap();
        let names: Vec<&str> = interfaces.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["eth0", "docker0", "eth1"]);
        assert_eq!(
            interfaces[0],
            InterfaceStats {
                name: "eth0".into(),
                rx_bytes: 1_319_372_245,
                rx_packets: 41_987,
                rx_errors: 3,
                rx_dropped: 4,
                tx_bytes: 2_348_451,
                tx_packets: 27_413,
                tx_errors: 5,
                tx_dropped: 6,
            }
        );
        assert_eq!(interfaces[1].tx_dropped, 12);
        assert_eq!(interfaces[2].rx_bytes, u64::MAX);
    }

    #[test]
    fn net_dev_that_is_not_net_dev_names_the_line() {
        for (text, bad) in [
            ("", ""),
            ("header only\n", "header only\n"),
            ("h\nh\n  eth0 1 2 3\n", "  eth0 1 2 3"),
            ("h\nh\n  eth0: 1 2 3\n", "  eth0: 1 2 3"),
            (
                "h\nh\n  eth0: 1 2 3 4 5 6 7 8 x 10 11 12\n",
                "  eth0: 1 2 3 4 5 6 7 8 x 10 11 12",
            ),
        ] {
            assert_eq!(parse_net_dev(text), Err(bad), "{text:?}");
        }
        // `--network none`: only `lo`.
        assert_eq!(
            parse_net_dev(&NET_DEV[..NET_DEV.find("  eth0").unwrap()]),
            Ok(vec![])
        );
    }

    #[test]
    fn io_errors_gone_process_is_silent_denied_read_names_the_path() {
        let path = PathBuf::from("/proc/42/net/dev");
        for (errno, expected) in [
            (libc::ENOENT, NetError::Gone),
            (libc::ESRCH, NetError::Gone),
            (
                libc::EACCES,
                NetError::PermissionDenied { path: path.clone() },
            ),
            (
                libc::EPERM,
                NetError::PermissionDenied { path: path.clone() },
            ),
        ] {
            let error = io::Error::from_raw_os_error(errno);
            assert_eq!(
                NetError::io(path.clone(), &error),
                expected,
                "errno {errno}"
            );
        }
        let error = NetError::io(path.clone(), &io::Error::from_raw_os_error(libc::EIO));
        assert!(matches!(error, NetError::Unreadable { .. }), "{error:?}");
        let denied = NetError::io(path, &io::Error::from_raw_os_error(libc::EACCES));
        assert!(denied.to_string().contains("/proc/42/net/dev"), "{denied}");
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn route_table_addresses_read_in_network_order() {
        let routes = parse_routes(ROUTES).unwrap();
        assert_eq!(routes.len(), 4);
        assert_eq!(
            routes[2],
            Route {
                interface: "eth1",
                destination: Ipv4Addr::new(192, 168, 32, 0),
                mask: Ipv4Addr::new(255, 255, 240, 0),
            }
        );
        assert_eq!(routes[0].mask, Ipv4Addr::UNSPECIFIED);
        for bad in [
            "eth0\t0000ZZZZ\t00000000\t0001\t0\t0\t0\t0000FFFF",
            "eth0\t000011AC",
        ] {
            let table = format!("Iface\tDestination\n{bad}\n");
            assert_eq!(parse_routes(&table), Err(bad));
        }
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn interfaces_map_to_the_docker_network_whose_address_they_route() {
        let overlapping = "\
Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth1\t000010AC\t00000000\t0001\t0\t0\t0\t0000F0FF\t0\t0\t0
eth0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0
";
        let header_only = ROUTES.lines().next().unwrap();
        type Pairs = &'static [(&'static str, &'static str)];
        let cases: [(&str, &str, Pairs, Pairs); 6] = [
            (
                "two networks, a third subnet unmapped",
                ROUTES,
                &[("backend", "192.168.32.5"), ("bridge", "172.17.0.3")],
                &[("eth0", "bridge"), ("eth1", "backend")],
            ),
            (
                "an address only the default route covers",
                ROUTES,
                &[("elsewhere", "10.99.0.2")],
                &[],
            ),
            ("IPv6 only", ROUTES, &[("v6", "fd00::2")], &[]),
            (
                "none mode: no routes",
                header_only,
                &[("bridge", "172.17.0.3")],
                &[],
            ),
            (
                "overlapping subnets: the longest prefix",
                overlapping,
                &[("bridge", "172.17.0.3")],
                &[("eth0", "bridge")],
            ),
            (
                "the /12 alone",
                overlapping,
                &[("wide", "172.20.0.3")],
                &[("eth1", "wide")],
            ),
        ];
        for (case, table, nets, expected) in cases {
            let routes = parse_routes(table).unwrap();
            let nets = networks(nets);
            let mapping = docker_networks(&routes, &nets);
            let expected: BTreeMap<&str, &str> = expected.iter().copied().collect();
            assert_eq!(mapping, expected, "{case}");
        }
    }

    fn member(id: &'static str, netns: u64, has_address: bool) -> NetnsMember<'static> {
        NetnsMember {
            id,
            netns,
            has_address,
        }
    }

    #[test]
    fn containers_sharing_a_namespace_are_one_group_owned_by_the_one_with_an_address() {
        const HOST: u64 = 4_026_531_992;
        let members = [
            member("c-web", 7, true),
            // `--network container:c-web`: no address, and a lower id than its owner.
            member("a-sidecar", 7, false),
            member("b-host", HOST, true),
            member("d-db", 8, true),
            member("e-other-sidecar", 7, false),
        ];
        assert_eq!(
            group_by_netns(&members, HOST),
            Grouping {
                groups: vec![
                    NetnsGroup {
                        netns: 7,
                        owner: 0,
                        sharing: vec![1, 4],
                    },
                    NetnsGroup {
                        netns: 8,
                        owner: 3,
                        sharing: vec![],
                    },
                ],
                host_network: vec![2],
            }
        );
    }

    #[test]
    fn shared_namespace_without_an_address_goes_to_the_lowest_id() {
        // `--network none` joined by another: neither has an address.
        let members = [
            member("b", 9, false),
            member("a", 9, false),
            member("c", 10, false),
        ];
        let grouping = group_by_netns(&members, 1);
        let owners: Vec<(&str, Vec<&str>)> = grouping
            .groups
            .iter()
            .map(|g| {
                (
                    members[g.owner].id,
                    g.sharing.iter().map(|&i| members[i].id).collect(),
                )
            })
            .collect();
        assert_eq!(owners, [("a", vec!["b"]), ("c", vec![])]);
        assert!(grouping.host_network.is_empty());
    }

    /// A procfs fixture: `(pid, namespace, net/dev, net/route)`. Pids in one namespace share
    /// one `net/dev` file (hard links, one inode), as the kernel's entry is one per namespace;
    /// the first pid's content is the namespace's.
    fn procfs(pids: &[(u32, &str, &str, &str)]) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let mut namespaces: BTreeMap<&str, PathBuf> = BTreeMap::new();
        for (pid, netns, dev, route) in pids {
            let dir = root.path().join(pid.to_string()).join("net");
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join("dev");
            match namespaces.get(netns) {
                Some(first) => std::fs::hard_link(first, &path).unwrap(),
                None => {
                    std::fs::write(&path, dev).unwrap();
                    namespaces.insert(netns, path);
                }
            }
            std::fs::write(dir.join("route"), route).unwrap();
        }
        root
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn one_pass_reads_each_namespace_once_and_skips_host_none_and_gone() {
        let lo_only = &NET_DEV[..NET_DEV.find("  eth0").unwrap()];
        let root = procfs(&[
            (1, "net:[100]", NET_DEV, ROUTES),
            (10, "net:[200]", NET_DEV, ROUTES),
            (11, "net:[200]", NET_DEV, ROUTES),
            (12, "net:[100]", NET_DEV, ROUTES),
            (13, "net:[300]", lo_only, ""),
            (14, "net:[400]", NET_DEV, ROUTES),
        ]);
        // pid 14's namespace exists but its counters vanished: the process exited mid-read.
        std::fs::remove_file(root.path().join("14/net/dev")).unwrap();
        let containers = [
            container(
                "web",
                10,
                &[("bridge", "172.17.0.3"), ("backend", "192.168.32.5")],
            ),
            container("sidecar", 11, &[]),
            container("hostnet", 12, &[]),
            container("isolated", 13, &[]),
            container("exiting", 14, &[("bridge", "172.17.0.4")]),
            container("stopped", 0, &[]),
            container("vanished", 99, &[]),
        ];
        let mut reader = NetReader::new(root.path().to_owned());
        let pass = reader.read(&containers).unwrap();

        assert_eq!(pass.readings.len(), 1, "{pass:#?}");
        let reading = &pass.readings[0];
        assert_eq!(reading.netns, netns_inode(root.path(), 11).unwrap());
        assert_eq!(reading.container.id, "web");
        assert_eq!(reading.sharing, ["sidecar"]);
        let interfaces: Vec<(&str, Option<&str>, u64)> = reading
            .interfaces
            .iter()
            .map(|i| {
                (
                    i.stats.name.as_str(),
                    i.docker_network.as_deref(),
                    i.stats.rx_packets,
                )
            })
            .collect();
        assert_eq!(
            interfaces,
            [
                ("eth0", Some("bridge"), 41_987),
                ("docker0", None, 20_054),
                ("eth1", Some("backend"), 1)
            ]
        );
        assert_eq!(pass.host_network, 1);
        assert_eq!(pass.gone, 3, "stopped, vanished and exiting");
        assert!(pass.failures.is_empty(), "{:?}", pass.failures);
    }

    #[test]
    fn owner_gone_leaves_the_namespace_to_a_process_sharing_it() {
        let root = procfs(&[
            (1, "net:[100]", NET_DEV, ""),
            (10, "net:[200]", NET_DEV, ""),
            (11, "net:[200]", NET_DEV, ""),
        ]);
        std::fs::remove_file(root.path().join("10/net/dev")).unwrap();
        let containers = [container("web", 10, &[]), container("sidecar", 11, &[])];
        let pass = NetReader::new(root.path().to_owned())
            .read(&containers)
            .unwrap();
        assert_eq!(pass.readings.len(), 1);
        assert_eq!(pass.readings[0].container.id, "sidecar");
        assert_eq!(pass.gone, 1, "web");
    }

    #[test]
    fn a_procfs_root_without_pids_says_to_set_procfs_root() {
        let root = tempfile::tempdir().unwrap();
        let error = NetReader::new(root.path().to_owned())
            .read(&[])
            .unwrap_err();
        assert_eq!(
            error,
            NetError::NoHostNamespace {
                procfs_root: root.path().to_owned()
            }
        );
        assert!(error.to_string().contains("`procfs_root`"), "{error}");
    }

    /// Reads a `/sys/class/net/<if>/statistics` counter.
    fn sysfs_counter(interface: &str, counter: &str) -> u64 {
        let path = format!("/sys/class/net/{interface}/statistics/{counter}");
        std::fs::read_to_string(&path)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    #[test]
    fn live_net_dev_agrees_with_sysfs() {
        let mut buf = String::new();
        let proc = Path::new("/proc");
        let ours = read_interfaces(proc, std::process::id(), &mut buf).unwrap();
        let interface = ours
            .iter()
            .map(|i| i.name.clone())
            .find(|name| Path::new("/sys/class/net").join(name).exists())
            .expect("an interface besides lo, in both /proc/self/net/dev and /sys/class/net");
        // Counters only grow: sysfs before ≤ net/dev ≤ sysfs after.
        let counters = [
            "rx_bytes",
            "rx_packets",
            "rx_errors",
            "rx_dropped",
            "tx_bytes",
            "tx_packets",
            "tx_errors",
            "tx_dropped",
        ];
        let before: Vec<u64> = counters
            .iter()
            .map(|c| sysfs_counter(&interface, c))
            .collect();
        let ours = read_interfaces(proc, std::process::id(), &mut buf).unwrap();
        let after: Vec<u64> = counters
            .iter()
            .map(|c| sysfs_counter(&interface, c))
            .collect();
        let stats = ours.iter().find(|i| i.name == interface).unwrap();
        let read = [
            stats.rx_bytes,
            stats.rx_packets,
            stats.rx_errors,
            stats.rx_dropped,
            stats.tx_bytes,
            stats.tx_packets,
            stats.tx_errors,
            stats.tx_dropped,
        ];
        for (i, counter) in counters.iter().enumerate() {
            assert!(
                before[i] <= read[i] && read[i] <= after[i],
                "{interface} {counter}: sysfs {} then {}, net/dev {}",
                before[i],
                after[i],
                read[i]
            );
        }
        assert!(ours.iter().all(|i| i.name != "lo"));
    }

    #[test]
    fn live_namespace_is_named_alike_for_its_processes_and_apart_from_others() {
        let proc = Path::new("/proc");
        let ours = netns_inode(proc, std::process::id()).unwrap();
        let child = spawn("sleep", &["60"]);
        assert_eq!(netns_inode(proc, child.0.id()), Ok(ours));
        let isolated = spawn("unshare", &["--net", "sleep", "60"]);
        let isolated_pid = isolated.0.id();
        wait_for("unshare to enter its namespace", || {
            netns_inode(proc, isolated_pid).is_ok_and(|netns| netns != ours)
        });
        host_netns_inode(proc).unwrap();
    }

    #[test]
    fn live_exited_process_is_gone() {
        let mut child = Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let mut buf = String::new();
        assert_eq!(
            read_interfaces(Path::new("/proc"), pid, &mut buf),
            Err(NetError::Gone)
        );
        assert_eq!(netns_inode(Path::new("/proc"), pid), Err(NetError::Gone));
    }

    /// A child process killed when the test ends, pass or fail.
    struct Process(Child);

    impl Drop for Process {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn spawn(program: &str, args: &[&str]) -> Process {
        Process(
            Command::new(program)
                .args(args)
                .stdin(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("{program}: {e}")),
        )
    }

    fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Real namespaces without Docker: `unshare` makes one with a veth pair (`k0` holding
    /// 10.201.0.2/24, as Docker would give a container on network `kennel-test`) and `nsenter`
    /// puts a second process in it, as `--network container:<id>` does. Needs root.
    #[test]
    fn live_namespaces_shared_once_host_skipped_interfaces_mapped() {
        let owner = spawn(
            "unshare",
            &[
                "--net",
                "sh",
                "-c",
                "ip link add k0 type veth peer name k1 && ip addr add 10.201.0.2/24 dev k0 \
                 && ip link set k1 up && ip link set k0 up && exec sleep 60",
            ],
        );
        let owner_pid = owner.0.id();
        wait_for("k0's route", || {
            std::fs::read_to_string(format!("/proc/{owner_pid}/net/route"))
                .is_ok_and(|routes| routes.contains("k0"))
        });
        let owner_netns = netns_inode(Path::new("/proc"), owner_pid).unwrap();
        let ns = format!("--net=/proc/{owner_pid}/ns/net");
        let joiner = spawn("nsenter", &[&ns, "sleep", "60"]);
        let joiner_pid = joiner.0.id();
        wait_for("nsenter to join", || {
            netns_inode(Path::new("/proc"), joiner_pid) == Ok(owner_netns)
        });
        let mut exited = Command::new("true").spawn().unwrap();
        let exited_pid = exited.id();
        exited.wait().unwrap();

        let containers = [
            container("b-owner", owner_pid, &[("kennel-test", "10.201.0.2")]),
            container("a-joiner", joiner_pid, &[]),
            container("c-host", std::process::id(), &[]),
            container("d-exited", exited_pid, &[]),
        ];
        let pass = NetReader::new(PathBuf::from("/proc"))
            .read(&containers)
            .unwrap();

        assert!(pass.failures.is_empty(), "{:?}", pass.failures);
        assert_eq!((pass.host_network, pass.gone), (1, 1));
        assert_eq!(pass.readings.len(), 1, "{pass:#?}");
        let reading = &pass.readings[0];
        assert_eq!(reading.netns, owner_netns);
        assert_eq!(reading.container.id, "b-owner");
        assert_eq!(reading.sharing, ["a-joiner"]);
        let mut interfaces: Vec<(&str, Option<&str>)> = reading
            .interfaces
            .iter()
            .map(|i| (i.stats.name.as_str(), i.docker_network.as_deref()))
            .collect();
        interfaces.sort();
        assert_eq!(interfaces, [("k0", Some("kennel-test")), ("k1", None)]);
    }
}
