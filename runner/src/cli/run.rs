//! `runner run`: the pipeline until SIGINT or SIGTERM.

use anyhow::Context as _;

use super::{RunArgs, init_logging, load_config};
use crate::pipeline::Pipeline;

/// `runner run`.
pub(super) async fn run(args: RunArgs) -> anyhow::Result<()> {
    let (config, from_env) = load_config(&args.common)?;
    init_logging(&config.log_level);
    if !from_env.is_empty() {
        tracing::info!(variables = %from_env.join(", "), "configuration from the environment");
    }
    let confd = config.confd_path.display().to_string();
    let running = Pipeline::new(config).start().await?;
    tracing::info!(instances = running.instances_at_start, confd = %confd, "runner started");
    shutdown_signal().await?;
    tracing::info!("stopping");
    let (runs, failed) = running.stop().await;
    tracing::info!(runs, failed, "stopped");
    Ok(())
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
