//! Insert throughput and memory per context, measured and printed (not asserted: a timed
//! assertion flakes on a busy machine). Run alone, in release:
//!
//! ```text
//! cargo test --release -p kennel-runner --lib aggregator::throughput -- --ignored --nocapture --test-threads=1
//! ```
//!
//! The load mimics saluki's SMP DogStatsD experiments: metric types weighted count 208, gauge
//! 66, distribution 72, set 9, histogram 1; ten tags per sample of 6 to 30 bytes, sent in a
//! different order from one sample to the next; names of about 30 bytes. The figures include
//! copying each message into a receive buffer and splitting its tags on `,`.

use std::hint::black_box;
use std::time::Instant;

use super::*;

const T0: f64 = 1_000_000.0;

struct Message {
    /// `<name>|<tag>,<tag>,...`, as in a datagram.
    raw: String,
    kind: u8,
}

/// `n` distinct contexts; context `i` has type `kind(i)` by the SMP weights.
fn load(n: usize) -> Vec<Message> {
    (0..n)
        .map(|i| {
            let mut tags = vec![
                "env:production".to_owned(),
                format!("service:checkout-{}", i % 10),
                format!("version:1.2.{}", i % 7),
                "region:us-east-1".to_owned(),
                format!("team:payments-{}", i % 5),
                format!("endpoint:/api/v1/orders/{}", i / 100),
                format!("status_code:{}", 200 + i % 4),
                format!("kube_namespace:ns-{}", i % 3),
                format!("pod_name:checkout-7d9f8b-{i:05}"),
                format!("shard:{}", i % 16),
            ];
            // Senders do not sort their tags.
            tags.rotate_left(i % 10);
            let kind = match i % 356 {
                0..208 => 0,
                208..274 => 1,
                274..346 => 2,
                346..355 => 3,
                _ => 4,
            };
            Message {
                raw: format!("checkout.requests.latency.{}|{}", i % 100, tags.join(",")),
                kind,
            }
        })
        .collect()
}

fn value(kind: u8, i: usize, member: &str) -> Value<'_> {
    let v = (i % 1000) as f64;
    match kind {
        0 => Value::Count(1.0),
        1 => Value::Gauge(v),
        2 => Value::Distribution(v + 0.5),
        3 => Value::Set(member),
        _ => Value::Histogram(v),
    }
}

/// Resident set size in bytes (Linux).
fn rss() -> usize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<usize>().ok())
        .map_or(0, |pages| pages * 4096)
}

/// Inserts `samples` samples spread pseudo-randomly over `messages`; returns samples per second.
///
/// Each message is first copied into a reused buffer, as a datagram is received into one, and
/// split there: the aggregator reads its input from cache-hot memory, as it would behind a
/// parser, rather than from 100,000 scattered strings.
fn run(a: &mut Aggregator, messages: &[Message], samples: usize) -> f64 {
    let members: Vec<String> = (0..64).map(|i| format!("user-{i}")).collect();
    let n = messages.len();
    let mut datagram = String::with_capacity(1024);
    let started = Instant::now();
    let mut at = 0usize;
    for i in 0..samples {
        // A full-period walk over the contexts in a scattered order.
        at = (at + 7919) % n;
        let m = &messages[at];
        datagram.clear();
        datagram.push_str(&m.raw);
        let (name, tags) = datagram.split_once('|').unwrap_or((&datagram, ""));
        a.insert(
            Sample {
                name,
                tags: tags.split(','),
                host: "",
                value: value(m.kind, i, &members[i % 64]),
                sample_rate: 1.0,
                timestamp: None,
            },
            Owner::Unidentified,
            // Time moves by 1 s every million samples: no bucket closes during the run.
            T0 + (i / 1_000_000) as f64,
        );
    }
    samples as f64 / started.elapsed().as_secs_f64()
}

/// The same loop without the aggregator: the receive copy and the split alone, in seconds per
/// sample, to subtract.
fn baseline(messages: &[Message], samples: usize) -> f64 {
    let n = messages.len();
    let mut datagram = String::with_capacity(1024);
    let started = Instant::now();
    let mut at = 0usize;
    for _ in 0..samples {
        at = (at + 7919) % n;
        datagram.clear();
        datagram.push_str(&messages[at].raw);
        let (name, tags) = datagram.split_once('|').unwrap_or((&datagram, ""));
        black_box(name);
        for tag in tags.split(',') {
            black_box(tag);
        }
    }
    started.elapsed().as_secs_f64() / samples as f64
}

fn report(label: &str, rate: f64, baseline: f64) {
    let alone = 1.0 / (1.0 / rate - baseline);
    println!(
        "{label}: {:.2} M samples/s with receive copy and tag split, {:.2} M/s for the aggregator alone ({:.0} ns/sample)",
        rate / 1e6,
        alone / 1e6,
        1e9 / alone
    );
}

#[test]
#[ignore = "prints throughput figures; run in release, alone"]
fn insert_throughput_with_1000_hot_contexts() {
    let messages = load(1000);
    let mut a = Aggregator::new(AggregatorConfig::default()).expect("valid");
    run(&mut a, &messages, 100_000);
    let rate = run(&mut a, &messages, 5_000_000);
    let base = baseline(&messages, 5_000_000);
    report("1,000 contexts, SMP type mix", rate, base);

    for (kind, label) in [
        (1u8, "gauge"),
        (0, "count"),
        (2, "distribution"),
        (3, "set"),
        (4, "histogram"),
    ] {
        let only: Vec<Message> = load(1000)
            .into_iter()
            .map(|m| Message { kind, ..m })
            .collect();
        let mut a = Aggregator::new(AggregatorConfig::default()).expect("valid");
        run(&mut a, &only, 100_000);
        let samples = if kind == 4 { 1_000_000 } else { 3_000_000 };
        let rate = run(&mut a, &only, samples);
        report(&format!("1,000 contexts, {label} only"), rate, base);
    }
    let started = Instant::now();
    let flush = black_box(a.flush(T0 + 100.0));
    println!(
        "flush of 1,000 contexts (SMP mix): {:?} ({} series)",
        started.elapsed(),
        flush.series.len()
    );
}

#[test]
#[ignore = "prints throughput and memory figures; run in release, alone"]
fn insert_throughput_and_memory_with_100000_live_contexts() {
    const N: usize = 100_000;
    let messages = load(N);
    let mut a = Aggregator::new(AggregatorConfig::default()).expect("valid");
    let before = rss();
    let started = Instant::now();
    run(&mut a, &messages, N);
    let created = started.elapsed();
    let after = rss();
    assert_eq!(a.contexts(), N);
    println!(
        "100,000 contexts created in {created:?} ({:.2} M contexts/s)",
        N as f64 / created.as_secs_f64() / 1e6
    );
    println!(
        "memory per context: {} B by RSS, {} B by size estimate (10 tags, interned strings included)",
        after.saturating_sub(before) / N,
        a.heap_bytes() / N
    );
    let rate = run(&mut a, &messages, 5_000_000);
    let base = baseline(&messages, 5_000_000);
    report("100,000 contexts, SMP type mix", rate, base);
    let started = Instant::now();
    let flush = black_box(a.flush(T0 + 100.0));
    println!(
        "flush of 100,000 contexts: {:?} ({} series, {} sketches)",
        started.elapsed(),
        flush.series.len(),
        flush.sketches.len()
    );
}
