//! Live plugins: the plugins directory is watched like conf.d, and a changed `<check>.wasm` is
//! loaded again and handed to the reconciliation, which runs it from each instance's next run.
//!
//! After a burst of changes settles ([`super::watch::settle`]: 50 ms quiet, at most 300 ms),
//! each `.wasm` file named in the burst is read and compiled off the async workers, with the
//! component cache as at start, so a rebuilt plugin runs within a second of being saved. A
//! file whose content did not change (a `touch`, a copy of the same build) is not compiled
//! again and changes nothing.
//!
//! A new version that does not load (a truncated copy, a component of another world, a file
//! removed) replaces nothing: the instances keep running the version they have, and the
//! problem is in `runner status` and the log, naming the file and the version still running,
//! until a good version is saved. The reconciliation decides what a load means
//! ([`super::Discovery::apply_plugin`]); this module only notices and loads.
//!
//! A file is loaded only once it is named by a change, so dropping an unrelated `.wasm` into
//! the directory costs one compilation, no more; instances of checks nobody configured are
//! never started by it.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;

use super::watch::settle;
use crate::health::{self, Reporter};
use crate::plugin::{Plugin, PluginHost};

/// A plugin file changed: what loading it gave.
pub struct PluginChange {
    pub check: String,
    pub loaded: Result<Arc<Plugin>, String>,
}

/// Watches the plugins directory until dropped.
pub(crate) struct PluginsWatcher {
    _watcher: RecommendedWatcher,
    task: JoinHandle<Option<()>>,
}

impl Drop for PluginsWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PluginsWatcher {
    /// Starts watching `dir`; each changed plugin, loaded by `host`, is sent to `out`.
    pub(crate) fn start(
        dir: PathBuf,
        host: Arc<PluginHost>,
        out: mpsc::Sender<PluginChange>,
        health: Reporter,
    ) -> notify::Result<Self> {
        let changed = Arc::new(Notify::new());
        let named: Arc<Mutex<BTreeSet<String>>> = Arc::default();
        let (wake, names) = (changed.clone(), named.clone());
        let watch_health = health.clone();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
                Ok(event) if event.kind.is_access() => {}
                Ok(event) => {
                    let checks = event.paths.iter().filter_map(|path| check_of(path));
                    lock(&names).extend(checks);
                    wake.notify_one();
                }
                Err(error) => {
                    tracing::warn!(%error, "plugins directory watch error");
                    watch_health.degraded(format!("watch error: {error}"));
                }
            })?;
        watcher.watch(&dir, RecursiveMode::NonRecursive)?;
        let task = health::spawn_task(health.clone(), reload(host, changed, named, out, health));
        Ok(Self {
            _watcher: watcher,
            task,
        })
    }
}

/// The check a plugin file is for: `<check>.wasm`.
fn check_of(path: &Path) -> Option<String> {
    if path.extension() != Some(OsStr::new("wasm")) {
        return None;
    }
    Some(path.file_stem()?.to_str()?.to_owned())
}

fn lock(names: &Mutex<BTreeSet<String>>) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
    names.lock().unwrap_or_else(|p| p.into_inner())
}

async fn reload(
    host: Arc<PluginHost>,
    changed: Arc<Notify>,
    named: Arc<Mutex<BTreeSet<String>>>,
    out: mpsc::Sender<PluginChange>,
    health: Reporter,
) {
    loop {
        settle(&changed).await;
        let checks = std::mem::take(&mut *lock(&named));
        for check in checks {
            let load = {
                let (host, check) = (host.clone(), check.clone());
                tokio::task::spawn_blocking(move || host.load(&check).map_err(|e| e.to_string()))
            };
            let loaded = match load.await {
                Ok(loaded) => loaded,
                Err(error) => Err(format!("loading stopped: {error}")),
            };
            health.ok();
            if out.send(PluginChange { check, loaded }).await.is_err() {
                return;
            }
        }
    }
}
