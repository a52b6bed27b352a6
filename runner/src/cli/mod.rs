//! The `runner` command line: argument parsing and what each command prints. `runner run`
//! starts the [`crate::pipeline`]; `runner test-check` runs one check's instances once (or a
//! few times) and shows exactly what they emitted; `runner status` asks a running runner.
//!
//! `test-check` exits non-zero when any run fails, when no configuration is found, or when the
//! plugin cannot be loaded: unlike the Datadog Agent's `check` command (which exits 0 on a
//! failed check), its exit code can gate a deployment.

mod run;
mod scaffold;
mod status;
mod test_check;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::config::RunnerConfig;

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
    /// Ask a running `runner run` whether it is healthy: exit 0 if so, 1 if not or if nothing
    /// answers (for container health checks and probes).
    Health(StatusArgs),
    /// Write a new check crate, ready to test, build and run.
    NewCheck(NewCheckArgs),
    /// Build a check crate for wasm and install it in the plugins directory.
    BuildCheck(BuildCheckArgs),
}

#[derive(Args)]
struct NewCheckArgs {
    /// The check's name: lower-case letters, digits and `_`, starting with a letter.
    name: String,
    /// Where to write the crate; `./<name>` by default.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Depend on the Kennel sdk in this directory (the `sdk` directory of a Kennel source
    /// tree) instead of writing this runner's own into the crate, in `vendor/kennel`.
    #[arg(long, env = "KENNEL_SDK")]
    sdk: Option<PathBuf>,
}

#[derive(Args)]
struct BuildCheckArgs {
    /// The check's crate; the current directory by default.
    dir: Option<PathBuf>,
    /// The plugin directory to install into (overrides the config's `plugins.path`).
    #[arg(long)]
    plugins: Option<PathBuf>,
    /// The runner's config file, for its `plugins.path`.
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
}

#[derive(Args)]
struct StatusArgs {
    /// The running runner's config file, to find its `status_listen`. Defaults to
    /// `/etc/kennel/kennel.yaml` when it exists.
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
    /// Print the JSON the runner returned.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct Common {
    /// The runner's config file (YAML). Defaults to `/etc/kennel/kennel.yaml` when it exists,
    /// else the built-in defaults. `DD_<KEY>` environment variables override its top-level keys.
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
        Command::Run(args) => runtime.block_on(run::run(args)).map(|()| ExitCode::SUCCESS),
        Command::TestCheck(args) => runtime.block_on(test_check::test_check(args)),
        Command::Status(args) => runtime.block_on(status::status(args)),
        Command::Health(args) => runtime.block_on(status::health(args)),
        Command::NewCheck(args) => scaffold::new_check(&args),
        Command::BuildCheck(args) => scaffold::build_check(&args),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("Error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The runner's config (see [`RunnerConfig::load_with_env`]) with the command line's
/// overrides, and the environment variables that set keys.
fn load_config(common: &Common) -> anyhow::Result<(RunnerConfig, Vec<String>)> {
    let (mut config, from_env) =
        RunnerConfig::load_with_env(common.config.as_deref(), std::env::vars())?;
    if let Some(confd) = &common.confd {
        config.confd_path = confd.clone();
    }
    if let Some(plugins) = &common.plugins {
        config.plugins.path = plugins.clone();
    }
    Ok((config, from_env))
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
