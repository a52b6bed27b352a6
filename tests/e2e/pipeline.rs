//! DogStatsD clients (the PyPI `datadog` package) through the listeners, the parser and the
//! aggregator, asserting what is flushed, value by value.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use kennel_tests::origin::{python, python_in_cgroup};
use kennel_tests::pipeline::{self, TestPipeline};
use runner::aggregator::{Flush, SeriesKind};

/// The production pipeline with its DogStatsD listeners under `dir`, trusting UDP clients'
/// container ids, and reading senders' cgroups from `procfs`.
fn start(dir: &Path, procfs: &Path) -> TestPipeline {
    let mut config = pipeline::config(dir);
    config.procfs_root = procfs.to_owned();
    config.dogstatsd_origin_detection_client = true;
    TestPipeline::start(config, Vec::new())
}

/// How long a test waits for what it sent to be flushed.
const WAIT: Duration = Duration::from_secs(15);

/// Runs the `datadog` client with `client` bound to a `DogStatsd`. The calls start just after
/// a whole second, so that (with 1 s buckets) they all land in one bucket: that sleep paces the
/// client, it waits for nothing.
fn datadog_client(client: &str, calls: &str) {
    let script = format!(
        "import time\nfrom datadog.dogstatsd import DogStatsd\nclient = {client}\n\
         time.sleep(1.02 - time.time() % 1)\n{calls}\nclient.flush()\nclient.close_socket()\n"
    );
    let status = Command::new("python3")
        .arg("-c")
        .arg(script)
        .status()
        .expect("python3 runs");
    assert!(
        status.success(),
        "the datadog client failed (is the PyPI `datadog` package installed? tests/prepare-machine installs it)"
    );
}

/// Every series point flushed so far, summed per (name, sorted tags).
fn series(flushes: &[Flush]) -> BTreeMap<(String, Vec<String>), (SeriesKind, f64)> {
    let mut out = BTreeMap::new();
    for flush in flushes {
        for series in &flush.series {
            if series.name.starts_with("kennel.") {
                continue;
            }
            let tags: Vec<String> = series.tags().map(str::to_owned).collect();
            let entry = out
                .entry((series.name.to_string(), tags))
                .or_insert((series.kind, 0.0));
            for point in &series.points {
                match series.kind {
                    SeriesKind::Gauge => entry.1 = point.value,
                    _ => entry.1 += point.value,
                }
            }
        }
    }
    out
}

#[test]
fn every_type_from_the_datadog_client_over_uds_is_aggregated() {
    // The client sends without blocking, so a burst larger than the kernel's queue of Unix
    // datagrams is dropped by the client before the runner can see it.
    let qlen: u32 = std::fs::read_to_string("/proc/sys/net/unix/max_dgram_qlen")
        .ok()
        .and_then(|q| q.trim().parse().ok())
        .unwrap_or(0);
    assert!(
        qlen >= 512,
        "raise net.unix.max_dgram_qlen to 512 or more (tests/prepare-machine does): it is {qlen}"
    );
    let dir = tempfile::tempdir().unwrap();
    let pipeline = start(dir.path(), Path::new("/proc"));
    datadog_client(
        &format!(
            "DogStatsd(socket_path='{}', disable_telemetry=True)",
            pipeline.socket.display()
        ),
        "client.gauge('t.gauge', 5, tags=['env:test'])\n\
         client.gauge('t.gauge', 7, tags=['env:test'])\n\
         client.increment('t.count', 3, tags=['env:test'])\n\
         client.increment('t.count', 3, tags=['env:test'])\n\
         import socket\n\
         raw = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n\
         raw.sendto(b't.sampled:1|c|@0.5', client.socket_path)\n\
         [client.histogram('t.hist', v) for v in range(1, 11)]\n\
         [client.distribution('t.dist', v) for v in range(1, 101)]\n\
         [client.set('t.set', v) for v in ['a', 'b', 'a']]\n\
         client.event('Deploy', 'version 2 is out', alert_type='success', tags=['env:test'])\n\
         client.service_check('t.up', 1, message='degraded')",
    );
    // The service check was sent last: once it is flushed, two more flushes close every
    // bucket the client's samples went into.
    pipeline.wait_for(WAIT, |f| f.iter().any(|f| !f.service_checks.is_empty()));
    let flushes = pipeline.wait_for_flushes(2);
    let got = series(&flushes);
    let tagged = |name: &str| (name.to_owned(), vec!["env:test".to_owned()]);
    let plain = |name: &str| (name.to_owned(), Vec::<String>::new());
    assert_eq!(
        got.get(&tagged("t.gauge")),
        Some(&(SeriesKind::Gauge, 7.0)),
        "{got:#?}"
    );
    assert_eq!(
        got.get(&tagged("t.count")),
        Some(&(SeriesKind::Rate, 6.0)),
        "6 in a 1 s bucket"
    );
    assert_eq!(
        got.get(&plain("t.sampled")),
        Some(&(SeriesKind::Rate, 2.0)),
        "1 at a 0.5 sample rate"
    );
    assert_eq!(
        got.get(&plain("t.hist.max")),
        Some(&(SeriesKind::Gauge, 10.0))
    );
    assert_eq!(
        got.get(&plain("t.hist.avg")),
        Some(&(SeriesKind::Gauge, 5.5))
    );
    assert_eq!(
        got.get(&plain("t.hist.count")),
        Some(&(SeriesKind::Rate, 10.0))
    );
    assert!(
        got.contains_key(&plain("t.hist.median"))
            && got.contains_key(&plain("t.hist.95percentile"))
    );
    assert_eq!(got.get(&plain("t.set")), Some(&(SeriesKind::Gauge, 2.0)));

    let sketches: Vec<_> = flushes
        .iter()
        .flat_map(|f| &f.sketches)
        .filter(|s| &*s.name == "t.dist")
        .collect();
    let count: u64 = sketches
        .iter()
        .flat_map(|s| &s.points)
        .map(|p| p.sketch.count())
        .sum();
    assert_eq!(count, 100);
    let events: Vec<_> = flushes.iter().flat_map(|f| &f.events).collect();
    assert_eq!(events.len(), 1);
    assert_eq!(
        (events[0].title.as_str(), events[0].text.as_str()),
        ("Deploy", "version 2 is out")
    );
    let checks: Vec<_> = flushes.iter().flat_map(|f| &f.service_checks).collect();
    assert_eq!(checks.len(), 1);
    assert_eq!(
        (checks[0].name.as_str(), checks[0].message.as_str()),
        ("t.up", "degraded")
    );
}

#[test]
fn udp_clients_and_malformed_datagrams() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = start(dir.path(), Path::new("/proc"));
    datadog_client(
        &format!(
            "DogStatsd(host='127.0.0.1', port={}, disable_telemetry=True)",
            pipeline.udp_port
        ),
        "client.gauge('u.gauge', 42)",
    );
    let garbage = format!(
        "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         s.sendto(b'no.type:1\\n:3|c\\nu.after:1|g\\n\\xff\\xfe|c', ('127.0.0.1', {}))",
        pipeline.udp_port
    );
    assert!(
        Command::new("python3")
            .arg("-c")
            .arg(garbage)
            .status()
            .unwrap()
            .success()
    );
    let flushes = pipeline.wait_for(WAIT, |f| {
        series(f).contains_key(&("u.after".to_owned(), vec![])) && parse_errors(f) >= 3.0
    });
    let got = series(&flushes);
    assert_eq!(
        got.get(&("u.gauge".to_owned(), vec![])),
        Some(&(SeriesKind::Gauge, 42.0))
    );
    assert_eq!(
        got.get(&("u.after".to_owned(), vec![])),
        Some(&(SeriesKind::Gauge, 1.0)),
        "the good message after bad ones"
    );
    assert_eq!(
        parse_errors(&flushes),
        3.0,
        "three malformed messages counted"
    );
}

/// The DogStatsD parse errors counted in `flushes`.
fn parse_errors(flushes: &[Flush]) -> f64 {
    flushes
        .iter()
        .flat_map(|f| &f.series)
        .filter(|s| &*s.name == "kennel.dogstatsd.parse_errors")
        .flat_map(|s| &s.points)
        .map(|p| p.value)
        .sum()
}

#[test]
fn the_kernel_names_the_sending_container_and_a_spoofed_one_is_ignored() {
    const CONTAINER: &str = "3f1b2c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f809";
    let dir = tempfile::tempdir().unwrap();
    let procfs = dir.path().join("proc");
    let pipeline = start(dir.path(), &procfs);
    let mut in_container = python_in_cgroup(
        &procfs,
        &format!("0::/system.slice/docker-{CONTAINER}.scope\n"),
        &format!(
            "s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\ns.sendto(b'o.uds:1|c|c:ci-spoofed', '{}')",
            pipeline.socket.display()
        ),
    );
    let mut over_udp = python(&format!(
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.sendto(b'o.udp:1|c|c:ci-client-said', ('127.0.0.1', {}))",
        pipeline.udp_port
    ));
    assert!(in_container.wait().unwrap().success() && over_udp.wait().unwrap().success());
    let flushes = pipeline.wait_for(WAIT, |f| {
        let got = series(f);
        got.keys().any(|(name, _)| name == "o.uds") && got.keys().any(|(name, _)| name == "o.udp")
    });
    let got = series(&flushes);
    assert!(
        got.contains_key(&(
            "o.uds".to_owned(),
            vec![format!("container_id:{CONTAINER}")]
        )),
        "the kernel's container, not the spoofed one: {got:#?}"
    );
    assert!(
        got.contains_key(&(
            "o.udp".to_owned(),
            vec!["container_id:client-said".to_owned()]
        )),
        "over UDP the client's word is all there is: {got:#?}"
    );
}
