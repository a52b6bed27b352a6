//! `runner new-check` and `runner build-check`: a check crate from nothing to a plugin the
//! runner runs, outside the Kennel repository.
//!
//! `new-check <name>` writes `<name>/`: a `Cargo.toml` depending on the sdk, `src/lib.rs` (a
//! typed config with a required and an optional key, a check that emits a metric and a
//! service check, unit tests on the sdk's test harness), `conf.yaml.example` and a
//! `.gitignore`. The check is an HTTP endpoint check, the commonest first check, and short
//! enough to read whole before changing it.
//!
//! Where the sdk comes from: it is not on crates.io, so the crate depends on it by path:
//! `--sdk`, else `KENNEL_SDK`, else the `sdk/` of the Kennel source tree this runner was built
//! from, when it is still there. Otherwise `new-check` says so and how to give one, rather
//! than write a crate that cannot build.
//!
//! `build-check [<dir>]` runs `cargo build --release --target wasm32-wasip2` in the crate and
//! installs `<name>.wasm` in the plugins directory (`--plugins`, else the runner config's
//! `plugins.path`): written to a temporary file beside it and renamed into place, so a running
//! runner, which watches the directory, never loads half a file and runs the new version from
//! the next run of each instance.
//!
//! A check's name is lower-case letters, digits and `_`, starting with a letter: it is the
//! crate's name, the library's (cargo turns `-` into `_` there, so a `-` would make the
//! plugin file's name differ from the check's) and the conf.d directory's.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context as _, bail};

use super::{BuildCheckArgs, NewCheckArgs};
use crate::config::RunnerConfig;

const CARGO_TOML: &str = include_str!("scaffold/Cargo.toml.in");
const LIB_RS: &str = include_str!("scaffold/lib.rs.in");
const CONF_EXAMPLE: &str = include_str!("scaffold/conf.yaml.example");
const GITIGNORE: &str = include_str!("scaffold/gitignore");

/// The target check plugins are built for.
const WASM_TARGET: &str = "wasm32-wasip2";

pub(super) fn new_check(args: &NewCheckArgs) -> anyhow::Result<ExitCode> {
    let name = &args.name;
    check_name(name)?;
    let sdk = sdk_path(args.sdk.as_deref())?;
    let dir = args.dir.clone().unwrap_or_else(|| PathBuf::from(name));
    if dir.exists() {
        bail!(
            "{} exists already: choose another name or `--dir`",
            dir.display()
        );
    }
    std::fs::create_dir_all(dir.join("src"))
        .with_context(|| format!("cannot create {}", dir.display()))?;
    for (file, text) in files(name, &sdk) {
        let path = dir.join(file);
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    let dir = dir.display();
    let next = [
        ("test it natively:", format!("(cd {dir} && cargo test)")),
        ("build and install it:", format!("runner build-check {dir}")),
        (
            "configure it:",
            format!(
                "mkdir -p conf.d/{name}.d && cp {dir}/conf.yaml.example conf.d/{name}.d/conf.yaml"
            ),
        ),
        ("run it once:", format!("runner test-check {name}")),
    ];
    println!("Created the check `{name}` in {dir}. Next, from here:");
    for (what, command) in next {
        println!("  {what:22}{command}");
    }
    Ok(ExitCode::SUCCESS)
}

/// The crate's files, by path within it, for the check `name` on the sdk at `sdk`.
fn files(name: &str, sdk: &Path) -> [(&'static str, String); 4] {
    let fill = |template: &str| {
        template
            .replace("{{name}}", name)
            .replace("{{type}}", &type_name(name))
            .replace("{{sdk}}", &sdk.display().to_string())
    };
    [
        ("Cargo.toml", fill(CARGO_TOML)),
        ("src/lib.rs", fill(LIB_RS)),
        ("conf.yaml.example", fill(CONF_EXAMPLE)),
        (".gitignore", GITIGNORE.to_owned()),
    ]
}

pub(super) fn build_check(args: &BuildCheckArgs) -> anyhow::Result<ExitCode> {
    let dir = args.dir.clone().unwrap_or_else(|| PathBuf::from("."));
    let manifest = dir.join("Cargo.toml");
    let name = package_name(&manifest)?;
    check_name(&name).with_context(|| format!("in {}", manifest.display()))?;
    let plugins = match &args.plugins {
        Some(plugins) => plugins.clone(),
        None => {
            RunnerConfig::load_with_env(args.config.as_deref(), std::env::vars())?
                .0
                .plugins
                .path
        }
    };

    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--target",
            WASM_TARGET,
            "--manifest-path",
        ])
        .arg(&manifest)
        .status()
        .context("cannot run cargo: is the Rust toolchain installed?")?;
    if !status.success() {
        bail!(
            "the build failed (see above); if the target is missing: rustup target add {WASM_TARGET}"
        );
    }
    let target = target_dir(&manifest)?;
    let built = target
        .join(WASM_TARGET)
        .join("release")
        .join(format!("{name}.wasm"));
    std::fs::create_dir_all(&plugins)
        .with_context(|| format!("cannot create the plugins directory {}", plugins.display()))?;
    let installed = plugins.join(format!("{name}.wasm"));
    let partial = plugins.join(format!(".{name}.wasm.partial"));
    std::fs::copy(&built, &partial)
        .with_context(|| format!("cannot copy {} to {}", built.display(), partial.display()))?;
    std::fs::rename(&partial, &installed)
        .with_context(|| format!("cannot install {}", installed.display()))?;
    println!("Installed {}", installed.display());
    Ok(ExitCode::SUCCESS)
}

/// Refuses a name that would not be one check's crate, library, plugin file and conf.d
/// directory alike (see the module docs).
fn check_name(name: &str) -> anyhow::Result<()> {
    let valid = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !valid {
        bail!(
            "invalid check name `{name}`: use lower-case letters, digits and `_`, starting with a letter (`my_service`)"
        );
    }
    Ok(())
}

/// `my_service` → `MyService`, the check's type.
fn type_name(name: &str) -> String {
    name.split('_')
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .map(|first| first.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// Where the sdk is: see the module docs.
fn sdk_path(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    let built_from = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk");
    let candidate = match (given, std::env::var_os("KENNEL_SDK")) {
        (Some(given), _) => given.to_owned(),
        (None, Some(env)) => PathBuf::from(env),
        (None, None) if built_from.join("Cargo.toml").exists() => built_from,
        (None, None) => bail!(
            "where is the Kennel sdk? Give the `sdk` directory of a Kennel source tree with `--sdk <path>` or `KENNEL_SDK`"
        ),
    };
    if !candidate.join("Cargo.toml").exists() {
        bail!(
            "{} is not the Kennel sdk: it has no Cargo.toml",
            candidate.display()
        );
    }
    candidate
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", candidate.display()))
}

/// The `[package] name` of a manifest.
fn package_name(manifest: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(manifest).with_context(|| {
        format!(
            "cannot read {}: run build-check in a check's crate, or give its directory",
            manifest.display()
        )
    })?;
    let mut in_package = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_package = line == "[package]";
        } else if in_package
            && let Some(value) = line.strip_prefix("name")
            && let Some(value) = value.trim_start().strip_prefix('=')
        {
            return Ok(value.trim().trim_matches('"').to_owned());
        }
    }
    bail!("{} has no [package] name", manifest.display())
}

/// Where cargo puts the crate's build (`cargo metadata`'s `target_directory`: `CARGO_TARGET_DIR`
/// and config files move it).
fn target_dir(manifest: &Path) -> anyhow::Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--manifest-path",
        ])
        .arg(manifest)
        .output()
        .context("cannot run cargo metadata")?;
    if !output.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let metadata: serde_json::Value =
        serde_json::from_slice(&output.stdout).context("cargo metadata printed no JSON")?;
    match metadata["target_directory"].as_str() {
        Some(dir) => Ok(PathBuf::from(dir)),
        None => bail!("cargo metadata gave no target directory"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_crate_library_file_and_directory_names_alike() {
        assert!(check_name("my_service2").is_ok());
        for bad in ["", "My", "2fast", "my-service", "../x", "a.b", "é"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        assert_eq!(type_name("my_service2"), "MyService2");
        assert_eq!(type_name("ping"), "Ping");
    }

    /// The README's "Writing a check" shows code from two places that CI compiles: what
    /// `new-check ping` writes (built and tested by the scaffold's end-to-end test) and the
    /// sdk's documentation (whose examples are doctests). Every Rust block of the README must
    /// be found in one of them, so none can drift into code that does not build.
    #[test]
    fn every_rust_block_of_the_readme_is_code_ci_compiles() {
        let readme = include_str!("../../../README.md");
        let [_, (_, lib), ..] = files("ping", Path::new("../kennel/sdk"));
        let sdk_docs: String = include_str!("../../../sdk/src/lib.rs")
            .lines()
            .filter_map(|line| line.strip_prefix("//!"))
            .map(|line| line.strip_prefix(' ').unwrap_or(line))
            .flat_map(|line| [line, "\n"])
            .collect();
        let blocks: Vec<&str> = readme
            .split("```rust\n")
            .skip(1)
            .map(|rest| &rest[..rest.find("```").expect("a closed block")])
            .collect();
        assert!(blocks.len() >= 3, "{} blocks", blocks.len());
        for block in blocks {
            assert!(
                lib.contains(block) || sdk_docs.contains(block),
                "a Rust block of the README is neither in the scaffold nor in the sdk's docs:\n{block}"
            );
        }
    }

    #[test]
    fn the_package_name_is_read_from_the_package_section() {
        let dir = tempfile::tempdir().unwrap();
        let manifest = dir.path().join("Cargo.toml");
        std::fs::write(
            &manifest,
            "[lib]\nname = \"other\"\n\n[package]\nversion = \"1\"\nname = \"ping\"\n",
        )
        .unwrap();
        assert_eq!(package_name(&manifest).unwrap(), "ping");
    }
}
