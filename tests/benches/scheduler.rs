//! Timing of the sandbox's deadlines and of the scheduler, with the test plugin. Prints:
//! - how long past its deadline a run is stopped, over 10 runs each: a busy loop (interrupted
//!   inside wasm at an epoch tick; 1 s timeout) and a sleep in a host call (dropped after the
//!   host's grace; 0.5 s timeout);
//! - a 1 s check scheduled beside four misbehaving ones (a crash, an endless loop that holds a
//!   runner and a CPU for its 3 s timeout, the memory cap, the item cap): its gaps between runs
//!   from the second run on, over 30 gaps;
//! - a check that crashes at every run, at a 0.5 s interval: its first five gaps between runs,
//!   where the back-off shows (0.5 s, 0.5 s, then 1 s, 2 s and 4 s plus the crashed run).
//!
//! - a 1 s `http_check` against a local server (on a thread of its own), alone and then beside
//!   ten busy-looping instances: its reported response time and its skipped runs (and why),
//!   over 20 runs each.
//!
//! The e2e tests in `sandbox.rs` assert bounds that hold on a loaded machine; these are the
//! figures behind them. `make bench`, or `cargo bench -p kennel-tests --bench scheduler` after
//! `make plugins`.

use std::time::Duration;

use kennel_tests::http_server::{HttpServer, Reply};
use kennel_tests::{host, instance, plugin_config};
use runner::check::RunReport;
use runner::config::PluginConfig;
use tokio::sync::mpsc;

const DEADLINE_RUNS: usize = 10;
const HEALTHY_GAPS: usize = 30;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    // The server the http_check measures answers on a runtime of its own, as a real one would.
    let server_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("server runtime");
    let server = server_runtime.block_on(HttpServer::start(|_| Reply::ok("up")));
    kennel_tests::print_load_average();
    runtime.block_on(async {
        http_check_beside_busy_plugins(&server.url("/"), 0).await;
        http_check_beside_busy_plugins(&server.url("/"), 10).await;
        past_the_deadline(
            "busy loop, interrupted in wasm (1 s timeout)",
            "instances:\n  - mode: loop\n    timeout: 1\n",
            Duration::from_secs(1),
        )
        .await;
        past_the_deadline(
            "asleep in a host call, dropped (0.5 s timeout)",
            "instances:\n  - mode: sleep\n    timeout: 0.5\n",
            Duration::from_millis(500),
        )
        .await;
        healthy_beside_misbehaving().await;
        crash_back_off().await;
    });
}

/// Runs `yaml` [`DEADLINE_RUNS`] times and prints how long past `timeout` each run ended.
async fn past_the_deadline(what: &str, yaml: &str, timeout: Duration) {
    let host = host(plugin_config());
    let plugin = host.load("test_plugin").expect("test_plugin loads");
    let instance = instance("test_plugin", yaml);
    let mut late = Vec::with_capacity(DEADLINE_RUNS);
    for _ in 0..DEADLINE_RUNS {
        let report = host.run(&plugin, &instance).await;
        assert!(report.error.is_some(), "the run was stopped: {report:#?}");
        late.push(report.duration.saturating_sub(timeout));
    }
    println!("{what}: stopped past the deadline by {}", summary(late));
}

/// A 1 s check beside a crash, an endless loop, the memory cap and the item cap: prints its
/// gaps between runs.
async fn healthy_beside_misbehaving() {
    let host = host(PluginConfig {
        memory_limit_mb: 16,
        ..plugin_config()
    });
    let plugin = host.load("test_plugin").expect("test_plugin loads");
    let (reports, mut inbox) = mpsc::channel(1024);
    let mut scheduler = kennel_tests::scheduler(host, 8, reports);
    let healthy_id = kennel_tests::schedule_among_misbehaving(&mut scheduler, &plugin);
    // The first run comes early by design; the gaps are counted from the second.
    let mut starts = Vec::new();
    while starts.len() < HEALTHY_GAPS + 2 {
        let report = inbox.recv().await.expect("the scheduler runs");
        if report.instance_id == healthy_id {
            assert!(report.is_ok(), "{report:#?}");
            starts.push(report.started);
        }
    }
    scheduler.shutdown().await;
    let gaps = starts[1..]
        .windows(2)
        .map(|w| w[1].duration_since(w[0]).expect("runs in order"))
        .collect();
    println!(
        "1 s check beside four misbehaving ones: gaps between runs {}",
        summary(gaps)
    );
}

/// A 1 s http_check of `url` beside `busy` instances looping for their whole 3 s timeout:
/// prints the response times it reports and the runs it skipped.
async fn http_check_beside_busy_plugins(url: &str, busy: usize) {
    const RUNS: usize = 20;
    let host = host(plugin_config());
    let http_check = host.load("http_check").expect("http_check loads");
    let looping = host.load("test_plugin").expect("test_plugin loads");
    let (reports, mut inbox) = mpsc::channel(1024);
    let mut scheduler = kennel_tests::scheduler(host, 32, reports);
    let check = instance(
        "http_check",
        &format!("instances:\n  - name: bench\n    url: {url}\n    min_collection_interval: 1\n"),
    );
    let id = check.id.clone();
    scheduler.schedule(check, http_check);
    for n in 0..busy {
        let yaml = format!(
            "instances:\n  - mode: loop\n    min_collection_interval: 1\n    timeout: 3\n    tags: [n:{n}]\n"
        );
        scheduler.schedule(instance("test_plugin", &yaml), looping.clone());
    }
    let mut times = Vec::with_capacity(RUNS);
    while times.len() < RUNS {
        let report = inbox.recv().await.expect("the scheduler runs");
        if report.instance_id != id {
            continue;
        }
        let response_time = report
            .metrics
            .iter()
            .find(|m| m.name == "network.http.response_time")
            .unwrap_or_else(|| panic!("a response time: {report:#?}"));
        times.push(Duration::from_secs_f64(response_time.value));
    }
    let stats = scheduler.stats().snapshot();
    let (skipped, waiting) = stats
        .iter()
        .find(|s| s.instance_id == id)
        .map_or((0, 0), |s| (s.skipped, s.skipped_waiting));
    scheduler.shutdown().await;
    println!(
        "1 s http_check beside {busy} busy-looping instances: response time {}, skipped runs {skipped} \
         ({waiting} for want of a runner, the rest because its previous run was still going)",
        summary(times)
    );
}

/// A check that crashes at every run, at a 0.5 s interval: prints its first five gaps.
async fn crash_back_off() {
    let host = host(plugin_config());
    let plugin = host.load("test_plugin").expect("test_plugin loads");
    let (reports, mut inbox) = mpsc::channel(64);
    let mut scheduler = kennel_tests::scheduler(host, 4, reports);
    scheduler.schedule(
        instance(
            "test_plugin",
            "instances:\n  - mode: panic\n    min_collection_interval: 0.5\n",
        ),
        plugin,
    );
    let mut reports: Vec<RunReport> = Vec::new();
    while reports.len() < 6 {
        reports.push(inbox.recv().await.expect("the scheduler runs"));
    }
    scheduler.shutdown().await;
    let gaps: Vec<String> = reports
        .windows(2)
        .map(|w| w[1].started.duration_since(w[0].started).expect("in order"))
        .map(|gap| format!("{:.0} ms", gap.as_secs_f64() * 1e3))
        .collect();
    println!(
        "check crashing at every run, 0.5 s interval: gaps between runs {}",
        gaps.join(", ")
    );
}

/// min, p50, p99 and max, in milliseconds.
fn summary(mut durations: Vec<Duration>) -> String {
    durations.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let at = |q: f64| ms(durations[((durations.len() - 1) as f64 * q).round() as usize]);
    format!(
        "min {:.0} ms, p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms (n = {})",
        at(0.0),
        at(0.5),
        at(0.99),
        at(1.0),
        durations.len()
    )
}
