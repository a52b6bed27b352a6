//! The DogStatsD listeners with real client processes on real sockets.

use std::path::Path;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
        Arc::new(ListenerStats::new(
            &runner::aggregator::telemetry::Telemetry::new(),
        )),
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
        procfs: dir.join("proc"),
    }
}

/// A Python process that waits `delay` seconds, then runs `code` (with `socket` and `struct`
/// imported).
fn python(code: &str, delay: f64) -> Child {
    Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import socket, struct, time\ntime.sleep({delay})\n{code}"
        ))
        .spawn()
        .expect("python3 runs")
}

/// Gives `pid` a cgroup file in the fake procfs.
fn fake_cgroup(procfs: &Path, pid: u32, cgroup: &str) {
    let dir = procfs.join(pid.to_string());
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("cgroup"), cgroup).unwrap();
}

fn wait_for(received: &Received, count: usize) -> Vec<(Transport, String, Origin)> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if received.lock().unwrap().len() >= count {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut all = received.lock().unwrap().clone();
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
    let mut in_container = python(&send("a.metric:1|c|c:ci-spoofed"), 0.5);
    fake_cgroup(
        &config.procfs,
        in_container.id(),
        &format!("0::/system.slice/docker-{CONTAINER}.scope\n"),
    );
    let mut on_host = python(&send("b.metric:2|g"), 0.5);
    fake_cgroup(
        &config.procfs,
        on_host.id(),
        "0::/user.slice/user-0.slice/session-1.scope\n",
    );
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
                Origin::Host
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
    let mut udp = python(
        &format!(
            "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.sendto(b'u.metric:1|c', ('127.0.0.1', {port}))"
        ),
        0.0,
    );
    let mut framed = python(
        &format!(
            "s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\ns.connect('{stream}')\nfor m in [b'x.one:1|c', b'x.two:2|c\\nx.three:3|c']:\n    s.sendall(struct.pack('<I', len(m)) + m)\ns.close()"
        ),
        0.3,
    );
    fake_cgroup(
        &config.procfs,
        framed.id(),
        &format!("0::/docker/{CONTAINER}\n"),
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
        Arc::new(ListenerStats::new(
            &runner::aggregator::telemetry::Telemetry::new(),
        )),
    )
    .err()
    .expect("refused");
    let message = error.to_string();
    assert!(
        message.contains("`dogstatsd_socket`") && message.contains("not a socket"),
        "{message}"
    );
}
