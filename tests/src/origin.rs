//! DogStatsD senders whose origin the test decides: Python processes whose cgroup the test
//! writes into a fake procfs, which origin detection reads (`<procfs>/<pid>/cgroup`) when
//! their datagrams arrive.
//!
//! The test learns a sender's pid only once the sender is running, so the sender waits for its
//! cgroup file to appear before it sends, rather than sleeping a while and hoping the test was
//! quicker.

use std::path::Path;
use std::process::{Child, Command};

/// Waits for `<argv[1]>/<own pid>/cgroup`; gives up (exit status 1) after 30 s.
const WAIT_FOR_CGROUP: &str = "\
import os, sys, time
cgroup = os.path.join(sys.argv[1], str(os.getpid()), 'cgroup')
deadline = time.monotonic() + 30
while not os.path.exists(cgroup):
    if time.monotonic() > deadline:
        sys.exit('no cgroup file appeared at ' + cgroup)
    time.sleep(0.01)
";

/// A Python process that runs `code` (with `socket` and `struct` imported) at once.
pub fn python(code: &str) -> Child {
    Command::new("python3")
        .arg("-c")
        .arg(format!("import socket, struct\n{code}"))
        .spawn()
        .expect("python3 runs")
}

/// A Python process that runs `code` (with `socket` and `struct` imported) as a member of
/// `cgroup` (the text of its `/proc/<pid>/cgroup`) in the fake procfs `procfs`: it sends only
/// once that file is in place.
pub fn python_in_cgroup(procfs: &Path, cgroup: &str, code: &str) -> Child {
    let child = Command::new("python3")
        .arg("-c")
        .arg(format!("{WAIT_FOR_CGROUP}import socket, struct\n{code}"))
        .arg(procfs)
        .spawn()
        .expect("python3 runs");
    fake_cgroup(procfs, child.id(), cgroup);
    child
}

/// Gives `pid` a cgroup file in the fake procfs `procfs`, written whole and then renamed into
/// place, so that neither the sender nor the runner sees it half-written.
fn fake_cgroup(procfs: &Path, pid: u32, cgroup: &str) {
    let dir = procfs.join(pid.to_string());
    std::fs::create_dir_all(&dir).expect("the fake procfs directory is created");
    let partial = dir.join("cgroup.partial");
    std::fs::write(&partial, cgroup).expect("the fake cgroup file is written");
    std::fs::rename(&partial, dir.join("cgroup")).expect("the fake cgroup file is renamed");
}
