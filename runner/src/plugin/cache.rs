//! Compiled components, cached on disk by content hash.
//!
//! Compiling a component with Cranelift takes tens of milliseconds per plugin (more for big
//! ones); loading the precompiled artifact takes a fraction of a millisecond. Artifacts are
//! keyed by the SHA-256 of the wasm and by the engine's compatibility hash (which covers the
//! wasmtime version and every compilation setting), so an upgraded runner never loads a stale
//! artifact; wasmtime also refuses incompatible artifacts itself, which then just recompile.
//!
//! Loading an artifact is `unsafe` in wasmtime because a crafted file could run arbitrary code.
//! So the cache is trusted only as far as the filesystem makes it private: the directory must
//! belong to the runner's user and be writable by nobody else, and so must each artifact, or it
//! is not loaded (and the directory is not used at all). Artifacts are written to a fresh
//! temporary file and renamed into place whole, so concurrent loads never publish a torn one.

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use wasmtime::Engine;
use wasmtime::component::Component;

/// A directory of precompiled components; `None` compiles every time.
pub(crate) struct ComponentCache {
    dir: Option<PathBuf>,
    engine_key: String,
}

impl ComponentCache {
    pub(crate) fn new(engine: &Engine, dir: Option<PathBuf>) -> Self {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let dir = dir.and_then(|dir| match prepare_dir(&dir) {
            Ok(()) => Some(dir),
            Err(error) => {
                tracing::warn!(path = %dir.display(), %error, "plugin cache disabled: cannot use its directory");
                None
            }
        });
        Self {
            dir,
            engine_key: format!("{:016x}", hasher.finish()),
        }
    }

    /// The component for `wasm` (whose SHA-256 is `digest`), from the cache or compiled now.
    pub(crate) fn component(
        &self,
        engine: &Engine,
        wasm: &[u8],
        digest: &str,
    ) -> wasmtime::Result<Component> {
        let Some(dir) = &self.dir else {
            return Component::new(engine, wasm);
        };
        let path = dir.join(format!("{digest}-{}.cwasm", self.engine_key));
        if private_to_us(&path) {
            // Read, not mapped: a mapped artifact that something truncates underneath would
            // crash the runner with SIGBUS.
            match std::fs::read(&path) {
                // SAFETY: the file is private to the runner's user and was written by `store`
                // below from `Engine::precompile_component` output (see the module docs).
                Ok(bytes) => match unsafe { Component::deserialize(engine, &bytes) } {
                    Ok(component) => return Ok(component),
                    Err(error) => {
                        tracing::debug!(path = %path.display(), %error, "recompiling: cached plugin unusable");
                    }
                },
                Err(error) => {
                    tracing::debug!(path = %path.display(), %error, "recompiling: cached plugin unreadable");
                }
            }
        }
        let compiled = engine.precompile_component(wasm)?;
        if let Err(error) = store(&path, &compiled) {
            tracing::warn!(path = %path.display(), %error, "cannot cache compiled plugin");
        }
        // SAFETY: `compiled` is `precompile_component` output of this very engine.
        unsafe { Component::deserialize(engine, &compiled) }
    }
}

fn prepare_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let meta = std::fs::symlink_metadata(dir)?;
    if !meta.is_dir() {
        return Err(std::io::Error::other("it is not a directory"));
    }
    if meta.uid() != rustix::process::geteuid().as_raw() {
        return Err(std::io::Error::other(format!(
            "it belongs to user {}, not to the runner's",
            meta.uid()
        )));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(std::io::Error::other(format!(
            "it is writable by other users (mode {:o})",
            meta.mode() & 0o777
        )));
    }
    Ok(())
}

/// A regular file (not a link) of the runner's user that no one else may write.
fn private_to_us(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|meta| {
        meta.is_file()
            && meta.uid() == rustix::process::geteuid().as_raw()
            && meta.mode() & 0o022 == 0
    })
}

fn store(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut file = tempfile::NamedTempFile::new_in(dir)?;
    file.write_all(bytes)?;
    file.as_file().sync_all()?;
    file.persist(path).map_err(|e| e.error)?;
    Ok(())
}
