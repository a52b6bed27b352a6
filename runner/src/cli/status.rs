//! `runner status`: asks the running runner's status API and prints the answer.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;

use super::StatusArgs;
use crate::aggregator::{ContextsStatus, Pool};
use crate::check::unix_seconds;
use crate::config::RunnerConfig;
use crate::forwarder::endpoint::EndpointStatus;
use crate::health::State;
use crate::scheduler::InstanceStats;
use crate::status;

/// `runner status`: asks the running runner's status API and prints the answer.
pub(super) async fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let response = ask(&args, "/status").await?;
    let body = response.error_for_status()?.text().await?;
    if args.json {
        println!("{body}");
        return Ok(ExitCode::SUCCESS);
    }
    let status: status::Status =
        serde_json::from_str(&body).context("unexpected answer from the status API")?;
    print!("{}", status_text(&status));
    Ok(ExitCode::SUCCESS)
}

/// `runner health`: the running runner's `/health`, printed; exits 0 only when it is healthy.
pub(super) async fn health(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let response = ask(&args, "/health").await?;
    let healthy = response.status().is_success();
    let body = response.text().await?;
    println!("{}", body.trim_end());
    Ok(if healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// GETs `path` from the status API the config (as `runner run` reads it) names.
async fn ask(args: &StatusArgs, path: &str) -> anyhow::Result<reqwest::Response> {
    let (config, _) = RunnerConfig::load_with_env(args.config.as_deref(), std::env::vars())?;
    let listen = config
        .status_listen
        .context("the status API is off (`status_listen: null`): there is nothing to ask")?;
    let url = format!("http://{listen}{path}");
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()?;
    client.get(&url).send().await.with_context(|| {
        format!("no runner answers at {url}: is `runner run` running with this config?")
    })
}

fn status_text(status: &status::Status) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Kennel runner {} on {}, up {:.0} s",
        status.version, status.hostname, status.uptime_s
    );
    let _ = writeln!(out, "conf.d: {}\n", status.confd_path);
    if !status.components.is_empty() {
        let _ = writeln!(out, "  Components\n  ==========");
        let width = status
            .components
            .iter()
            .map(|c| c.name.len())
            .max()
            .unwrap_or(0);
        for component in &status.components {
            let state = match component.state {
                State::Ok => "OK",
                State::Degraded => "DEGRADED",
                State::Failed => "FAILED",
            };
            let since = (unix_seconds(std::time::SystemTime::now()) - component.since).max(0.0);
            let _ = write!(
                out,
                "    {:width$}  {state:8} for {since:.0} s",
                component.name
            );
            if let Some(reason) = &component.reason {
                let _ = write!(out, ": {reason}");
            }
            let _ = writeln!(out);
        }
        let _ = writeln!(out);
    }
    if !status.config_errors.is_empty() {
        let _ = writeln!(out, "  Config Errors\n  =============");
        for error in &status.config_errors {
            let _ = writeln!(out, "    {error}");
        }
        let _ = writeln!(out);
    }
    if let Some(containers) = &status.containers {
        let header = format!("Containers ({})", containers.len());
        let _ = writeln!(out, "  {header}\n  {}", "=".repeat(header.len()));
        for container in containers {
            let _ = writeln!(out, "    {container}");
        }
        let _ = writeln!(out);
    }
    if !status.forwarder.is_empty() {
        forwarder_text(&mut out, &status.forwarder);
    }
    if !status.contexts.pools.is_empty() {
        contexts_text(&mut out, &status.contexts);
    }
    let _ = writeln!(out, "  Running Checks\n  ==============");
    if status.instances.is_empty() {
        let _ = writeln!(out, "    (none)");
    }
    for stats in &status.instances {
        let _ = writeln!(
            out,
            "\n    {} ({}) [{}]",
            stats.check,
            stats.instance_id,
            instance_state(stats)
        );
        let _ = writeln!(out, "      Configuration Source: {}", stats.source);
        if !stats.plugin.is_empty() {
            let short = &stats.plugin[..stats.plugin.len().min(12)];
            let _ = writeln!(out, "      Plugin: sha256 {short}");
        }
        let waiting = match stats.skipped_waiting {
            0 => String::new(),
            n => format!(" ({n} waiting for a runner)"),
        };
        let _ = writeln!(
            out,
            "      Total Runs: {}, Errors: {}, Skipped: {}{waiting}",
            stats.runs, stats.errors, stats.skipped
        );
        if let Some(why) = &stats.last_skip {
            let _ = writeln!(out, "      Last Skipped Because: {why}");
        }
        let _ = writeln!(
            out,
            "      Metric Samples: {}, Service Checks: {}, Events: {}",
            stats.metric_samples, stats.service_checks, stats.events
        );
        let _ = writeln!(
            out,
            "      Last Execution Time : {:.3}ms",
            stats.last_duration_ms
        );
        let ago = |t: Option<f64>| match t {
            Some(t) => format!(
                "{:.0} s ago",
                (unix_seconds(std::time::SystemTime::now()) - t).max(0.0)
            ),
            None => "Never".to_owned(),
        };
        let _ = writeln!(out, "      Last Execution Date : {}", ago(stats.last_run));
        let _ = writeln!(
            out,
            "      Last Successful Execution Date : {}",
            ago(stats.last_success)
        );
        if let Some(error) = &stats.last_error {
            let _ = writeln!(out, "      Error: {error}");
        }
        for sc in &stats.last_service_checks {
            let _ = write!(out, "      Service Check {}: {}", sc.name, sc.status);
            if !sc.message.is_empty() {
                let _ = write!(out, " ({})", sc.message);
            }
            let _ = writeln!(out);
        }
        for warning in &stats.last_warnings {
            let _ = writeln!(out, "      Warning: {warning}");
        }
        if stats.log_lines_suppressed > 0 {
            let _ = writeln!(
                out,
                "      Log Lines Suppressed: {} (over `plugins.log_lines_per_second`)",
                stats.log_lines_suppressed
            );
        }
    }
    out
}

/// The Forwarder section, in the Agent's spirit: transactions per endpoint, then the queue.
fn forwarder_text(out: &mut String, endpoints: &[EndpointStatus]) {
    use std::fmt::Write;
    let _ = writeln!(out, "  Forwarder\n  =========");
    for e in endpoints {
        let dropped: u64 = e.dropped.iter().map(|d| d.payloads).sum();
        let state = if e.api_key_invalid {
            "API KEY INVALID"
        } else if e.consecutive_failures > 0 {
            "RETRYING"
        } else if e.rejecting {
            "REJECTING"
        } else if e.spill_error.is_some() {
            "NO DISK"
        } else {
            "OK"
        };
        let _ = writeln!(out, "\n    {} ({}) [{state}]", e.name, e.url);
        let _ = writeln!(
            out,
            "      Transactions: {} succeeded, {} retried, {dropped} dropped",
            e.succeeded, e.retried
        );
        for d in &e.dropped {
            let _ = writeln!(
                out,
                "        Dropped ({}): {} payloads, {} points",
                d.reason, d.payloads, d.items
            );
        }
        let _ = writeln!(
            out,
            "      Queued: {} payloads ({} bytes) in memory, {} payloads ({} bytes) on disk",
            e.queued_memory_payloads,
            e.queued_memory_bytes,
            e.queued_disk_payloads,
            e.queued_disk_bytes
        );
        if let Some(age) = e.oldest_queued_seconds {
            let _ = writeln!(out, "      Oldest Queued: {age:.0} s");
        }
        let ago = match e.last_success_unix {
            Some(t) => format!(
                "{:.0} s ago",
                (unix_seconds(std::time::SystemTime::now()) - t).max(0.0)
            ),
            None => "Never".to_owned(),
        };
        let _ = writeln!(out, "      Last Success: {ago}");
        if e.consecutive_failures > 0 {
            let _ = writeln!(
                out,
                "      Consecutive Failures: {}",
                e.consecutive_failures
            );
        }
        if let Some(error) = &e.last_error {
            let _ = writeln!(out, "      Last Error: {error}");
        }
        if let Some(error) = &e.spill_error {
            let _ = writeln!(out, "      Spill Error: {error}");
        }
    }
    let _ = writeln!(out);
}

/// The Metric Contexts section: each pool's use, then the origins holding the most contexts
/// and every origin that had some refused.
fn contexts_text(out: &mut String, contexts: &ContextsStatus) {
    use std::fmt::Write;
    let _ = writeln!(out, "  Metric Contexts\n  ===============");
    for pool in &contexts.pools {
        let pool_name = match pool.pool {
            Pool::Checks => "Check results",
            Pool::Dogstatsd => "DogStatsD",
        };
        let _ = writeln!(
            out,
            "    {pool_name}: {} of {} contexts, {}",
            pool.contexts,
            pool.budget,
            plural(pool.origins as u64, "origin")
        );
    }
    let _ = writeln!(
        out,
        "    At most {} contexts per origin (`aggregator.max_contexts_per_origin`)",
        contexts.max_per_origin
    );
    for origin in &contexts.origins {
        let _ = write!(out, "      {}", origin.origin);
        if let Some(name) = &origin.name {
            let _ = write!(out, " [{name}]");
        }
        let _ = write!(out, ": {}", plural(origin.contexts as u64, "context"));
        if origin.refused > 0 {
            let _ = write!(out, ", {} refused", plural(origin.refused, "new context"));
        }
        let _ = writeln!(out);
    }
    let _ = writeln!(out);
}

/// `1 context`, `2 contexts`.
fn plural(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("{n} {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

fn instance_state(stats: &InstanceStats) -> &'static str {
    match (
        &stats.last_error,
        stats.last_warnings.is_empty(),
        stats.runs,
    ) {
        (_, _, 0) if stats.skipped > 0 => "SKIPPED",
        (_, _, 0) => "PENDING",
        (Some(_), _, _) => "ERROR",
        (None, false, _) => "WARNING",
        (None, true, _) => "OK",
    }
}
