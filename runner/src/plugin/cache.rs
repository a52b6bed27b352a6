//! Compiled components, cached on disk by content hash.
//!
//! Compiling a component with Cranelift takes tens of milliseconds per plugin (more for big
//! ones); loading the precompiled artifact takes a fraction of a millisecond. Artifacts are
//! keyed by the SHA-256 of the wasm and by the engine's compatibility hash (which covers the
//! wasmtime version and every compilation setting), so an upgraded runner never loads a stale
//! artifact; wasmtime also refuses incompatible artifacts itself, which then just recompile.
//!
//! Loading an artifact is `unsafe` in wasmtime because a crafted file could run arbitrary code:
//! the cache directory is created private to the runner's user (mode 0700) and only ever holds
//! files this module wrote, renamed into place whole.

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use wasmtime::Engine;
use wasmtime::component::Component;

/// A directory of precompiled components; `None` compiles every time.
pub struct ComponentCache {
    dir: Option<PathBuf>,
    engine_key: String,
}

impl ComponentCache {
    pub fn new(engine: &Engine, dir: Option<PathBuf>) -> Self {
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
    pub fn component(
        &self,
        engine: &Engine,
        wasm: &[u8],
        digest: &str,
    ) -> wasmtime::Result<Component> {
        let Some(dir) = &self.dir else {
            return Component::new(engine, wasm);
        };
        let path = dir.join(format!("{digest}-{}.cwasm", self.engine_key));
        if path.exists() {
            // SAFETY: the file was written by `store` below from `Engine::precompile_component`
            // output, in a directory only this user can write (see the module docs).
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(component) => return Ok(component),
                Err(error) => {
                    tracing::debug!(path = %path.display(), %error, "recompiling: cached plugin unusable");
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
    let mode = std::fs::metadata(dir)?.permissions().mode();
    if mode & 0o022 != 0 {
        return Err(std::io::Error::other(format!(
            "it is writable by other users (mode {:o})",
            mode & 0o777
        )));
    }
    Ok(())
}

fn store(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}
