//! Hostile plugins against a running `runner run`: what a plugin says reaches the log and
//! `/status` as one escaped, capped piece of one line, an instance that floods the log is held
//! to its budget and counted while the others keep running, and a query whose result would not
//! fit in the host's bound fails alone within a memory bound.
//!
//! Each attack is first run against the same runner with the bound out of the way (a rate no
//! plugin reaches, a result bound of 1 GiB), so the figures printed show what the bound saves
//! and the assertions would fail without it.

use std::time::{Duration, Instant};

use kennel_tests::postgres::Postgres;
use kennel_tests::runner_process::{Options, RunnerProcess};

const WAIT: Duration = Duration::from_secs(60);
/// What the forging plugin puts after its newlines (see the test plugin's `forge` mode).
const FORGED: &str = "2026-01-01T00:00:00.000000Z ERROR runner::forwarder: FORGED-LINE";
/// The most bytes of a plugin string in a log line or `/status`, and its cut's mark.
const SHOWN_MAX: usize = 2048;
const STEADY: (&str, &str) = (
    "test_plugin.d/steady.yaml",
    "instances:\n  - mode: ok\n    min_collection_interval: 0.5\n",
);

fn instance(runner: &RunnerProcess, file: &str) -> serde_json::Value {
    runner
        .instances_from(file)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no instance from {file}; log:\n{}", runner.log()))
}

fn runs(runner: &RunnerProcess, file: &str) -> u64 {
    runner
        .instances_from(file)
        .iter()
        .filter_map(|i| i["runs"].as_u64())
        .sum()
}

#[test]
fn forged_lines_and_huge_errors_stay_one_escaped_capped_line() {
    let runner = RunnerProcess::start(
        Options::default(),
        &[
            STEADY,
            (
                "test_plugin.d/forge.yaml",
                "instances:\n  - mode: forge\n    error_bytes: 900000\n    min_collection_interval: 1\n",
            ),
        ],
    );
    runner.wait_for("the forging instance to run twice", WAIT, |r| {
        runs(r, "forge.yaml") >= 2
    });
    let steady_before = runs(&runner, "steady.yaml");

    let log = runner.log();
    let forged_mentions: Vec<&str> = log.lines().filter(|l| l.contains("FORGED-LINE")).collect();
    assert!(
        forged_mentions.len() >= 4,
        "the plugin's text is logged (escaped), from its log lines, warning, metric name and error: {forged_mentions:#?}"
    );
    for line in log.lines() {
        assert!(
            !line.trim_start().starts_with(FORGED),
            "a plugin forged a log line: {line}"
        );
        assert!(
            !line.contains('\u{1b}'),
            "an escape sequence reached the log: {line:?}"
        );
        assert!(
            line.len() < 2 * SHOWN_MAX + 1024,
            "a log line of {} bytes: {}…",
            line.len(),
            &line[..200]
        );
    }
    for line in &forged_mentions {
        assert!(
            line.contains("instance=test_plugin:"),
            "a line with the plugin's text is not the runner's line about the instance: {line}"
        );
    }
    let longest = log.lines().map(str::len).max().unwrap_or(0);

    let forge = instance(&runner, "forge.yaml");
    let error = forge["last_error"]["message"].as_str().unwrap_or_default();
    assert_eq!(forge["last_error"]["kind"], "check", "{forge:#}");
    assert!(error.starts_with("failed\\n2026-01-01"), "{error}");
    assert!(!error.contains('\n'), "{error}");
    assert!(
        error.len() <= SHOWN_MAX + "…(+NNNNNN bytes)".len(),
        "the error kept in /status is {} bytes",
        error.len()
    );
    let cut: usize = error
        .rsplit_once("…(+")
        .and_then(|(_, rest)| rest.strip_suffix(" bytes)"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "the cut is marked with what went: {}",
                &error[error.len() - 40..]
            )
        });
    assert!(cut > 890_000, "{cut} bytes cut of a 900 KB error");
    let warnings = forge["last_warnings"].to_string();
    assert!(
        warnings.contains("dropped metric `test.forge\\\\n2026-01-01"),
        "the metric's name is escaped in its warning: {warnings}"
    );
    println!(
        "forge: longest log line {longest} bytes; /status keeps {} bytes of the 900 KB error",
        error.len()
    );

    runner.wait_for("the steady instance to keep running", WAIT, |r| {
        runs(r, "steady.yaml") >= steady_before + 3
    });
}

/// Bytes of the log written by `instance_id` while `for_how_long` passes, and the whole log's.
fn log_growth(runner: &RunnerProcess, instance_id: &str, for_how_long: Duration) -> (usize, usize) {
    let before = runner.log();
    std::thread::sleep(for_how_long);
    let after = runner.log();
    let new = &after[before.len().min(after.len())..];
    let own = new
        .lines()
        .filter(|l| l.contains(instance_id))
        .map(|l| l.len() + 1)
        .sum();
    (own, new.len())
}

#[test]
fn a_flooding_instance_is_held_to_its_log_budget_counted_and_others_keep_running() {
    let flood = (
        "test_plugin.d/flood.yaml",
        "instances:\n  - mode: chatty\n    lines: 4000\n    min_collection_interval: 1\n",
    );
    let once = (
        "test_plugin.d/once.yaml",
        "instances:\n  - mode: chatty\n    lines: 5000\n    min_collection_interval: 3600\n",
    );
    let window = Duration::from_secs(10);

    // The same flood with no budget to speak of: what the log took before the limit.
    let unbounded = RunnerProcess::start(
        Options {
            extra: "  log_lines_per_second: 1000000000\n  log_lines_burst: 1000000000\n".to_owned(),
            log: Some("runner=info"),
            ..Options::default()
        },
        &[STEADY, flood],
    );
    unbounded.wait_for("the flood to start", WAIT, |r| runs(r, "flood.yaml") >= 1);
    let id = instance(&unbounded, "flood.yaml")["instance_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let (unbounded_own, unbounded_all) = log_growth(&unbounded, &id, window);
    drop(unbounded);

    let runner = RunnerProcess::start(
        Options {
            log: Some("runner=info"),
            ..Options::default()
        },
        &[STEADY, flood, once],
    );
    runner.wait_for("the flood and the one-off to run", WAIT, |r| {
        runs(r, "flood.yaml") >= 1 && runs(r, "once.yaml") >= 1
    });
    let id = instance(&runner, "flood.yaml")["instance_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let steady_before = runs(&runner, "steady.yaml");
    let flood_runs_before = runs(&runner, "flood.yaml");
    let started = Instant::now();
    let (own, all) = log_growth(&runner, &id, window);
    let elapsed = started.elapsed().as_secs_f64();
    let flood_runs = runs(&runner, "flood.yaml") - flood_runs_before;
    println!(
        "flood of 4000 lines a second for {window:?}: log grew {} KiB without a budget ({} KiB from the instance), {} KiB with the default (10 lines/s, burst 50: {} KiB from the instance)",
        unbounded_all / 1024,
        unbounded_own / 1024,
        all / 1024,
        own / 1024
    );
    assert!(
        flood_runs >= 5,
        "the flooding instance kept running: {flood_runs} runs"
    );
    // At most 10 lines a second of at most ~2.3 KiB each (the line, its prefix and fields),
    // plus the lines saying how many were suppressed.
    let allowed = ((10.0 * elapsed + 10.0) * 2.5 * 1024.0) as usize;
    assert!(
        own <= allowed,
        "the flooding instance wrote {own} bytes in {elapsed:.1} s, more than {allowed}"
    );
    assert!(
        unbounded_own > 10 * own,
        "the budget is what holds the flood: {unbounded_own} bytes without it, {own} with it"
    );

    let flooding = instance(&runner, "flood.yaml");
    assert!(
        flooding["log_lines_suppressed"].as_u64().unwrap_or(0) >= 4000 * (flood_runs - 1),
        "{flooding:#}"
    );
    let log = runner.log();
    assert!(
        log.lines()
            .any(|l| l.contains(&id) && l.contains("suppressing log lines")),
        "one line says lines are being suppressed"
    );

    // Every line of the one-off run is either written or counted, and a flood elsewhere did not
    // take its budget.
    let once_stats = instance(&runner, "once.yaml");
    let once_id = once_stats["instance_id"].as_str().unwrap_or_default();
    let written = log
        .lines()
        .filter(|l| l.contains(once_id) && l.contains(": chatty chatty"))
        .count() as u64;
    let suppressed = once_stats["log_lines_suppressed"].as_u64().unwrap_or(0);
    assert!(
        written >= 50,
        "the instance's own burst was written: {written} lines"
    );
    assert_eq!(
        written + suppressed,
        5000,
        "{written} written, {suppressed} suppressed"
    );

    let metrics = runner.metrics();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("kennel_plugin_log_lines_suppressed")
                && l.contains("check=\"test_plugin\"")),
        "suppressed lines are counted per check in the runner's telemetry:\n{metrics}"
    );
    runner.wait_for("the steady instance to keep running", WAIT, |r| {
        runs(r, "steady.yaml") >= steady_before + 3
    });
    let steady = instance(&runner, "steady.yaml");
    assert!(steady["last_error"].is_null(), "{steady:#}");
}

/// A query whose rows each hold a text of `mib` MiB and a 1.
fn big_rows(rows: u32, mib: u32) -> String {
    format!("SELECT repeat('x', {mib} * 1048576), 1 FROM generate_series(1, {rows})")
}

fn postgres_check(postgres: &Postgres, custom_query: &str) -> String {
    format!(
        "instances:\n  -\n{}    min_collection_interval: 2\n    custom_queries:\n      - metric_prefix: kennel_test.big\n        query: \"{custom_query}\"\n        columns:\n          - {{name: payload, type: tag}}\n          - {{name: rows, type: count}}\n      - metric_prefix: kennel_test.small\n        query: \"SELECT 42\"\n        columns:\n          - {{name: answer, type: gauge}}\n",
        postgres.instance_keys("app")
    )
}

/// Starts a runner with the postgres check running `custom_query` beside a small query, waits
/// for a run, and returns it with the peak RSS growth of that run in KiB.
fn postgres_run(postgres: &Postgres, custom_query: &str, extra: &str) -> (RunnerProcess, u64) {
    let runner = RunnerProcess::start(
        Options {
            extra: extra.to_owned(),
            ..Options::default()
        },
        &[
            STEADY,
            (
                "postgres.d/conf.yaml",
                &postgres_check(postgres, custom_query),
            ),
        ],
    );
    runner.wait_for("the steady instance to run", WAIT, |r| {
        runs(r, "steady.yaml") >= 1
    });
    // Measured from a runner that has loaded its plugins and is otherwise idle, across two
    // runs of the postgres check.
    runner.wait_for("the postgres check to run", WAIT, |r| {
        runs(r, "postgres.d") >= 1
    });
    let baseline = runner.rss_kib();
    runner.reset_peak_rss();
    let first = runs(&runner, "postgres.d");
    runner.wait_for("two more runs of the postgres check", WAIT, |r| {
        runs(r, "postgres.d") >= first + 2
    });
    let growth = runner.peak_rss_kib().saturating_sub(baseline);
    (runner, growth)
}

#[test]
fn a_query_past_the_result_bound_fails_alone_within_a_memory_bound() {
    let postgres = Postgres::start();
    let query = big_rows(50, 10);

    let (unbounded, unbounded_growth) =
        postgres_run(&postgres, &query, "  sql_result_limit_kb: 1048576\n");
    drop(unbounded);

    let (runner, growth) = postgres_run(&postgres, &query, "");
    println!(
        "50 rows of 10 MiB: peak RSS grew {} MiB above the idle runner with a 1 GiB result bound, {} MiB with the default 4 MiB bound",
        unbounded_growth / 1024,
        growth / 1024
    );
    let postgres_instance = instance(&runner, "postgres.d");
    let warnings = postgres_instance["last_warnings"].to_string();
    assert!(
        warnings.contains("postgres instance postgres:")
            && warnings.contains("passed the bound of 4096 KiB")
            && warnings.contains("plugins.sql_result_limit_kb"),
        "the query fails with the bound's error, naming the check: {postgres_instance:#}"
    );
    // The bound, one row being read (10 MiB, in a buffer that may have doubled to 16), and
    // what the allocator keeps of it: far below the 500 MiB of the result.
    const BOUND_KIB: u64 = 64 * 1024;
    assert!(
        growth <= BOUND_KIB,
        "the run grew the runner's peak RSS by {growth} KiB, more than {BOUND_KIB}"
    );
    assert!(
        unbounded_growth > 4 * BOUND_KIB,
        "without the bound the result is held whole: {unbounded_growth} KiB"
    );
    runner.wait_for("the other query's metric on /metrics", WAIT, |r| {
        r.metrics()
            .lines()
            .any(|l| l.starts_with("kennel_test_small_answer") && l.ends_with(" 42"))
    });
    let steady_before = runs(&runner, "steady.yaml");
    runner.wait_for("the steady instance to keep running", WAIT, |r| {
        runs(r, "steady.yaml") >= steady_before + 3
    });
    drop(runner);

    // One row of 200 MiB is refused from its first bytes, not read whole.
    let (runner, growth) = postgres_run(&postgres, &big_rows(1, 200), "");
    println!(
        "one row of 200 MiB: peak RSS grew {} MiB with the default 4 MiB bound",
        growth / 1024
    );
    let warnings = instance(&runner, "postgres.d")["last_warnings"].to_string();
    assert!(
        warnings.contains("passed the bound of 4096 KiB with one row of 2097152"),
        "{warnings}"
    );
    assert!(
        growth <= BOUND_KIB,
        "one row grew the runner's peak RSS by {growth} KiB, more than {BOUND_KIB}"
    );
}

/// Issue 13, the plugin boundary: a plugin submitting pseudo-random items through the real host
/// (metrics of every type, service checks, events, log lines; names, tags, hosts and texts of
/// quotes, newlines, NULs, escapes and non-ASCII, some far past the host's caps; NaN and
/// infinite values), 300 a run, a new seed every run, ten runs a second. The runner stays
/// healthy and within a memory bound, a steady instance beside it keeps running, each fuzz
/// run's closing marker gets through, and the `/metrics` page stays one Prometheus accepts.
#[test]
fn arbitrary_items_through_the_real_host_break_neither_the_runner_nor_its_page() {
    let runner = RunnerProcess::start(
        Options {
            log: Some("info"),
            ..Options::default()
        },
        &[
            STEADY,
            (
                "test_plugin.d/fuzz.yaml",
                "instances:\n  - mode: fuzz\n    seed: 20261203\n    items: 300\n    min_collection_interval: 0.1\n",
            ),
        ],
    );
    let steady_before = runs(&runner, "steady.yaml");
    runner.wait_for("100 fuzz runs", WAIT, |r| runs(r, "fuzz.yaml") >= 100);
    let fuzz = instance(&runner, "fuzz.yaml");
    assert_eq!(
        fuzz["errors"], 0,
        "hostile items are dropped and counted, not the run: {fuzz}"
    );
    assert!(
        fuzz["metric_samples"].as_u64() > Some(5_000),
        "the items reached the host: {fuzz}"
    );
    assert!(runs(&runner, "steady.yaml") >= steady_before + 10);
    let (code, body) = runner.health();
    assert_eq!(code, 200, "{body}");

    // The page shows closed buckets: the marker of the 100th run arrives a bucket later.
    let marker = |page: &str| {
        page.lines()
            .find_map(|l| {
                l.strip_prefix("test_fuzz_runs{")
                    .and_then(|l| l.rsplit_once(' '))
            })
            .and_then(|(_, v)| v.parse::<f64>().ok())
    };
    runner.wait_for("the 100th run's marker on /metrics", WAIT, |r| {
        marker(&r.metrics()).is_some_and(|runs| runs >= 100.0)
    });
    kennel_tests::prometheus::assert_page_accepted(&runner.metrics());
    let rss_mib = runner.rss_kib() / 1024;
    assert!(
        rss_mib < 400,
        "the runner stays within 400 MiB: {rss_mib} MiB"
    );
}
