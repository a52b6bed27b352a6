//! Load run of the plugin host. Prints:
//! - sandbox overhead per run of a trivial check (fresh Store + instantiate + call + teardown),
//!   as mean / p50 / p99 over many runs on one thread;
//! - runs per second on 1 and 2 threads;
//! - one http_check run against a real HTTP server on loopback, mean / p50 / p99, and the same
//!   request made with reqwest alone, which is the floor under it;
//! - one postgres check run (its default metrics and the connection_state custom metric)
//!   against a throwaway PostgreSQL server, on the connection the runner keeps.
//!
//! `make bench` (or `cargo bench -p kennel-tests`) after `make plugins`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kennel_tests::http_server::{HttpServer, Reply};
use kennel_tests::postgres::{CONNECTION_STATE, Postgres};
use kennel_tests::{host, instance, plugin_config};
use runner::check::Instance;
use runner::plugin::{Plugin, PluginHost};

const WARMUP: usize = 1_000;
const RUNS: usize = 20_000;
const HTTP_RUNS: usize = 2_000;
const THROUGHPUT_WINDOW: Duration = Duration::from_secs(3);

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let _guard = runtime.enter();
    let host = host(plugin_config());

    let plugin = host.load("test_plugin").expect("test_plugin loads");
    let trivial = instance("test_plugin", "instances:\n  - mode: ok\n");
    let latencies = measure(&runtime, &host, &plugin, &trivial, RUNS);
    report(
        "trivial check, one run (instantiate + call + teardown)",
        &latencies,
    );

    for threads in [1, 2] {
        let rate = throughput(&host, &plugin, &trivial, threads);
        println!("trivial check throughput, {threads} thread(s): {rate:.0} runs/s");
    }

    let server = runtime.block_on(HttpServer::start(|_| Reply::ok("ok")));
    let http = host.load("http_check").expect("http_check loads");
    let check = instance(
        "http_check",
        &format!(
            "instances:\n  - name: bench\n    url: {}\n",
            server.url("/")
        ),
    );
    let latencies = measure(&runtime, &host, &http, &check, HTTP_RUNS);
    report("http_check against a loopback server, one run", &latencies);

    // The floor under that figure: the same request made directly with reqwest, no plugin.
    runner::plugin::http::install_crypto_provider();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .no_proxy()
        .build()
        .expect("client");
    let url = server.url("/");
    let latencies: Vec<Duration> = (0..HTTP_RUNS)
        .map(|_| {
            let started = Instant::now();
            runtime
                .block_on(async { client.get(&url).send().await?.bytes().await })
                .expect("plain request");
            started.elapsed()
        })
        .collect();
    report("the same request with reqwest alone, no plugin", &latencies);

    // The postgres check with the connection_state custom metric, on its kept connection.
    let postgres = Postgres::start();
    let check = instance(
        "postgres",
        &format!(
            "instances:\n  -\n{}{CONNECTION_STATE}",
            postgres.instance_keys("app")
        ),
    );
    let plugin = host.load("postgres").expect("postgres loads");
    let latencies = measure(&runtime, &host, &plugin, &check, HTTP_RUNS);
    report(
        "postgres check with the connection_state custom_metrics, kept connection",
        &latencies,
    );
}

fn measure(
    runtime: &tokio::runtime::Runtime,
    host: &PluginHost,
    plugin: &Plugin,
    instance: &Instance,
    runs: usize,
) -> Vec<Duration> {
    runtime.block_on(async {
        for _ in 0..WARMUP.min(runs) {
            assert!(host.run(plugin, instance).await.is_ok());
        }
        let mut latencies = Vec::with_capacity(runs);
        for _ in 0..runs {
            let started = Instant::now();
            let report = host.run(plugin, instance).await;
            latencies.push(started.elapsed());
            assert!(report.is_ok(), "{:?}", report.error);
        }
        latencies
    })
}

/// Runs per second with `threads` runtime threads each running one run after another.
fn throughput(
    host: &Arc<PluginHost>,
    plugin: &Arc<Plugin>,
    instance: &Instance,
    threads: usize,
) -> f64 {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .expect("runtime");
    let started = Instant::now();
    let runs: u64 = runtime.block_on(async {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let (host, plugin, instance) = (host.clone(), plugin.clone(), instance.clone());
                tokio::spawn(async move {
                    let mut runs = 0u64;
                    while started.elapsed() < THROUGHPUT_WINDOW {
                        assert!(host.run(&plugin, &instance).await.is_ok());
                        runs += 1;
                    }
                    runs
                })
            })
            .collect();
        let mut total = 0;
        for worker in workers {
            total += worker.await.expect("bench worker");
        }
        total
    });
    runs as f64 / started.elapsed().as_secs_f64()
}

fn report(what: &str, latencies: &[Duration]) {
    let mut sorted = latencies.to_vec();
    sorted.sort();
    let micros = |d: Duration| d.as_secs_f64() * 1e6;
    let mean = latencies.iter().map(|d| micros(*d)).sum::<f64>() / latencies.len() as f64;
    let at = |q: f64| micros(sorted[((sorted.len() - 1) as f64 * q) as usize]);
    println!(
        "{what}: mean {mean:.1} µs, p50 {:.1} µs, p99 {:.1} µs over {} runs",
        at(0.5),
        at(0.99),
        latencies.len()
    );
}
