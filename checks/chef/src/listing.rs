//! The reports in `reports_dir`, oldest first.
//!
//! A report's place in time is the stamp in its name when it has Chef's
//! (`chef-run-report-YYYYMMDDHHMMSS.json`), else its modification time; ties go by name. Chef's
//! stamp is the client's local time without a zone, read as UTC (see `timestamp`): among Chef's
//! own files the order is right whatever the zone, and only a directory mixing them with other
//! `*.json` files can be misordered, by up to the zone's offset. Reading the name instead of the
//! file's metadata also spares a `stat` per report on every run, which adds up in a directory
//! Chef never cleans.
//!
//! Skipped: directories, names that are not UTF-8 (the key-value store keeps names as text),
//! and entries whose metadata cannot be read (a dangling symlink, or a file removed since the
//! directory was read).

use std::fs;
use std::io;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::timestamp;

/// One report file, ordered by when it was written, then by name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ReportFile {
    /// Seconds since the Unix epoch: Chef's stamp, or the modification time.
    pub written: i64,
    pub name: String,
}

/// Every `*.json` file in `dir`, oldest first.
pub fn list(dir: &Path) -> io::Result<Vec<ReportFile>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if !name.ends_with(".json") {
            continue;
        }
        let is_file = match entry.file_type() {
            Ok(kind) if kind.is_symlink() => fs::metadata(entry.path()).is_ok_and(|m| m.is_file()),
            Ok(kind) => kind.is_file(),
            Err(_) => false,
        };
        if !is_file {
            continue;
        }
        let written = match chef_stamp(&name) {
            Some(written) => written,
            None => match fs::metadata(entry.path()).and_then(|m| m.modified()) {
                Ok(modified) => unix_seconds(modified),
                Err(_) => continue,
            },
        };
        files.push(ReportFile { written, name });
    }
    files.sort_unstable();
    Ok(files)
}

/// The time in a `chef-run-report-YYYYMMDDHHMMSS.json` name.
pub fn chef_stamp(name: &str) -> Option<i64> {
    let stamp = name
        .strip_prefix("chef-run-report-")?
        .strip_suffix(".json")?;
    timestamp::parse_compact_stamp(stamp)
}

/// Seconds since the Unix epoch, negative before it.
pub fn unix_seconds(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_secs()).map_or(i64::MIN, |s| -s),
    }
}

/// Why `reports_dir` cannot be listed, and how to fix it.
pub fn unreadable_dir(dir: &Path, error: &io::Error) -> String {
    let dir = dir.display();
    let mut message = format!(
        "cannot read `reports_dir` {dir}: {error}. The check sees only the directories its \
         instance is granted: add `allowed_paths: [{dir}]` (or a parent directory) to the \
         instance, and check that `reports_dir` is the `path` of Chef's json_file handler"
    );
    if error.kind() == io::ErrorKind::PermissionDenied {
        message.push_str(
            ". The runner's user must also be allowed to read it: Chef creates it with mode 0700",
        );
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chef_report_names_carry_their_time() {
        assert_eq!(
            chef_stamp("chef-run-report-20261120100000.json"),
            Some(1_795_168_800)
        );
        assert_eq!(chef_stamp("chef-run-report-20261120100000.json.tmp"), None);
        assert_eq!(chef_stamp("chef-run-report-latest.json"), None);
        assert_eq!(chef_stamp("chef-run-report-20261320100000.json"), None);
        assert_eq!(chef_stamp("failed-run-data.json"), None);
    }
}
