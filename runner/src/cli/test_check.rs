//! `runner test-check`: runs one check's instances as `runner run` would, once or a few times,
//! and prints what they emitted in the Datadog Agent's `check` layout (or JSON).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use super::{TestCheckArgs, init_logging, load_config};
use crate::aggregator::CheckSampler;
use crate::check::{Instance, RunReport, Status, unix_seconds};
use crate::config::RunnerConfig;
use crate::config::confd::{self, CheckConfig};
use crate::containers::docker::DockerClient;
use crate::discovery;
use crate::pipeline::discovery_config;
use crate::plugin::PluginHost;

/// The instances `test-check` runs, with where they came from.
async fn test_instances(
    args: &TestCheckArgs,
    name: &str,
    config: &RunnerConfig,
) -> anyhow::Result<Vec<Instance>> {
    let configs: Vec<CheckConfig> = match &args.instance_config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let parsed = confd::parse_file(name, path, &text)?;
            parsed.into_iter().collect()
        }
        None => {
            let loaded = confd::load_dir(&config.confd_path, confd::Symlinks::of(config))
                .with_context(|| {
                    format!(
                        "cannot read the conf.d directory {}",
                        config.confd_path.display()
                    )
                })?;
            let errors: Vec<String> = loaded
                .errors
                .iter()
                .filter(|e| e.check == name)
                .map(ToString::to_string)
                .collect();
            if !errors.is_empty() {
                anyhow::bail!("invalid config for `{name}`:\n  {}", errors.join("\n  "));
            }
            loaded.for_check(name).cloned().collect()
        }
    };
    let mut instances: Vec<Instance> = configs
        .iter()
        .filter(|c| !c.is_template())
        .flat_map(|c| confd::instances(c, config.plugins.default_timeout()))
        .collect();
    let templates: Vec<&CheckConfig> = configs.iter().filter(|c| c.is_template()).collect();
    // Like the Datadog Agent's `check`: templates (conf.d's, and containers' labels) are
    // resolved against the containers running now.
    let (container_instances, problems) =
        container_instances(name, &templates, config, args.instance_config.is_none()).await?;
    instances.extend(container_instances);
    if instances.is_empty() {
        let mut message = format!(
            "no configuration found for check `{name}`: looked for {confd}/{name}.d/*.yaml, {confd}/{name}.yaml and the running containers' labels",
            confd = config.confd_path.display()
        );
        for problem in problems {
            message.push_str(&format!("\n  {problem}"));
        }
        anyhow::bail!(message);
    }
    for problem in problems {
        eprintln!("Warning: {problem}");
    }
    Ok(instances)
}

/// The instances of `name` that the running containers' templates resolve to, and what could
/// not be resolved. Docker is asked only when there is something to resolve: conf.d templates,
/// or (when `labels`) possibly the containers' own labels.
async fn container_instances(
    name: &str,
    templates: &[&CheckConfig],
    config: &RunnerConfig,
    labels: bool,
) -> anyhow::Result<(Vec<Instance>, Vec<String>)> {
    let Some(socket) = &config.docker_socket else {
        return Ok((Vec::new(), Vec::new()));
    };
    if templates.is_empty() && !(labels && socket.exists()) {
        return Ok((Vec::new(), Vec::new()));
    }
    let client = DockerClient::connect(socket, Arc::new(config.tagger()), &config.procfs_root);
    let running = match client.await {
        Ok(client) => client.running().await,
        Err(error) => Err(error),
    };
    let running = match running {
        Ok(running) => running,
        Err(error) if templates.is_empty() => {
            // Only containers' labels might have added instances: say so, and go on.
            eprintln!("Warning: containers' labels not read: {error}");
            return Ok((Vec::new(), Vec::new()));
        }
        Err(error) => {
            return Err(anyhow::Error::from(error).context(format!(
                "`{name}` has conf.d templates to resolve against containers, but Docker is unavailable"
            )));
        }
    };
    let discovery = discovery_config(config);
    let mut instances = Vec::new();
    let mut problems = Vec::new();
    for container in &running {
        let resolved = discovery::resolve_container(&discovery, container, templates);
        instances.extend(resolved.instances.into_iter().filter(|i| i.check == name));
        problems.extend(
            resolved
                .problems
                .into_iter()
                .filter(|p| p.check == name)
                .map(|p| format!("container {}: {}", container.display(), p.message)),
        );
    }
    Ok((instances, problems))
}

/// `runner test-check`.
pub(super) async fn test_check(args: TestCheckArgs) -> anyhow::Result<ExitCode> {
    let (config, _) = load_config(&args.common)?;
    init_logging("warn");
    let name = match (&args.name, &args.wasm) {
        (Some(name), _) => name.clone(),
        (None, Some(wasm)) => wasm
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .context("cannot tell the check's name from the --wasm path: give it as an argument")?,
        (None, None) => anyhow::bail!("name the check to run: `runner test-check <name>`"),
    };
    // The running runner's key, so its instances have the ids (and stored state) they have there.
    crate::check::id::use_key_from(config.plugins.state_path.as_deref());
    let instances = test_instances(&args, &name, &config).await?;
    // Run as the running runner would, but leave its key-value stores as they were.
    let host = Arc::new(
        PluginHost::new(&config.plugins, config.resolved_hostname(), 1)
            .context("cannot start the plugin host")?
            .with_read_only_state(),
    );
    let plugin = match &args.wasm {
        Some(path) => host.load_file(&name, path)?,
        None => host.load(&name)?,
    };

    let (times, pause) = if args.check_rate {
        (2, Duration::from_secs(1))
    } else {
        (
            args.times.max(1),
            Duration::from_millis(args.pause.unwrap_or(0)),
        )
    };
    let mut results = Vec::new();
    for instance in instances {
        let instance = Arc::new(instance);
        let mut sampler = CheckSampler::new();
        let mut runs = Vec::new();
        for run in 0..times {
            if run > 0 {
                tokio::time::sleep(pause).await;
            }
            let mut report = host.run(&plugin, &instance).await;
            sampler.process(&mut report);
            runs.push(report);
        }
        results.push((instance, runs));
    }

    let failed = results
        .iter()
        .any(|(_, runs)| runs.iter().any(|r| !r.is_ok()));
    if args.json {
        println!("{}", serde_json::to_string_pretty(&json_output(&results))?);
    } else {
        print!("{}", text_output(&name, &results, times));
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn json_output(results: &[(Arc<Instance>, Vec<RunReport>)]) -> serde_json::Value {
    serde_json::Value::Array(
        results
            .iter()
            .map(|(instance, runs)| {
                serde_json::json!({
                    "check": instance.check,
                    "instance_id": instance.id,
                    "source": instance.source,
                    "status": worst_state(runs),
                    "runs": runs,
                })
            })
            .collect(),
    )
}

fn worst_state(runs: &[RunReport]) -> &'static str {
    let states: Vec<_> = runs.iter().map(RunReport::state).collect();
    ["ERROR", "WARNING"]
        .into_iter()
        .find(|s| states.contains(s))
        .unwrap_or("OK")
}

/// The Datadog Agent's `check` layout: the series, service checks and events in its API
/// format, then one block per instance.
fn text_output(name: &str, results: &[(Arc<Instance>, Vec<RunReport>)], times: u32) -> String {
    use std::fmt::Write;
    let all = || results.iter().flat_map(|(_, runs)| runs.iter());
    let series: Vec<_> = all()
        .flat_map(|r| &r.metrics)
        .map(|m| {
            serde_json::json!({
                "metric": m.name,
                "points": [[m.timestamp as i64, m.value]],
                "tags": m.tags,
                "host": m.host,
                "type": m.kind,
            })
        })
        .collect();
    let service_checks: Vec<_> = all()
        .flat_map(|r| &r.service_checks)
        .map(|s| {
            serde_json::json!({
                "check": s.name,
                "host_name": s.host,
                "timestamp": s.timestamp as i64,
                "status": s.status.code(),
                "status_name": status_name(s.status),
                "message": s.message,
                "tags": s.tags,
            })
        })
        .collect();
    let events: Vec<_> = all().flat_map(|r| &r.events).collect();

    let mut out = String::new();
    let _ = writeln!(out, "=== Series ===\n{}", pretty(&series));
    let _ = writeln!(out, "=== Service Checks ===\n{}", pretty(&service_checks));
    let _ = writeln!(out, "=== Events ===\n{}", pretty(&events));
    let _ = writeln!(out, "\n  Running Checks\n  ==============\n");
    for (instance, runs) in results {
        let Some(last) = runs.last() else { continue };
        let total = |f: fn(&RunReport) -> usize| runs.iter().map(f).sum::<usize>();
        let average_ms =
            runs.iter().map(|r| r.duration.as_secs_f64()).sum::<f64>() * 1000.0 / runs.len() as f64;
        let header = format!("{name} ({})", instance.id);
        let _ = writeln!(out, "    {header} [{}]", worst_state(runs));
        let _ = writeln!(out, "    {}", "-".repeat(header.len()));
        let _ = writeln!(out, "      Configuration Source: {}", instance.source);
        let _ = writeln!(out, "      Total Runs: {}", runs.len());
        let _ = writeln!(
            out,
            "      Metric Samples: Last Run: {}, Total: {}",
            last.metrics.len(),
            total(|r| r.metrics.len())
        );
        let _ = writeln!(
            out,
            "      Events: Last Run: {}, Total: {}",
            last.events.len(),
            total(|r| r.events.len())
        );
        let _ = writeln!(
            out,
            "      Service Checks: Last Run: {}, Total: {}",
            last.service_checks.len(),
            total(|r| r.service_checks.len())
        );
        let _ = writeln!(
            out,
            "      First Execution Time : {:.3}ms",
            runs[0].duration.as_secs_f64() * 1000.0
        );
        let _ = writeln!(out, "      Average Execution Time : {average_ms:.3}ms");
        let _ = writeln!(
            out,
            "      Last Execution Date : {}",
            unix_seconds(last.started) as i64
        );
        for (index, run) in runs.iter().enumerate() {
            if let Some(error) = &run.error {
                let _ = writeln!(out, "      Error (run {}): {error}", index + 1);
            }
            for warning in &run.warnings {
                let _ = writeln!(out, "      Warning (run {}): {warning}", index + 1);
            }
        }
        let _ = writeln!(out);
    }
    if times == 1 && all().any(|r| r.error.is_none()) {
        let _ = writeln!(
            out,
            "Check has run only once, if some metrics are missing you can try again with --check-rate to see any other metric if available."
        );
    }
    out
}

fn status_name(status: Status) -> &'static str {
    match status {
        Status::Ok => "OK",
        Status::Warning => "WARNING",
        Status::Critical => "CRITICAL",
        Status::Unknown => "UNKNOWN",
    }
}

/// Pretty JSON for the text output's sections.
fn pretty<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|e| format!("<unprintable: {e}>"))
}
