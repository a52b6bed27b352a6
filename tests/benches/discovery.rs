//! Load runs of autodiscovery and the scheduler, against `runner run`. Prints:
//! - container start -> first check result, over 25 containers started one after another
//!   with an `http_check` label: p50, p95 and max, measured from the container's `StartedAt`
//!   (Docker's clock) to the end of the first run (the runner's clock; same host), and from the
//!   moment `docker run` was invoked;
//! - conf.d save -> new schedule in effect (the new instance has run), over 20 saves;
//! - 10,000 scheduled instances of a trivial check at 15 s: the runner's CPU, as a share of one
//!   core over 60 s, and its RSS;
//! - container churn, 10 rounds of 12 labelled containers started, checked, stopped and
//!   unscheduled: the runner's RSS after each round, and its growth after the first.
//!
//! Needs a Docker daemon (`tests/prepare-machine` starts one). `make bench`, or
//! `cargo bench -p kennel-tests --bench discovery` after `make`.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kennel_tests::churn;
use kennel_tests::docker::{self, Container, SOCKET, unique_name};
use kennel_tests::runner_process::{Options, RunnerProcess};

fn main() {
    container_start_to_first_result();
    confd_save_to_schedule();
    ten_thousand_instances();
    container_churn();
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// p50, p95 and max of durations in milliseconds.
fn summary(mut ms: Vec<f64>) -> String {
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() as f64 - 1.0) * q).round() as usize];
    format!(
        "p50 {:.0} ms, p95 {:.0} ms, max {:.0} ms (n = {})",
        at(0.5),
        at(0.95),
        ms[ms.len() - 1],
        ms.len()
    )
}

fn container_start_to_first_result() {
    let image = docker::image();
    let runner = RunnerProcess::start(
        Options {
            docker: Some(SOCKET.to_owned()),
            ..Options::default()
        },
        &[],
    );
    let label = r#"com.datadoghq.ad.checks={"http_check":{"instances":[{"name":"web","url":"http://%%host%%:%%port%%/"}]}}"#;
    let (mut from_start, mut from_run) = (Vec::new(), Vec::new());
    for _ in 0..25 {
        let name = unique_name("bench");
        let invoked = unix_now();
        let container = Container::run(&name, &["-l", label, image]);
        runner.wait_for("the first result", Duration::from_secs(30), |r| {
            r.instances_from(&name)
                .iter()
                .any(|i| i["runs"].as_u64() >= Some(1))
        });
        let instance = runner.instances_from(&name).remove(0);
        let result = instance["last_run"].as_f64().expect("last_run")
            + instance["last_duration_ms"].as_f64().expect("duration") / 1000.0;
        let started = docker::docker(&["inspect", "-f", "{{.State.StartedAt}}", &container.id]);
        let started =
            time::OffsetDateTime::parse(&started, &time::format_description::well_known::Rfc3339)
                .expect("StartedAt is RFC 3339");
        let started = started.unix_timestamp_nanos() as f64 / 1e9;
        from_start.push((result - started) * 1000.0);
        from_run.push((result - invoked) * 1000.0);
        drop(container);
    }
    println!(
        "container start -> first check result: {}",
        summary(from_start)
    );
    println!(
        "`docker run` invoked -> first check result: {}",
        summary(from_run)
    );
}

fn confd_save_to_schedule() {
    let runner = RunnerProcess::start(Options::default(), &[]);
    let mut took = Vec::new();
    for i in 0..20 {
        let file = format!("test_plugin.d/save{i}.yaml");
        let saved = Instant::now();
        runner.write_confd(
            &file,
            &format!("instances:\n  - mode: ok\n    tags: [save:{i}]\n"),
        );
        let needle = format!("save{i}.yaml");
        runner.wait_for("the saved config to run", Duration::from_secs(10), |r| {
            r.instances_from(&needle)
                .iter()
                .any(|i| i["runs"].as_u64() >= Some(1))
        });
        took.push(saved.elapsed().as_secs_f64() * 1000.0);
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("conf.d save -> new instance has run: {}", summary(took));
}

fn ten_thousand_instances() {
    const INSTANCES: usize = 10_000;
    let mut config = String::from("instances:\n");
    for i in 0..INSTANCES {
        config.push_str(&format!("  - mode: ok\n    tags: [\"n:{i}\"]\n"));
    }
    let runner = RunnerProcess::start(
        Options {
            // As in production: a log line per run would be most of the cost measured.
            log: Some("info"),
            ..Options::default()
        },
        &[("test_plugin.d/many.yaml", &config)],
    );
    runner.wait_for("every instance to run once", Duration::from_secs(60), |r| {
        let status = r.status();
        let instances = status["instances"].as_array().map_or(&[][..], |v| v);
        instances.len() == INSTANCES && instances.iter().all(|i| i["runs"].as_u64() >= Some(1))
    });
    // Let start-up settle, then measure a whole number of intervals.
    std::thread::sleep(Duration::from_secs(5));
    let window = Duration::from_secs(60);
    let (cpu_before, runs_before) = (cpu_ticks(runner.pid()), total_runs(&runner));
    let started = Instant::now();
    std::thread::sleep(window);
    let (cpu_after, runs_after) = (cpu_ticks(runner.pid()), total_runs(&runner));
    let elapsed = started.elapsed().as_secs_f64();
    let ticks_per_second = 100.0;
    let share = (cpu_after - cpu_before) as f64 / ticks_per_second / elapsed * 100.0;
    println!(
        "10,000 instances at 15 s: {:.0} runs/s, CPU {share:.1} % of one core, RSS {:.1} MiB",
        (runs_after - runs_before) as f64 / elapsed,
        runner.rss_kib() as f64 / 1024.0
    );
}

fn container_churn() {
    const ROUNDS: usize = 10;
    const CONTAINERS: usize = 12;
    let runner = RunnerProcess::start(
        Options {
            docker: Some(SOCKET.to_owned()),
            ..Options::default()
        },
        &[],
    );
    let label = r#"com.datadoghq.ad.checks={"http_check":{"instances":[{"name":"web","url":"http://%%host%%:%%port%%/","min_collection_interval":1}]}}"#;
    let rss = churn::run(&runner, &unique_name("churn"), label, ROUNDS, CONTAINERS);
    let mib = |kib: u64| kib as f64 / 1024.0;
    let after_each: Vec<String> = rss.iter().map(|kib| format!("{:.1}", mib(*kib))).collect();
    let growth = rss[ROUNDS - 1] as f64 - rss[0] as f64;
    println!(
        "container churn, {ROUNDS} rounds of {CONTAINERS}: RSS after each round {} MiB; \
         {:+.1} MiB after the first round, {:+.0} KiB per container",
        after_each.join(", "),
        growth / 1024.0,
        growth / ((ROUNDS - 1) * CONTAINERS) as f64
    );
}

/// utime + stime of a process, in clock ticks (100 per second on Linux).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("the runner is alive");
    // Fields after the command name, which is in parentheses and may contain spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // utime and stime are fields 14 and 15; `fields` starts at field 3.
    fields[11].parse::<u64>().unwrap_or(0) + fields[12].parse::<u64>().unwrap_or(0)
}

fn total_runs(runner: &RunnerProcess) -> u64 {
    runner.status()["instances"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["runs"].as_u64())
        .sum()
}
