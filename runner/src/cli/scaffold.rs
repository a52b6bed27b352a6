//! `runner new-check` and `runner build-check`: a check crate from nothing to a plugin the
//! runner runs, outside the Kennel repository.
//!
//! `new-check <name>` writes `<name>/`: a `Cargo.toml` depending on the sdk, `src/lib.rs` (a
//! typed config with a required and an optional key, a check that emits a metric and a
//! service check, unit tests on the sdk's test harness), `conf.yaml.example` and a
//! `.gitignore`. The check is an HTTP endpoint check, the commonest first check, and short
//! enough to read whole before changing it.
//!
//! Where the sdk comes from: it is not on crates.io, so the crate depends on it by path. By
//! default that path is `vendor/kennel/sdk` inside the new crate, where `new-check` writes the
//! sdk this runner carries (its sources and the WIT contract, `vendor/kennel/wit`, compiled
//! into the binary). That makes every runner able to scaffold, a packaged one included, with an
//! sdk whose contract is exactly the one this runner hosts; and it makes the crate whole: it
//! builds on any machine it is copied or cloned to, with nothing of Kennel installed. A crate
//! moves to a newer sdk by replacing `vendor/kennel` with the one a newer runner writes.
//! `--sdk DIR` (or `KENNEL_SDK`) depends on an sdk elsewhere instead, such as the `sdk/` of a
//! Kennel source tree being worked on, and writes no copy.
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

/// Where the sdk this runner carries is written in a new crate, and the dependency's path.
const VENDORED_SDK: &str = "vendor/kennel/sdk";

/// The sdk this runner carries, by path within `vendor/kennel`: its sources and the WIT it
/// binds to, which its `wit_bindgen::generate!` finds at `../wit`. The manifest is
/// [`SDK_MANIFEST`], made standalone by [`vendored_manifest`]. A unit test holds this list
/// equal to the sdk's files.
const SDK_FILES: [(&str, &str); 8] = [
    (
        "sdk/src/__private.rs",
        include_str!("../../../sdk/src/__private.rs"),
    ),
    (
        "sdk/src/config.rs",
        include_str!("../../../sdk/src/config.rs"),
    ),
    ("sdk/src/ctx.rs", include_str!("../../../sdk/src/ctx.rs")),
    ("sdk/src/lib.rs", include_str!("../../../sdk/src/lib.rs")),
    (
        "sdk/src/options.rs",
        include_str!("../../../sdk/src/options.rs"),
    ),
    (
        "sdk/src/testing.rs",
        include_str!("../../../sdk/src/testing.rs"),
    ),
    (
        "sdk/src/types.rs",
        include_str!("../../../sdk/src/types.rs"),
    ),
    ("wit/check.wit", include_str!("../../../wit/check.wit")),
];
const SDK_MANIFEST: &str = include_str!("../../../sdk/Cargo.toml");

/// The target check plugins are built for.
const WASM_TARGET: &str = "wasm32-wasip2";

pub(super) fn new_check(args: &NewCheckArgs) -> anyhow::Result<ExitCode> {
    let name = &args.name;
    check_name(name)?;
    let sdk = args.sdk.as_deref().map(sdk_path).transpose()?;
    let dir = args.dir.clone().unwrap_or_else(|| PathBuf::from(name));
    if dir.exists() {
        bail!(
            "{} exists already: choose another name or `--dir`",
            dir.display()
        );
    }
    let dependency = sdk.clone().unwrap_or_else(|| PathBuf::from(VENDORED_SDK));
    let mut written: Vec<(String, String)> = files(name, &dependency)
        .into_iter()
        .map(|(path, text)| (path.to_owned(), text))
        .collect();
    if sdk.is_none() {
        written.extend(vendored_sdk());
    }
    for (file, text) in written {
        let path = dir.join(file);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    let sdk = match &sdk {
        Some(sdk) => format!("the sdk in {}", sdk.display()),
        None => format!(
            "this runner's sdk (kennel-sdk {}) in vendor/kennel",
            env!("CARGO_PKG_VERSION"),
        ),
    };
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
    println!("Created the check `{name}` in {dir}, with {sdk}. Next, from here:");
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
            // A TOML basic string.
            .replace(
                "{{sdk}}",
                &sdk.display()
                    .to_string()
                    .replace('\\', "\\\\")
                    .replace('"', "\\\""),
            )
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

/// An sdk given with `--sdk` or `KENNEL_SDK`, as an absolute path.
fn sdk_path(given: &Path) -> anyhow::Result<PathBuf> {
    if !given.join("Cargo.toml").exists() {
        bail!(
            "{} is not the Kennel sdk: it has no Cargo.toml (give the `sdk` directory of a Kennel source tree, or nothing for this runner's own)",
            given.display()
        );
    }
    given
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", given.display()))
}

/// The sdk this runner carries, by path within a new crate (see the module docs).
fn vendored_sdk() -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = SDK_FILES
        .iter()
        .map(|(path, text)| (format!("vendor/kennel/{path}"), (*text).to_owned()))
        .collect();
    files.push((
        format!("{VENDORED_SDK}/Cargo.toml"),
        vendored_manifest(SDK_MANIFEST),
    ));
    files
}

/// The sdk's manifest without what it inherits from Kennel's workspace: the package's
/// version, edition, MSRV and license spelled out (this runner's own, which share them), and
/// the workspace's lints left to Kennel's CI. In a check's crate the sdk is a member of the
/// check's workspace, which has neither.
fn vendored_manifest(manifest: &str) -> String {
    let mut out = String::with_capacity(manifest.len());
    let mut in_lints = false;
    for line in manifest.lines() {
        if line.starts_with('[') {
            in_lints = line == "[lints]";
        }
        if in_lints {
            continue;
        }
        let line = match line {
            "version.workspace = true" => format!("version = \"{}\"", env!("CARGO_PKG_VERSION")),
            "edition.workspace = true" => format!("edition = \"{EDITION}\""),
            "rust-version.workspace = true" => {
                format!("rust-version = \"{}\"", env!("CARGO_PKG_RUST_VERSION"))
            }
            "license.workspace = true" => format!("license = \"{}\"", env!("CARGO_PKG_LICENSE")),
            line => line.to_owned(),
        };
        out.push_str(&line);
        out.push('\n');
    }
    out.trim_end().to_owned() + "\n"
}

/// The workspace's edition, which cargo gives no variable for; a unit test holds it equal to
/// the workspace manifest's.
const EDITION: &str = "2024";

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

    /// The copy a new crate gets is the whole sdk: every file of `sdk/src` and `wit/`, and a
    /// manifest that inherits nothing from Kennel's workspace.
    #[test]
    fn the_vendored_sdk_is_the_whole_sdk_and_stands_alone() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut on_disk: Vec<String> = ["sdk/src", "wit"]
            .iter()
            .flat_map(|dir| {
                std::fs::read_dir(root.join(dir))
                    .unwrap()
                    .map(move |entry| {
                        format!("{dir}/{}", entry.unwrap().file_name().to_string_lossy())
                    })
            })
            .collect();
        on_disk.sort();
        let mut carried: Vec<String> = SDK_FILES
            .iter()
            .map(|(path, _)| (*path).to_owned())
            .collect();
        carried.sort();
        assert_eq!(
            carried, on_disk,
            "SDK_FILES must list every file of the sdk and the WIT"
        );

        let manifest = vendored_manifest(SDK_MANIFEST);
        assert!(!manifest.contains("workspace"), "{manifest}");
        assert!(manifest.contains("name = \"kennel-sdk\""), "{manifest}");
        assert!(manifest.contains(&format!("version = \"{}\"", env!("CARGO_PKG_VERSION"))));
        let workspace = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
        assert!(
            workspace.contains(&format!("edition = \"{EDITION}\"")),
            "EDITION must be the workspace's"
        );
        for (path, _) in vendored_sdk() {
            assert!(path.starts_with("vendor/kennel/"), "{path}");
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
