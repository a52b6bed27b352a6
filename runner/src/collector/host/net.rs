//! `system.net.*` (the Agent's `network` check): per-interface counters from `net/dev`, and
//! the IP, TCP and UDP counters from `net/snmp` and `net/netstat`, of init's network namespace.
//!
//! `net/dev` (proc(5)): two header lines, then `iface: ` and 16 counters: receive bytes,
//! packets, errs, drop, fifo, frame, compressed, multicast; transmit bytes, packets, errs,
//! drop, fifo, colls, carrier, compressed. A long counter can touch the colon (`eth0:123`).
//!
//! `net/snmp` and `net/netstat`: pairs of lines, a header (`Tcp: RtoAlgorithm RtoMin ...`)
//! then the values (`Tcp: 1 200 ...`) under the same prefix.

use std::collections::HashMap;
use std::path::Path;
use std::sync::LazyLock;

use super::{BadLines, Files, Out, Paths, Source, TAG_REFRESH_READS, parse_u64s};

/// The Agent's default `excluded_interfaces` (`lo0` is macOS's).
const EXCLUDED: &[&str] = &["lo"];

/// `net/dev` columns and the metric each is, all rates.
const INTERFACE_METRICS: [(usize, &str); 8] = [
    (0, "system.net.bytes_rcvd"),
    (1, "system.net.packets_in.count"),
    (2, "system.net.packets_in.error"),
    (3, "system.net.packets_in.drop"),
    (8, "system.net.bytes_sent"),
    (9, "system.net.packets_out.count"),
    (10, "system.net.packets_out.error"),
    (11, "system.net.packets_out.drop"),
];

/// The counters of `net/snmp` and `net/netstat` the Agent reports (its `const.go`), each as a
/// rate under this name and as a monotonic count under the name and `.count`.
const PROTOCOL_METRICS: &[(&str, &str, &str)] = &[
    ("Ip", "InReceives", "system.net.ip.in_receives"),
    ("Ip", "InHdrErrors", "system.net.ip.in_header_errors"),
    ("Ip", "InAddrErrors", "system.net.ip.in_addr_errors"),
    ("Ip", "InUnknownProtos", "system.net.ip.in_unknown_protos"),
    ("Ip", "InDiscards", "system.net.ip.in_discards"),
    ("Ip", "InDelivers", "system.net.ip.in_delivers"),
    ("Ip", "OutRequests", "system.net.ip.out_requests"),
    ("Ip", "OutDiscards", "system.net.ip.out_discards"),
    ("Ip", "OutNoRoutes", "system.net.ip.out_no_routes"),
    ("Ip", "ForwDatagrams", "system.net.ip.forwarded_datagrams"),
    ("Ip", "ReasmTimeout", "system.net.ip.reassembly_timeouts"),
    ("Ip", "ReasmReqds", "system.net.ip.reassembly_requests"),
    ("Ip", "ReasmOKs", "system.net.ip.reassembly_oks"),
    ("Ip", "ReasmFails", "system.net.ip.reassembly_fails"),
    ("Ip", "FragOKs", "system.net.ip.fragmentation_oks"),
    ("Ip", "FragFails", "system.net.ip.fragmentation_fails"),
    ("Ip", "FragCreates", "system.net.ip.fragmentation_creates"),
    ("IpExt", "InNoRoutes", "system.net.ip.in_no_routes"),
    (
        "IpExt",
        "InTruncatedPkts",
        "system.net.ip.in_truncated_pkts",
    ),
    ("IpExt", "InCsumErrors", "system.net.ip.in_csum_errors"),
    (
        "IpExt",
        "ReasmOverlaps",
        "system.net.ip.reassembly_overlaps",
    ),
    ("Tcp", "RetransSegs", "system.net.tcp.retrans_segs"),
    ("Tcp", "InSegs", "system.net.tcp.in_segs"),
    ("Tcp", "OutSegs", "system.net.tcp.out_segs"),
    ("Tcp", "ActiveOpens", "system.net.tcp.active_opens"),
    ("Tcp", "PassiveOpens", "system.net.tcp.passive_opens"),
    ("Tcp", "AttemptFails", "system.net.tcp.attempt_fails"),
    ("Tcp", "EstabResets", "system.net.tcp.established_resets"),
    ("Tcp", "InErrs", "system.net.tcp.in_errors"),
    ("Tcp", "OutRsts", "system.net.tcp.out_resets"),
    ("Tcp", "InCsumErrors", "system.net.tcp.in_csum_errors"),
    (
        "TcpExt",
        "ListenOverflows",
        "system.net.tcp.listen_overflows",
    ),
    ("TcpExt", "ListenDrops", "system.net.tcp.listen_drops"),
    ("TcpExt", "TCPBacklogDrop", "system.net.tcp.backlog_drops"),
    (
        "TcpExt",
        "TCPRetransFail",
        "system.net.tcp.failed_retransmits",
    ),
    (
        "TcpExt",
        "IPReversePathFilter",
        "system.net.ip.reverse_path_filter",
    ),
    ("TcpExt", "PruneCalled", "system.net.tcp.prune_called"),
    ("TcpExt", "RcvPruned", "system.net.tcp.prune_rcv_drops"),
    ("TcpExt", "OfoPruned", "system.net.tcp.prune_ofo_called"),
    (
        "TcpExt",
        "PAWSActive",
        "system.net.tcp.paws_connection_drops",
    ),
    (
        "TcpExt",
        "PAWSEstab",
        "system.net.tcp.paws_established_drops",
    ),
    (
        "TcpExt",
        "SyncookiesSent",
        "system.net.tcp.syn_cookies_sent",
    ),
    (
        "TcpExt",
        "SyncookiesRecv",
        "system.net.tcp.syn_cookies_recv",
    ),
    (
        "TcpExt",
        "SyncookiesFailed",
        "system.net.tcp.syn_cookies_failed",
    ),
    (
        "TcpExt",
        "TCPAbortOnTimeout",
        "system.net.tcp.abort_on_timeout",
    ),
    ("TcpExt", "TCPSynRetrans", "system.net.tcp.syn_retrans"),
    (
        "TcpExt",
        "TCPFromZeroWindowAdv",
        "system.net.tcp.from_zero_window",
    ),
    (
        "TcpExt",
        "TCPToZeroWindowAdv",
        "system.net.tcp.to_zero_window",
    ),
    ("TcpExt", "TWRecycled", "system.net.tcp.tw_reused"),
    ("Udp", "InDatagrams", "system.net.udp.in_datagrams"),
    ("Udp", "NoPorts", "system.net.udp.no_ports"),
    ("Udp", "InErrors", "system.net.udp.in_errors"),
    ("Udp", "OutDatagrams", "system.net.udp.out_datagrams"),
    ("Udp", "RcvbufErrors", "system.net.udp.rcv_buf_errors"),
    ("Udp", "SndbufErrors", "system.net.udp.snd_buf_errors"),
    ("Udp", "InCsumErrors", "system.net.udp.in_csum_errors"),
];

/// `<metric>.count` for each of [`PROTOCOL_METRICS`], built once.
static COUNT_NAMES: LazyLock<Vec<String>> = LazyLock::new(|| {
    PROTOCOL_METRICS
        .iter()
        .map(|(_, _, metric)| format!("{metric}.count"))
        .collect()
});

/// One `net/dev` line: the interface and its 16 counters.
pub(super) fn parse_net_dev_line(line: &str) -> Option<(&str, [u64; 16])> {
    let (name, counters) = line.split_once(':')?;
    let mut columns = [0; 16];
    let parsed = parse_u64s(counters.split_ascii_whitespace(), &mut columns)?;
    (parsed == columns.len()).then_some((name.trim(), columns))
}

/// An interface's tags, kept between reads.
#[derive(Debug)]
struct Tagged {
    tags: Vec<String>,
    tags_read: u64,
    seen: u64,
}

#[derive(Debug, Default)]
pub(super) struct NetState {
    interfaces: HashMap<String, Tagged>,
}

impl NetState {
    pub(super) fn read(
        &mut self,
        paths: &Paths,
        reads: u64,
        files: &mut Files<'_>,
        out: &mut Out<'_>,
    ) {
        self.read_interfaces(paths, reads, files, out);
        for tables in [&paths.snmp, &paths.netstat] {
            if let Some((text, path)) = files.read_first(Source::Network, tables) {
                let mut bad = BadLines::default();
                emit_protocols(text, &mut bad, out);
                bad.report(files.problems, Source::Network, path);
            }
        }
    }

    fn read_interfaces(
        &mut self,
        paths: &Paths,
        reads: u64,
        files: &mut Files<'_>,
        out: &mut Out<'_>,
    ) {
        let Some((text, path)) = files.read_first(Source::Network, &paths.net_dev) else {
            return;
        };
        let mut bad = BadLines::default();
        for (index, line) in text.lines().enumerate().skip(2) {
            let Some((name, columns)) = parse_net_dev_line(line) else {
                bad.note(index, "expected `iface: ` and 16 counters");
                continue;
            };
            if EXCLUDED.contains(&name) {
                continue;
            }
            let entry = self
                .interfaces
                .entry(name.to_owned())
                .or_insert_with(|| Tagged {
                    tags: Vec::new(),
                    tags_read: 0,
                    seen: 0,
                });
            if entry.tags.is_empty() || reads - entry.tags_read >= TAG_REFRESH_READS {
                entry.tags = interface_tags(&paths.sysfs, name);
                entry.tags_read = reads;
            }
            entry.seen = reads;
            for (column, metric) in INTERFACE_METRICS {
                out.rate(metric, columns[column] as f64, &entry.tags);
            }
        }
        bad.report(files.problems, Source::Network, path);
        self.interfaces.retain(|_, i| i.seen == reads);
    }
}

/// `device`, `device_name`, and `mtu` and `speed` where sysfs has them (a virtual interface's
/// `speed` is -1, a down one's cannot be read), sorted.
fn interface_tags(sysfs: &Path, name: &str) -> Vec<String> {
    let dir = sysfs.join("class/net").join(name);
    let read_int = |file: &str| -> Option<i64> {
        std::fs::read_to_string(dir.join(file))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    let mut tags = vec![format!("device:{name}"), format!("device_name:{name}")];
    if let Some(speed) = read_int("speed") {
        tags.push(format!("speed:{speed}"));
    }
    if let Some(mtu) = read_int("mtu") {
        tags.push(format!("mtu:{mtu}"));
    }
    tags.sort();
    tags
}

/// The Agent's protocol counters from a `net/snmp` or `net/netstat` text.
fn emit_protocols(text: &str, bad: &mut BadLines, out: &mut Out<'_>) {
    let mut lines = text.lines().enumerate();
    while let Some((_, header)) = lines.next() {
        let Some((index, values)) = lines.next() else {
            break;
        };
        let (Some((protocol, names)), Some((value_protocol, values))) =
            (header.split_once(':'), values.split_once(':'))
        else {
            bad.note(index, "expected `Protocol: values` under its header");
            continue;
        };
        if protocol != value_protocol {
            bad.note(
                index,
                format!("`{value_protocol}` values under the `{protocol}` header"),
            );
            break;
        }
        let wanted: Vec<usize> = (0..PROTOCOL_METRICS.len())
            .filter(|&i| PROTOCOL_METRICS[i].0 == protocol)
            .collect();
        if wanted.is_empty() {
            continue;
        }
        for (name, value) in names
            .split_ascii_whitespace()
            .zip(values.split_ascii_whitespace())
        {
            let Some(&i) = wanted.iter().find(|&&i| PROTOCOL_METRICS[i].1 == name) else {
                continue;
            };
            let Ok(value) = value.parse::<u64>() else {
                bad.note(index, format!("`{protocol}` `{name}` is not a counter"));
                continue;
            };
            out.rate(PROTOCOL_METRICS[i].2, value as f64, &[]);
            out.monotonic(&COUNT_NAMES[i], value as f64, &[]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::MetricType;

    /// `net/dev` as proc(5) documents it, with a counter touching the colon.
    const NET_DEV: &str = "\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo: 324428631235 5893930    0    0    0     0          0         0 324428631235 5893930    0    0    0     0       0          0
  eth0:1319372245   41987    1    2    0     0          0         0  2348451   27413    3    4    0     0       0          0
docker0: 1782418   20054    0    0    0     0          0         0  1634848   20813    0   12    0     0       0          0
";

    #[test]
    fn net_dev_lines_give_the_name_and_counters() {
        let line = NET_DEV.lines().nth(3).unwrap();
        let (name, c) = parse_net_dev_line(line).unwrap();
        assert_eq!(name, "eth0");
        assert_eq!((c[0], c[1], c[2], c[3]), (1319372245, 41987, 1, 2));
        assert_eq!((c[8], c[9], c[10], c[11]), (2348451, 27413, 3, 4));
        assert_eq!(parse_net_dev_line("eth0: 1 2 x"), None);
    }

    #[test]
    fn every_interface_but_lo_gives_eight_rates_tagged_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let procfs = dir.path().join("proc");
        std::fs::create_dir_all(procfs.join("1/net")).unwrap();
        std::fs::write(procfs.join("1/net/dev"), NET_DEV).unwrap();
        let sysfs = dir.path().join("sys");
        std::fs::create_dir_all(sysfs.join("class/net/eth0")).unwrap();
        std::fs::write(sysfs.join("class/net/eth0/speed"), "10000\n").unwrap();
        std::fs::write(sysfs.join("class/net/eth0/mtu"), "1500\n").unwrap();
        let paths = Paths::new(&procfs, &sysfs);

        let mut problems = super::super::Problems::default();
        let mut buf = String::new();
        let mut samples = Vec::new();
        let mut out = Out {
            samples: &mut samples,
            host: "h",
            timestamp: 1.0,
        };
        let mut files = Files {
            buf: &mut buf,
            problems: &mut problems,
        };
        NetState::default().read_interfaces(&paths, 1, &mut files, &mut out);

        assert_eq!(samples.len(), 16);
        assert!(samples.iter().all(|s| s.kind == MetricType::Rate));
        let eth0 = |name: &str| {
            samples
                .iter()
                .find(|s| s.name == name && s.tags.contains(&"device:eth0".to_owned()))
                .unwrap()
        };
        assert_eq!(eth0("system.net.bytes_rcvd").value, 1319372245.0);
        assert_eq!(eth0("system.net.packets_in.drop").value, 2.0);
        assert_eq!(eth0("system.net.packets_out.error").value, 3.0);
        assert_eq!(
            eth0("system.net.bytes_sent").tags,
            ["device:eth0", "device_name:eth0", "mtu:1500", "speed:10000"]
        );
        let docker0 = samples
            .iter()
            .find(|s| s.tags[0] == "device:docker0")
            .unwrap();
        assert_eq!(docker0.tags, ["device:docker0", "device_name:docker0"]);
        assert!(!samples.iter().any(|s| s.tags[0] == "device:lo"));
        assert!(problems.current.is_empty());
    }

    #[test]
    fn snmp_and_netstat_give_the_agents_counters_as_rate_and_count() {
        let snmp = "\
Ip: Forwarding DefaultTTL InReceives InHdrErrors
Ip: 1 64 1000 2
Icmp: InMsgs InErrors
Icmp: 5 0
Tcp: RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens RetransSegs
Tcp: 1 200 120000 -1 77 9
Udp: InDatagrams NoPorts
Udp: 300 4
";
        let mut samples = Vec::new();
        let mut out = Out {
            samples: &mut samples,
            host: "h",
            timestamp: 1.0,
        };
        let mut bad = BadLines::default();
        emit_protocols(snmp, &mut bad, &mut out);
        assert_eq!(bad.count, 0);
        let got: Vec<(&str, MetricType, f64)> = samples
            .iter()
            .map(|s| (s.name.as_str(), s.kind, s.value))
            .collect();
        let r = MetricType::Rate;
        let c = MetricType::MonotonicCount;
        assert_eq!(
            got,
            [
                ("system.net.ip.in_receives", r, 1000.0),
                ("system.net.ip.in_receives.count", c, 1000.0),
                ("system.net.ip.in_header_errors", r, 2.0),
                ("system.net.ip.in_header_errors.count", c, 2.0),
                ("system.net.tcp.active_opens", r, 77.0),
                ("system.net.tcp.active_opens.count", c, 77.0),
                ("system.net.tcp.retrans_segs", r, 9.0),
                ("system.net.tcp.retrans_segs.count", c, 9.0),
                ("system.net.udp.in_datagrams", r, 300.0),
                ("system.net.udp.in_datagrams.count", c, 300.0),
                ("system.net.udp.no_ports", r, 4.0),
                ("system.net.udp.no_ports.count", c, 4.0),
            ]
        );
    }
}
