//! Which reports were sent, kept in the instance's key-value store so that each is sent exactly
//! once, across runs and restarts.
//!
//! Chef never deletes its reports: a node converging every 30 minutes leaves 17,000 a year, and
//! the store holds at most 1,000 keys and 1 MiB. So the store does not list the reports sent; it
//! keeps a position in the directory's order (see `listing`) and the few exceptions behind it:
//!
//! - `cursor` = `<written> <name>` of the newest report read: every report at or before it is
//!   done, except
//! - `retry:<name>` (value: its `written`), one per report at or before the cursor that could not
//!   be read (invalid, cut short, missing a field, unreadable). They are read again every run
//!   until they can be, then deleted; a key whose file is gone is deleted too. There are at
//!   most [`MAX_RETRIES`]. A name too long for a key (256 bytes) is replaced by a hash of it.
//!
//! So the store holds at most 101 keys and a few KiB, however many reports pile up.
//!
//! Exactly once: the cursor is saved before the report it passes is submitted, and a retry key
//! deleted before its report is submitted. If saving fails, the report is not submitted and the
//! run fails; if the run crashes, the runner drops both its output and its changes to the store.
//!
//! The cost: a report that appears *behind* the cursor is never read: one whose name carries an
//! older stamp than a report already read (the clock was set back), or another kind of `*.json`
//! file copied in with an old modification time. And the runner ties the store to the instance's
//! configuration, so changing the configuration starts from an empty store and reads again
//! everything in the directory that `max_report_age` allows.

use std::collections::BTreeSet;

use kennel_sdk::Ctx;

use crate::listing::ReportFile;

const CURSOR: &str = "cursor";
const RETRY: &str = "retry:";
/// The runner's longest key.
const MAX_KEY_LEN: usize = 256;
/// The most unreadable reports retried. Past them a newly unreadable report is given up on at
/// once, which keeps the store (and the warnings of every run) bounded.
pub const MAX_RETRIES: usize = 100;

pub struct Ledger {
    cursor: Option<ReportFile>,
    /// The cursor moved since it was saved.
    moved: bool,
    /// The `retry:` keys.
    retries: BTreeSet<String>,
}

impl Ledger {
    /// The ledger as the last run left it. An unreadable cursor (which only a store written by
    /// something else could hold) is dropped with a warning, so every report is read again.
    pub fn load(cx: &mut Ctx) -> Self {
        let cursor = cx.kv_get(CURSOR).and_then(|value| {
            let cursor = value
                .split_once(' ')
                .and_then(|(written, name)| {
                    Some(ReportFile {
                        written: written.parse().ok()?,
                        name: name.to_owned(),
                    })
                })
                .filter(|cursor| !cursor.name.is_empty());
            if cursor.is_none() {
                cx.warn(&format!(
                    "ignoring the unreadable `{CURSOR}` {value:?} in the key-value store: every \
                     report in `reports_dir` is read again"
                ));
            }
            cursor
        });
        let retries = cx
            .kv_keys()
            .into_iter()
            .filter(|key| key.starts_with(RETRY))
            .collect();
        Self {
            cursor,
            moved: false,
            retries,
        }
    }

    /// Deletes the retry keys of files no longer in the directory.
    pub fn prune(&mut self, cx: &mut Ctx, files: &[ReportFile]) {
        let present: BTreeSet<String> = files.iter().map(|f| retry_key(&f.name)).collect();
        let gone: Vec<String> = self.retries.difference(&present).cloned().collect();
        for key in gone {
            cx.kv_delete(&key);
            self.retries.remove(&key);
        }
    }

    /// Not read yet: past the cursor.
    pub fn is_new(&self, file: &ReportFile) -> bool {
        self.cursor.as_ref().is_none_or(|cursor| file > cursor)
    }

    /// Read before without success, to be read again.
    pub fn is_retry(&self, file: &ReportFile) -> bool {
        self.retries.contains(&retry_key(&file.name))
    }

    /// Moves the cursor to `file` (a new file, so forward); saved by [`Ledger::save`].
    pub fn advance(&mut self, file: &ReportFile) {
        self.cursor = Some(file.clone());
        self.moved = true;
    }

    /// Saves the cursor if it moved.
    pub fn save(&mut self, cx: &mut Ctx) -> Result<(), String> {
        if let (true, Some(cursor)) = (self.moved, &self.cursor) {
            let value = format!("{} {}", cursor.written, cursor.name);
            cx.kv_set(CURSOR, &value).map_err(|e| e.to_string())?;
            self.moved = false;
        }
        Ok(())
    }

    /// Marks `file` to be read again next run; `false` when [`MAX_RETRIES`] are waiting already.
    pub fn remember(&mut self, cx: &mut Ctx, file: &ReportFile) -> Result<bool, String> {
        let key = retry_key(&file.name);
        if self.retries.contains(&key) {
            return Ok(true);
        }
        if self.retries.len() >= MAX_RETRIES {
            return Ok(false);
        }
        cx.kv_set(&key, &file.written.to_string())
            .map_err(|e| e.to_string())?;
        self.retries.insert(key);
        Ok(true)
    }

    /// `file` no longer needs reading again.
    pub fn forget(&mut self, cx: &mut Ctx, file: &ReportFile) {
        let key = retry_key(&file.name);
        if self.retries.remove(&key) {
            cx.kv_delete(&key);
        }
    }
}

/// `retry:<name>`, or `retry:#<hash>` for a name too long for a key.
fn retry_key(name: &str) -> String {
    let key = format!("{RETRY}{name}");
    if key.len() <= MAX_KEY_LEN {
        key
    } else {
        format!("{RETRY}#{:016x}", fnv1a(name.as_bytes()))
    }
}

/// 64-bit FNV-1a: stable across builds, unlike the standard library's hasher.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_keys_fit_the_runner_s_key_limit() {
        assert_eq!(
            retry_key("chef-run-report-20261120100000.json"),
            "retry:chef-run-report-20261120100000.json"
        );
        let long = format!("{}.json", "r".repeat(250));
        let key = retry_key(&long);
        assert!(key.starts_with("retry:#") && key.len() == 23, "{key}");
        assert_eq!(key, retry_key(&long), "stable");
        assert_ne!(key, retry_key(&format!("{}.json", "s".repeat(250))));
    }
}
