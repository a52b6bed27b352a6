//! Reading one cgroup interface file, and the few formats the kernel writes them in.
//!
//! A [`CgroupFile`] lives for one [`super::CgroupFs::read`]. It opens the container's
//! directory once in each hierarchy (`O_PATH`) and each file relative to it (`openat`), so the
//! kernel walks `/sys/fs/cgroup/memory/docker/<id>` once rather than once per file, and a
//! directory that is not there answers for all its files with one failed open. It reads every
//! file into one reused buffer, in one `read` when the file fits (cgroup files are kernfs
//! `seq_file`s, which fill a read up to the file's end, so a short read is the end), and
//! parses from the bytes, never through a `String`. On this machine (a VM, where a syscall
//! costs several µs) a file costs about 7 µs, most of it the kernel's open and close.
//!
//! The formats are those of `Documentation/admin-guide/cgroup-v2.rst` ("Interface Files":
//! flat keyed `key value` lines, nested keyed `dev key=value ...` lines, single values where
//! `max` means no limit) and of the cgroup v1 documents (the same flat keyed lines, and
//! blkio's `maj:min Op value` lines).
//!
//! How an error reading a file maps onto what the caller sees, in one place ([`classify`]): a
//! missing file is a field this kernel or configuration does not have (`None`); the cgroup
//! removed under an open file (`ENODEV`) is [`ReadError::Gone`]; permission denied carries the
//! path; `EOPNOTSUPP` (a PSI file while PSI is off at run time) is `None` too.

use std::fmt;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

use super::ReadError;

/// What is wrong with a file's content; [`CgroupFile::with`] adds the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Malformed(pub(super) String);

impl Malformed {
    fn new(what: impl fmt::Display) -> Self {
        Self(what.to_string())
    }
}

/// The interface files of one cgroup, read one after another into one buffer.
pub(super) struct CgroupFile<'a> {
    /// The cgroup, relative to each hierarchy's root (no leading `/`; empty for the root).
    relative: &'a Path,
    /// Each hierarchy's directory of the cgroup, opened when first used; `None` when the
    /// cgroup has none there.
    dirs: Vec<(&'a Path, Option<OwnedFd>)>,
    buf: Vec<u8>,
    /// A file or directory was missing: the cgroup may have gone in the middle of the read.
    pub(super) missed: bool,
}

impl<'a> CgroupFile<'a> {
    pub(super) fn new(relative: &'a Path) -> Self {
        Self {
            relative,
            dirs: Vec::with_capacity(8),
            // v1 `memory.stat` is about 1.2 KiB, v2's about 1.6 KiB; blkio files grow with the
            // number of devices, and the buffer with them.
            buf: vec![0; 4096],
            missed: false,
        }
    }

    /// The cgroup's path in `hierarchy`, and `name` in it: for errors only.
    fn path(&self, hierarchy: &Path, name: &str) -> PathBuf {
        let mut path = hierarchy.to_path_buf();
        if !self.relative.as_os_str().is_empty() {
            path.push(self.relative);
        }
        if !name.is_empty() {
            path.push(name);
        }
        path
    }

    /// The index in `dirs` of the cgroup's directory in `hierarchy`, opened if new.
    fn dir(&mut self, hierarchy: &'a Path) -> Result<usize, ReadError> {
        if let Some(index) = self.dirs.iter().position(|(h, _)| *h == hierarchy) {
            return Ok(index);
        }
        let path = self.path(hierarchy, "");
        let opened = rustix::fs::open(
            &path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        );
        let fd = match opened {
            Ok(fd) => Some(fd),
            Err(errno) => match classify(errno) {
                Missing::Absent | Missing::Gone => {
                    self.missed = true;
                    None
                }
                Missing::Not => return Err(io_error(path, errno)),
            },
        };
        self.dirs.push((hierarchy, fd));
        Ok(self.dirs.len() - 1)
    }

    /// Whether the cgroup's directory is in `hierarchy`. The first answer is kept for the read.
    pub(super) fn exists(&mut self, hierarchy: &'a Path) -> Result<bool, ReadError> {
        let index = self.dir(hierarchy)?;
        Ok(self.dirs[index].1.is_some())
    }

    /// Whether the cgroup's directory is in `hierarchy` now, by path.
    pub(super) fn still_exists(&self, hierarchy: &Path) -> Result<bool, ReadError> {
        let path = self.path(hierarchy, "");
        match rustix::fs::stat(&path) {
            Ok(_) => Ok(true),
            Err(errno) => match classify(errno) {
                Missing::Absent | Missing::Gone => Ok(false),
                Missing::Not => Err(io_error(path, errno)),
            },
        }
    }

    /// Reads `name` in the cgroup's directory of `hierarchy` and parses it: `None` when this
    /// kernel has no such file.
    pub(super) fn with<T>(
        &mut self,
        hierarchy: &'a Path,
        name: &str,
        parse: impl FnOnce(&[u8]) -> Result<T, Malformed>,
    ) -> Result<Option<T>, ReadError> {
        let index = self.dir(hierarchy)?;
        let Some(dir) = &self.dirs[index].1 else {
            return Ok(None);
        };
        match read(dir, name, &mut self.buf) {
            Ok(len) => parse(&self.buf[..len])
                .map(Some)
                .map_err(|Malformed(detail)| ReadError::Malformed {
                    path: self.path(hierarchy, name),
                    detail,
                }),
            Err(errno) => match classify(errno) {
                Missing::Absent => {
                    self.missed = true;
                    Ok(None)
                }
                Missing::Gone => Err(ReadError::Gone),
                Missing::Not => Err(io_error(self.path(hierarchy, name), errno)),
            },
        }
    }

    /// A file holding one unsigned number.
    pub(super) fn number(
        &mut self,
        hierarchy: &'a Path,
        name: &str,
    ) -> Result<Option<u64>, ReadError> {
        self.with(hierarchy, name, |text| number(b"value", trim(text)))
    }

    /// A v2 limit: a number, or `max` for none (`Ok(Some(None))`).
    pub(super) fn limit(
        &mut self,
        hierarchy: &'a Path,
        name: &str,
    ) -> Result<Option<Option<u64>>, ReadError> {
        self.with(hierarchy, name, |text| limit(trim(text)))
    }
}

/// Reads `name` in `dir` into `buf`, growing it when a file does not fit; the length read.
fn read(dir: &OwnedFd, name: &str, buf: &mut Vec<u8>) -> Result<usize, Errno> {
    let file = rustix::fs::openat(dir, name, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())?;
    let mut len = 0;
    loop {
        if len == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        match rustix::io::read(&file, &mut buf[len..]) {
            Ok(0) => return Ok(len),
            Ok(n) => {
                len += n;
                // A short read from a `seq_file` (or a regular file, in fixtures) is the end.
                if len < buf.len() {
                    return Ok(len);
                }
            }
            Err(Errno::INTR) => {}
            Err(errno) => return Err(errno),
        }
    }
}

fn io_error(path: PathBuf, errno: Errno) -> ReadError {
    if matches!(errno, Errno::ACCESS | Errno::PERM) {
        ReadError::PermissionDenied { path }
    } else {
        ReadError::Io {
            path,
            source: io::Error::from(errno),
        }
    }
}

/// How a failed open or read is taken.
#[derive(Debug, PartialEq, Eq)]
enum Missing {
    /// No such file (or a directory on the way): a field this kernel does not have.
    Absent,
    /// The cgroup was removed while its file was open.
    Gone,
    /// A real error.
    Not,
}

fn classify(errno: Errno) -> Missing {
    match errno {
        Errno::NOENT | Errno::NOTDIR | Errno::OPNOTSUPP => Missing::Absent,
        Errno::NODEV => Missing::Gone,
        _ => Missing::Not,
    }
}

pub(super) fn trim(bytes: &[u8]) -> &[u8] {
    bytes.trim_ascii()
}

/// An unsigned decimal; `key` names it in the error.
pub(super) fn number(key: &[u8], value: &[u8]) -> Result<u64, Malformed> {
    parse_u64(value).ok_or_else(|| {
        Malformed::new(format_args!(
            "`{}` is not a number: {:?}",
            String::from_utf8_lossy(key),
            String::from_utf8_lossy(value)
        ))
    })
}

fn parse_u64(value: &[u8]) -> Option<u64> {
    if value.is_empty() {
        return None;
    }
    value.iter().try_fold(0u64, |n, &b| {
        let digit = b.checked_sub(b'0').filter(|d| *d < 10)?;
        n.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

/// A signed decimal (v1 `cpu.cfs_quota_us`, where -1 is no quota).
pub(super) fn signed(key: &[u8], value: &[u8]) -> Result<i64, Malformed> {
    let parsed = match value.strip_prefix(b"-") {
        Some(digits) => parse_u64(digits)
            .and_then(|n| i64::try_from(n).ok())
            .map(|n| -n),
        None => parse_u64(value).and_then(|n| i64::try_from(n).ok()),
    };
    parsed.ok_or_else(|| {
        Malformed::new(format_args!(
            "`{}` is not a number: {:?}",
            String::from_utf8_lossy(key),
            String::from_utf8_lossy(value)
        ))
    })
}

/// A v2 limit value: `max` is `None`.
pub(super) fn limit(value: &[u8]) -> Result<Option<u64>, Malformed> {
    if value == b"max" {
        Ok(None)
    } else {
        number(b"limit", value).map(Some)
    }
}

/// The `key value` lines of a flat keyed file (`memory.stat`, `cpu.stat`, `memory.events`).
/// A line without a value gives an empty one, which only a key the caller knows turns into an
/// error.
pub(super) fn pairs(text: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    text.split(|&b| b == b'\n')
        .filter(|line| !line.is_empty())
        .map(|line| match line.iter().position(|&b| b == b' ') {
            Some(space) => (&line[..space], trim(&line[space + 1..])),
            None => (line, &b""[..]),
        })
}

/// The whitespace-separated fields of a line.
pub(super) fn fields(line: &[u8]) -> impl Iterator<Item = &[u8]> {
    line.split(|b| b.is_ascii_whitespace())
        .filter(|field| !field.is_empty())
}

/// A block device number, `maj:min`.
pub(super) fn device(field: &[u8]) -> Result<super::Device, Malformed> {
    let colon = field.iter().position(|&b| b == b':');
    colon
        .and_then(|colon| {
            let major = u32::try_from(parse_u64(&field[..colon])?).ok()?;
            let minor = u32::try_from(parse_u64(&field[colon + 1..])?).ok()?;
            Some(super::Device { major, minor })
        })
        .ok_or_else(|| {
            Malformed::new(format_args!(
                "not a device number: {:?}",
                String::from_utf8_lossy(field)
            ))
        })
}

/// A PSI file (`cpu.pressure`, `memory.pressure`, `io.pressure`), as
/// `Documentation/accounting/psi.rst` gives it:
///
/// ```text
/// some avg10=0.00 avg60=0.00 avg300=0.00 total=0
/// full avg10=0.00 avg60=0.00 avg300=0.00 total=0
/// ```
pub(super) fn pressure(text: &[u8]) -> Result<super::Pressure, Malformed> {
    let mut some = None;
    let mut full = None;
    for line in text.split(|&b| b == b'\n').filter(|line| !line.is_empty()) {
        let mut parts = fields(line);
        let slot = match parts.next() {
            Some(b"some") => &mut some,
            Some(b"full") => &mut full,
            _ => continue,
        };
        let mut avg10 = None;
        let mut total_us = None;
        for part in parts {
            let Some(eq) = part.iter().position(|&b| b == b'=') else {
                continue;
            };
            let (key, value) = (&part[..eq], &part[eq + 1..]);
            match key {
                b"avg10" => {
                    avg10 = Some(
                        std::str::from_utf8(value)
                            .ok()
                            .and_then(|v| v.parse::<f64>().ok())
                            .ok_or_else(|| {
                                Malformed::new(format_args!(
                                    "`avg10` is not a number: {:?}",
                                    String::from_utf8_lossy(value)
                                ))
                            })?,
                    );
                }
                b"total" => total_us = Some(number(key, value)?),
                _ => {}
            }
        }
        match (avg10, total_us) {
            (Some(avg10), Some(total_us)) => *slot = Some(super::Stall { avg10, total_us }),
            _ => {
                return Err(Malformed::new(format_args!(
                    "a line without `avg10` and `total`: {:?}",
                    String::from_utf8_lossy(line)
                )));
            }
        }
    }
    let some = some.ok_or_else(|| Malformed::new("no `some` line"))?;
    Ok(super::Pressure { some, full })
}

/// How many CPUs a cpuset list (`0-3,8,10-11`) names; `None` for an empty list.
pub(super) fn cpu_count(text: &[u8]) -> Result<Option<u32>, Malformed> {
    let text = trim(text);
    if text.is_empty() {
        return Ok(None);
    }
    let mut count = 0u32;
    for range in text.split(|&b| b == b',') {
        let bad = || {
            Malformed::new(format_args!(
                "not a CPU list: {:?}",
                String::from_utf8_lossy(text)
            ))
        };
        let (first, last) = match range.iter().position(|&b| b == b'-') {
            Some(dash) => (parse_u64(&range[..dash]), parse_u64(&range[dash + 1..])),
            None => (parse_u64(range), parse_u64(range)),
        };
        let (Some(first), Some(last)) = (first, last) else {
            return Err(bad());
        };
        let span = last.checked_sub(first).ok_or_else(bad)?;
        count = u32::try_from(span + 1)
            .ok()
            .and_then(|n| count.checked_add(n))
            .ok_or_else(bad)?;
    }
    Ok(Some(count))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_parsed_from_bytes_and_junk_is_named() {
        assert_eq!(number(b"k", b"0"), Ok(0));
        assert_eq!(number(b"k", b"18446744073709551615"), Ok(u64::MAX));
        assert!(number(b"k", b"18446744073709551616").is_err());
        assert!(number(b"k", b"").is_err());
        assert!(number(b"k", b"12k").is_err());
        assert_eq!(signed(b"k", b"-1"), Ok(-1));
        assert_eq!(signed(b"k", b"50000"), Ok(50_000));
        assert_eq!(limit(b"max"), Ok(None));
        assert_eq!(limit(b"67108864"), Ok(Some(67_108_864)));
        let Malformed(detail) = number(b"anon", b"lots").unwrap_err();
        assert_eq!(detail, "`anon` is not a number: \"lots\"");
    }

    #[test]
    fn cpu_lists_are_counted() {
        assert_eq!(cpu_count(b"0-3,8,10-11\n"), Ok(Some(7)));
        assert_eq!(cpu_count(b"0\n"), Ok(Some(1)));
        assert_eq!(cpu_count(b"\n"), Ok(None));
        assert!(cpu_count(b"3-1").is_err());
    }

    #[test]
    fn a_psi_file_without_full_has_only_some() {
        // `cpu.pressure` before 5.13 has no `full` line.
        let psi = pressure(b"some avg10=1.50 avg60=0.20 avg300=0.00 total=123456\n").unwrap();
        assert_eq!(psi.some.avg10, 1.5);
        assert_eq!(psi.some.total_us, 123_456);
        assert_eq!(psi.full, None);
        assert!(pressure(b"some avg10=x total=1\n").is_err());
        assert!(pressure(b"").is_err());
    }

    #[test]
    fn errors_reading_a_file_map_to_absent_gone_or_real() {
        for (errno, expected) in [
            (Errno::NOENT, Missing::Absent),
            (Errno::OPNOTSUPP, Missing::Absent),
            (Errno::NODEV, Missing::Gone),
            (Errno::ACCESS, Missing::Not),
            (Errno::IO, Missing::Not),
        ] {
            assert_eq!(classify(errno), expected, "{errno}");
        }
    }

    #[test]
    fn permission_denied_names_the_path() {
        let file = CgroupFile::new(Path::new("docker/abc"));
        let path = file.path(Path::new("/sys/fs/cgroup/memory"), "memory.stat");
        let error = io_error(path, Errno::ACCESS);
        assert!(
            matches!(&error, ReadError::PermissionDenied { path }
                if path == Path::new("/sys/fs/cgroup/memory/docker/abc/memory.stat")),
            "{error:?}"
        );
        assert!(matches!(
            io_error(PathBuf::new(), Errno::IO),
            ReadError::Io { .. }
        ));
    }

    #[test]
    fn files_larger_than_the_buffer_are_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let text: String = (0..2000).map(|i| format!("8:{i} Read {i}\n")).collect();
        assert!(text.len() > 4096 * 4);
        std::fs::write(dir.path().join("blkio.throttle.io_service_bytes"), &text).unwrap();
        let mut file = CgroupFile::new(Path::new(""));
        let read = file
            .with(dir.path(), "blkio.throttle.io_service_bytes", |bytes| {
                Ok(bytes.to_vec())
            })
            .unwrap();
        assert_eq!(read.as_deref(), Some(text.as_bytes()));
    }
}
