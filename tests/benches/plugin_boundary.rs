//! The plugin boundary's fuzzing campaign: the test plugin's `fuzz` mode submits pseudo-random
//! items (metrics of every type, service checks, events, log lines; names, tags, hosts and texts
//! of quotes, newlines, NULs, escapes and non-ASCII, some far past the host's caps; NaN and
//! infinite values) through the real host of a real `runner run`, from a new seed every run,
//! until `KENNEL_FUZZ_ITEMS` items (10,000,000 by default) have gone through.
//!
//! Every `CHECK_EVERY` it asserts what the e2e test asserts once: no fuzz run failed (hostile
//! items are dropped and counted, not the run), a steady instance beside them keeps running,
//! `/health` answers 200, `promtool check metrics` accepts the `/metrics` page, and the runner's
//! RSS stays under `RSS_BOUND_MIB`. It prints the items a second, the runs, the samples that got
//! through, the peak RSS and the CPU used. A failing run's seed is in the runner's log: the
//! plugin replays it with `seed` set to it.
//!
//! `cargo bench -p kennel-tests --bench plugin_boundary` after `make all`.

use std::time::{Duration, Instant};

use kennel_tests::runner_process::{Options, RunnerProcess};

/// Fuzzing instances; each its own seed range.
const INSTANCES: u64 = 4;
/// Items a run submits: a fifth of the host's default per-run cap, so that runs end well
/// inside their interval and the cap itself is reached by the long-text items alone.
const ITEMS_PER_RUN: u64 = 2_000;
const CHECK_EVERY: Duration = Duration::from_secs(60);
const RSS_BOUND_MIB: u64 = 400;

fn main() {
    let target: u64 = std::env::var("KENNEL_FUZZ_ITEMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000);
    kennel_tests::print_load_average();
    let mut files: Vec<(String, String)> = (0..INSTANCES)
        .map(|i| {
            (
                format!("test_plugin.d/fuzz{i}.yaml"),
                format!(
                    "instances:\n  - mode: fuzz\n    seed: {}\n    items: {ITEMS_PER_RUN}\n    min_collection_interval: 0.1\n",
                    20_261_203 + i * 1_000_000_000
                ),
            )
        })
        .collect();
    files.push((
        "test_plugin.d/steady.yaml".to_owned(),
        "instances:\n  - mode: ok\n    min_collection_interval: 1\n".to_owned(),
    ));
    let files: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, t)| (p.as_str(), t.as_str()))
        .collect();
    let runner = RunnerProcess::start(
        Options {
            log: Some("warn"),
            ..Options::default()
        },
        &files,
    );

    let started = Instant::now();
    let mut checks = 0;
    loop {
        std::thread::sleep(CHECK_EVERY);
        let fuzz = fuzz_runs(&runner);
        let steady = runs(&runner, "steady.yaml");
        assert_eq!(
            fuzz.errors,
            0,
            "a fuzz run failed; log:\n{}",
            tail(&runner.log())
        );
        assert!(
            steady >= started.elapsed().as_secs() / 2,
            "the steady instance fell behind: {steady} runs in {:?}",
            started.elapsed()
        );
        let (code, body) = runner.health();
        assert_eq!(code, 200, "{body}");
        kennel_tests::prometheus::assert_page_accepted(&runner.metrics());
        let rss_mib = runner.rss_kib() / 1024;
        assert!(
            rss_mib < RSS_BOUND_MIB,
            "the runner passed {RSS_BOUND_MIB} MiB: {rss_mib} MiB"
        );
        checks += 1;
        // A fuzz run that did not fail submitted all its items (and none failed: asserted above).
        let items = fuzz.runs * ITEMS_PER_RUN;
        let elapsed = started.elapsed().as_secs_f64();
        println!(
            "{elapsed:>6.0} s: {items:>11} items in {:>6} runs ({:.0} items/s), {} samples through, RSS {rss_mib} MiB, steady {steady} runs",
            fuzz.runs,
            items as f64 / elapsed,
            fuzz.samples,
        );
        if items >= target {
            println!(
                "done: {items} items in {} runs and {elapsed:.0} s ({:.0} items/s), {} metric samples, {} service checks and {} events through; {checks} checks of health, page and memory passed; peak RSS {} MiB, CPU {:.0} s",
                fuzz.runs,
                items as f64 / elapsed,
                fuzz.samples,
                fuzz.service_checks,
                fuzz.events,
                runner.peak_rss_kib() / 1024,
                runner.cpu_seconds(),
            );
            break;
        }
    }
}

#[derive(Default)]
struct FuzzRuns {
    runs: u64,
    errors: u64,
    samples: u64,
    service_checks: u64,
    events: u64,
}

fn fuzz_runs(runner: &RunnerProcess) -> FuzzRuns {
    let field = |i: &serde_json::Value, key: &str| i[key].as_u64().unwrap_or(0);
    let mut total = FuzzRuns::default();
    for i in 0..INSTANCES {
        for instance in runner.instances_from(&format!("fuzz{i}.yaml")) {
            total.runs += field(&instance, "runs");
            total.errors += field(&instance, "errors");
            total.samples += field(&instance, "metric_samples");
            total.service_checks += field(&instance, "service_checks");
            total.events += field(&instance, "events");
        }
    }
    total
}

fn runs(runner: &RunnerProcess, file: &str) -> u64 {
    runner
        .instances_from(file)
        .iter()
        .filter_map(|i| i["runs"].as_u64())
        .sum()
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}
