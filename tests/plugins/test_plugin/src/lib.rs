//! A check whose behaviour its instance config picks with `mode`, to test the runner's limits.

use kennel_sdk::{Check, Ctx, HttpRequest, NO_TAGS, Status, export_check};
use serde::Deserialize;

#[derive(Deserialize)]
pub struct Config {
    mode: Mode,
    /// For `http`: the URL to fetch. Not called `url`, which would grant its host implicitly.
    #[serde(default)]
    target: String,
    /// For `count`: the value submitted as a rate and a monotonic count.
    #[serde(default)]
    value: f64,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum Mode {
    /// One gauge, one service check: the cheapest possible run.
    Ok,
    /// Returns an error after submitting a service check.
    Fail,
    Panic,
    /// Never returns.
    Loop,
    /// Allocates until the memory cap stops it.
    Alloc,
    /// Submits metrics until the item cap stops it.
    Flood,
    /// Fetches `target` and reports the outcome.
    Http,
    /// Submits `value` as a rate and as a monotonic count.
    Count,
    /// Submits a non-finite value and an empty name.
    BadValues,
    /// Reaches for ambient authority: environment, files, sockets. Reports what it got.
    Ambient,
}

pub struct TestPlugin;

impl Check for TestPlugin {
    type Config = Config;

    fn run(cx: &mut Ctx, config: Config) -> kennel_sdk::Result {
        match config.mode {
            Mode::Ok => {
                cx.gauge("test.ok", 1.0, &["mode:ok"]);
                cx.service_check("test.can_run", Status::Ok, None, &["mode:ok"]);
                Ok(())
            }
            Mode::Fail => {
                cx.service_check(
                    "test.can_run",
                    Status::Critical,
                    Some("asked to fail"),
                    &["mode:fail"],
                );
                Err("asked to fail".into())
            }
            Mode::Panic => panic!("the test plugin was asked to panic"),
            Mode::Loop => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            Mode::Alloc => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            Mode::Flood => {
                for i in 0u64.. {
                    cx.gauge("test.flood", i as f64, &["mode:flood"]);
                }
                Ok(())
            }
            Mode::Http => {
                let response = cx.http(HttpRequest::get(&config.target).timeout_ms(2_000))?;
                cx.gauge(
                    "test.http.status",
                    f64::from(response.status),
                    &["mode:http"],
                );
                Ok(())
            }
            Mode::Count => {
                cx.rate("test.rate", config.value, &["mode:count"]);
                cx.monotonic_count("test.monotonic", config.value, &["mode:count"]);
                Ok(())
            }
            Mode::Ambient => {
                let env = std::env::vars().count();
                let files = std::fs::read_dir("/").is_ok() || std::fs::read("/etc/passwd").is_ok();
                let socket = std::net::TcpStream::connect("127.0.0.1:22").is_ok();
                let flag = |ok: bool| if ok { 1.0 } else { 0.0 };
                cx.gauge("test.ambient.env_vars", env as f64, NO_TAGS);
                cx.gauge("test.ambient.files", flag(files), NO_TAGS);
                cx.gauge("test.ambient.socket", flag(socket), NO_TAGS);
                Ok(())
            }
            Mode::BadValues => {
                cx.gauge("test.nan", f64::NAN, &["mode:bad"]);
                cx.gauge("", 1.0, &["mode:bad"]);
                cx.gauge("test.fine", 1.0, &["mode:bad"]);
                Ok(())
            }
        }
    }
}

export_check!(TestPlugin);
