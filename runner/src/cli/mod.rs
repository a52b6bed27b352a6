//! The `runner` command line: `runner run` wires the pipeline; `runner test-check` runs one
//! check's instances once (or a few times) and shows exactly what they emitted.
//!
//! `test-check` exits non-zero when any run fails, when no configuration is found, or when the
//! plugin cannot be loaded: unlike the Datadog Agent's `check` command (which exits 0 on a
//! failed check), its exit code can gate a deployment.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use tokio::sync::mpsc;

use crate::aggregator::service::{self, AggregatorHandle, Input};
use crate::aggregator::telemetry::Telemetry;
use crate::aggregator::{Aggregator, CheckSampler};
use crate::check::{Instance, RunReport, Status, unix_seconds};
use crate::config::RunnerConfig;
use crate::config::confd::{self, CheckConfig};
use crate::containers::ContainerStore;
use crate::containers::docker::{DockerClient, DockerWatcher};
use crate::discovery::template::EnvPolicy;
use crate::discovery::watch::ConfdWatcher;
use crate::discovery::{self, Discovery, DiscoveryConfig};
use crate::dogstatsd::listener::{ListenerStats, Listeners, Sink};
use crate::openmetrics::SharedStore;
use crate::plugin::PluginHost;
use crate::scheduler::{InstanceStats, Scheduler};
use crate::status::{self, StatusSource};

#[derive(Parser)]
#[command(
    name = "runner",
    version,
    about = "Kennel: sandboxed integration checks for this host"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every configured check on its schedule until SIGINT or SIGTERM.
    Run(RunArgs),
    /// Run one check's instances once and print what they emit.
    TestCheck(TestCheckArgs),
    /// Show what a running `runner run` is doing: each instance's runs, errors and timings.
    Status(StatusArgs),
}

#[derive(Args)]
struct StatusArgs {
    /// The running runner's config file, to find its `status_listen`.
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
    /// Print the JSON the runner returned.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct Common {
    /// The runner's config file (YAML). Without it, the defaults apply.
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
    /// The check configuration directory (overrides `confd_path`).
    #[arg(long)]
    confd: Option<PathBuf>,
    /// The plugin directory (overrides `plugins.path`).
    #[arg(long)]
    plugins: Option<PathBuf>,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    common: Common,
}

#[derive(Args)]
struct TestCheckArgs {
    /// The check to run: its configs come from `<confd>/<name>.d/` or `<confd>/<name>.yaml`,
    /// its plugin from `<plugins>/<name>.wasm`.
    name: Option<String>,
    #[command(flatten)]
    common: Common,
    /// Run a plugin file directly instead of `<plugins>/<name>.wasm`.
    #[arg(long, requires = "instance_config")]
    wasm: Option<PathBuf>,
    /// A check config file (`init_config` + `instances`) to run instead of conf.d's.
    #[arg(long)]
    instance_config: Option<PathBuf>,
    /// Run twice, 1 s apart, so rates and monotonic counts show.
    #[arg(long, short = 'r')]
    check_rate: bool,
    /// How many times to run each instance.
    #[arg(long, short = 't', default_value_t = 1)]
    times: u32,
    /// Milliseconds between runs.
    #[arg(long)]
    pause: Option<u64>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// Parses the command line and runs the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    crate::plugin::http::install_crypto_provider();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("Error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Run(args) => runtime.block_on(run(args)).map(|()| ExitCode::SUCCESS),
        Command::TestCheck(args) => runtime.block_on(test_check(args)),
        Command::Status(args) => runtime.block_on(status(args)),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("Error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn load_config(common: &Common) -> anyhow::Result<RunnerConfig> {
    let mut config = match &common.config {
        Some(path) => RunnerConfig::load(path)?,
        None => RunnerConfig::default(),
    };
    if let Some(confd) = &common.confd {
        config.confd_path = confd.clone();
    }
    if let Some(plugins) = &common.plugins {
        config.plugins.path = plugins.clone();
    }
    Ok(config)
}

fn init_logging(default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(default_filter))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

fn plugin_host(config: &RunnerConfig) -> anyhow::Result<Arc<PluginHost>> {
    let host = PluginHost::new(
        &config.plugins,
        config.resolved_hostname(),
        config.check_runners,
    )
    .context("cannot start the plugin host")?;
    Ok(Arc::new(host))
}

fn discovery_config(config: &RunnerConfig) -> DiscoveryConfig {
    DiscoveryConfig {
        hostname: config.resolved_hostname(),
        env: Arc::new(EnvPolicy::new(config.ad_allowed_env_vars.clone())),
        cardinality: config.checks_tag_cardinality,
        default_timeout: config.plugins.default_timeout(),
    }
}

/// `runner run`: the whole pipeline, wired top to bottom.
async fn run(args: RunArgs) -> anyhow::Result<()> {
    let config = load_config(&args.common)?;
    init_logging(&config.log_level);
    let host = plugin_host(&config)?;

    // The aggregator: one thread, fed by the DogStatsD listeners and the check runs, flushing
    // into the OpenMetrics page and a summary in the log.
    let telemetry = Arc::new(Telemetry::new());
    let aggregator = Aggregator::with_telemetry(config.aggregator.clone(), telemetry.clone())
        .context("invalid `aggregator` settings")?;
    let store = SharedStore::default();
    let page = store.clone();
    let outputs: Vec<service::Output> = vec![
        Box::new(move |flush| {
            page.lock()
                .unwrap_or_else(|p| p.into_inner())
                .update(flush, std::time::Instant::now())
        }),
        Box::new(FlushSummary::default().into_output()),
    ];
    // The container store: followed from Docker, read by autodiscovery and the aggregator.
    let containers = ContainerStore::new();
    let (aggregator, aggregator_thread) = service::start(
        aggregator,
        config.resolved_hostname(),
        service::Origins {
            trust_client: config.dogstatsd_origin_detection_client,
            containers: Some(containers.clone()),
            cardinality: config.dogstatsd_tag_cardinality,
        },
        outputs,
    )
    .context("cannot start the aggregator")?;
    let listeners = {
        let into = aggregator.clone();
        let sink: Sink = Arc::new(move |batch| into.send(Input::Datagrams(batch)));
        Listeners::start(
            &config.dogstatsd(),
            sink,
            Arc::new(ListenerStats::new(&telemetry)),
        )?
    };
    if let Some(addr) = listeners.udp_addr {
        tracing::info!(address = %addr, "DogStatsD listening on UDP");
    }
    for path in [&config.dogstatsd_socket, &config.dogstatsd_stream_socket]
        .into_iter()
        .flatten()
    {
        tracing::info!(path = %path.display(), "DogStatsD listening on a Unix socket");
    }
    if config.dogstatsd_socket.is_some() {
        warn_on_small_datagram_queue();
    }
    if let Some(listen) = config.openmetrics_listen {
        let bound = status::serve_metrics(listen, store)
            .await
            .with_context(|| format!("cannot listen on {listen} (`openmetrics_listen`)"))?;
        tracing::info!(address = %bound, "OpenMetrics endpoint at /metrics");
    }

    // The pipeline input for check results: every run report goes to the aggregator.
    let (reports, inbox) = mpsc::channel(1024);
    let sink = tokio::spawn(forward_reports(inbox, aggregator));

    let scheduler = Scheduler::new(host.clone(), config.check_runners, reports);
    let mut discovery = Discovery::new(discovery_config(&config), host.clone(), scheduler);
    // Live conf.d: every save is reconciled within a second. Watching starts before the first
    // load, so a file saved in between is not missed.
    let (confd_changes, confd_inbox) = mpsc::channel(4);
    let _watcher = match ConfdWatcher::start(config.confd_path.clone(), confd_changes) {
        Ok(watcher) => Some(watcher),
        Err(error) => {
            tracing::warn!(%error, confd = %config.confd_path.display(), "cannot watch conf.d: changes take effect at the next start");
            None
        }
    };
    let loaded = confd::load_dir(&config.confd_path).with_context(|| {
        format!(
            "cannot read the conf.d directory {}",
            config.confd_path.display()
        )
    })?;
    // The status API comes up before the first run, which may be a check of it.
    if let Some(listen) = config.status_listen {
        let source = StatusSource {
            hostname: config.resolved_hostname(),
            confd_path: config.confd_path.display().to_string(),
            config_errors: discovery.problems(),
            containers: config.docker_socket.is_some().then(|| containers.clone()),
            stats: discovery.stats(),
            started: std::time::Instant::now(),
        };
        let bound = status::serve(listen, source)
            .await
            .with_context(|| format!("cannot listen on {listen} (`status_listen`)"))?;
        tracing::info!(address = %bound, "status API listening");
    }
    discovery.apply_confd(loaded);
    tracing::info!(instances = discovery.wanted(), confd = %config.confd_path.display(), "runner started");

    // Containers: followed from Docker, their checks resolved and scheduled as they come.
    let (container_changes, container_inbox) = mpsc::channel(256);
    let docker = config.docker_socket.clone().map(|socket| {
        tokio::spawn(
            DockerWatcher {
                socket,
                procfs: config.procfs_root.clone(),
                tagger: Arc::new(config.tagger()),
                store: containers,
                events: container_changes,
            }
            .run(),
        )
    });
    let (stop_discovery, stopped) = tokio::sync::oneshot::channel();
    let discovery = tokio::spawn(discovery.run(confd_inbox, container_inbox, stopped));

    shutdown_signal().await?;
    tracing::info!("stopping");
    if let Some(docker) = docker {
        docker.abort();
    }
    let _ = stop_discovery.send(());
    let _ = discovery.await;
    drop(listeners);
    let (runs, failed) = sink.await.unwrap_or_default();
    // The last handle went with the sink and the listeners: the aggregator flushes and ends.
    let _ = tokio::task::spawn_blocking(move || aggregator_thread.join()).await;
    tracing::info!(runs, failed, "stopped");
    Ok(())
}

/// Clients send to the Unix datagram socket without blocking, and the kernel queues only
/// `net.unix.max_dgram_qlen` datagrams per socket (10 by default): past that, a burst is dropped
/// by the clients before the runner sees it. The setting is the host's, so say so rather than
/// change it.
fn warn_on_small_datagram_queue() {
    let qlen = std::fs::read_to_string("/proc/sys/net/unix/max_dgram_qlen")
        .ok()
        .and_then(|q| q.trim().parse::<u32>().ok());
    if let Some(qlen) = qlen
        && qlen < 512
    {
        tracing::warn!(
            qlen,
            "net.unix.max_dgram_qlen is small: DogStatsD clients will drop bursts; raise it with `sysctl -w net.unix.max_dgram_qlen=1024`"
        );
    }
}

/// How often `runner run` logs its one-line summary.
const SUMMARY_EVERY: Duration = Duration::from_secs(60);

/// Reports handed to the aggregator together, at most.
const REPORT_BATCH: usize = 256;
/// How long the first report of a batch waits for others to join it.
const REPORT_COALESCE: Duration = Duration::from_millis(20);

/// Hands every run report to the aggregator; returns how many runs there were, and failed.
///
/// Reports that finish within [`REPORT_COALESCE`] of each other go in one batch (one wake-up
/// of the aggregation thread, not one per run), and the hand-over blocks a worker thread only
/// when the aggregator's queue is full: with thousands of instances, per-report wake-ups and
/// thread hand-offs would cost more than the runs themselves. The delay is nothing next to
/// the aggregator's buckets.
async fn forward_reports(
    mut inbox: mpsc::Receiver<RunReport>,
    aggregator: AggregatorHandle,
) -> (u64, u64) {
    let (mut runs, mut failed) = (0u64, 0u64);
    let mut batch = Vec::with_capacity(REPORT_BATCH);
    while inbox.recv_many(&mut batch, REPORT_BATCH).await > 0 {
        if batch.len() < REPORT_BATCH {
            tokio::time::sleep(REPORT_COALESCE).await;
            while batch.len() < REPORT_BATCH {
                match inbox.try_recv() {
                    Ok(report) => batch.push(report),
                    Err(_) => break,
                }
            }
        }
        runs += batch.len() as u64;
        failed += batch.iter().filter(|r| !r.is_ok()).count() as u64;
        let input = Input::Reports(std::mem::replace(
            &mut batch,
            Vec::with_capacity(REPORT_BATCH),
        ));
        // The aggregator's queue is bounded: when it is full this waits, and so, in turn, do
        // the checks, rather than a report being dropped.
        let delivered = match aggregator.try_send(input) {
            Ok(()) => true,
            Err(Some(input)) => tokio::task::block_in_place(|| aggregator.send(input)),
            Err(None) => false,
        };
        if !delivered {
            break;
        }
    }
    (runs, failed)
}

/// Adds up flushes and logs them every [`SUMMARY_EVERY`] in one line.
#[derive(Default)]
struct FlushSummary {
    series: usize,
    sketches: usize,
    service_checks: usize,
    events: usize,
    since: Option<std::time::Instant>,
}

impl FlushSummary {
    fn into_output(mut self) -> impl FnMut(&crate::aggregator::Flush) + Send {
        move |flush| {
            self.series += flush.series.len();
            self.sketches += flush.sketches.len();
            self.service_checks += flush.service_checks.len();
            self.events += flush.events.len();
            let since = *self.since.get_or_insert_with(std::time::Instant::now);
            if since.elapsed() >= SUMMARY_EVERY {
                tracing::info!(
                    series = self.series,
                    sketches = self.sketches,
                    service_checks = self.service_checks,
                    events = self.events,
                    "flushed in the last minute"
                );
                self = Self {
                    since: Some(std::time::Instant::now()),
                    ..Self::default()
                };
            }
        }
    }
}

async fn shutdown_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result.context("cannot listen for SIGINT")?,
        _ = terminate.recv() => {}
    }
    Ok(())
}

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
            let loaded = confd::load_dir(&config.confd_path).with_context(|| {
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
        .flat_map(|c| c.instances(config.plugins.default_timeout()))
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
async fn test_check(args: TestCheckArgs) -> anyhow::Result<ExitCode> {
    let config = load_config(&args.common)?;
    init_logging("warn");
    let name = match (&args.name, &args.wasm) {
        (Some(name), _) => name.clone(),
        (None, Some(wasm)) => wasm
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .context("cannot tell the check's name from the --wasm path: give it as an argument")?,
        (None, None) => anyhow::bail!("name the check to run: `runner test-check <name>`"),
    };
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

/// `runner status`: asks the running runner's status API and prints the answer.
async fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let config = match &args.config {
        Some(path) => RunnerConfig::load(path)?,
        None => RunnerConfig::default(),
    };
    let listen = config
        .status_listen
        .context("the status API is off (`status_listen: null`): there is nothing to ask")?;
    let url = format!("http://{listen}/status");
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()?;
    let response = client.get(&url).send().await.with_context(|| {
        format!("no runner answers at {url}: is `runner run` running with this config?")
    })?;
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

fn status_text(status: &status::Status) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Kennel runner {} on {}, up {:.0} s",
        status.version, status.hostname, status.uptime_s
    );
    let _ = writeln!(out, "conf.d: {}\n", status.confd_path);
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
        let _ = writeln!(
            out,
            "      Total Runs: {}, Errors: {}, Skipped: {}",
            stats.runs, stats.errors, stats.skipped
        );
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
        for warning in &stats.last_warnings {
            let _ = writeln!(out, "      Warning: {warning}");
        }
    }
    out
}

fn instance_state(stats: &InstanceStats) -> &'static str {
    match (
        &stats.last_error,
        stats.last_warnings.is_empty(),
        stats.runs,
    ) {
        (_, _, 0) => "PENDING",
        (Some(_), _, _) => "ERROR",
        (None, false, _) => "WARNING",
        (None, true, _) => "OK",
    }
}

/// Pretty JSON for the text output's sections.
fn pretty<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|e| format!("<unprintable: {e}>"))
}
