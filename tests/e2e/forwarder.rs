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

use kennel_tests::fake_intake::{self, FakeIntake};
use kennel_tests::pipeline::{self, TestPipeline};
use kennel_tests::prometheus::Prometheus;
use kennel_tests::runner_process::{Options, RunnerProcess};
use kennel_tests::victoria::VictoriaMetrics;
use kennel_tests::wait;
use runner::aggregator::Flush;
use runner::config::RunnerConfig;
use runner::forwarder::{Compressor, schema};

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
        let host = if series.host.is_empty() {
            "test-host"
        } else {
            &series.host
        };
        labels.insert("host".to_owned(), host.to_owned());
        let points = out.entry((series.name.to_string(), labels)).or_default();
        points.extend(series.points.iter().map(|p| (p.timestamp * 1000, p.value)));
    }
    for points in out.values_mut() {
        points.sort_by_key(|p| p.0);
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
        assert_eq!(
            stored.get(key),
            Some(points),
            "{key:?}; stored: {stored:#?}"
        );
    }
    let total = |name: &str| -> f64 {
        stored
            .iter()
            .filter(|((n, _), _)| n == name)
            .flat_map(|(_, p)| p.iter().map(|(_, v)| v))
            .sum()
    };
    assert_eq!(total("fwd.count"), 30.0, "counts add up to what was sent");
    assert_eq!(
        total("fwd.rate_like"),
        4.0,
        "a sampled count is scaled by its rate"
    );
    assert_eq!(total("fwd.set"), 2.0);
    assert!(stored.keys().any(|(n, l)| n == "fwd.gauge"
        && l.get("env").map(String::as_str) == Some("test")
        && l.get("role").map(String::as_str) == Some("db")
        && l.get("host").map(String::as_str) == Some("test-host")));
    for suffix in ["avg", "max", "median", "count", "95percentile"] {
        assert!(
            stored
                .keys()
                .any(|(n, _)| *n == format!("fwd.hist.{suffix}")),
            "fwd.hist.{suffix}: {stored:#?}"
        );
    }

    // The check's results too, with the instance's tag.
    let check = wait::until(
        Duration::from_secs(20),
        || victoria.export("network.http.can_connect"),
        |s| !s.is_empty(),
    );
    assert_eq!(
        check[0].labels.get("fwd.check").map(String::as_str),
        Some("yes")
    );
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
    send_lines(
        &pipeline.socket,
        &vec!["rw.requests:1|c|#room:lab".to_owned(); 6],
    );

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
    assert_eq!(
        gauge[0].0.get("host").map(String::as_str),
        Some("test-host")
    );
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
    assert!(
        during["consecutive_failures"].as_u64().unwrap() > 0,
        "{during:#}"
    );
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
    send_lines(
        &socket,
        &vec!["fwd.crash:1|c|#phase:stopped".to_owned(); 50],
    );
    first.wait_for("a payload on disk", Duration::from_secs(20), |r| {
        queued_on_disk(r) > 0
    });
    std::thread::sleep(Duration::from_secs(2));
    let stopping = Instant::now();
    first.terminate();
    assert!(
        stopping.elapsed() < Duration::from_secs(10),
        "a stop waits for the stop timeout, not the backoff: {:?}",
        stopping.elapsed()
    );
    assert!(
        first.log().contains("kept on disk"),
        "the stop says what it kept; log:\n{}",
        first.log()
    );

    // A kill -9 with more on disk.
    let second = RunnerProcess::start(options(), &[]);
    let at_start = queued_on_disk(&second);
    assert!(at_start > 0, "the first run's payloads are found");
    send_lines(&socket, &vec!["fwd.crash:1|c|#phase:killed".to_owned(); 70]);
    second.wait_for("the new payloads on disk", Duration::from_secs(20), |r| {
        queued_on_disk(r) > at_start + 1
    });
    // The bucket with the sends is closed and spilled.
    std::thread::sleep(Duration::from_secs(2));
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
    let intake = FakeIntake::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"not a directory").unwrap();
    let mut config = datadog_config(dir.path(), &intake.url());
    config.api_key = fake_intake::API_KEY.to_owned();
    config.forwarder_storage_path = Some(file.join("spill"));
    config.forwarder_retry_queue_payloads_max_size = 4096;
    config.forwarder_backoff_max = 1.0;
    let pipeline = TestPipeline::start(config, vec![]);
    intake.set_down(true);
    send_lines(&pipeline.socket, &["fwd.spill:1|g".to_owned()]);
    let endpoint = wait::until(
        Duration::from_secs(20),
        || endpoint_status(&pipeline.get("/status").1, "datadog"),
        |e| dropped(e, "queue_full") > 0,
    );
    assert!(
        endpoint["spill_error"]
            .as_str()
            .unwrap_or_default()
            .contains("a-file"),
        "{endpoint:#}"
    );
    assert!(dropped(&endpoint, "queue_full") > 0, "{endpoint:#}");

    // Delivering again, it still says the disk is unusable.
    intake.set_down(false);
    let component = wait::until(
        Duration::from_secs(20),
        || {
            pipeline.get("/status").1["components"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["name"] == "forwarder:datadog")
                .cloned()
                .unwrap()
        },
        |c| c["reason"].as_str().unwrap_or_default().contains("spill"),
    );
    assert_eq!(component["state"], "degraded", "{component:#}");
    assert!(
        component["reason"]
            .as_str()
            .unwrap()
            .contains("cannot spill"),
        "{component:#}"
    );
    let spill_errors: f64 = pipeline
        .flushes()
        .iter()
        .flat_map(|f| &f.series)
        .filter(|s| &*s.name == "kennel.forwarder.spill_errors")
        .flat_map(|s| s.points.iter().map(|p| p.value))
        .sum();
    assert!(spill_errors >= 1.0, "counted in telemetry too");
}

#[test]
fn an_intake_that_rejects_everything_turns_health_red() {
    let intake = FakeIntake::start();
    intake.respond(400);
    let dir = tempfile::tempdir().unwrap();
    let mut config = datadog_config(dir.path(), &intake.url());
    config.api_key = fake_intake::API_KEY.to_owned();
    config.forwarder_health_timeout = 3.0;
    let pipeline = TestPipeline::start(config, vec![]);
    let (code, body) = wait::until(
        Duration::from_secs(20),
        || pipeline.get("/health"),
        |(code, _)| *code == 503,
    );
    assert_eq!(code, 503, "{body:#}");
    assert!(
        body["failed"].to_string().contains("forwarder:datadog")
            && body["failed"].to_string().contains("400"),
        "{body:#}"
    );
    let endpoint = endpoint_status(&pipeline.get("/status").1, "datadog");
    assert_eq!(endpoint["rejecting"], true, "{endpoint:#}");
    assert!(dropped(&endpoint, "rejected") > 0, "{endpoint:#}");

    intake.reset();
    let (code, body) = wait::until(
        Duration::from_secs(20),
        || pipeline.get("/health"),
        |(code, _)| *code == 200,
    );
    assert_eq!(
        code, 200,
        "green again once payloads are accepted: {body:#}"
    );
}

/// Points of the series named `name` in the intake's v2 payloads: (tags, type, interval,
/// points), in arrival order.
fn v2_points(intake: &FakeIntake, name: &str) -> Vec<schema::MetricSeries> {
    intake
        .series_v2()
        .into_iter()
        .flat_map(|p| p.series)
        .filter(|s| s.metric == name)
        .collect()
}

#[test]
fn the_intake_gets_v2_series_sketches_check_runs_and_events_with_the_agents_headers() {
    let intake = FakeIntake::start();
    let dir = tempfile::tempdir().unwrap();
    let mut config = datadog_config(dir.path(), &intake.url());
    config.api_key = fake_intake::API_KEY.to_owned();
    let pipeline = TestPipeline::start(config, vec![]);
    let mut lines = vec![
        "v2.gauge:7|g|#env:x".to_owned(),
        "_sc|v2.check|1|#env:x|m:half up".to_owned(),
        "_e{8,4}:v2 title|text|t:warning|#env:x".to_owned(),
    ];
    lines.extend((0..3).map(|_| "v2.count:2|c|#env:x".to_owned()));
    lines.extend((1..=100).map(|v| format!("v2.dist:{v}|d|#env:x")));
    send_lines(&pipeline.socket, &lines);
    wait::until(
        Duration::from_secs(20),
        || {
            (
                v2_points(&intake, "v2.count").len(),
                intake.sketches().len(),
                intake.check_runs().len(),
                intake.events().len(),
            )
        },
        |(series, sketches, checks, events)| {
            *series > 0 && *sketches > 0 && *checks > 0 && *events > 0
        },
    );

    let host = vec![schema::Resource {
        r#type: "host".to_owned(),
        name: "test-host".to_owned(),
    }];
    let gauge = &v2_points(&intake, "v2.gauge")[0];
    assert_eq!(gauge.resources, host);
    assert_eq!(gauge.tags, ["env:x"]);
    assert_eq!(gauge.r#type, schema::MetricType::Gauge as i32);
    assert_eq!(gauge.points.len(), 1);
    assert_eq!(gauge.points[0].value, 7.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (now - 30..=now).contains(&gauge.points[0].timestamp),
        "{gauge:?}"
    );
    let count = &v2_points(&intake, "v2.count")[0];
    // DogStatsD counts go out as the Agent sends them: a per-second rate over the bucket.
    assert_eq!(count.r#type, schema::MetricType::Rate as i32);
    assert_eq!(count.interval, 1, "the bucket size");
    assert_eq!(count.points.iter().map(|p| p.value).sum::<f64>(), 6.0);

    let sketch = intake
        .sketches()
        .into_iter()
        .flat_map(|p| p.sketches)
        .find(|s| s.metric == "v2.dist")
        .expect("the distribution's sketch");
    assert_eq!(
        (sketch.host.as_str(), sketch.tags.as_slice()),
        ("test-host", &["env:x".to_owned()][..])
    );
    let dog = &sketch.dogsketches[0];
    assert_eq!(
        (dog.cnt, dog.min, dog.max, dog.sum),
        (100, 1.0, 100.0, 5050.0)
    );
    assert_eq!(dog.avg, 50.5);
    assert_eq!(dog.k.len(), dog.n.len());
    assert_eq!(dog.n.iter().map(|n| u64::from(*n)).sum::<u64>(), 100);

    let check = intake
        .check_runs()
        .into_iter()
        .find(|c| c["check"] == "v2.check")
        .expect("the service check");
    assert_eq!(check["host_name"], "test-host");
    assert_eq!(check["status"], 1);
    assert_eq!(check["message"], "half up");
    assert_eq!(check["tags"], serde_json::json!(["env:x"]));

    let events = intake.events();
    let event = events
        .iter()
        .flat_map(|p| p["events"].as_object().unwrap().values())
        .flat_map(|list| list.as_array().unwrap())
        .find(|e| e["msg_title"] == "v2 title")
        .expect("the event");
    assert_eq!(event["msg_text"], "text");
    assert_eq!(event["alert_type"], "warning");
    assert_eq!(event["host"], "test-host");
    assert_eq!(event["tags"], serde_json::json!(["env:x"]));
    assert_eq!(events[0]["internalHostname"], "test-host");

    for (path, content_type) in [
        ("/api/v2/series", "application/x-protobuf"),
        ("/api/beta/sketches", "application/x-protobuf"),
        ("/api/v1/check_run", "application/json"),
        ("/intake/", "application/json"),
    ] {
        let request = &intake.requests_to(path)[0];
        assert_eq!(
            request.header("DD-API-KEY"),
            Some(fake_intake::API_KEY),
            "{path}"
        );
        assert_eq!(request.header("Content-Type"), Some(content_type), "{path}");
        assert_eq!(request.header("Content-Encoding"), Some("zstd"), "{path}");
        assert!(
            request.header("User-Agent").unwrap().starts_with("kennel/"),
            "{path}"
        );
        assert!(request.header("DD-Agent-Version").is_some(), "{path}");
    }
    assert_eq!(
        intake.count("/api/v1/validate"),
        1,
        "the key is validated at start"
    );
}

#[test]
fn series_are_split_to_stay_under_the_agents_point_limit() {
    let intake = FakeIntake::start();
    let dir = tempfile::tempdir().unwrap();
    let mut config = datadog_config(dir.path(), &intake.url());
    config.api_key = fake_intake::API_KEY.to_owned();
    config.aggregator.max_contexts = 100_000;
    let pipeline = TestPipeline::start(config, vec![]);
    let lines: Vec<String> = (0..25_000).map(|i| format!("split.g{i}:1|g")).collect();
    send_lines(&pipeline.socket, &lines);
    let points = || {
        intake
            .series_v2()
            .iter()
            .flat_map(|p| &p.series)
            .filter(|s| s.metric.starts_with("split."))
            .map(|s| s.points.len())
            .sum::<usize>()
    };
    let got = wait::until(Duration::from_secs(30), points, |n| *n >= 25_000);
    assert_eq!(got, 25_000, "every point once");
    let payloads = intake.series_v2();
    assert!(payloads.len() >= 3, "{} payloads", payloads.len());
    for payload in &payloads {
        let points: usize = payload.series.iter().map(|s| s.points.len()).sum();
        assert!(points <= 10_000, "a payload of {points} points");
    }
    for request in intake.requests_to("/api/v2/series") {
        assert!(
            request.body.len() <= 512_000,
            "{} bytes compressed",
            request.body.len()
        );
    }
}

#[test]
fn a_refused_key_shows_in_health_and_status_and_is_logged_once() {
    let intake = FakeIntake::start_with_keys(&["the-right-key"]);
    let runner = RunnerProcess::start(
        Options {
            extra: format!(
                "api_key: the-wrong-key\ndd_url: {}\nforwarder_storage_path: null\naggregator:\n  bucket_size_seconds: 1\n",
                intake.url()
            ),
            ..Options::default()
        },
        &[],
    );
    let health = || {
        let (code, body) = runner.health();
        let body: serde_json::Value = serde_json::from_str(&body).expect("/health is JSON");
        (code, body)
    };
    let (code, body) = wait::until(Duration::from_secs(20), health, |(code, _)| *code == 503);
    assert_eq!(code, 503, "{body:#}");
    let failed = body["failed"].to_string();
    assert!(
        failed.contains("forwarder:datadog") && failed.contains("API key"),
        "{body:#}"
    );
    // A few more flushes, every one refused.
    runner.wait_for("refused payloads", Duration::from_secs(20), |r| {
        dropped(&endpoint_status(&r.status(), "datadog"), "invalid_key") >= 3
    });
    let endpoint = endpoint_status(&runner.status(), "datadog");
    assert_eq!(endpoint["api_key_invalid"], true, "{endpoint:#}");
    assert_eq!(endpoint["succeeded"], 0, "{endpoint:#}");
    let log = runner.log();
    assert_eq!(
        log.matches("API key invalid").count(),
        1,
        "once in the log:\n{log}"
    );

    // `runner status` says it too.
    let text = std::process::Command::new(kennel_tests::runner_bin())
        .args(["status", "--config"])
        .arg(runner.config_path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("Forwarder") && text.contains("API KEY INVALID"),
        "{text}"
    );
}

#[test]
fn with_small_bounds_an_outage_drops_the_oldest_counted_and_the_rest_arrive() {
    let intake = FakeIntake::start();
    let dir = tempfile::tempdir().unwrap();
    let mut config = datadog_config(dir.path(), &intake.url());
    config.api_key = fake_intake::API_KEY.to_owned();
    config.forwarder_storage_path = None;
    config.forwarder_retry_queue_payloads_max_size = 8 * 1024;
    config.forwarder_backoff_max = 2.0;
    let pipeline = TestPipeline::start(config, vec![]);
    let stop = Arc::new(AtomicBool::new(false));
    let sender = steady_counts(pipeline.socket.clone(), "small.bounds", 100, stop.clone());
    std::thread::sleep(Duration::from_secs(2));
    intake.set_down(true);
    let endpoint = wait::until(
        Duration::from_secs(60),
        || endpoint_status(&pipeline.get("/status").1, "datadog"),
        |e| dropped(e, "queue_full") >= 5,
    );
    assert!(dropped(&endpoint, "queue_full") >= 5, "{endpoint:#}");
    intake.set_down(false);
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let sent = sender.join().unwrap() as f64;
    let last_flush_at = pipeline.wait_for_flushes(2).len();
    let received = || {
        v2_points(&intake, "small.bounds")
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.value))
            .sum::<f64>()
    };
    let endpoint = wait::until(
        Duration::from_secs(30),
        || endpoint_status(&pipeline.get("/status").1, "datadog"),
        |e| e["queued_memory_payloads"] == 0 && e["consecutive_failures"] == 0,
    );
    let got = received();
    assert!(got < sent, "some were dropped: {got} of {sent}");
    assert!(got > 0.0);
    // Every point missing was in a payload counted as dropped.
    let dropped_items = endpoint["dropped"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["reason"] == "queue_full")
        .and_then(|d| d["items"].as_u64())
        .unwrap_or(0);
    assert!(
        (sent - got) as u64 <= dropped_items,
        "{} points missing, {dropped_items} counted dropped: {endpoint:#}",
        sent - got
    );
    // The newest made it: the last second's count is there.
    let flushes = pipeline.flushes();
    let newest = flushes[..last_flush_at]
        .iter()
        .flat_map(|f| &f.series)
        .filter(|s| &*s.name == "small.bounds")
        .flat_map(|s| &s.points)
        .map(|p| p.timestamp)
        .max()
        .unwrap();
    assert!(
        v2_points(&intake, "small.bounds")
            .iter()
            .flat_map(|s| &s.points)
            .any(|p| p.timestamp == newest),
        "the newest bucket arrived"
    );
}

#[test]
fn a_stop_waits_no_longer_than_the_stop_timeout_for_an_intake_that_hangs() {
    let intake = FakeIntake::start();
    intake.delay(Duration::from_secs(120));
    let spill = tempfile::tempdir().unwrap();
    let mut runner = RunnerProcess::start(
        Options {
            extra: format!(
                "api_key: {}\ndd_url: {}\nforwarder_timeout: 60\nforwarder_stop_timeout: 2\n\
                 forwarder_storage_path: {}\naggregator:\n  bucket_size_seconds: 1\n",
                fake_intake::API_KEY,
                intake.url(),
                spill.path().display()
            ),
            ..Options::default()
        },
        &[],
    );
    // A request is on its way and hangs; more flushes queue behind it.
    std::thread::sleep(Duration::from_secs(4));
    let stopping = Instant::now();
    let exit = runner.terminate();
    let took = stopping.elapsed();
    assert!(exit.success(), "{exit:?}; log:\n{}", runner.log());
    assert!(
        took < Duration::from_secs(8),
        "the stop took {took:?} with a 2 s stop timeout; log:\n{}",
        runner.log()
    );
    assert!(
        runner.log().contains("kept on disk"),
        "log:\n{}",
        runner.log()
    );
    let files = std::fs::read_dir(spill.path())
        .unwrap()
        .flat_map(|endpoint| std::fs::read_dir(endpoint.unwrap().path()).unwrap())
        .count();
    assert!(files > 0, "what was not sent is on disk");
}
