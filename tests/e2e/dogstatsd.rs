//! The DogStatsD listeners with real client processes on real sockets, and `runner run` fed by
//! a real Rust client, `cadence`.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cadence::prelude::*;
use cadence::{BufferedUnixMetricSink, StatsdClient, UdpMetricSink};
use kennel_tests::http_server::closed_port;
use kennel_tests::origin::{python, python_in_cgroup};
use kennel_tests::runner_process::{Options, RunnerProcess};
use kennel_tests::wait;
use runner::dogstatsd::listener::{Batch, ListenerConfig, ListenerStats, Listeners, Transport};
use runner::dogstatsd::origin::Origin;

const CONTAINER: &str = "3f1b2c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f809";

type Received = Arc<Mutex<Vec<(Transport, String, Origin)>>>;

fn start(config: &ListenerConfig) -> (Listeners, Received) {
    let received: Received = Arc::default();
    let into = received.clone();
    let sink = Arc::new(move |batch: Batch| {
        let mut into = into.lock().unwrap();
        for (bytes, origin) in batch.packets() {
            into.push((
                batch.transport,
                String::from_utf8_lossy(bytes).into_owned(),
                origin.clone(),
            ));
        }
        true
    });
    let listeners = Listeners::start(
        config,
        sink,
        Arc::new(ListenerStats::new(&runner::telemetry::Telemetry::new())),
        &runner::health::Health::new(),
    )
    .expect("listeners start");
    (listeners, received)
}

fn config(dir: &Path) -> ListenerConfig {
    ListenerConfig {
        socket: Some(dir.join("run/dsd.socket")),
        stream_socket: Some(dir.join("run/dsd-stream.socket")),
        udp: Some("127.0.0.1:0".parse().unwrap()),
        origin_detection: true,
        buffer_size: 8192,
        so_rcvbuf: 1 << 20,
        stream_max_connections: 16,
        procfs: dir.join("proc"),
    }
}

/// Waits (up to 10 s) until `count` datagrams have been received; returns them all, sorted.
fn wait_for(received: &Received, count: usize) -> Vec<(Transport, String, Origin)> {
    let mut all = wait::until(
        Duration::from_secs(10),
        || received.lock().unwrap().clone(),
        |all| all.len() >= count,
    );
    all.sort_by(|a, b| a.1.cmp(&b.1));
    all
}

#[test]
fn each_datagram_carries_its_senders_container_from_the_kernel() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let (_listeners, received) = start(&config);
    let socket = config.socket.as_ref().unwrap().display().to_string();
    let send = |message: &str| {
        format!(
            "s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\ns.sendto(b'{message}', '{socket}')"
        )
    };
    let mut in_container = python_in_cgroup(
        &config.procfs,
        &format!("0::/system.slice/docker-{CONTAINER}.scope\n"),
        &send("a.metric:1|c|c:ci-spoofed"),
    );
    let mut on_host = python_in_cgroup(
        &config.procfs,
        "0::/user.slice/user-0.slice/session-1.scope\n",
        &send("b.metric:2|g"),
    );
    let host_pid = on_host.id();
    assert!(in_container.wait().unwrap().success() && on_host.wait().unwrap().success());

    let got = wait_for(&received, 2);
    assert_eq!(
        got,
        [
            (
                Transport::UnixDatagram,
                "a.metric:1|c|c:ci-spoofed".to_owned(),
                Origin::Container(CONTAINER.into())
            ),
            (
                Transport::UnixDatagram,
                "b.metric:2|g".to_owned(),
                Origin::Host(host_pid)
            ),
        ]
    );
}

#[test]
fn udp_and_length_prefixed_stream_frames_are_received() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let (listeners, received) = start(&config);
    let port = listeners.udp_addr.unwrap().port();
    let stream = config.stream_socket.as_ref().unwrap().display().to_string();
    let mut udp = python(&format!(
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.sendto(b'u.metric:1|c', ('127.0.0.1', {port}))"
    ));
    let mut framed = python_in_cgroup(
        &config.procfs,
        &format!("0::/docker/{CONTAINER}\n"),
        &format!(
            "s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\ns.connect('{stream}')\nfor m in [b'x.one:1|c', b'x.two:2|c\\nx.three:3|c']:\n    s.sendall(struct.pack('<I', len(m)) + m)\ns.close()"
        ),
    );
    assert!(udp.wait().unwrap().success() && framed.wait().unwrap().success());

    let got = wait_for(&received, 3);
    assert_eq!(
        got,
        [
            (Transport::Udp, "u.metric:1|c".to_owned(), Origin::Unknown),
            (
                Transport::UnixStream,
                "x.one:1|c".to_owned(),
                Origin::Container(CONTAINER.into())
            ),
            (
                Transport::UnixStream,
                "x.two:2|c\nx.three:3|c".to_owned(),
                Origin::Container(CONTAINER.into())
            ),
        ]
    );
}

#[test]
fn a_stale_socket_is_replaced_and_anything_else_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.stream_socket = None;
    config.udp = None;
    // A socket file left behind, as by a runner that crashed.
    let path = config.socket.as_ref().unwrap();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    drop(std::os::unix::net::UnixDatagram::bind(path).unwrap());
    let (_second, _) = start(&config);
    let meta = std::fs::metadata(config.socket.as_ref().unwrap()).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
        0o722
    );

    let occupied = dir.path().join("not-a-socket");
    std::fs::write(&occupied, "data").unwrap();
    config.socket = Some(occupied);
    let sink = Arc::new(|_: Batch| true);
    let error = Listeners::start(
        &config,
        sink,
        Arc::new(ListenerStats::new(&runner::telemetry::Telemetry::new())),
        &runner::health::Health::new(),
    )
    .err()
    .expect("refused");
    let message = error.to_string();
    assert!(
        message.contains("`dogstatsd_socket`") && message.contains("not a socket"),
        "{message}"
    );
}

/// One batch's datagrams, as text, with their origins.
type ReceivedBatch = Vec<(String, Origin)>;

#[test]
fn datagrams_taken_in_one_receive_keep_each_senders_origin() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.stream_socket = None;
    config.udp = None;
    // The sink holds the listener's thread on its first batch until both senders' datagrams
    // are queued, so that the next `recvmmsg` takes them together.
    let batches: Arc<Mutex<Vec<ReceivedBatch>>> = Arc::default();
    let (release, released) = std::sync::mpsc::channel::<()>();
    let released = Mutex::new(released);
    let into = batches.clone();
    let sink = Arc::new(move |batch: Batch| {
        let first = {
            let mut batches = into.lock().unwrap();
            batches.push(
                batch
                    .packets()
                    .map(|(bytes, origin)| {
                        (String::from_utf8_lossy(bytes).into_owned(), origin.clone())
                    })
                    .collect(),
            );
            batches.len() == 1
        };
        if first {
            let _ = released
                .lock()
                .unwrap()
                .recv_timeout(Duration::from_secs(10));
        }
        true
    });
    let _listeners = Listeners::start(
        &config,
        sink,
        Arc::new(ListenerStats::new(&runner::telemetry::Telemetry::new())),
        &runner::health::Health::new(),
    )
    .expect("listeners start");
    let socket = config.socket.as_ref().unwrap();
    UnixDatagram::unbound()
        .unwrap()
        .send_to(b"first:1|c", socket)
        .unwrap();
    wait::until(
        Duration::from_secs(10),
        || batches.lock().unwrap().len(),
        |batches| *batches >= 1,
    );

    let send = |message: &str| {
        format!(
            "s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\ns.sendto(b'{message}', '{}')",
            socket.display()
        )
    };
    let mut in_container = python_in_cgroup(
        &config.procfs,
        &format!("0::/system.slice/docker-{CONTAINER}.scope\n"),
        &send("from.container:1|c"),
    );
    let mut on_host = python_in_cgroup(&config.procfs, "0::/user.slice\n", &send("from.host:2|c"));
    let host_pid = on_host.id();
    assert!(in_container.wait().unwrap().success() && on_host.wait().unwrap().success());
    release.send(()).unwrap();

    let mut second = wait::until(
        Duration::from_secs(10),
        || batches.lock().unwrap().get(1).cloned(),
        Option::is_some,
    )
    .unwrap_or_default();
    second.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        second,
        [
            (
                "from.container:1|c".to_owned(),
                Origin::Container(CONTAINER.into())
            ),
            ("from.host:2|c".to_owned(), Origin::Host(host_pid)),
        ],
        "one batch, one origin per datagram"
    );
}

/// A `runner run` with DogStatsD on a Unix datagram socket, a Unix stream socket and UDP, 1 s
/// buckets, and its OpenMetrics page.
struct Runner {
    process: RunnerProcess,
    socket: PathBuf,
    stream_socket: PathBuf,
    udp_port: u16,
    _dir: tempfile::TempDir,
}

impl Runner {
    fn start() -> Self {
        Self::start_with("")
    }

    /// A runner with `extra` runner config (YAML).
    fn start_with(extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("dsd.socket");
        let stream_socket = dir.path().join("dsd-stream.socket");
        let udp_port = closed_port();
        let process = RunnerProcess::start(
            Options {
                dogstatsd_socket: Some(socket.clone()),
                dogstatsd_port: udp_port,
                extra: format!(
                    "{}dogstatsd_stream_socket: {}\n{extra}",
                    // One-second buckets, unless the test sets its own.
                    if extra.contains("aggregator:") {
                        ""
                    } else {
                        "aggregator:\n  bucket_size_seconds: 1\n"
                    },
                    stream_socket.display()
                ),
                log: Some("warn"),
                ..Options::default()
            },
            &[],
        );
        process.wait_for("the DogStatsD sockets", Duration::from_secs(20), |_| {
            socket.exists() && stream_socket.exists()
        });
        Self {
            process,
            socket,
            stream_socket,
            udp_port,
            _dir: dir,
        }
    }

    /// A sample's value on `/metrics`, if it is there.
    fn sample(&self, series: &str) -> Option<f64> {
        self.samples().0.get(series).copied()
    }

    /// The samples on `/metrics`: `name{labels}` → value, without the `container_id` label
    /// the runner adds if this test runs in a container.
    fn samples(&self) -> (BTreeMap<String, f64>, String) {
        let body = self.process.metrics();
        let samples = body
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| {
                let (series, value) = line.rsplit_once(' ')?;
                let series = match series.split_once('{') {
                    Some((name, labels)) => {
                        let labels: Vec<&str> = labels
                            .trim_end_matches('}')
                            .split(',')
                            .filter(|l| !l.starts_with("container_id="))
                            .collect();
                        if labels.is_empty() {
                            name.to_owned()
                        } else {
                            format!("{name}{{{}}}", labels.join(","))
                        }
                    }
                    None => series.to_owned(),
                };
                Some((series, value.parse().ok()?))
            })
            .collect();
        (samples, body)
    }
}

/// Every metric type `cadence` has, through `client`, tagged `env:test` by the client; returns
/// how many metrics were sent. The caller starts just after a whole second, so that (with 1 s
/// buckets) everything lands in one bucket.
fn send_every_type(client: &StatsdClient) -> usize {
    let sent = [
        client.gauge("g", 5u64).map(drop),
        client.gauge("g", 7.5f64).map(drop),
        client.count("c", 3i64).map(drop),
        client.count("c", 3i64).map(drop),
        client.incr("c").map(drop),
        client.decr("c").map(drop),
        client
            .count_with_tags("c", 10i64)
            .with_tag("path", "/api")
            .try_send()
            .map(drop),
        client.time("t", 250u64).map(drop),
        client.time("t", Duration::from_millis(150)).map(drop),
        client.histogram("h", 1u64).map(drop),
        client.histogram("h", 2.5f64).map(drop),
        client.histogram("h", vec![3u64, 4, 5]).map(drop),
        client.set("s", 1i64).map(drop),
        client.set("s", 2i64).map(drop),
        client.set("s", 1i64).map(drop),
        client.meter("m", 1u64).map(drop),
    ];
    let mut count = sent.len();
    for v in 1..=100u64 {
        client.distribution("d", v).expect("sent");
        count += 1;
    }
    for result in &sent {
        assert!(result.is_ok(), "cadence failed to send: {result:?}");
    }
    client.flush().expect("flushed");
    count
}

/// Sleeps until just after the next whole second. A pacing sleep, not a wait: with 1 s buckets,
/// what is sent right after it lands in one bucket.
fn at_a_whole_second() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    std::thread::sleep(
        Duration::from_millis(1020) - Duration::from_millis(now.subsec_millis().into()),
    );
}

/// What [`send_every_type`] becomes on the page, for the metrics prefixed `prefix`.
fn assert_every_type(samples: &BTreeMap<String, f64>, page: &str, prefix: &str) {
    let env = "{env=\"test\"}";
    let expected = [
        (format!("{prefix}_g{env}"), 7.5),
        (format!("{prefix}_c_total{env}"), 3.0 + 3.0 + 1.0 - 1.0),
        (
            format!("{prefix}_c_total{{env=\"test\",path=\"/api\"}}"),
            10.0,
        ),
        (format!("{prefix}_t_max{env}"), 250.0),
        (format!("{prefix}_t_avg{env}"), 200.0),
        (format!("{prefix}_t_count_total{env}"), 2.0),
        (format!("{prefix}_h_max{env}"), 5.0),
        (format!("{prefix}_h_avg{env}"), 15.5 / 5.0),
        (format!("{prefix}_h_count_total{env}"), 5.0),
        (format!("{prefix}_s{env}"), 2.0),
        (format!("{prefix}_d_count{env}"), 100.0),
        (format!("{prefix}_d_sum{env}"), 5050.0),
    ];
    for (series, value) in expected {
        assert_eq!(samples.get(&series), Some(&value), "{series} in:\n{page}");
    }
    for series in [
        format!("{prefix}_t_median{env}"),
        format!("{prefix}_h_95percentile{env}"),
    ] {
        assert!(samples.contains_key(&series), "{series} in:\n{page}");
    }
    let median = samples
        .get(&format!("{prefix}_d{{env=\"test\",quantile=\"0.5\"}}"))
        .copied()
        .unwrap_or_default();
    assert!(
        (49.0..=52.0).contains(&median),
        "the distribution's median is about 50, within the sketch's accuracy: {median}"
    );
    assert!(
        !samples
            .keys()
            .any(|s| s.starts_with(&format!("{prefix}_m"))),
        "a meter (`|m`) is not a DogStatsD type: {page}"
    );
}

/// `cadence` as a real client of `runner run`: over the Unix datagram socket through its
/// buffered sink (several metrics per datagram, newline-separated), and over UDP one metric
/// per datagram; every value checked on the OpenMetrics page. cadence has no events or service
/// checks (the PyPI `datadog` client's test in `pipeline.rs` covers those); its meters (`|m`)
/// are not a DogStatsD type, and are counted as parse errors.
#[test]
fn cadence_metrics_over_uds_and_udp_are_aggregated_value_by_value() {
    let runner = Runner::start();
    let uds = {
        let socket = UnixDatagram::unbound().unwrap();
        let sink = BufferedUnixMetricSink::from(&runner.socket, socket);
        StatsdClient::builder("cadence.uds", sink)
            .with_tag("env", "test")
            .build()
    };
    let udp = {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let sink = UdpMetricSink::from(("127.0.0.1", runner.udp_port), socket).unwrap();
        StatsdClient::builder("cadence.udp", sink)
            .with_tag("env", "test")
            .build()
    };
    at_a_whole_second();
    let sent_over_uds = send_every_type(&uds);
    let sent_over_udp = send_every_type(&udp);

    // Each client sent its distribution last, and the UDP client after the UDS one: once both
    // distributions are whole on the page, every bucket they went into has been flushed.
    let whole = |samples: &BTreeMap<String, f64>, prefix: &str| {
        samples.get(&format!("{prefix}_d_count{{env=\"test\"}}")) == Some(&100.0)
    };
    let (samples, page) = wait::until(
        Duration::from_secs(15),
        || runner.samples(),
        |(samples, _)| whole(samples, "cadence_uds") && whole(samples, "cadence_udp"),
    );
    assert_every_type(&samples, &page, "cadence_uds");
    assert_every_type(&samples, &page, "cadence_udp");
    let telemetry = |series: &str| samples.get(series).copied().unwrap_or_default();
    assert_eq!(
        telemetry("kennel_dogstatsd_datagrams_total{transport=\"udp\"}"),
        sent_over_udp as f64,
        "one datagram per metric over UDP"
    );
    let uds_datagrams = telemetry("kennel_dogstatsd_datagrams_total{transport=\"uds\"}");
    assert!(
        (1.0..sent_over_uds as f64).contains(&uds_datagrams),
        "the buffered sink packs metrics into fewer datagrams: {uds_datagrams}"
    );
    assert_eq!(
        telemetry("kennel_dogstatsd_messages_total{message_type=\"metric\"}"),
        (sent_over_uds - 1 + sent_over_udp - 1) as f64,
        "every metric but the meters parsed"
    );
    assert_eq!(
        telemetry("kennel_dogstatsd_parse_errors_total{reason=\"unknown_type\"}"),
        2.0,
        "the two meters"
    );
}

/// A datagram of `buffer_size + n` bytes for the metrics prefixed `prefix`: a whole line tagged
/// `env:production`, then whole `pad` lines, then a last line whose tag `env:production` the
/// buffer's end cuts at `env:pr`. Returns it with how many pad lines it has.
fn cut_at_a_tag(prefix: &str, buffer_size: usize) -> (String, usize) {
    let whole = format!("{prefix}.whole:1|c|#env:production\n");
    let pad = format!("{prefix}.pad:1|c\n");
    let last_until_cut = format!("{prefix}.last:1|c|#env:pr");
    // A fill line of `fill_len` bytes makes the total come out exactly at the buffer's end.
    let fill_min = format!("{prefix}.fill:1|c|#f:x\n").len();
    let room = buffer_size - whole.len() - last_until_cut.len();
    let pads = (room - fill_min) / pad.len();
    let fill_len = room - pads * pad.len();
    let fill = format!(
        "{prefix}.fill:1|c|#f:{}\n",
        "x".repeat(fill_len - fill_min + 1)
    );
    let datagram = format!("{whole}{}{fill}{last_until_cut}oduction", pad.repeat(pads));
    assert_eq!(
        &datagram[buffer_size - 6..buffer_size],
        "env:pr",
        "the buffer ends inside the tag"
    );
    (datagram, pads)
}

/// Issue 13, item 5: a datagram longer than `dogstatsd_buffer_size` used to have its cut last
/// line parsed as whole (`env:production` became `env:pr`), uncounted. Over the Unix datagram
/// socket and UDP, the whole lines before the cut are kept, the cut line is dropped, and each
/// cut datagram is counted on `/metrics` and said in the log.
#[test]
fn a_datagram_longer_than_the_buffer_loses_its_cut_line_not_a_tag() {
    const BUFFER: usize = 512;
    let runner = Runner::start_with(&format!("dogstatsd_buffer_size: {BUFFER}\n"));
    let (over_uds, uds_pads) = cut_at_a_tag("cut.uds", BUFFER);
    let (over_udp, udp_pads) = cut_at_a_tag("cut.udp", BUFFER);
    UnixDatagram::unbound()
        .unwrap()
        .send_to(over_uds.as_bytes(), &runner.socket)
        .unwrap();
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .send_to(over_udp.as_bytes(), ("127.0.0.1", runner.udp_port))
        .unwrap();

    let truncated = |transport: &str| {
        format!("kennel_dogstatsd_truncated_datagrams_total{{transport=\"{transport}\"}}")
    };
    let (samples, page) = wait::until(
        Duration::from_secs(15),
        || runner.samples(),
        |(samples, _)| {
            ["uds", "udp"].iter().all(|t| {
                samples.contains_key(&format!("cut_{t}_whole_total{{env=\"production\"}}"))
                    && samples.get(&truncated(t)) == Some(&1.0)
            })
        },
    );
    for (transport, pads) in [("uds", uds_pads), ("udp", udp_pads)] {
        assert_eq!(
            samples.get(&format!(
                "cut_{transport}_whole_total{{env=\"production\"}}"
            )),
            Some(&1.0),
            "{transport}: the first whole line is kept:\n{page}"
        );
        assert_eq!(
            samples.get(&format!("cut_{transport}_pad_total")),
            Some(&(pads as f64)),
            "{transport}: every whole line before the cut is kept:\n{page}"
        );
        assert!(
            !samples
                .keys()
                .any(|s| s.starts_with(&format!("cut_{transport}_last"))),
            "{transport}: the cut line is dropped, not parsed with a cut tag:\n{page}"
        );
        assert_eq!(
            samples.get(&truncated(transport)),
            Some(&1.0),
            "{transport}: the cut datagram is counted:\n{page}"
        );
    }
    assert!(
        !page.contains("env=\"pr\""),
        "no series with the cut tag:\n{page}"
    );
    let log = runner.process.log();
    assert!(
        log.contains("longer than `dogstatsd_buffer_size`"),
        "said in the log:\n{log}"
    );
}

/// A counter incremented 7 times in a 10 s bucket is flushed as 0.7/s, and used to show as
/// `7.000000000000001` on `/metrics`; and a line with 300 tags is dropped and counted, where it
/// used to make a 300-tag context.
#[test]
fn counts_are_exact_on_metrics_and_a_line_with_too_many_tags_is_dropped_and_counted() {
    let runner = Runner::start_with("aggregator:\n  bucket_size_seconds: 10\n");
    let client = UnixDatagram::unbound().unwrap();
    for _ in 0..7 {
        client.send_to(b"exact.hits:1|c", &runner.socket).unwrap();
    }
    let tags: Vec<String> = (0..300).map(|i| format!("t{i}")).collect();
    let many = format!("many.tags:1|c|#{}", tags.join(","));
    client.send_to(many.as_bytes(), &runner.socket).unwrap();
    let dropped = "kennel_aggregator_samples_dropped_total{reason=\"too_many_tags\"}";
    let (samples, page) = wait::until(
        Duration::from_secs(30),
        || runner.samples(),
        |(samples, _)| samples.contains_key("exact_hits_total") && samples.contains_key(dropped),
    );
    assert!(
        page.lines().any(|line| line == "exact_hits_total 7"),
        "the count is exactly 7:\n{page}"
    );
    assert_eq!(samples.get(dropped), Some(&1.0), "{page}");
    assert!(
        !page.lines().any(|line| line.starts_with("many_tags")),
        "{page}"
    );
}

/// Issue 13, item 6: a second runner started with the first's socket path used to replace the
/// live socket without a word, and delete it on exit, leaving the first deaf. For the Unix
/// datagram and stream sockets alike, the second now refuses to start with an error naming the
/// path and the key, exits, and leaves the first's socket file (the same inode) in place; the
/// first keeps receiving on it.
#[test]
fn a_second_runner_refuses_a_served_socket_and_leaves_it_to_the_first() {
    let first = Runner::start();
    for (key, path) in [
        ("dogstatsd_socket", &first.socket),
        ("dogstatsd_stream_socket", &first.stream_socket),
    ] {
        let inode = std::fs::metadata(path).unwrap().ino();
        let options = match key {
            "dogstatsd_socket" => Options {
                dogstatsd_socket: Some(path.clone()),
                ..Options::default()
            },
            _ => Options {
                extra: format!("{key}: {}\n", path.display()),
                ..Options::default()
            },
        };
        let mut second = RunnerProcess::launch(
            Options {
                log: Some("warn"),
                ..options
            },
            &[],
        );
        let status = second.exit_status(Duration::from_secs(30));
        let log = second.log();
        assert!(
            status.is_some_and(|s| !s.success()),
            "{key}: the second runner fails to start ({status:?}); log:\n{log}"
        );
        assert!(
            log.contains(&path.display().to_string())
                && log.contains(&format!("`{key}`"))
                && log.contains("another process is serving this socket"),
            "{key}: the error names the path and the key; log:\n{log}"
        );
        drop(second);
        assert_eq!(
            std::fs::metadata(path).map(|m| m.ino()).ok(),
            Some(inode),
            "{key}: the first runner's socket file is still there after the second exited"
        );
    }

    UnixDatagram::unbound()
        .unwrap()
        .send_to(b"first.still.hears:1|c", &first.socket)
        .unwrap();
    let mut stream = UnixStream::connect(&first.stream_socket).unwrap();
    let frame = b"first.still.hears.stream:1|c";
    stream
        .write_all(&(frame.len() as u32).to_le_bytes())
        .unwrap();
    stream.write_all(frame).unwrap();
    let (samples, page) = wait::until(
        Duration::from_secs(15),
        || first.samples(),
        |(samples, _)| {
            samples.contains_key("first_still_hears_total")
                && samples.contains_key("first_still_hears_stream_total")
        },
    );
    assert_eq!(
        (
            samples.get("first_still_hears_total"),
            samples.get("first_still_hears_stream_total")
        ),
        (Some(&1.0), Some(&1.0)),
        "the first runner still receives on both sockets:\n{page}"
    );
}

/// Issue 13, item 7: 2,000 connections to the stream socket used to make 2,008 threads. With
/// `dogstatsd_stream_max_connections: 8`, 300 connections leave the runner with at most 8
/// threads more than before them; the 293 past the cap are refused, counted on `/metrics` and
/// said in the log once; a connection within the cap still delivers its metrics.
#[test]
fn stream_connections_past_the_cap_are_refused_without_a_thread_each() {
    const CAP: usize = 8;
    const CONNECTIONS: usize = 300;
    let runner = Runner::start_with(&format!("dogstatsd_stream_max_connections: {CAP}\n"));
    // A scrape first, so that whatever threads serving `/metrics` takes are in the baseline.
    assert!(runner.sample("first_never_sent_total").is_none());
    let before = runner.process.threads();

    let mut within_cap = UnixStream::connect(&runner.stream_socket).unwrap();
    // Held open until the end, so that they count against the cap.
    let mut others = Vec::with_capacity(CONNECTIONS - 1);
    for _ in 1..CONNECTIONS {
        others.push(UnixStream::connect(&runner.stream_socket).unwrap());
    }
    let refused = "kennel_dogstatsd_stream_connections_refused_total";
    let counted = wait::until(
        Duration::from_secs(15),
        || runner.sample(refused),
        |n| *n == Some((CONNECTIONS - CAP) as f64),
    );
    let after = runner.process.threads();
    println!("threads: {before} before, {after} with {CONNECTIONS} connections open (cap {CAP})");
    assert_eq!(
        counted,
        Some((CONNECTIONS - CAP) as f64),
        "every connection past the cap is refused and counted"
    );
    assert!(
        after <= before + CAP as u64,
        "threads: {before} before, {after} with {CONNECTIONS} connections open (cap {CAP})"
    );

    let frame = b"within.cap:1|c";
    within_cap
        .write_all(&(frame.len() as u32).to_le_bytes())
        .unwrap();
    within_cap.write_all(frame).unwrap();
    let delivered = wait::until(
        Duration::from_secs(15),
        || runner.sample("within_cap_total"),
        Option::is_some,
    );
    assert_eq!(delivered, Some(1.0), "a connection within the cap delivers");
    let log = runner.process.log();
    assert_eq!(
        log.matches("DogStatsD stream connections refused").count(),
        1,
        "said once per interval:\n{log}"
    );
    drop(others);
}

/// Issue 13, item 4: one process flooding unique contexts used to fill the one global context
/// limit, so that a second sender's new metrics and a newly added check's were dropped,
/// silently (status said OK), for minutes after the flood. Now each origin has its own quota
/// and checks a pool of their own: the flooding process (this test) is held to its 500, its
/// refusals are counted against it alone, on `/metrics` and in `runner status`, and a second
/// sender (the `datadog` Python client) and a check added during the flood flow as usual.
#[test]
fn a_flooding_sender_is_held_to_its_quota_while_other_senders_and_checks_flow() {
    let runner = Runner::start_with(
        "aggregator:\n  bucket_size_seconds: 1\n  max_contexts: 3000\n  max_check_contexts: 1000\n  max_contexts_per_origin: 500\n",
    );
    let flood = UnixDatagram::unbound().unwrap();
    let send_flood = || {
        for batch in 0..100 {
            let lines: Vec<String> = (0..50)
                .map(|i| format!("flood.metric:1|g|#n:{}", batch * 50 + i))
                .collect();
            flood
                .send_to(lines.join("\n").as_bytes(), &runner.socket)
                .unwrap();
        }
    };
    send_flood();
    runner.process.write_confd(
        "test_plugin.d/ok.yaml",
        "instances:\n  - mode: ok\n    min_collection_interval: 1\n",
    );
    let quiet = format!(
        "DogStatsd(socket_path={:?})",
        runner.socket.display().to_string()
    );
    let ours = format!("origin=\"process:{}\"", std::process::id());
    let refused = format!("kennel_aggregator_origin_contexts_refused_total{{{ours}}}");
    let (samples, page) = wait::until(
        Duration::from_secs(30),
        || {
            // The flood goes on, and so does the second sender.
            send_flood();
            let status = Command::new("python3")
                .arg("-c")
                .arg(format!(
                    "from datadog.dogstatsd import DogStatsd\nclient = {quiet}\n\
                     client.gauge('second.sender', 1, tags=['who:python'])\nclient.flush()\n"
                ))
                .status()
                .expect("python3 runs");
            assert!(status.success(), "the datadog client runs");
            runner.samples()
        },
        |(samples, _)| {
            samples.contains_key("second_sender{who=\"python\"}")
                && samples.keys().any(|k| k.starts_with("test_ok{"))
                && samples.contains_key(&refused)
        },
    );
    let flood_series = page
        .lines()
        .filter(|l| l.starts_with("flood_metric{"))
        .count();
    assert_eq!(flood_series, 500, "the flood holds its quota, no more");
    assert!(samples[&refused] > 0.0, "{page}");
    assert_eq!(
        samples.get("kennel_aggregator_samples_dropped_total{reason=\"context_limit\"}"),
        Some(&0.0),
        "no pool ran out: {page}"
    );

    let status = runner.process.status();
    let origins = status["contexts"]["origins"].as_array().unwrap();
    let origin = |key: &str| origins.iter().find(|o| o["origin"] == key).cloned();
    let us = origin(&format!("process:{}", std::process::id())).expect("the flood is listed");
    assert_eq!(us["contexts"], 500);
    assert!(us["refused"].as_u64().unwrap() > 0);
    assert!(
        origins.iter().any(|o| o["pool"] == "dogstatsd"
            && o["origin"] != us["origin"]
            && o["contexts"].as_u64() >= Some(1)
            && o["refused"] == 0),
        "the second sender has its own quota, untouched: {origins:?}"
    );
    assert!(
        origins.iter().any(|o| o["pool"] == "checks"
            && o["name"]
                .as_str()
                .is_some_and(|n| n.contains("test_plugin"))
            && o["refused"] == 0),
        "the check's results are charged to the check: {origins:?}"
    );

    let text = Command::new(kennel_tests::runner_bin())
        .arg("status")
        .arg("--config")
        .arg(runner.process.config_path())
        .output()
        .expect("runner status runs");
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("Metric Contexts"), "{text}");
    assert!(
        text.lines().any(|l| l.contains(&format!(
            "process:{} [host process {}]: 500 contexts",
            std::process::id(),
            std::process::id()
        )) && l.contains("new contexts refused")),
        "{text}"
    );
    let rss_mib = runner.process.rss_kib() / 1024;
    assert!(rss_mib < 256, "the runner stays small: {rss_mib} MiB");
}
