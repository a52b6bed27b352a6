//! The `kv` capability: a small key-value store per instance, kept across runs and restarts.
//!
//! Each instance's store is one JSON file, `<plugins.state_path>/<instance id>.json`, written
//! whole to a temporary file and renamed into place, so a crash mid-write leaves the previous
//! version. A run works on a copy; the copy replaces the store only when the run did not trap,
//! so a crashed run's half-done bookkeeping is never saved (the same rule as its output, which
//! is dropped too). Stores are cached in memory after their first read.
//!
//! Limits keep a plugin from turning the store into a disk-filler: [`MAX_KEYS`] keys of at most
//! [`MAX_KEY_LEN`] bytes, and [`MAX_BYTES`] of keys and values in all. Past them `set` fails
//! and the plugin decides what to do.
//!
//! The store belongs to the instance id, which is a digest of its configuration: an instance
//! whose configuration changes starts with an empty store.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

pub(crate) const MAX_KEYS: usize = 1_000;
pub(crate) const MAX_KEY_LEN: usize = 256;
pub(crate) const MAX_BYTES: usize = 1 << 20;

pub(crate) type Store = BTreeMap<String, String>;

/// Every instance's store.
pub(crate) struct KvStores {
    dir: Option<PathBuf>,
    /// Write changes back to `dir`; when false, stores are read from it but changes stay in
    /// memory (`runner test-check` must not consume what the running runner has yet to see).
    persist: bool,
    cache: Mutex<HashMap<String, Arc<Store>>>,
}

impl KvStores {
    /// Stores kept under `dir`, or in memory only (lost at exit) when `None`.
    pub(crate) fn new(dir: Option<PathBuf>) -> Self {
        let dir = dir.and_then(|dir| match std::fs::create_dir_all(&dir) {
            Ok(()) => Some(dir),
            Err(error) => {
                tracing::warn!(path = %dir.display(), %error, "plugin state will not survive a restart: cannot create its directory");
                None
            }
        });
        Self {
            dir,
            persist: true,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Keeps changes in memory from now on, reading stores from disk still.
    pub(crate) fn read_only(&mut self) {
        self.persist = false;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Store>>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn path(&self, instance_id: &str) -> Option<PathBuf> {
        self.dir
            .as_ref()
            .map(|dir| dir.join(format!("{instance_id}.json")))
    }

    /// The instance's store as the last successful run left it.
    pub(crate) fn load(&self, instance_id: &str) -> Arc<Store> {
        if let Some(store) = self.lock().get(instance_id) {
            return store.clone();
        }
        let store = match self.path(instance_id) {
            Some(path) => match std::fs::read(&path) {
                Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|error| {
                    tracing::warn!(path = %path.display(), %error, "unreadable plugin state: starting empty");
                    Store::new()
                }),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => Store::new(),
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "unreadable plugin state: starting empty");
                    Store::new()
                }
            },
            None => Store::new(),
        };
        let store = Arc::new(store);
        self.lock().insert(instance_id.to_owned(), store.clone());
        store
    }

    /// Replaces the instance's store.
    pub(crate) fn save(&self, instance_id: &str, store: Store) {
        if self.persist
            && let Some(path) = self.path(instance_id)
            && let Err(error) = write_atomically(&path, &store)
        {
            tracing::warn!(path = %path.display(), %error, "cannot save plugin state");
        }
        self.lock().insert(instance_id.to_owned(), Arc::new(store));
    }
}

fn write_atomically(path: &std::path::Path, store: &Store) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(&serde_json::to_vec(store)?)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// A run's working copy of its store.
pub(crate) struct RunStore {
    pub(crate) store: Store,
    pub(crate) changed: bool,
    bytes: usize,
}

impl RunStore {
    pub(crate) fn new(store: &Store) -> Self {
        Self {
            bytes: store.iter().map(|(k, v)| k.len() + v.len()).sum(),
            store: store.clone(),
            changed: false,
        }
    }

    pub(crate) fn set(&mut self, key: String, value: String) -> Result<(), String> {
        if key.is_empty() || key.len() > MAX_KEY_LEN {
            return Err(format!("keys are 1 to {MAX_KEY_LEN} bytes long"));
        }
        let replaced = self.store.get(&key).map_or(0, |old| key.len() + old.len());
        let bytes = self.bytes - replaced + key.len() + value.len();
        if bytes > MAX_BYTES {
            return Err(format!(
                "the store would hold {bytes} bytes, past its limit of {MAX_BYTES}"
            ));
        }
        if replaced == 0 && self.store.len() >= MAX_KEYS {
            return Err(format!(
                "the store holds {MAX_KEYS} keys already, its limit"
            ));
        }
        self.bytes = bytes;
        self.store.insert(key, value);
        self.changed = true;
        Ok(())
    }

    pub(crate) fn delete(&mut self, key: &str) {
        if let Some(old) = self.store.remove(key) {
            self.bytes -= key.len() + old.len();
            self.changed = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_survive_a_new_instance_of_the_host() {
        let dir = std::env::temp_dir().join(format!("kennel-kv-test-{}", std::process::id()));
        let stores = KvStores::new(Some(dir.clone()));
        let mut run = RunStore::new(&stores.load("c:1"));
        run.set("a".into(), "1".into()).unwrap();
        stores.save("c:1", run.store);
        let again = KvStores::new(Some(dir.clone()));
        assert_eq!(again.load("c:1").get("a").map(String::as_str), Some("1"));
        assert!(again.load("c:2").is_empty());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn limits_are_enforced() {
        let mut run = RunStore::new(&Store::new());
        assert!(run.set(String::new(), "x".into()).is_err());
        assert!(run.set("k".repeat(MAX_KEY_LEN + 1), "x".into()).is_err());
        assert!(run.set("big".into(), "x".repeat(MAX_BYTES)).is_err());
        for i in 0..MAX_KEYS {
            run.set(format!("k{i}"), String::new()).unwrap();
        }
        assert!(run.set("one-more".into(), String::new()).is_err());
        run.set("k1".into(), "replacing is fine".into()).unwrap();
        run.delete("k2");
        run.set("one-more".into(), String::new()).unwrap();
    }
}
