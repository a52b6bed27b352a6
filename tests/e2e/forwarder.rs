//! The forwarder against real backends: VictoriaMetrics (Datadog v1 series, as a user pointing
//! `dd_url` at it), Prometheus (remote write), and the shared fake intake for the Datadog
//! formats no installable server decodes (v2 protobuf series, sketches, check_run, events).
//! Outages, a `kill -9` with payloads on disk, a refused key and an unusable spill directory
//! are made for real: servers stopped and restarted, processes killed.

use std::collections::BTreeMap;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kennel_tests::pipeline::{self, TestPipeline};
use kennel_tests::prometheus::Prometheus;
use kennel_tests::runner_process::{Options, RunnerProcess};
use kennel_tests::victoria::VictoriaMetrics;
use kennel_tests::wait;
use runner::aggregator::Flush;
use runner::config::RunnerConfig;
use runner::forwarder::Compressor;

/// Sends `lines` over the DogStatsD socket, packed into datagrams of at most 8 KB.
fn send_lines(socket: &Path, lines: &[String]) {
    let client = UnixDatagram::unbound().unwrap();
    let mut datagram = String::new();
    for line in lines {
        if !datagram.is_empty() && datagram.len() + line.len() + 1 > 8000 {
            client.send_to(datagram.as_bytes(), socket).unwrap();
            datagram.clear();
        }
        if !datagram.is_empty() {
            datagram.push('\n');
        }
        datagram.push_str(line);
    }
    if !datagram.is_empty() {
        client.send_to(datagram.as_bytes(), socket).unwrap();
    }
}

/// A test config forwarding to the Datadog-compatible intake at `dd_url`.
fn datadog_config(dir: &Path, dd_url: &str) -> RunnerConfig {
    RunnerConfig {
        api_key: "test-key".to_owned(),
        dd_url: Some(dd_url.to_owned()),
        forwarder_storage_path: Some(dir.join("spill")),
        ..pipeline::config(dir)
    }
}

/// Series name and labels as VictoriaMetrics stores a v1 series: one label per `key:value`
/// tag and `host`.
type Key = (String, BTreeMap<String, String>);

/// Every point the flushes hold for series named `prefix*`, keyed as VictoriaMetrics keys
/// them: (timestamp in ms, value).
fn flushed_points(flushes: &[Flush], prefix: &str) -> BTreeMap<Key, Vec<(i64, f64)>> {
    let mut out: BTreeMap<Key, Vec<(i64, f64)>> = BTreeMap::new();
    for series in flushes.iter().flat_map(|f| &f.series) {
        if !series.name.starts_with(prefix) {
            continue;
        }
        let mut labels: BTreeMap<String, String> = series
            .tags()
            .map(|t| match t.split_once(':') {
                Some((k, v)) => (k.to_owned(), v.to_owned()),
                None => (t.to_owned(), "no_label_value".to_owned()),
            })
            .collect();
        let host = if series.host.is_empty() { "test-host" } else { &series.host };
        labels.insert("host".to_owned(), host.to_owned());
        let points = out.entry((series.name.to_string(), labels)).or_default();
        points.extend(series.points.iter().map(|p| (p.timestamp * 1000, p.value)));
    }
    for points in out.values_mut() {
        points.sort_by(|a, b| a.0.cmp(&b.0));
    }
    out
}

/// Every point VictoriaMetrics holds for series named `prefix*`, keyed as [`flushed_points`].
fn stored_points(victoria: &VictoriaMetrics, prefix: &str) -> BTreeMap<Key, Vec<(i64, f64)>> {
    let selector = format!("{{__name__=~\"{}.*\"}}", prefix.replace('.', "\\\\."));
    victoria
        .export(&selector)
        .into_iter()
        .map(|s| {
            let mut labels = s.labels;
            let name = labels.remove("__name__").unwrap();
            let points = s.timestamps_ms.into_iter().zip(s.values).collect();
            ((name, labels), points)
        })
        .collect()
}

/// The status API's entry for one forwarder endpoint.
fn endpoint_status(status: &serde_json::Value, name: &str) -> serde_json::Value {
    status["forwarder"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no forwarder endpoint {name} in {status:#}"))
}

fn dropped(endpoint: &serde_json::Value, reason: &str) -> u64 {
    endpoint["dropped"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|d| d["reason"] == reason)
        .and_then(|d| d["payloads"].as_u64())
        .unwrap_or(0)
}

#[test]
fn victoria_metrics_stores_every_point_dogstatsd_and_a_check_sent_as_flushed() {
    let victoria = VictoriaMetrics::start();
    let dir = tempfile::tempdir().unwrap();
    let mut config = datadog_config(dir.path(), &victoria.datadog_url());
    config.use_v2_api.series = false;
    config.serializer_compressor_kind = Compressor::Zlib;
    std::fs::write(
        dir.path().join("conf.d/http_check.yaml"),
        format!(
            "instances:\n  - name: victoria\n    url: {}/health\n    min_collection_interval: 1\n    tags: [fwd.check:yes]\n",
            victoria.url()
        ),
    )
    .unwrap();
    let pipeline = TestPipeline::start(config, vec![]);

    let mut lines = vec![
        "fwd.gauge:42|g|#env:test,role:db".to_owned(),
        "fwd.set:a|s|#env:test".to_owned(),
        "fwd.set:b|s|#env:test".to_owned(),
        "fwd.timer:5|ms".to_owned(),
        "fwd.rate_like:2|c|@0.5|#env:test".to_owned(),
    ];
    lines.extend((1..=5).map(|v| format!("fwd.hist:{v}|h|#env:test")));
    lines.extend((0..10).map(|_| "fwd.count:3|c|#env:test,role:db".to_owned()));
    send_lines(&pipeline.socket, &lines);

    // Everything flushed so far, once it has all arrived.
    let flushes = pipeline.wait_for(Duration::from_secs(10), |f| {
        !flushed_points(f, "fwd.count").is_empty() && !flushed_points(f, "network.http").is_empty()
    });
    let expected = flushed_points(&flushes, "fwd.");
    // gauge, set, timer (5), sampled count, histogram (5), count.
    assert!(expected.len() >= 14, "{expected:#?}");
    let stored = wait::until(
        Duration::from_secs(20),
        || stored_points(&victoria, "fwd."),
        |stored| expected.iter().all(|(k, v)| stored.get(k) == Some(v)),
    );
    for (key, points) in &expected {
        assert_eq!(stored.get(key), Some(points), "{key:?}; stored: {stored:#?}");
    }
    let total = |name: &str| -> f64 {
        stored
            .iter()
            .filter(|((n, _), _)| n == name)
            .flat_map(|(_, p)| p.iter().map(|(_, v)| v))
            .sum()
    };
    assert_eq!(total("fwd.count"), 30.0, "counts add up to what was sent");
    assert_eq!(total("fwd.rate_like"), 4.0, "a sampled count is scaled by its rate");
    assert_eq!(total("fwd.set"), 2.0);
    assert!(stored.keys().any(|(n, l)| n == "fwd.gauge"
        && l.get("env").map(String::as_str) == Some("test")
        && l.get("role").map(String::as_str) == Some("db")
        && l.get("host").map(String::as_str) == Some("test-host")));
    for suffix in ["avg", "max", "median", "count", "95percentile"] {
        assert!(
            stored.keys().any(|(n, _)| *n == format!("fwd.hist.{suffix}")),
            "fwd.hist.{suffix}: {stored:#?}"
        );
    }

    // The check's results too, with the instance's tag.
    let check = wait::until(
        Duration::from_secs(20),
        || victoria.export("network.http.can_connect"),
        |s| !s.is_empty(),
    );
    assert_eq!(check[0].labels.get("fwd.check").map(String::as_str), Some("yes"));
    assert!(check[0].values.iter().all(|v| *v == 1.0), "{check:?}");

    let (_, status) = pipeline.get("/status");
    let endpoint = endpoint_status(&status, "datadog");
    assert!(endpoint["succeeded"].as_u64().unwrap() > 0, "{endpoint:#}");
    assert_eq!(endpoint["api_key_invalid"], false);
}

#[test]
fn prometheus_receives_gauges_counters_and_distribution_quantiles_by_remote_write() {
    let prometheus = Prometheus::start();
    let dir = tempfile::tempdir().unwrap();
    let config = RunnerConfig {
        remote_write: vec![runner::forwarder::config::RemoteWriteEndpoint {
            url: prometheus.remote_write_url(),
            name: Some("prometheus".to_owned()),
            headers: BTreeMap::from([("X-Scope-OrgID".to_owned(), "team-a".to_owned())]),
            basic_auth: None,
            bearer_token: None,
        }],
        forwarder_storage_path: Some(dir.path().join("spill")),
        ..pipeline::config(dir.path())
    };
    let pipeline = TestPipeline::start(config, vec![]);
    let mut lines = vec!["rw.temperature:21.5|g|#room:lab".to_owned()];
    lines.extend((0..7).map(|_| "rw.requests:2|c|#room:lab".to_owned()));
    lines.extend((1..=100).map(|v| format!("rw.latency:{v}|d|#room:lab")));
    send_lines(&pipeline.socket, &lines);
    // A second flush, so the counter is cumulative over two.
    std::thread::sleep(Duration::from_millis(1100));
    send_lines(&pipeline.socket, &vec!["rw.requests:1|c|#room:lab".to_owned(); 6]);

    let value = |promql: &str, want: f64| {
        let got = wait::until(
            Duration::from_secs(20),
            || prometheus.query(promql),
            |v| v.iter().any(|(_, value)| *value == want),
        );
        assert!(
            got.iter().any(|(_, value)| *value == want),
            "{promql}: want {want}, got {got:?}; prometheus log:\n{}",
            prometheus.log()
        );
        got
    };
    let gauge = value("rw_temperature", 21.5);
    assert_eq!(gauge[0].0.get("room").map(String::as_str), Some("lab"));
    assert_eq!(gauge[0].0.get("host").map(String::as_str), Some("test-host"));
    value("rw_requests_total", 20.0);
    value("rw_latency_count", 100.0);
    value("rw_latency_sum", 5050.0);
    let median = prometheus.query("rw_latency{quantile=\"0.5\"}");
    assert_eq!(median.len(), 1, "{median:?}");
    assert!((median[0].1 - 50.0).abs() <= 1.0, "{median:?}");

    let (_, status) = pipeline.get("/status");
    let endpoint = endpoint_status(&status, "prometheus");
    assert_eq!(endpoint["dropped"], serde_json::json!([]), "{endpoint:#}");
}

/// Sends `name:1|c` `per_second` times a second until `stop`; returns how many were sent.
fn steady_counts(
    socket: std::path::PathBuf,
    name: &'static str,
    per_second: u64,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let client = UnixDatagram::unbound().unwrap();
        let line = format!("{name}:1|c|#phase:steady");
        let mut sent = 0;
        let started = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            let due = started.elapsed().as_secs_f64() * per_second as f64;
            while (sent as f64) < due {
                // A blocking send on a Unix socket: nothing is lost on the way in.
                client.send_to(line.as_bytes(), &socket).unwrap();
                sent += 1;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        sent
    })
}

#[test]
fn an_outage_of_more_than_a_minute_loses_nothing_and_turns_health_red_then_green() {
    let mut victoria = VictoriaMetrics::start();
    let dir = tempfile::tempdir().unwrap();
    let mut config = datadog_config(dir.path(), &victoria.datadog_url());
    config.use_v2_api.series = false;
    config.serializer_compressor_kind = Compressor::Zlib;
    config.forwarder_health_timeout = 10.0;
    config.forwarder_backoff_max = 8.0;
    // Small enough that the outage spills to disk.
    config.forwarder_retry_queue_payloads_max_size = 16 * 1024;
    let pipeline = TestPipeline::start(config, vec![]);
    let stop = Arc::new(AtomicBool::new(false));
    let sender = steady_counts(pipeline.socket.clone(), "fwd.outage", 200, stop.clone());

    std::thread::sleep(Duration::from_secs(5));
    victoria.stop();
    let outage = Instant::now();
    let red = wait::until(
        Duration::from_secs(30),
        || pipeline.get("/health"),
        |(code, _)| *code == 503,
    );
    assert!(
        red.1["failed"].to_string().contains("forwarder:datadog"),
        "{:#}",
        red.1
    );
    let during = wait::until(
        Duration::from_secs(60),
        || endpoint_status(&pipeline.get("/status").1, "datadog"),
        |e| e["queued_disk_payloads"].as_u64().unwrap_or(0) > 0,
    );
    assert!(during["consecutive_failures"].as_u64().unwrap() > 0, "{during:#}");
    std::thread::sleep(Duration::from_secs(65).saturating_sub(outage.elapsed()));
    victoria.restart();
    std::thread::sleep(Duration::from_secs(5));
    stop.store(true, Ordering::Relaxed);
    let sent = sender.join().unwrap();

    let green = wait::until(
        Duration::from_secs(60),
        || pipeline.get("/health"),
        |(code, _)| *code == 200,
    );
    assert_eq!(green.0, 200, "{:#}", green.1);
    let stored = wait::until(
        Duration::from_secs(90),
        || stored_points(&victoria, "fwd.outage"),
        |s| s.values().flatten().map(|(_, v)| v).sum::<f64>() >= sent as f64,
    );
    let points: Vec<(i64, f64)> = stored.values().flatten().copied().collect();
    let total: f64 = points.iter().map(|(_, v)| v).sum();
    assert_eq!(total, sent as f64, "every count arrives exactly once");
    let mut timestamps: Vec<i64> = points.iter().map(|(t, _)| *t).collect();
    timestamps.sort_unstable();
    let before = timestamps.len();
    timestamps.dedup();
    assert_eq!(timestamps.len(), before, "no bucket arrives twice");
    let endpoint = endpoint_status(&pipeline.get("/status").1, "datadog");
    assert_eq!(endpoint["dropped"], serde_json::json!([]), "{endpoint:#}");
    assert_eq!(endpoint["queued_disk_payloads"], 0, "{endpoint:#}");
}

#[test]
fn spilled_payloads_survive_a_clean_stop_and_a_kill_and_are_sent_after_the_restart() {
    let mut victoria = VictoriaMetrics::start();
    victoria.stop();
    let spill = tempfile::tempdir().unwrap();
    let socket_dir = tempfile::tempdir().unwrap();
    let socket = socket_dir.path().join("dsd.socket");
    let dd_url = victoria.datadog_url();
    let options = || Options {
        dogstatsd_socket: Some(socket.clone()),
        extra: format!(
            "api_key: test-key\ndd_url: {}\nuse_v2_api:\n  series: false\nserializer_compressor_kind: zlib\n\
             forwarder_storage_path: {}\nforwarder_retry_queue_payloads_max_size: 1\n\
             aggregator:\n  bucket_size_seconds: 1\n",
            dd_url,
            spill.path().display()
        ),
        ..Options::default()
    };
    let queued_on_disk = |runner: &RunnerProcess| {
        endpoint_status(&runner.status(), "datadog")["queued_disk_payloads"]
            .as_u64()
            .unwrap_or(0)
    };

    // A clean stop with the intake down: what could not be sent stays on disk.
    let mut first = RunnerProcess::start(options(), &[]);
    send_lines(&socket, &vec!["fwd.crash:1|c|#phase:stopped".to_owned(); 50]);
    first.wait_for("a payload on disk", Duration::from_secs(20), |r| {
        queued_on_disk(r) > 0
    });
    std::thread::sleep(Duration::from_secs(2));
    first.terminate();
    assert!(
        first.log().contains("kept on disk"),
        "the stop says what it kept; log:\n{}",
        first.log()
    );

    // A kill -9 with more on disk.
    let second = RunnerProcess::start(options(), &[]);
    send_lines(&socket, &vec!["fwd.crash:1|c|#phase:killed".to_owned(); 70]);
    std::thread::sleep(Duration::from_secs(3));
    let on_disk = queued_on_disk(&second);
    assert!(on_disk > 0, "{:#}", second.status());
    drop(second);

    victoria.restart();
    let _third = RunnerProcess::start(options(), &[]);
    let total = |phase: &str| {
        stored_points(&victoria, "fwd.crash")
            .into_iter()
            .filter(|((_, labels), _)| labels.get("phase").map(String::as_str) == Some(phase))
            .flat_map(|(_, points)| points)
            .map(|(_, v)| v)
            .sum::<f64>()
    };
    let arrived = wait::until(
        Duration::from_secs(30),
        || (total("stopped"), total("killed")),
        |t| *t == (50.0, 70.0),
    );
    assert_eq!(arrived, (50.0, 70.0));
}

#[test]
fn an_unusable_spill_directory_falls_back_to_memory_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"not a directory").unwrap();
    let mut config = datadog_config(
        dir.path(),
        &format!("http://127.0.0.1:{}", kennel_tests::http_server::closed_port()),
    );
    config.forwarder_storage_path = Some(file.join("spill"));
    config.forwarder_retry_queue_payloads_max_size = 4096;
    let pipeline = TestPipeline::start(config, vec![]);
    send_lines(&pipeline.socket, &["fwd.spill:1|g".to_owned()]);
    let endpoint = wait::until(
        Duration::from_secs(20),
        || endpoint_status(&pipeline.get("/status").1, "datadog"),
        |e| dropped(e, "queue_full") > 0,
    );
    assert!(
        endpoint["spill_error"].as_str().unwrap_or_default().contains("a-file"),
        "{endpoint:#}"
    );
    assert!(dropped(&endpoint, "queue_full") > 0, "{endpoint:#}");
    let spill_errors: f64 = pipeline
        .flushes()
        .iter()
        .flat_map(|f| &f.series)
        .filter(|s| &*s.name == "kennel.forwarder.spill_errors")
        .flat_map(|s| s.points.iter().map(|p| p.value))
        .sum();
    assert!(spill_errors >= 1.0, "counted in telemetry too");
    let (_, status) = pipeline.get("/status");
    let component = status["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "forwarder:datadog")
        .cloned()
        .unwrap();
    assert_ne!(component["state"], "ok", "{component:#}");
}
