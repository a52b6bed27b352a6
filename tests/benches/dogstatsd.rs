//! Load runs of the DogStatsD path. Prints:
//! - parse + aggregate throughput on one core (the DogStatsD decoder and the aggregator as the
//!   aggregation loop drives them), in metric samples per second;
//! - end to end over the Unix datagram socket, one metric per datagram, from [`SENDERS`]
//!   threads each sending batches of [`SEND_BATCH`] datagrams per `sendmmsg`, in rounds that
//!   alternate between two receivers:
//!   - raw: a thread that only `recvmmsg`s into a buffer and counts, the most datagrams this
//!     machine moves through a Unix socket (without `SO_PASSCRED`: what the kernel and the
//!     runner spend on origin detection counts against the runner);
//!   - `runner run` with its default DogStatsD settings (origin detection on), counting through
//!     its own telemetry on `/metrics`: every datagram read, every metric parsed and
//!     aggregated;
//!
//!   with the datagrams per second of each, their ratio, and what each received of what was
//!   sent. The senders' sockets block while the receiver's queue is full, so nothing is dropped
//!   and the send time is the receive time (give or take one queue, 1,024 datagrams);
//! - the runner's RSS when idle and with 100,000 live contexts, before a scrape, just after it
//!   (the page is kept for other scrapes until the next flush) and after the next flush.
//!
//! `make bench` (or `cargo bench -p kennel-tests --bench dogstatsd`) after `make`. The figures
//! assume `net.unix.max_dgram_qlen` is 1024 (the bench says if it is not), and are only as
//! quiet as the machine: the run prints the load average it started with.

use std::io::{IoSlice, IoSliceMut};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use kennel_tests::runner_process::{Options, RunnerProcess};
use runner::aggregator::{Aggregator, AggregatorConfig};
use runner::dogstatsd::decode::{Decoder, Origins};
use runner::dogstatsd::origin::Origin;
use runner::telemetry::{InternalMetric, Telemetry};

/// Datagrams per round.
const DATAGRAMS: usize = 2_000_000;
/// Rounds per receiver, alternating; the ratio is taken of the medians.
const ROUNDS: usize = 3;
/// Sending threads.
const SENDERS: usize = 2;
/// Datagrams per `sendmmsg` (and per `recvmmsg` for the raw receiver: the runner's batch).
const SEND_BATCH: usize = 64;
/// Contexts for the memory figure.
const CONTEXTS: usize = 100_000;

fn main() {
    kennel_tests::print_load_average();
    let qlen = std::fs::read_to_string("/proc/sys/net/unix/max_dgram_qlen").unwrap_or_default();
    if qlen.trim() != "1024" {
        println!(
            "net.unix.max_dgram_qlen is {} (the figures assume 1024)",
            qlen.trim()
        );
    }
    parse_and_aggregate();
    let dir = tempfile::tempdir().expect("temp dir");
    end_to_end(dir.path());
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
    // The production decoder, as the aggregation loop drives it.
    let telemetry = Arc::new(Telemetry::new());
    let mut aggregator = Aggregator::with_telemetry(AggregatorConfig::default(), telemetry.clone())
        .expect("aggregator");
    let mut decoder = Decoder::new("bench-host".to_owned(), Origins::default(), &telemetry);
    let metrics = telemetry.counter(InternalMetric::DogstatsdMessages, Some("metric"));
    let now = 1_800_000_000.0;
    let started = Instant::now();
    let mut rounds = 0;
    while started.elapsed() < Duration::from_secs(3) {
        for datagram in &datagrams {
            decoder.datagram(datagram, &Origin::Unknown, &mut aggregator, now);
        }
        rounds += 1;
        if rounds % 10 == 0 {
            let _ = aggregator.flush(now + 20.0);
        }
    }
    let samples = metrics.total();
    let rate = samples as f64 / started.elapsed().as_secs_f64();
    println!(
        "parse + aggregate, one core: {:.2} M metric samples/s",
        rate / 1e6
    );
}

/// One round's figures.
struct Round {
    rate: f64,
    sent: usize,
    received: usize,
}

fn end_to_end(dir: &Path) {
    let socket = dir.join("dsd.socket");
    let runner = RunnerProcess::start(
        Options {
            dogstatsd_socket: Some(socket.clone()),
            extra: "aggregator:\n  bucket_size_seconds: 1\n".to_owned(),
            log: Some("warn"),
            ..Options::default()
        },
        &[],
    );
    std::thread::sleep(Duration::from_secs(2));
    println!("runner RSS, idle: {:.1} MiB", mib(runner.rss_kib()));

    let load = Arc::new(
        (0..100)
            .map(|i| format!("load.metric:{i}|c|#env:bench").into_bytes())
            .collect::<Vec<_>>(),
    );
    println!(
        "UDS, one metric per datagram, {DATAGRAMS} datagrams per round, {SENDERS} senders x \
         sendmmsg({SEND_BATCH}):"
    );
    let (mut raw, mut into_runner) = (Vec::new(), Vec::new());
    let mut parsed_before = 0.0;
    for round in 0..ROUNDS {
        let r = raw_round(&dir.join(format!("raw-{round}.socket")), &load);
        println!(
            "  raw receiver (recvmmsg, counting only): {:>9.0} datagrams/s, received {} of {} sent",
            r.rate, r.received, r.sent
        );
        raw.push(r);

        let started = Instant::now();
        let sent = send(&socket, &load, DATAGRAMS);
        let rate = sent as f64 / started.elapsed().as_secs_f64();
        let expected = ((round + 1) * DATAGRAMS) as f64;
        let read = wait_for(&runner, DATAGRAMS_READ, expected);
        let parsed = wait_for(&runner, METRICS_PARSED, parsed_before + DATAGRAMS as f64);
        println!(
            "  runner run:                             {rate:>9.0} datagrams/s, received {} of {sent} sent, {} metrics parsed and aggregated",
            read as usize - round * DATAGRAMS,
            (parsed - parsed_before) as usize
        );
        parsed_before = parsed;
        into_runner.push(Round {
            rate,
            sent,
            received: read as usize - round * DATAGRAMS,
        });
    }
    let (raw_rate, runner_rate) = (median(&raw), median(&into_runner));
    let lost: usize = raw
        .iter()
        .chain(&into_runner)
        .map(|r| r.sent - r.received.min(r.sent))
        .sum();
    println!(
        "UDS end to end, medians: raw {raw_rate:.0} datagrams/s, runner {runner_rate:.0} datagrams/s = {:.0}% of raw; {lost} datagrams lost",
        100.0 * runner_rate / raw_rate
    );

    let contexts: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..CONTEXTS)
            .map(|i| format!("contexts.metric.{i}:1|g|#env:bench").into_bytes())
            .collect(),
    );
    send(&socket, &contexts, CONTEXTS);
    std::thread::sleep(Duration::from_millis(1500));
    println!(
        "runner RSS with {CONTEXTS} live contexts: {:.1} MiB",
        mib(runner.rss_kib())
    );
    let page = runner.metrics();
    std::thread::sleep(Duration::from_millis(200));
    println!(
        "runner RSS with {CONTEXTS} live contexts, after a scrape of their {:.1} MB page: {:.1} MiB",
        page.len() as f64 / 1e6,
        mib(runner.rss_kib())
    );
    // The rendered page is kept for the scrapes until the next flush, then given back.
    std::thread::sleep(Duration::from_millis(1500));
    println!(
        "runner RSS with {CONTEXTS} live contexts, after the next flush: {:.1} MiB",
        mib(runner.rss_kib())
    );
}

fn median(rounds: &[Round]) -> f64 {
    let mut rates: Vec<f64> = rounds.iter().map(|r| r.rate).collect();
    rates.sort_by(f64::total_cmp);
    rates[rates.len() / 2]
}

/// The raw limit: [`DATAGRAMS`] from the same senders into a receiver that only counts.
fn raw_round(path: &Path, messages: &Arc<Vec<Vec<u8>>>) -> Round {
    let receiver = UnixDatagram::bind(path).expect("bind");
    receiver
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let reader = std::thread::spawn(move || {
        let mut buffers = vec![[0u8; 8192]; SEND_BATCH];
        let mut slices: Vec<IoSliceMut<'_>> =
            buffers.iter_mut().map(|b| IoSliceMut::new(b)).collect();
        let mut receive = mmsg::Receive::new(&mut slices);
        let mut received = 0;
        while received < DATAGRAMS {
            match receive.call(&receiver) {
                Ok(n) => received += n,
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        received
    });
    let started = Instant::now();
    let sent = send(path, messages, DATAGRAMS);
    let rate = sent as f64 / started.elapsed().as_secs_f64();
    let received = reader.join().expect("reader");
    Round {
        rate,
        sent,
        received,
    }
}

/// Sends `count` datagrams, the i-th being `messages[i % messages.len()]`, from [`SENDERS`]
/// threads with blocking `sendmmsg`s; returns how many the kernel took (all, unless a send
/// failed, which is reported).
fn send(path: &Path, messages: &Arc<Vec<Vec<u8>>>, count: usize) -> usize {
    let start = Arc::new(Barrier::new(SENDERS));
    let threads: Vec<_> = (0..SENDERS)
        .map(|t| {
            let (path, messages, start) = (path.to_owned(), messages.clone(), start.clone());
            std::thread::spawn(move || send_share(&path, &messages, t, count, &start))
        })
        .collect();
    threads.into_iter().map(|t| t.join().expect("sender")).sum()
}

/// Sender `t`'s share: datagrams `t`, `t + SENDERS`, ...
fn send_share(
    path: &PathBuf,
    messages: &[Vec<u8>],
    t: usize,
    count: usize,
    start: &Barrier,
) -> usize {
    let socket = UnixDatagram::unbound().expect("socket");
    socket.connect(path).expect("connect");
    let mine: Vec<usize> = (t..count).step_by(SENDERS).collect();
    start.wait();
    let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(SEND_BATCH);
    let mut headers = mmsg::Headers::default();
    let mut sent = 0;
    for chunk in mine.chunks(SEND_BATCH) {
        slices.clear();
        slices.extend(
            chunk
                .iter()
                .map(|&i| IoSlice::new(&messages[i % messages.len()])),
        );
        let mut done = 0;
        while done < slices.len() {
            match headers.send(&socket, &slices[done..]) {
                Ok(n) => done += n,
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                Err(error) => {
                    println!("  a sender stopped: {error}");
                    return sent + done;
                }
            }
        }
        sent += done;
    }
    sent
}

/// `sendmmsg` and `recvmmsg`, one datagram per message, declared here for want of a `libc`
/// dependency in this crate (the layout is Linux's on 64-bit glibc targets; `IoSlice` is
/// documented to be ABI-compatible with `iovec`).
mod mmsg {
    use std::ffi::c_void;
    use std::io::{self, IoSlice, IoSliceMut};
    use std::os::fd::AsRawFd;

    const MSG_WAITFORONE: i32 = 0x10000;

    #[repr(C)]
    struct MsgHdr {
        name: *mut c_void,
        name_len: u32,
        iov: *mut c_void,
        iov_len: usize,
        control: *mut c_void,
        control_len: usize,
        flags: i32,
    }

    #[repr(C)]
    struct MMsgHdr {
        header: MsgHdr,
        len: u32,
    }

    unsafe extern "C" {
        fn sendmmsg(fd: i32, messages: *mut MMsgHdr, count: u32, flags: i32) -> i32;
        fn recvmmsg(
            fd: i32,
            messages: *mut MMsgHdr,
            count: u32,
            flags: i32,
            timeout: *mut c_void,
        ) -> i32;
    }

    fn header(iov: *mut c_void) -> MMsgHdr {
        MMsgHdr {
            header: MsgHdr {
                name: std::ptr::null_mut(),
                name_len: 0,
                iov,
                iov_len: 1,
                control: std::ptr::null_mut(),
                control_len: 0,
                flags: 0,
            },
            len: 0,
        }
    }

    /// A sender's message headers, reused from call to call.
    #[derive(Default)]
    pub struct Headers(Vec<MMsgHdr>);

    impl Headers {
        /// One datagram per slice on a connected socket, blocking while the peer's queue is
        /// full; how many were sent.
        pub fn send(
            &mut self,
            socket: &impl AsRawFd,
            datagrams: &[IoSlice<'_>],
        ) -> io::Result<usize> {
            self.0.clear();
            self.0.extend(
                datagrams
                    .iter()
                    .map(|d| header(std::ptr::from_ref(d).cast_mut().cast())),
            );
            // SAFETY: each header points at one `IoSlice` (an `iovec`) that outlives the call,
            // and the kernel only reads through it.
            let sent = unsafe {
                sendmmsg(
                    socket.as_raw_fd(),
                    self.0.as_mut_ptr(),
                    self.0.len() as u32,
                    0,
                )
            };
            usize::try_from(sent).map_err(|_| io::Error::last_os_error())
        }
    }

    /// A receiver's message headers over its buffers, built once.
    pub struct Receive<'a> {
        headers: Vec<MMsgHdr>,
        _buffers: std::marker::PhantomData<&'a mut [u8]>,
    }

    impl<'a> Receive<'a> {
        pub fn new(buffers: &'a mut [IoSliceMut<'a>]) -> Self {
            Self {
                headers: buffers
                    .iter_mut()
                    .map(|b| header(std::ptr::from_mut(b).cast()))
                    .collect(),
                _buffers: std::marker::PhantomData,
            }
        }

        /// Waits for one datagram, then takes those already queued, one per buffer; how many
        /// came.
        pub fn call(&mut self, socket: &impl AsRawFd) -> io::Result<usize> {
            // SAFETY: each header points at one `IoSliceMut` (an `iovec`) over a buffer
            // borrowed for `'a`; the kernel writes back only the headers' lengths and flags.
            let received = unsafe {
                recvmmsg(
                    socket.as_raw_fd(),
                    self.headers.as_mut_ptr(),
                    self.headers.len() as u32,
                    MSG_WAITFORONE,
                    std::ptr::null_mut(),
                )
            };
            usize::try_from(received).map_err(|_| io::Error::last_os_error())
        }
    }
}

const DATAGRAMS_READ: &str = "kennel_dogstatsd_datagrams_total{transport=\"uds\"}";
const METRICS_PARSED: &str = "kennel_dogstatsd_messages_total{message_type=\"metric\"}";

/// The runner's count `series`, once it reaches `expected` or stops growing.
fn wait_for(runner: &RunnerProcess, series: &str, expected: f64) -> f64 {
    let mut last = -1.0;
    for _ in 0..60 {
        std::thread::sleep(Duration::from_millis(500));
        let count = runner
            .metrics()
            .lines()
            .find(|l| l.starts_with(series))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(0.0);
        if count >= expected || (count == last && count > 0.0) {
            return count;
        }
        last = count;
    }
    last
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}
