//! The aggregation loop: one thread that owns the [`Aggregator`], takes in decoded inputs and
//! check reports, and hands every flush to the sinks.
//!
//! One owner means no lock on the hot path: producers hand over whole batches (of datagrams, of
//! reports) through one bounded channel, and this thread inserts every sample. A full channel
//! makes producers wait, so the kernel's socket buffer absorbs bursts and, over UDS, DogStatsD
//! clients see back-pressure rather than silent loss.
//!
//! The loop knows samples and reports, not sockets: what a batch of raw input means is the
//! input's business, through [`Decode`] (DogStatsD's decoder runs here, on this thread, so the
//! parser can borrow from the batch and nothing is copied per message).
//!
//! Every [`FLUSH_EVERY`] the closed buckets are flushed into one shared [`Flush`] that every
//! [`Output`] gets a handle on; the loop never waits for one (the pipeline's outputs are
//! [`crate::sink`]s, each with its own queue and thread). The loop
//! beats its health heartbeat on every turn: if it stops turning for [`STALL_LIMIT`], `/health`
//! says so even while its thread is alive.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc;

use crate::aggregator::{Aggregator, Flush};
use crate::check::{self, ReportKind, RunReport};
use crate::health::{self, Health, Reporter};
use crate::telemetry::{Gauge, InternalMetric};

/// How often closed buckets are flushed.
pub(crate) const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// How long the loop may go without a turn before its health reads failed.
pub(crate) const STALL_LIMIT: Duration = Duration::from_secs(15);
/// Batches (or reports) queued before producers wait.
const QUEUE: usize = 1024;

/// Where the loop hands each flush ([`crate::sink::SinkHandle`] in the pipeline): it must
/// take the flush at once, whatever it does with it later.
pub(crate) trait Output: Send {
    /// Takes one flush, without waiting.
    fn offer(&self, flush: Arc<Flush>);
    /// No more flushes: take what is queued, then end.
    fn close(self: Box<Self>);
}

/// The loop's thread: `None` when it panicked.
pub(crate) type LoopThread = JoinHandle<Option<()>>;

/// Turns one kind of raw input into samples, on the aggregation thread.
pub(crate) trait Decode: Send + 'static {
    /// What producers hand over.
    type Batch: Send + 'static;

    /// Inserts everything in `batch` into `aggregator`.
    fn decode(&mut self, batch: &Self::Batch, aggregator: &mut Aggregator);
}

/// What the loop takes in.
pub(crate) enum Input<B> {
    /// Raw input for the loop's [`Decode`].
    Batch(B),
    /// Check runs' reports, several at once when many runs finish together.
    Reports(Vec<RunReport>),
    /// Test builds only: make the loop panic, as a bug would.
    #[cfg(feature = "fault-injection")]
    Panic,
}

/// The sending side of the loop: cheap to clone, one per producer.
pub(crate) struct AggregatorHandle<B>(SyncSender<Input<B>>);

impl<B> Clone for AggregatorHandle<B> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<B> AggregatorHandle<B> {
    /// Hands over `input`, waiting while the loop is behind; `false` once the loop has stopped.
    pub(crate) fn send(&self, input: Input<B>) -> bool {
        self.0.send(input).is_ok()
    }

    /// Hands over `input` if the loop has room; gives it back if not. `Err(None)` once the
    /// loop has stopped.
    pub(crate) fn try_send(&self, input: Input<B>) -> Result<(), Option<Input<B>>> {
        match self.0.try_send(input) {
            Ok(()) => Ok(()),
            Err(std::sync::mpsc::TrySendError::Full(input)) => Err(Some(input)),
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => Err(None),
        }
    }
}

/// Starts the loop on its own thread, reporting as the `aggregator` health component. It
/// stops when every [`AggregatorHandle`] is dropped, after a last flush, and then closes the
/// outputs (each sends what it has queued).
pub(crate) fn start<D: Decode>(
    aggregator: Aggregator,
    decoder: D,
    outputs: Vec<Box<dyn Output>>,
    health: &Health,
) -> std::io::Result<(AggregatorHandle<D::Batch>, LoopThread)> {
    let (sender, receiver) = std::sync::mpsc::sync_channel(QUEUE);
    let reporter = health.register("aggregator", true);
    reporter.stall_after(STALL_LIMIT);
    let state = Loop {
        longest_turn: aggregator
            .telemetry()
            .gauge(InternalMetric::AggregatorLongestTurn, None),
        aggregator,
        decoder,
        outputs,
        reporter: reporter.clone(),
    };
    let thread = health::spawn_thread("kennel-aggregator", reporter, move || state.run(receiver))?;
    Ok((AggregatorHandle(sender), thread))
}

struct Loop<D> {
    aggregator: Aggregator,
    decoder: D,
    outputs: Vec<Box<dyn Output>>,
    reporter: Reporter,
    /// The longest turn (one input, or one flush) since the previous flush.
    longest_turn: Gauge,
}

impl<D: Decode> Loop<D> {
    fn run(mut self, inputs: Receiver<Input<D::Batch>>) {
        let mut next_flush = Instant::now() + FLUSH_EVERY;
        let mut longest = Duration::ZERO;
        loop {
            self.reporter.beat();
            let wait = next_flush.saturating_duration_since(Instant::now());
            let received = inputs.recv_timeout(wait);
            let turn = Instant::now();
            match received {
                Ok(Input::Batch(batch)) => self.decoder.decode(&batch, &mut self.aggregator),
                Ok(Input::Reports(reports)) => {
                    for report in &reports {
                        self.aggregator.insert_report(report);
                    }
                }
                #[cfg(feature = "fault-injection")]
                Ok(Input::Panic) => panic!("injected fault"),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.flush();
                    for output in self.outputs {
                        output.close();
                    }
                    return;
                }
            }
            longest = longest.max(turn.elapsed());
            if Instant::now() >= next_flush {
                self.longest_turn
                    .set(std::mem::take(&mut longest).as_secs_f64());
                let flushing = Instant::now();
                self.flush();
                longest = flushing.elapsed();
                next_flush += FLUSH_EVERY;
                if next_flush < Instant::now() {
                    next_flush = Instant::now() + FLUSH_EVERY;
                }
            }
        }
    }

    fn flush(&mut self) {
        let flush = Arc::new(
            self.aggregator
                .flush(check::unix_seconds(SystemTime::now())),
        );
        for output in &self.outputs {
            output.offer(flush.clone());
        }
    }
}

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
pub(crate) async fn forward_reports<B>(
    mut inbox: mpsc::Receiver<RunReport>,
    aggregator: AggregatorHandle<B>,
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
        let ran = batch.iter().filter(|r| r.kind != ReportKind::Unscheduled);
        let (ran, ran_failed) = ran.fold((0, 0), |(n, f), r| (n + 1, f + u64::from(!r.is_ok())));
        runs += ran;
        failed += ran_failed;
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
