//! The disk half of an endpoint's retry queue: payloads that do not fit in memory, one file
//! each, in a directory of their own under `forwarder_storage_path`.
//!
//! A file is a one-line text header (`kennel-retry 1 <route> <encoding> <items> <created>`)
//! and the compressed body as it would be sent. It is written under a temporary name and
//! renamed into place, so a crash (`kill -9`) leaves either the whole file or a `.tmp` that
//! the next start removes; files are not fsynced, so what the kernel had not written out when
//! the *host* lost power may be lost, as with the Agent's `.retry` files. Names sort in the
//! order the payloads were made, so the oldest is sent (and evicted) first.
//!
//! Files are named after the time their payload was made (and a sequence number), and kept in
//! that order, wherever they came from (memory's oldest pushed out, or a newer payload put back
//! after a failed send), so the queue stays oldest first across spills and restarts.
//!
//! Disk use is bounded twice: each endpoint's share of `forwarder_storage_max_size_in_bytes`
//! (an equal share: one dead intake cannot take the disk another needs), past which the
//! endpoint's oldest files are removed, and `forwarder_storage_max_disk_ratio` of the
//! filesystem, past which nothing more is written. Files older than
//! `forwarder_outdated_file_in_days` are removed when found. The file the endpoint is sending
//! is pinned: eviction skips it, so a payload is never both dropped and delivered.
//!
//! Delivery is at least once: a payload whose file could not be removed after it was
//! delivered (or whose runner was killed in between) is sent again at the next start.

use std::collections::VecDeque;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::payload::{Encoding, Payload, Route};
use super::queue::{DropReason, Dropped, Queued};

const MAGIC: &str = "kennel-retry 1";
const SUFFIX: &str = "retry";
/// The longest header a file may have.
const HEADER_MAX: usize = 256;

/// What one endpoint's spill directory may use.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DiskBudget {
    /// Bytes of files, headers included.
    pub(crate) max_bytes: u64,
    /// The most of its filesystem that may be in use before a write.
    pub(crate) max_disk_ratio: f64,
}

#[derive(Debug)]
struct SpillFile {
    path: PathBuf,
    bytes: u64,
    items: u64,
    created: SystemTime,
}

/// One endpoint's spilled payloads, oldest first.
#[derive(Debug)]
pub(crate) struct SpillDir {
    dir: PathBuf,
    files: VecDeque<SpillFile>,
    bytes: u64,
    budget: DiskBudget,
    outdated: Duration,
    pinned: Option<PathBuf>,
    seq: u64,
}

/// Why a payload could not be written; the caller keeps it in memory or drops it, counted.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SpillError {
    #[error("cannot write {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("the spill directory's filesystem is {percent:.0}% full")]
    DiskFull { percent: f64 },
    #[error("the spill budget is full")]
    BudgetFull,
    #[error("the payload ({bytes} bytes) is larger than the whole disk budget")]
    TooLarge { bytes: u64 },
}

impl SpillDir {
    /// Opens (creating it) `dir`, taking over the files a previous run left: leftovers of an
    /// interrupted write are removed, files older than `outdated` are removed and returned as
    /// dropped, the rest will be sent oldest first.
    pub(crate) fn open(
        dir: PathBuf,
        budget: DiskBudget,
        outdated: Duration,
    ) -> io::Result<(Self, Vec<Dropped>)> {
        std::fs::create_dir_all(&dir)?;
        let mut found = Vec::new();
        let mut dropped = Vec::new();
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".tmp") {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            if !name.ends_with(SUFFIX) {
                continue;
            }
            let header = match read_header(&path) {
                Ok(header) => header,
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "removing an unreadable spilled payload");
                    let _ = std::fs::remove_file(&path);
                    dropped.push(Dropped::new(DropReason::Corrupt, 1, 0));
                    continue;
                }
            };
            let bytes = entry.metadata().map(|m| m.len()).unwrap_or(0);
            if is_outdated(header.created, outdated) {
                let _ = std::fs::remove_file(&path);
                dropped.push(Dropped::new(DropReason::Outdated, 1, header.items));
                continue;
            }
            found.push(SpillFile {
                path,
                bytes,
                items: header.items,
                created: header.created,
            });
        }
        found.sort_by(|a, b| a.path.cmp(&b.path));
        let bytes = found.iter().map(|f| f.bytes).sum();
        Ok((
            Self {
                dir,
                files: found.into(),
                bytes,
                budget,
                outdated,
                pinned: None,
                seq: 0,
            },
            dropped,
        ))
    }

    pub(crate) fn len(&self) -> usize {
        self.files.len()
    }

    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// When the oldest file's payload was made.
    pub(crate) fn oldest_created(&self) -> Option<SystemTime> {
        self.files.front().map(|f| f.created)
    }

    /// Writes `item`, first removing this endpoint's oldest files (returned as dropped) if the
    /// budget would be passed.
    pub(crate) fn write(&mut self, item: &Queued) -> Result<Vec<Dropped>, SpillError> {
        let body = &item.payload.body;
        let header = format!(
            "{MAGIC} {} {} {} {}\n",
            item.payload.route.as_str(),
            item.payload.encoding.as_str(),
            item.payload.items,
            item.created
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis()
        );
        let size = (header.len() + body.len()) as u64;
        if size > self.budget.max_bytes {
            return Err(SpillError::TooLarge { bytes: size });
        }
        if let Some(percent) = self.filesystem_too_full() {
            return Err(SpillError::DiskFull { percent });
        }
        let mut evicted = Vec::new();
        while self.bytes + size > self.budget.max_bytes {
            match self.evict_oldest() {
                Some(dropped) => evicted.push(dropped),
                // Only the pinned file is left, and the payload does not fit beside it.
                None => return Err(SpillError::BudgetFull),
            }
        }
        self.seq += 1;
        let created = item
            .created
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let name = format!("{created:020}-{:08}.{SUFFIX}", self.seq);
        let path = self.dir.join(&name);
        let tmp = self.dir.join(format!("{name}.tmp"));
        let written = std::fs::File::create(&tmp)
            .and_then(|mut file| {
                file.write_all(header.as_bytes())?;
                file.write_all(body)
            })
            .and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(source) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(SpillError::Io { path, source });
        }
        self.bytes += size;
        // Names sort as the payloads were made: usually the newest, so usually at the end.
        let at = self.files.partition_point(|f| f.path <= path);
        self.files.insert(
            at,
            SpillFile {
                path,
                bytes: size,
                items: u64::from(item.payload.items),
                created: item.created,
            },
        );
        Ok(evicted)
    }

    /// Reads the oldest file and pins it until [`Self::remove`]. Unreadable or outdated files
    /// are removed and returned as dropped on the way.
    pub(crate) fn read_oldest(&mut self) -> (Option<(PathBuf, Queued)>, Vec<Dropped>) {
        let mut dropped = Vec::new();
        while let Some(file) = self.files.front() {
            let path = file.path.clone();
            if is_outdated(file.created, self.outdated) {
                if let Some(d) = self.remove_front(DropReason::Outdated) {
                    dropped.push(d);
                }
                continue;
            }
            match read_file(&path) {
                Ok(item) => {
                    self.pinned = Some(path.clone());
                    return (Some((path, item)), dropped);
                }
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "dropping an unreadable spilled payload");
                    if let Some(d) = self.remove_front(DropReason::Corrupt) {
                        dropped.push(d);
                    }
                }
            }
        }
        (None, dropped)
    }

    /// Removes a file once its payload is delivered or dropped.
    pub(crate) fn remove(&mut self, path: &Path) {
        if self.pinned.as_deref() == Some(path) {
            self.pinned = None;
        }
        if let Some(at) = self.files.iter().position(|f| f.path == path)
            && let Some(file) = self.files.remove(at)
        {
            self.forget(&file);
        }
    }

    /// Lets eviction take the pinned file again (its send failed and will be retried).
    pub(crate) fn unpin(&mut self) {
        self.pinned = None;
    }

    fn evict_oldest(&mut self) -> Option<Dropped> {
        let at = self
            .files
            .iter()
            .position(|f| Some(&f.path) != self.pinned.as_ref())?;
        let file = self.files.remove(at)?;
        self.forget(&file);
        Some(Dropped::new(DropReason::DiskFull, 1, file.items))
    }

    fn remove_front(&mut self, reason: DropReason) -> Option<Dropped> {
        let file = self.files.pop_front()?;
        if self.pinned.as_ref() == Some(&file.path) {
            self.pinned = None;
        }
        self.forget(&file);
        Some(Dropped::new(reason, 1, file.items))
    }

    fn forget(&mut self, file: &SpillFile) {
        if let Err(error) = std::fs::remove_file(&file.path)
            && error.kind() != io::ErrorKind::NotFound
        {
            // It will be found, and sent again, at the next start (at least once).
            tracing::warn!(path = %file.path.display(), %error, "cannot remove a spilled payload");
        }
        self.bytes = self.bytes.saturating_sub(file.bytes);
    }

    /// The filesystem's use, in percent, if it is past the ratio.
    /// As `df` counts it (and the Agent, through gopsutil's `UsedPercent`): used over used
    /// plus what this user may still take, so blocks reserved for root or held back by the
    /// filesystem count as neither.
    fn filesystem_too_full(&self) -> Option<f64> {
        let stat = rustix::fs::statvfs(&self.dir).ok()?;
        let used = stat.f_blocks.saturating_sub(stat.f_bfree) as f64;
        let usable = used + stat.f_bavail as f64;
        if usable == 0.0 {
            return None;
        }
        let ratio = used / usable;
        (ratio > self.budget.max_disk_ratio).then_some(ratio * 100.0)
    }
}

fn is_outdated(created: SystemTime, outdated: Duration) -> bool {
    created.elapsed().is_ok_and(|age| age > outdated)
}

struct Header {
    route: Route,
    encoding: Encoding,
    items: u64,
    created: SystemTime,
    len: usize,
}

fn parse_header(bytes: &[u8]) -> io::Result<Header> {
    let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
    let end = bytes
        .iter()
        .take(HEADER_MAX)
        .position(|b| *b == b'\n')
        .ok_or_else(|| invalid("no header"))?;
    let line = std::str::from_utf8(&bytes[..end]).map_err(|_| invalid("header is not text"))?;
    let rest = line
        .strip_prefix(MAGIC)
        .ok_or_else(|| invalid("not a kennel retry file"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let [route, encoding, items, created] = fields[..] else {
        return Err(invalid("header fields"));
    };
    Ok(Header {
        route: Route::from_str(route).ok_or_else(|| invalid("route"))?,
        encoding: Encoding::from_str(encoding).ok_or_else(|| invalid("encoding"))?,
        items: items.parse().map_err(|_| invalid("items"))?,
        created: UNIX_EPOCH
            + Duration::from_millis(created.parse().map_err(|_| invalid("created"))?),
        len: end + 1,
    })
}

fn read_header(path: &Path) -> io::Result<Header> {
    use std::io::Read as _;
    let mut buf = [0u8; HEADER_MAX];
    let mut file = std::fs::File::open(path)?;
    let mut filled = 0;
    while filled < buf.len() {
        let n = file.read(&mut buf[filled..])?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    parse_header(&buf[..filled])
}

fn read_file(path: &Path) -> io::Result<Queued> {
    let bytes = std::fs::read(path)?;
    let header = parse_header(&bytes)?;
    let body = Bytes::from(bytes).slice(header.len..);
    Ok(Queued {
        payload: Payload {
            route: header.route,
            encoding: header.encoding,
            body,
            items: u32::try_from(header.items).unwrap_or(u32::MAX),
        },
        created: header.created,
    })
}
