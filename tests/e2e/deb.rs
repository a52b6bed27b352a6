//! The Debian package (`make deb`), installed with `dpkg -i` in a chroot of a clean Debian 12
//! root (debootstrap's minbase with systemd, made once by `tests/prepare-machine`): its files
//! where the README says, its user, its unit enabled and accepted by `systemd-analyze verify`
//! in that root, and the
//! installed runner started as the unit starts it (as `kennel`, no flags, from the packaged
//! config) answering `/health` and `status`.
//!
//! There is no systemd running here, so what the unit's `StateDirectory=`, `CacheDirectory=`
//! and `RuntimeDirectory=` would create is created by hand, as systemd does it (owned by the
//! unit's user); the runner runs in its own network and mount namespaces, so the packaged
//! ports (5010, 9125, 8125) cannot meet another test's, and its `/proc` goes with them.

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use kennel_tests::repo_root;

/// Where `tests/prepare-machine` keeps the clean root.
const CLEAN_ROOT: &str = "/var/cache/kennel-tests/debian-bookworm";

/// The package `make deb` built.
fn package() -> PathBuf {
    let dir = repo_root().join("target/debian");
    let mut debs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}: run `make deb` (make test does)", dir.display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("kennel_") && n.ends_with(".deb"))
        })
        .collect();
    debs.sort_by_key(|path| std::fs::metadata(path).and_then(|m| m.modified()).ok());
    debs.pop()
        .unwrap_or_else(|| panic!("no kennel_*.deb in {}: run `make deb`", dir.display()))
}

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"))
}

fn succeeds(program: &str, args: &[&str]) -> String {
    let out = run(program, args);
    assert!(
        out.status.success(),
        "{program} {}: {}\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The runner started as the unit starts it, killed when dropped.
struct Service(Child);

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `kennel-runner <args>` as `kennel` in the service's namespaces and root.
fn in_service(service: &Service, root: &Path, args: &[&str]) -> Output {
    let pid = service.0.id().to_string();
    let root = root.to_str().expect("a UTF-8 path");
    let mut all = vec![
        "-t",
        &pid,
        "-n",
        "-m",
        "chroot",
        "--userspec=kennel:kennel",
        root,
        "/usr/bin/kennel-runner",
    ];
    all.extend_from_slice(args);
    run("nsenter", &all)
}

#[test]
fn the_debian_package_installs_into_a_clean_root_and_its_service_answers_health() {
    assert!(
        Path::new(CLEAN_ROOT).join("lib/systemd/systemd").exists(),
        "no clean Debian root at {CLEAN_ROOT}: tests/prepare-machine (run by `make test`) makes it"
    );
    let deb = package();
    let scratch = tempfile::tempdir().expect("temp dir");
    let root = scratch.path().join("root");
    succeeds("cp", &["-a", CLEAN_ROOT, root.to_str().unwrap()]);
    std::fs::copy(&deb, root.join("tmp/kennel.deb")).unwrap();

    let installed = succeeds(
        "chroot",
        &[root.to_str().unwrap(), "dpkg", "-i", "/tmp/kennel.deb"],
    );
    assert!(installed.contains("Setting up kennel"), "{installed}");
    let status = succeeds("chroot", &[root.to_str().unwrap(), "dpkg", "-s", "kennel"]);
    assert!(status.contains("Status: install ok installed"), "{status}");

    // The layout.
    let mode = |path: &str| {
        std::fs::metadata(root.join(path))
            .unwrap_or_else(|e| panic!("/{path}: {e}"))
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(mode("usr/bin/kennel-runner"), 0o755);
    for plugin in ["chef", "http_check", "postgres"] {
        assert_eq!(
            mode(&format!("usr/lib/kennel/plugins/{plugin}.wasm")),
            0o644
        );
    }
    assert!(root.join("etc/kennel/conf.d").is_dir());

    // The packaged runner scaffolds a check whose crate carries the sdk, with no Kennel source
    // tree anywhere on the machine.
    let created = succeeds(
        "chroot",
        &[
            root.to_str().unwrap(),
            "/usr/bin/kennel-runner",
            "new-check",
            "mine",
            "--dir",
            "/tmp/mine",
        ],
    );
    assert!(created.contains("this runner's sdk"), "{created}");
    for file in [
        "Cargo.toml",
        "src/lib.rs",
        "vendor/kennel/sdk/src/lib.rs",
        "vendor/kennel/wit/check.wit",
    ] {
        assert!(root.join("tmp/mine").join(file).exists(), "{file}");
    }
    assert_eq!(
        mode("etc/kennel/kennel.yaml"),
        0o640,
        "it may hold the API key"
    );
    assert_eq!(mode("etc/default/kennel"), 0o600);
    let unit = [
        "lib/systemd/system/kennel.service",
        "usr/lib/systemd/system/kennel.service",
    ]
    .into_iter()
    .find(|path| root.join(path).exists())
    .expect("the unit is installed");
    assert!(
        root.join("etc/systemd/system/multi-user.target.wants/kennel.service")
            .symlink_metadata()
            .is_ok(),
        "the unit is enabled"
    );
    let conffiles =
        std::fs::read_to_string(root.join("var/lib/dpkg/info/kennel.conffiles")).unwrap();
    for file in ["/etc/kennel/kennel.yaml", "/etc/default/kennel"] {
        assert!(
            conffiles.contains(file),
            "{file} is a conffile: {conffiles}"
        );
    }

    // The user: a system account without a login, owning the config's group.
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
    let user = passwd
        .lines()
        .find(|line| line.starts_with("kennel:"))
        .unwrap_or_else(|| panic!("no kennel user: {passwd}"));
    let fields: Vec<&str> = user.split(':').collect();
    let uid: u32 = fields[2].parse().unwrap();
    let gid: u32 = fields[3].parse().unwrap();
    assert!(uid < 1000, "a system user: {user}");
    assert_eq!(fields[6], "/usr/sbin/nologin", "{user}");
    let config = std::fs::metadata(root.join("etc/kennel/kennel.yaml")).unwrap();
    assert_eq!((config.uid(), config.gid()), (0, gid));

    // The unit, as systemd reads it: its keys, and its ExecStart in the installed root.
    let verify = run(
        "systemd-analyze",
        &[
            "verify",
            &format!("--root={}", root.display()),
            &format!("/{unit}"),
        ],
    );
    let said = String::from_utf8_lossy(&verify.stderr);
    assert!(verify.status.success(), "systemd-analyze verify: {said}");
    assert!(
        !said.contains("kennel.service:"),
        "systemd-analyze has remarks on the unit: {said}"
    );

    // What systemd would create for the unit's directories.
    for dir in ["run/kennel", "var/lib/kennel", "var/cache/kennel"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
        std::os::unix::fs::chown(root.join(dir), Some(uid), Some(gid)).unwrap();
    }
    let script = format!(
        "ip link set lo up && mount -t proc proc {root}/proc && exec chroot --userspec=kennel:kennel {root} /usr/bin/kennel-runner run",
        root = root.display()
    );
    let log = std::fs::File::create(scratch.path().join("runner.log")).unwrap();
    let service = Service(
        Command::new("unshare")
            .args(["--net", "--mount", "--propagation", "private", "sh", "-c"])
            .arg(&script)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("unshare runs"),
    );
    let healthy = kennel_tests::wait::until(
        Duration::from_secs(30),
        || in_service(&service, &root, &["health"]),
        |out| out.status.success(),
    );
    let log = || std::fs::read_to_string(scratch.path().join("runner.log")).unwrap_or_default();
    assert!(
        healthy.status.success(),
        "the installed runner never answered /health: {}\n{}",
        String::from_utf8_lossy(&healthy.stderr),
        log()
    );
    let health: serde_json::Value =
        serde_json::from_slice(&healthy.stdout).expect("/health answers JSON");
    assert_eq!(health["status"], "ok", "{health}");

    let status = in_service(&service, &root, &["status"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{text}");
    assert!(text.contains("conf.d: /etc/kennel/conf.d"), "{text}");
    assert!(text.contains("dogstatsd:uds"), "{text}");
    assert!(
        root.join("run/kennel/dsd.socket").exists(),
        "the DogStatsD socket is where the packaged config puts it: {}",
        log()
    );
    assert!(
        !log().contains("ERROR"),
        "the packaged config starts without errors: {}",
        log()
    );
}
