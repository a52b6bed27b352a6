//! One endpoint's retry queue: payloads waiting to be delivered, oldest first, in memory up
//! to `forwarder_retry_queue_payloads_max_size` bytes and on disk ([`SpillDir`]) past it.
//!
//! Order: the endpoint always sends the oldest payload it holds, wherever it is (the disk
//! holds what memory pushed out, so it is usually the disk's oldest file). Oldest first costs
//! a backlog's fresh data some latency after an outage, but it is what a Prometheus receiver
//! needs (it refuses a sample older than one it already has for the series), and what makes
//! "every point arrives exactly once" checkable.
//!
//! Bounds, and what happens past each, always counted by reason ([`DropReason`]):
//! - memory full: the oldest payload in memory goes to disk; if there is no disk, or writing
//!   fails (an unwritable or full directory), it is dropped as `queue_full`, and the failure is
//!   counted and kept for status: the queue goes on in memory alone;
//! - disk budget full: the endpoint's oldest file is removed (`disk_full`);
//! - a file older than `forwarder_outdated_file_in_days`: removed (`outdated`).
//!
//! Memory use is the payloads' bytes plus a small fixed cost each ([`OVERHEAD`]): bodies are
//! shared `Bytes`, sized exactly, so a full queue holds about its bound.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::SystemTime;

use super::payload::Payload;
use super::spill::{SpillDir, SpillError};

/// Bytes a queued payload costs beside its body (the entry and the `Bytes` handle).
const OVERHEAD: u64 = 96;

/// A payload and when it was made.
#[derive(Debug, Clone)]
pub(crate) struct Queued {
    pub(crate) payload: Payload,
    pub(crate) created: SystemTime,
}

impl Queued {
    fn cost(&self) -> u64 {
        self.payload.body.len() as u64 + OVERHEAD
    }
}

/// Why payloads were dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum DropReason {
    /// Memory was full and the disk could not take the oldest.
    QueueFull,
    /// The disk budget was full: the oldest file was removed.
    DiskFull,
    /// On disk longer than `forwarder_outdated_file_in_days`.
    Outdated,
    /// A spilled file could not be read back.
    Corrupt,
    /// The intake refused it for good (400, 413; other 4xx for remote write).
    Rejected,
    /// The intake refused the API key or credentials (403, 401).
    InvalidKey,
    /// Left over at a stop and the disk could not take it.
    Shutdown,
    /// Serializing: in an entry larger than a payload may be.
    TooLarge,
    /// Serializing: NaN or infinite, which JSON cannot carry.
    NotFinite,
    /// Serializing for remote write: at or before the last sample sent for its series.
    OutOfOrder,
    /// Serializing for remote write: named like a series of another type.
    Conflicting,
    /// Serializing: a compression error.
    SerializeError,
}

impl DropReason {
    pub(crate) const ALL: [Self; 12] = [
        Self::QueueFull,
        Self::DiskFull,
        Self::Outdated,
        Self::Corrupt,
        Self::Rejected,
        Self::InvalidKey,
        Self::Shutdown,
        Self::TooLarge,
        Self::NotFinite,
        Self::OutOfOrder,
        Self::Conflicting,
        Self::SerializeError,
    ];

    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Self::QueueFull => "queue_full",
            Self::DiskFull => "disk_full",
            Self::Outdated => "outdated",
            Self::Corrupt => "corrupt",
            Self::Rejected => "rejected",
            Self::InvalidKey => "invalid_key",
            Self::Shutdown => "shutdown",
            Self::TooLarge => "too_large",
            Self::NotFinite => "not_finite",
            Self::OutOfOrder => "out_of_order",
            Self::Conflicting => "conflicting",
            Self::SerializeError => "serialize_error",
        }
    }
}

/// Payloads dropped at once, and what they carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Dropped {
    pub(crate) reason: DropReason,
    pub(crate) payloads: u64,
    pub(crate) items: u64,
}

impl Dropped {
    pub(crate) const fn new(reason: DropReason, payloads: u64, items: u64) -> Self {
        Self {
            reason,
            payloads,
            items,
        }
    }

    fn of(reason: DropReason, item: &Queued) -> Self {
        Self::new(reason, 1, u64::from(item.payload.items))
    }
}

/// Where the payload being sent came from, so it can be acknowledged or put back.
#[derive(Debug)]
pub(crate) enum Taken {
    Memory,
    Disk(PathBuf),
}

/// The queue's size, for status and telemetry.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct QueueSize {
    pub(crate) memory_payloads: u64,
    pub(crate) memory_bytes: u64,
    pub(crate) disk_payloads: u64,
    pub(crate) disk_bytes: u64,
    pub(crate) oldest: Option<SystemTime>,
}

#[derive(Debug)]
pub(crate) struct RetryQueue {
    memory: VecDeque<Queued>,
    memory_bytes: u64,
    max_memory: u64,
    disk: Option<SpillDir>,
    /// The latest spill failure, until a spill succeeds.
    pub(crate) spill_error: Option<String>,
    /// Spill failures since the start.
    pub(crate) spill_errors: u64,
}

impl RetryQueue {
    pub(crate) fn new(max_memory: u64, disk: Option<SpillDir>) -> Self {
        Self {
            memory: VecDeque::new(),
            memory_bytes: 0,
            max_memory,
            disk,
            spill_error: None,
            spill_errors: 0,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.memory.is_empty() && self.disk.as_ref().is_none_or(|d| d.len() == 0)
    }

    pub(crate) fn size(&self) -> QueueSize {
        let memory_oldest = self.memory.front().map(|q| q.created);
        let disk_oldest = self.disk.as_ref().and_then(SpillDir::oldest_created);
        QueueSize {
            memory_payloads: self.memory.len() as u64,
            memory_bytes: self.memory_bytes,
            disk_payloads: self.disk.as_ref().map_or(0, |d| d.len() as u64),
            disk_bytes: self.disk.as_ref().map_or(0, SpillDir::bytes),
            oldest: match (memory_oldest, disk_oldest) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
        }
    }

    /// Adds a new payload; what the bounds pushed out is returned, to be counted.
    pub(crate) fn push(&mut self, item: Queued) -> Vec<Dropped> {
        self.memory_bytes += item.cost();
        self.memory.push_back(item);
        let mut dropped = Vec::new();
        while self.memory_bytes > self.max_memory {
            let Some(oldest) = self.memory.pop_front() else {
                break;
            };
            self.memory_bytes -= oldest.cost();
            match self.spill(&oldest) {
                Ok(evicted) => dropped.extend(evicted),
                Err(()) => dropped.push(Dropped::of(DropReason::QueueFull, &oldest)),
            }
        }
        dropped
    }

    /// Takes the oldest payload to send. Until [`Self::delivered`] or [`Self::retry`], a payload
    /// from disk stays there (pinned), so a crash loses nothing taken.
    pub(crate) fn take(&mut self) -> (Option<(Taken, Queued)>, Vec<Dropped>) {
        let memory_oldest = self.memory.front().map(|q| q.created);
        let disk_first = match (&self.disk, memory_oldest) {
            (Some(disk), Some(m)) => disk.oldest_created().is_some_and(|d| d <= m),
            (Some(disk), None) => disk.len() > 0,
            (None, _) => false,
        };
        if disk_first && let Some(disk) = &mut self.disk {
            let (read, dropped) = disk.read_oldest();
            if let Some((path, item)) = read {
                return (Some((Taken::Disk(path), item)), dropped);
            }
            if !dropped.is_empty() {
                return (self.take_memory(), dropped);
            }
        }
        (self.take_memory(), Vec::new())
    }

    fn take_memory(&mut self) -> Option<(Taken, Queued)> {
        let item = self.memory.pop_front()?;
        self.memory_bytes -= item.cost();
        Some((Taken::Memory, item))
    }

    /// The taken payload was delivered, or dropped for good.
    pub(crate) fn delivered(&mut self, taken: Taken) {
        if let (Taken::Disk(path), Some(disk)) = (taken, &mut self.disk) {
            disk.remove(&path);
        }
    }

    /// The taken payload failed and will be tried again first.
    pub(crate) fn retry(&mut self, taken: Taken, item: Queued) -> Vec<Dropped> {
        match taken {
            Taken::Disk(_) => {
                if let Some(disk) = &mut self.disk {
                    disk.unpin();
                }
                Vec::new()
            }
            Taken::Memory => {
                self.memory_bytes += item.cost();
                self.memory.push_front(item);
                let mut dropped = Vec::new();
                // Only the payload put back can be over the bound: the newest go to disk.
                while self.memory_bytes > self.max_memory && self.memory.len() > 1 {
                    let Some(newest) = self.memory.pop_back() else {
                        break;
                    };
                    self.memory_bytes -= newest.cost();
                    match self.spill(&newest) {
                        Ok(evicted) => dropped.extend(evicted),
                        Err(()) => dropped.push(Dropped::of(DropReason::QueueFull, &newest)),
                    }
                }
                dropped
            }
        }
    }

    /// At a stop: everything still in memory goes to disk; what cannot is returned as dropped.
    pub(crate) fn spill_all(&mut self) -> Vec<Dropped> {
        let mut dropped = Vec::new();
        while let Some(item) = self.memory.pop_front() {
            self.memory_bytes -= item.cost();
            match self.spill(&item) {
                Ok(evicted) => dropped.extend(evicted),
                Err(()) => dropped.push(Dropped::of(DropReason::Shutdown, &item)),
            }
        }
        dropped
    }

    fn spill(&mut self, item: &Queued) -> Result<Vec<Dropped>, ()> {
        let Some(disk) = &mut self.disk else {
            return Err(());
        };
        match disk.write(item) {
            Ok(evicted) => {
                self.spill_error = None;
                Ok(evicted)
            }
            Err(error) => {
                self.note_spill_error(&error);
                Err(())
            }
        }
    }

    fn note_spill_error(&mut self, error: &SpillError) {
        self.spill_errors += 1;
        let text = error.to_string();
        if self.spill_error.as_deref() != Some(&text) {
            tracing::warn!(%error, "cannot spill a payload to disk: the queue goes on in memory");
        }
        self.spill_error = Some(text);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;
    use crate::forwarder::payload::{Encoding, Route};
    use crate::forwarder::spill::DiskBudget;

    fn item(n: u8, len: usize) -> Queued {
        Queued {
            payload: Payload {
                route: Route::SeriesV2,
                encoding: Encoding::Zstd,
                body: Bytes::from(vec![n; len]),
                items: u32::from(n),
            },
            created: SystemTime::now() + Duration::from_millis(u64::from(n)),
        }
    }

    fn disk(dir: &std::path::Path, max: u64) -> SpillDir {
        let (disk, dropped) = SpillDir::open(
            dir.to_owned(),
            DiskBudget {
                max_bytes: max,
                max_disk_ratio: 1.0,
            },
            Duration::from_secs(3600),
        )
        .unwrap();
        assert!(dropped.is_empty());
        disk
    }

    /// Takes everything, delivering it, and returns the first byte of each body.
    fn drain(queue: &mut RetryQueue) -> Vec<u8> {
        let mut out = Vec::new();
        while let (Some((taken, item)), _) = queue.take() {
            out.push(item.payload.body[0]);
            queue.delivered(taken);
        }
        out
    }

    #[test]
    fn without_a_disk_the_oldest_is_dropped_and_counted_when_memory_is_full() {
        let mut queue = RetryQueue::new(3 * (1000 + OVERHEAD), None);
        for n in 1..=3 {
            assert!(queue.push(item(n, 1000)).is_empty());
        }
        let dropped = queue.push(item(4, 1000));
        assert_eq!(dropped, [Dropped::new(DropReason::QueueFull, 1, 1)]);
        assert_eq!(queue.size().memory_bytes, 3 * (1000 + OVERHEAD));
        assert_eq!(drain(&mut queue), [2, 3, 4]);
    }

    #[test]
    fn past_memory_the_oldest_go_to_disk_and_everything_comes_back_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let mut queue = RetryQueue::new(2 * (100 + OVERHEAD), Some(disk(dir.path(), 1 << 20)));
        for n in 1..=5 {
            assert!(queue.push(item(n, 100)).is_empty());
        }
        let size = queue.size();
        assert_eq!((size.memory_payloads, size.disk_payloads), (2, 3));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 3);
        assert_eq!(drain(&mut queue), [1, 2, 3, 4, 5]);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "delivered files go"
        );
    }

    #[test]
    fn failed_sends_while_memory_is_full_keep_the_queue_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let mut queue = RetryQueue::new(3 * (100 + OVERHEAD), Some(disk(dir.path(), 1 << 20)));
        for n in 1..=3 {
            queue.push(item(n, 100));
        }
        // Each send fails while two newer payloads arrive.
        let mut next = 4;
        for _ in 0..4 {
            let (Some((taken, sent)), _) = queue.take() else {
                panic!("something to take")
            };
            queue.push(item(next, 100));
            queue.push(item(next + 1, 100));
            next += 2;
            assert!(queue.retry(taken, sent).is_empty());
        }
        assert_eq!(drain(&mut queue), (1..next).collect::<Vec<u8>>());
    }

    #[test]
    fn a_failed_send_is_retried_first_and_a_file_stays_until_delivered() {
        let dir = tempfile::tempdir().unwrap();
        let mut queue = RetryQueue::new(100 + OVERHEAD, Some(disk(dir.path(), 1 << 20)));
        queue.push(item(1, 100));
        queue.push(item(2, 100));
        let (Some((taken, first)), _) = queue.take() else {
            panic!("something to take")
        };
        assert!(matches!(taken, Taken::Disk(_)), "the oldest went to disk");
        assert!(queue.retry(taken, first).is_empty());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        let (Some((taken, first)), _) = queue.take() else {
            panic!("something to take")
        };
        assert_eq!(first.payload.body[0], 1, "the same payload again");
        assert!(matches!(taken, Taken::Disk(_)));
        queue.delivered(taken);

        let (Some((taken, second)), _) = queue.take() else {
            panic!("something to take")
        };
        assert!(matches!(taken, Taken::Memory));
        queue.retry(taken, second);
        assert_eq!(drain(&mut queue), [2]);
    }

    #[test]
    fn spilled_payloads_survive_a_new_queue_on_the_same_directory() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut queue = RetryQueue::new(1 << 20, Some(disk(dir.path(), 1 << 20)));
            queue.push(item(7, 300));
            queue.push(item(8, 300));
            assert!(queue.spill_all().is_empty());
        }
        std::fs::write(dir.path().join("0-1.retry.tmp"), b"half a write").unwrap();
        let mut queue = RetryQueue::new(1 << 20, Some(disk(dir.path(), 1 << 20)));
        let (Some((_, first)), _) = queue.take() else {
            panic!("spilled payloads are found")
        };
        assert_eq!(
            first.payload,
            item(7, 300).payload,
            "route, encoding, items and body"
        );
        assert!(
            !dir.path().join("0-1.retry.tmp").exists(),
            "leftovers are removed"
        );
    }

    #[test]
    fn the_disk_budget_evicts_the_oldest_file_and_counts_it() {
        let dir = tempfile::tempdir().unwrap();
        let header = 60;
        let mut queue = RetryQueue::new(0, Some(disk(dir.path(), 3 * (1000 + header))));
        let mut dropped = Vec::new();
        for n in 1..=5 {
            dropped.extend(queue.push(item(n, 1000)));
        }
        assert_eq!(
            dropped,
            [
                Dropped::new(DropReason::DiskFull, 1, 1),
                Dropped::new(DropReason::DiskFull, 1, 2)
            ]
        );
        assert_eq!(drain(&mut queue), [3, 4, 5]);
    }

    #[test]
    fn an_unwritable_directory_leaves_the_queue_in_memory_with_the_error_kept() {
        let dir = tempfile::tempdir().unwrap();
        let budget = DiskBudget {
            max_bytes: 1 << 20,
            max_disk_ratio: 1.0,
        };
        let spill = dir.path().join("spill");
        let (disk, _) = SpillDir::open(spill.clone(), budget, Duration::from_secs(60)).unwrap();
        std::fs::remove_dir(&spill).unwrap();
        std::fs::write(&spill, b"a file where the directory was").unwrap();
        let mut queue = RetryQueue::new(100 + OVERHEAD, Some(disk));
        queue.push(item(1, 100));
        let dropped = queue.push(item(2, 100));
        assert_eq!(dropped, [Dropped::new(DropReason::QueueFull, 1, 1)]);
        assert_eq!(queue.spill_errors, 1);
        assert!(
            queue
                .spill_error
                .as_deref()
                .unwrap()
                .contains("cannot write")
        );
        assert_eq!(drain(&mut queue), [2]);
    }

    #[test]
    fn outdated_files_are_removed_at_open_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut queue = RetryQueue::new(0, Some(disk(dir.path(), 1 << 20)));
            let mut old = item(3, 10);
            old.created = SystemTime::now() - Duration::from_secs(7200);
            queue.push(old);
        }
        let (disk, dropped) = SpillDir::open(
            dir.path().to_owned(),
            DiskBudget {
                max_bytes: 1 << 20,
                max_disk_ratio: 1.0,
            },
            Duration::from_secs(3600),
        )
        .unwrap();
        assert_eq!(dropped, [Dropped::new(DropReason::Outdated, 1, 3)]);
        assert_eq!(disk.len(), 0);
    }
}
