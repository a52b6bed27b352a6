//! `/health` tells the truth: red (503), naming the component, when the aggregation loop, a
//! DogStatsD listener or an output dies or fails, and green again when what failed recovers.
//! Faults are injected into the production pipeline through its test-only hooks. And the
//! endpoints themselves do not let a silent client hold a connection open.

use std::os::unix::net::UnixDatagram;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kennel_tests::pipeline::{self, TestPipeline};
use kennel_tests::wait;
use runner::aggregator::Flush;
use runner::pipeline::Fault;
use runner::sink::Sink;

/// Polls `/health` until `done` holds of (status code, body), for up to 10 s; returns the last
/// answer.
fn health_until(
    pipeline: &TestPipeline,
    done: impl Fn(u16, &serde_json::Value) -> bool,
) -> (u16, serde_json::Value) {
    wait::until(
        Duration::from_secs(10),
        || pipeline.get("/health"),
        |(code, body)| done(*code, body),
    )
}

/// The names of the failed components in a `/health` body.
fn failed(body: &serde_json::Value) -> Vec<String> {
    body["failed"]
        .as_array()
        .map(|failed| {
            failed
                .iter()
                .filter_map(|c| c["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_panicking_aggregation_loop_turns_health_red_and_so_do_the_listeners_it_leaves() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = TestPipeline::start(pipeline::config(dir.path()), Vec::new());
    let (code, body) = pipeline.get("/health");
    assert_eq!((code, body["status"].as_str()), (200, Some("ok")), "{body}");

    pipeline.running().inject(Fault::AggregatorPanic);
    // The outputs the loop fed may be reported stopped a moment before the loop itself.
    let (code, body) = health_until(&pipeline, |_, body| {
        failed(body).contains(&"aggregator".to_owned())
    });
    assert_eq!(code, 503, "{body}");
    assert_eq!(body["status"], "failed");
    let aggregator = body["failed"]
        .as_array()
        .and_then(|failed| failed.iter().find(|c| c["name"] == "aggregator"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        aggregator["reason"], "panicked: injected fault",
        "the loop's own failure says why: {body}"
    );

    // The listener finds out at its next datagram that nobody takes its batches: it stops,
    // and says so, rather than going quiet.
    let client = UnixDatagram::unbound().unwrap();
    client
        .send_to(b"after.death:1|c", &pipeline.socket)
        .unwrap();
    let (_, body) = health_until(&pipeline, |_, body| {
        failed(body).contains(&"dogstatsd:uds".to_owned())
    });
    assert!(
        failed(&body).contains(&"dogstatsd:uds".to_owned()),
        "{body}"
    );
    let (_, status) = pipeline.get("/status");
    let aggregator = status["components"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "aggregator"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(aggregator["state"], "failed", "{status}");
}

#[test]
fn a_dead_listener_turns_health_red() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = TestPipeline::start(pipeline::config(dir.path()), Vec::new());
    pipeline.running().inject(Fault::ListenerPanic);
    let (code, body) = health_until(&pipeline, |_, body| failed(body).len() >= 2);
    assert_eq!(code, 503, "{body}");
    let failed = failed(&body);
    for listener in ["dogstatsd:uds", "dogstatsd:udp"] {
        assert!(failed.contains(&listener.to_owned()), "{body}");
    }
    assert!(!failed.contains(&"aggregator".to_owned()), "{body}");
}

/// Fails every flush while its switch is on.
struct Switchable(Arc<AtomicBool>);

impl Sink for Switchable {
    fn name(&self) -> &str {
        "switchable"
    }

    fn send(&mut self, _: &Flush) -> Result<(), String> {
        if self.0.load(Ordering::Relaxed) {
            Err("the intake refused the payload".to_owned())
        } else {
            Ok(())
        }
    }
}

#[test]
fn a_failing_output_turns_health_red_until_it_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let failing = Arc::new(AtomicBool::new(true));
    let pipeline = TestPipeline::start(
        pipeline::config(dir.path()),
        vec![Box::new(Switchable(failing.clone()))],
    );
    let (code, body) = health_until(&pipeline, |code, _| code == 503);
    assert_eq!(code, 503, "{body}");
    assert_eq!(failed(&body), ["sink:switchable"], "{body}");
    assert_eq!(
        body["failed"][0]["reason"], "the intake refused the payload",
        "{body}"
    );

    failing.store(false, Ordering::Relaxed);
    let (code, body) = health_until(&pipeline, |code, _| code == 200);
    assert_eq!(code, 200, "{body}");
}

/// How long [`Slow`] takes over every flush.
const SLOW_SEND: Duration = Duration::from_secs(3);

/// Takes a long time over every flush, and keeps only one waiting.
struct Slow;

impl Sink for Slow {
    fn name(&self) -> &str {
        "slow"
    }

    fn send(&mut self, _: &Flush) -> Result<(), String> {
        // The slowness under test: an intake that takes 3 s over every flush.
        std::thread::sleep(SLOW_SEND);
        Ok(())
    }

    fn queue_flushes(&self) -> usize {
        1
    }
}

#[test]
fn a_slow_output_delays_nothing_else_and_its_drops_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = TestPipeline::start(pipeline::config(dir.path()), vec![Box::new(Slow)]);
    let client = UnixDatagram::unbound().unwrap();
    let started = Instant::now();
    let before = pipeline.flushes().len();
    for i in 0..6 {
        client
            .send_to(format!("beside.slow:{i}|g").as_bytes(), &pipeline.socket)
            .unwrap();
        // Paces the sender over several buckets; nothing is waited for.
        std::thread::sleep(Duration::from_millis(500));
    }
    // The recording output, beside the slow one, gets a flush a second: 8 of them come in about
    // 8 s, well within 14 s even on a loaded machine, while a flush held up by the slow output
    // would let at most 5 through in that time (one every 3 s).
    let window = Duration::from_secs(14);
    let flushes = pipeline.wait_for(window.saturating_sub(started.elapsed()), |f| {
        f.len() >= before + 8 && dropped(f, "slow") > 0.0
    });
    let elapsed = started.elapsed().as_secs_f64();
    assert!(
        flushes.len() - before >= 8,
        "{} flushes in {elapsed:.1} s beside a slow output",
        flushes.len() - before
    );
    assert!(
        flushes
            .iter()
            .flat_map(|f| &f.series)
            .any(|s| &*s.name == "beside.slow"),
        "the metric reached the other output"
    );
    assert!(
        dropped(&flushes, "slow") > 0.0,
        "the slow output's drops are counted"
    );
    assert_eq!(dropped(&flushes, "test_recorder"), 0.0);
    let (code, body) = pipeline.get("/health");
    assert_eq!(code, 200, "a slow output is not a dead one: {body}");
}

/// `kennel.sink.flushes_dropped` for `sink`, summed over `flushes`.
fn dropped(flushes: &[Flush], sink: &str) -> f64 {
    let tag = format!("sink:{sink}");
    flushes
        .iter()
        .flat_map(|f| &f.series)
        .filter(|s| &*s.name == "kennel.sink.flushes_dropped" && s.tags().any(|t| t == tag))
        .flat_map(|s| &s.points)
        .map(|p| p.value)
        .sum()
}

#[test]
fn a_conf_d_that_cannot_be_read_degrades_its_watcher_but_not_health() {
    let dir = tempfile::tempdir().unwrap();
    let config = pipeline::config(dir.path());
    let confd = config.confd_path.clone();
    let pipeline = TestPipeline::start(config, Vec::new());
    std::fs::remove_dir(&confd).unwrap();
    let watcher = |status: &serde_json::Value| {
        status["components"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["name"] == "confd_watcher"))
            .cloned()
            .unwrap_or_default()
    };
    let (_, status) = kennel_tests::wait::until(
        Duration::from_secs(10),
        || pipeline.get("/status"),
        |(_, status)| watcher(status)["state"] == "degraded",
    );
    let entry = watcher(&status);
    assert_eq!(entry["state"], "degraded", "{status}");
    assert!(
        entry["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("what runs stays as it was"),
        "{entry}"
    );
    let (code, body) = pipeline.get("/health");
    assert_eq!(code, 200, "the watcher is not required: {body}");
}

#[test]
fn a_connection_that_sends_nothing_is_closed_and_the_endpoints_keep_answering() {
    use std::io::Read as _;
    let runner = kennel_tests::runner_process::RunnerProcess::start(
        kennel_tests::runner_process::Options::default(),
        &[],
    );
    let silent: Vec<std::net::TcpStream> = [runner.status_port, runner.metrics_port]
        .iter()
        .map(|port| std::net::TcpStream::connect(("127.0.0.1", *port)).expect("connects"))
        .collect();
    let opened = Instant::now();
    for mut stream in silent {
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut buf = [0_u8; 512];
        // The server closes it (EOF, or a 408 and EOF) rather than waiting forever.
        let mut read = Vec::new();
        loop {
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => read.extend_from_slice(&buf[..n]),
                Err(error) => panic!("the silent connection was left open: {error}"),
            }
        }
        assert!(
            read.is_empty() || String::from_utf8_lossy(&read).starts_with("HTTP/1.1 408"),
            "{}",
            String::from_utf8_lossy(&read)
        );
    }
    let waited = opened.elapsed();
    assert!(waited < Duration::from_secs(25), "closed after {waited:?}");
    assert!(runner.status()["instances"].is_array());
    assert!(runner.metrics().contains("# TYPE"));
}
