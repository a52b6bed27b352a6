//! Live conf.d: the directory is watched (inotify, through `notify`) and reloaded whole after
//! each burst of changes.
//!
//! Any change under the directory (a file written, renamed into place, removed; a `<check>.d`
//! directory created) wakes the watcher; it waits for [`QUIET`] without further changes (an
//! editor's save is several events: a temporary file, a rename, a chmod), at most [`MAX_WAIT`],
//! then loads the directory again and hands the result to the reconciliation, which keeps
//! unchanged instances running and swaps only what changed. Reloading the whole directory
//! rather than the one file keeps the `.default` rule (a default config yields to any other
//! config of its check) right with no per-file bookkeeping; a conf.d directory is small.
//!
//! A save is in effect well within a second: [`QUIET`] plus a load.
//!
//! Missing: a polling fallback for filesystems without inotify (NFS, some FUSE mounts). There
//! the watcher starts, sees nothing, and changes need a restart, as with the Datadog Agent's
//! defaults. Likewise, when the conf.d directory itself is replaced (removed and created again,
//! a volume swapped), the watch goes with the old directory and changes need a restart.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;

use crate::config::confd::{self, Loaded, Symlinks};
use crate::health::{self, Reporter};

/// How long the directory must stay quiet before it is reloaded.
pub(crate) const QUIET: Duration = Duration::from_millis(50);
/// The longest a stream of changes delays a reload.
pub(crate) const MAX_WAIT: Duration = Duration::from_millis(300);

/// Watches a conf.d directory until dropped.
pub(crate) struct ConfdWatcher {
    _watcher: RecommendedWatcher,
    task: JoinHandle<Option<()>>,
}

impl Drop for ConfdWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ConfdWatcher {
    /// Starts watching `dir`; each reload is sent to `out`. Its state goes to `health`:
    /// degraded after a watch error or a reload that could not read the directory (what runs
    /// stays as it was), ok again after the next good reload.
    pub(crate) fn start(
        dir: PathBuf,
        symlinks: Symlinks,
        out: mpsc::Sender<Loaded>,
        health: Reporter,
    ) -> notify::Result<Self> {
        let changed = Arc::new(Notify::new());
        let wake = changed.clone();
        let watch_health = health.clone();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                match event {
                    // Reads (access events) change nothing.
                    Ok(event) if event.kind.is_access() => {}
                    Ok(_) => wake.notify_one(),
                    Err(error) => {
                        tracing::warn!(%error, "conf.d watch error: reloading to be safe");
                        watch_health.degraded(format!("watch error: {error}"));
                        wake.notify_one();
                    }
                }
            })?;
        watcher.watch(&dir, RecursiveMode::Recursive)?;
        let task = health::spawn_task(
            health.clone(),
            reload_on_change(dir, symlinks, changed, out, health),
        );
        Ok(Self {
            _watcher: watcher,
            task,
        })
    }
}

/// Waits for a change, then for its burst to end: [`QUIET`] without another, at most
/// [`MAX_WAIT`].
pub(crate) async fn settle(changed: &Notify) {
    changed.notified().await;
    let first = tokio::time::Instant::now();
    while first.elapsed() < MAX_WAIT {
        match tokio::time::timeout(QUIET, changed.notified()).await {
            Ok(()) => continue,
            Err(_) => break,
        }
    }
}

async fn reload_on_change(
    dir: PathBuf,
    symlinks: Symlinks,
    changed: Arc<Notify>,
    out: mpsc::Sender<Loaded>,
    health: Reporter,
) {
    loop {
        settle(&changed).await;
        let loaded = {
            let dir = dir.clone();
            tokio::task::spawn_blocking(move || confd::load_dir(&dir, symlinks)).await
        };
        match loaded {
            Ok(Ok(loaded)) => {
                health.ok();
                tracing::info!(
                    configs = loaded.configs.len(),
                    errors = loaded.errors.len(),
                    "conf.d changed: reloaded"
                );
                if out.send(loaded).await.is_err() {
                    return;
                }
            }
            Ok(Err(error)) => {
                tracing::error!(dir = %dir.display(), %error, "cannot read the conf.d directory: what runs stays as it was");
                health.degraded(format!(
                    "cannot read {}: what runs stays as it was ({error})",
                    dir.display()
                ));
            }
            Err(error) => {
                tracing::error!(%error, "conf.d reload failed");
                health.degraded(format!("reload failed: {error}"));
            }
        }
    }
}
