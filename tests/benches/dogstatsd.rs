//! Load runs of the DogStatsD path. Prints:
//! - parse + aggregate throughput on one core (the parser and the aggregator as the
//!   aggregation loop drives them), in metric samples per second;
//! - end to end over the Unix datagram socket, one metric per datagram, from a blocking sender:
//!   the datagrams per second a receiver that does no work reaches on this machine, and what
//!   `runner run` takes in (and aggregates) in the same conditions, with nothing lost;
//! - the runner's RSS when idle and with 100,000 live contexts.
//!
//! `make bench` (or `cargo bench -p kennel-tests --bench dogstatsd`) after `make`.

use std::io::Read;
use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kennel_tests::http_server::closed_port;
use kennel_tests::{plugins_dir, runner_bin};
use runner::aggregator::service::numeric_value;
use runner::aggregator::{Aggregator, AggregatorConfig, Sample};
use runner::dogstatsd::parser::{self, Message, MetricValue};

const DATAGRAMS: usize = 1_000_000;

fn main() {
    parse_and_aggregate();
    let dir = tempfile::tempdir().expect("temp dir");
    let raw = raw_receive_limit(&dir.path().join("raw.socket"));
    println!("UDS, one metric per datagram, receiver doing nothing: {raw:.0} datagrams/s");
    end_to_end(dir.path(), raw);
}

/// Ten metrics per datagram, 1,000 contexts, the usual mix of types.
fn parse_and_aggregate() {
    let mut datagrams = Vec::new();
    for d in 0..1_000 {
        let mut datagram = String::new();
        for m in 0..10 {
            let i = d * 10 + m;
            let kind = ["c", "g", "h", "d", "ms"][i % 5];
            datagram.push_str(&format!(
                "app.metric.{}:{}|{kind}|#env:prod,service:web,endpoint:/api/v{}\n",
                i % 200,
                i % 97,
                i % 5
            ));
        }
        datagrams.push(datagram.into_bytes());
    }
    let mut aggregator = Aggregator::new(AggregatorConfig::default()).expect("aggregator");
    let now = 1_800_000_000.0;
    let mut samples = 0u64;
    let started = Instant::now();
    let mut rounds = 0;
    while started.elapsed() < Duration::from_secs(3) {
        for datagram in &datagrams {
            parser::parse_datagram(datagram, |message| {
                if let Ok(Message::Metric(metric)) = message {
                    let MetricValue::Numbers(values) = metric.value else {
                        return;
                    };
                    for value in values.iter() {
                        let Some(value) = numeric_value(metric.kind, value) else {
                            continue;
                        };
                        aggregator.insert(
                            Sample {
                                name: metric.name,
                                tags: metric.tags.iter(),
                                host: "",
                                value,
                                sample_rate: metric.sample_rate,
                                timestamp: None,
                            },
                            now,
                        );
                        samples += 1;
                    }
                }
            });
        }
        rounds += 1;
        if rounds % 10 == 0 {
            let _ = aggregator.flush(now + 20.0);
        }
    }
    let rate = samples as f64 / started.elapsed().as_secs_f64();
    println!(
        "parse + aggregate, one core: {:.2} M metric samples/s",
        rate / 1e6
    );
}

/// A receiver that only reads, and a blocking sender: the most datagrams this machine moves.
fn raw_receive_limit(path: &std::path::Path) -> f64 {
    let receiver = UnixDatagram::bind(path).expect("bind");
    let reader = std::thread::spawn(move || {
        let mut buffer = [0u8; 8192];
        let mut count = 0;
        let mut started = None;
        while count < DATAGRAMS {
            if receiver.recv(&mut buffer).is_ok() {
                started.get_or_insert_with(Instant::now);
                count += 1;
            }
        }
        count as f64 / started.expect("received").elapsed().as_secs_f64()
    });
    send(path, DATAGRAMS, |i| {
        format!("load.metric:{}|c|#env:bench", i % 100)
    });
    reader.join().expect("reader")
}

fn send(path: &std::path::Path, count: usize, message: impl Fn(usize) -> String) {
    let sender = UnixDatagram::unbound().expect("socket");
    for i in 0..count {
        let text = message(i);
        while sender.send_to(text.as_bytes(), path).is_err() {
            std::thread::sleep(Duration::from_micros(50));
        }
    }
}

fn end_to_end(dir: &std::path::Path, raw: f64) {
    let socket = dir.join("dsd.socket");
    let metrics_port = closed_port();
    let config = dir.join("kennel.yaml");
    let confd = dir.join("conf.d");
    std::fs::create_dir_all(&confd).unwrap();
    std::fs::write(
        &config,
        format!(
            "status_listen: null\nopenmetrics_listen: 127.0.0.1:{metrics_port}\ndogstatsd_port: 0\n\
             dogstatsd_socket: {}\naggregator:\n  bucket_size_seconds: 1\n",
            socket.display()
        ),
    )
    .unwrap();
    let mut runner = Command::new(runner_bin())
        .args(["run", "--config"])
        .arg(&config)
        .arg("--confd")
        .arg(&confd)
        .arg("--plugins")
        .arg(plugins_dir())
        .env("XDG_CACHE_HOME", dir.join("cache"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("runner starts");
    std::thread::sleep(Duration::from_secs(2));
    println!("runner RSS, idle: {:.1} MiB", rss_mib(&runner));

    let started = Instant::now();
    send(&socket, DATAGRAMS, |i| {
        format!("load.metric:{}|c|#env:bench", i % 100)
    });
    let sent_in = started.elapsed();
    let received = wait_for_datagrams(metrics_port, DATAGRAMS as f64);
    let rate = DATAGRAMS as f64 / sent_in.as_secs_f64();
    println!(
        "UDS end to end into the runner: {rate:.0} datagrams/s ({:.0}% of the raw limit), {received} of {DATAGRAMS} counted",
        100.0 * rate / raw
    );

    send(&socket, 100_000, |i| {
        format!("contexts.metric.{i}:1|g|#env:bench")
    });
    std::thread::sleep(Duration::from_millis(1500));
    println!(
        "runner RSS with 100,000 live contexts: {:.1} MiB",
        rss_mib(&runner)
    );
    stop(&mut runner);
}

/// The runner's count of datagrams read, once it stops growing or reaches `expected`.
fn wait_for_datagrams(port: u16, expected: f64) -> f64 {
    let mut last = -1.0;
    for _ in 0..60 {
        std::thread::sleep(Duration::from_millis(500));
        let count = scrape(port)
            .lines()
            .find(|l| l.starts_with("kennel_dogstatsd_datagrams_total{transport=\"uds\"}"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(0.0);
        if count >= expected || (count == last && count > 0.0) {
            return count;
        }
        last = count;
    }
    last
}

fn scrape(port: u16) -> String {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    std::io::Write::write_all(&mut stream, b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut page = String::new();
    let _ = stream.read_to_string(&mut page);
    page
}

fn rss_mib(child: &Child) -> f64 {
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn stop(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}
