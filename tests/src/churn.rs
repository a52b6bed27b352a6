//! Container churn against `runner run`: rounds of labelled containers, each round started,
//! checked, stopped and unscheduled, with the runner's resident memory after every round. A
//! test asserts on a few rounds; the `discovery` benchmark prints many.

use std::time::Duration;

use crate::docker::{self, Container};
use crate::runner_process::RunnerProcess;

/// How long one round may take to be checked, and then to be unscheduled.
const WAIT: Duration = Duration::from_secs(30);

/// Runs `rounds` rounds of `containers` containers of the test image, labelled `label` (which
/// must schedule a check) and named `<prefix>-<round>-<i>`, against `runner`, which follows
/// the Docker daemon. A round ends once every one of its checks has run and, its containers
/// removed, been unscheduled. Returns the runner's RSS, in KiB, after each round.
pub fn run(
    runner: &RunnerProcess,
    prefix: &str,
    label: &str,
    rounds: usize,
    containers: usize,
) -> Vec<u64> {
    let image = docker::image();
    let runs = |instance: &serde_json::Value| instance["runs"].as_u64().unwrap_or(0);
    let mut rss = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let started: Vec<Container> = (0..containers)
            .map(|i| Container::run(&format!("{prefix}-{round}-{i}"), &["-l", label, image]))
            .collect();
        runner.wait_for("every container's check to run", WAIT, |r| {
            let instances = r.instances_from(prefix);
            instances.len() == started.len() && instances.iter().all(|i| runs(i) >= 1)
        });
        drop(started);
        runner.wait_for("every check to be unscheduled", WAIT, |r| {
            r.instances_from(prefix).is_empty()
        });
        rss.push(runner.rss_kib());
    }
    rss
}
