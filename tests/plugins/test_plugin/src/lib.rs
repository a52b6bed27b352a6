//! A check whose behaviour its instance config picks with `mode`, to test the runner's limits.

use kennel_sdk::{
    AlertType, Check, Ctx, Event, HttpRequest, Level, Metric, MetricType, NO_TAGS, Priority,
    Status, export_check,
};
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
    /// For `remember`: panic after updating the store.
    #[serde(default)]
    crash: bool,
    /// For `sql`: the statement to run.
    #[serde(default)]
    statement: String,
    /// For `read`: the file to read.
    #[serde(default)]
    file: String,
    /// For `chatty`: how many log lines each run writes.
    #[serde(default)]
    lines: u32,
    /// For `forge`: how long its error is, in bytes.
    #[serde(default)]
    error_bytes: usize,
    /// For `fuzz`: the first run's seed (each run takes the next) and the items a run submits.
    #[serde(default)]
    seed: u64,
    #[serde(default)]
    items: u32,
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
    /// Reaches for ambient authority: environment, files, a socket to `target` (host:port).
    /// Reports what it got.
    Ambient,
    /// Sleeps for an hour inside a WASI call.
    Sleep,
    /// Counts its runs in the key-value store and submits the count.
    Remember,
    /// Runs `statement` and submits the first column of each row as `test.sql.value`.
    Sql,
    /// Reads `file` and submits its length as `test.file.bytes`.
    Read,
    /// Tries to forge the runner's log lines: logs, names a metric and fails with text holding
    /// newlines and escape sequences that read as lines of the runner's own, the error padded
    /// to `error_bytes`.
    Forge,
    /// Writes `lines` log lines of about 1 KiB each, then submits `test.chatty.lines`.
    Chatty,
    /// Submits `items` pseudo-random items drawn to trip the host up (metrics of every type,
    /// service checks, events, log lines; hostile names, tags, hosts, texts and values, some
    /// past the host's caps), from a seed that changes every run, then `test.fuzz.runs`.
    Fuzz,
}

/// What `forge` puts after a newline: a line as the runner would log it.
const FORGED: &str =
    "2026-01-01T00:00:00.000000Z ERROR runner::forwarder: FORGED-LINE all endpoints down";

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
                let socket = std::net::TcpStream::connect(config.target.as_str()).is_ok();
                let flag = |ok: bool| if ok { 1.0 } else { 0.0 };
                cx.gauge("test.ambient.env_vars", env as f64, NO_TAGS);
                cx.gauge("test.ambient.files", flag(files), NO_TAGS);
                cx.gauge("test.ambient.socket", flag(socket), NO_TAGS);
                Ok(())
            }
            Mode::Sleep => {
                std::thread::sleep(std::time::Duration::from_secs(3600));
                Ok(())
            }
            Mode::Remember => {
                let count = cx
                    .kv_get("runs")
                    .and_then(|runs| runs.parse::<u64>().ok())
                    .unwrap_or(0)
                    + 1;
                cx.kv_set("runs", &count.to_string())?;
                cx.gauge("test.runs", count as f64, NO_TAGS);
                if config.crash {
                    panic!("crashing after counting run {count}");
                }
                Ok(())
            }
            Mode::Sql => {
                let rows = cx.sql(&config.statement)?;
                for row in &rows.rows {
                    let value = row.first().and_then(|v| v.as_f64()).unwrap_or(f64::NAN);
                    cx.gauge("test.sql.value", value, NO_TAGS);
                }
                Ok(())
            }
            Mode::Read => {
                let bytes = std::fs::read(&config.file)
                    .map_err(|e| format!("cannot read {}: {e}", config.file))?;
                cx.gauge("test.file.bytes", bytes.len() as f64, NO_TAGS);
                Ok(())
            }
            Mode::Forge => {
                let forged = format!("innocent\n{FORGED}\r\n\u{1b}[2K{FORGED}");
                cx.log(Level::Info, &forged);
                cx.log(Level::Error, &forged);
                cx.warn(&forged);
                cx.gauge(&format!("test.forge\n{FORGED}"), f64::NAN, NO_TAGS);
                let mut error = format!("failed\n{FORGED}\n");
                while error.len() < config.error_bytes {
                    error.push_str("padding-padding\n");
                }
                Err(error.into())
            }
            Mode::Chatty => {
                let line = "chatty ".repeat(150);
                for i in 0..config.lines {
                    cx.log(Level::Info, &format!("line {i}: {line}"));
                }
                cx.gauge("test.chatty.lines", f64::from(config.lines), NO_TAGS);
                Ok(())
            }
            Mode::Fuzz => {
                let run = cx
                    .kv_get("runs")
                    .and_then(|runs| runs.parse::<u64>().ok())
                    .unwrap_or(0)
                    + 1;
                cx.kv_set("runs", &run.to_string())?;
                let mut rng = Rng::new(config.seed.wrapping_add(run));
                for _ in 0..config.items {
                    fuzz_item(cx, &mut rng);
                }
                cx.gauge("test.fuzz.runs", run as f64, NO_TAGS);
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

/// xorshift64*: enough randomness to explore, and a failure replays from its seed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// A string of hostile pieces, usually short, sometimes far past the host's caps.
    fn text(&mut self) -> String {
        const PIECES: [&str; 26] = [
            "a",
            "Z",
            "_",
            "9",
            ".",
            "-",
            ":",
            ",",
            "=",
            "\"",
            "\\",
            "\n",
            "\r\n",
            "\t",
            " ",
            "{",
            "}",
            "#",
            "|",
            "@",
            "\u{0}",
            "\u{1b}[2K",
            "é",
            "日本",
            "\u{1F600}",
            "\u{2028}",
        ];
        let len = match self.below(20) {
            0 => self.below(5000),
            1 => 0,
            _ => self.below(24),
        };
        (0..len)
            .map(|_| PIECES[self.below(PIECES.len() as u64) as usize])
            .collect()
    }

    fn tags(&mut self) -> Vec<String> {
        let n = if self.below(10) == 0 {
            self.below(300)
        } else {
            self.below(6)
        };
        (0..n).map(|_| self.text()).collect()
    }

    fn value(&mut self) -> f64 {
        match self.below(10) {
            0 => f64::NAN,
            1 => f64::INFINITY,
            2 => f64::NEG_INFINITY,
            3 => f64::MAX,
            4 => -f64::MAX,
            5 => f64::MIN_POSITIVE,
            6 => -0.0,
            _ => (self.next() % 2_000_000) as f64 / 1000.0 - 1000.0,
        }
    }
}

/// One pseudo-random item, of any kind the host takes.
fn fuzz_item(cx: &mut Ctx, rng: &mut Rng) {
    match rng.below(10) {
        0..=5 => {
            let kind = [
                MetricType::Gauge,
                MetricType::Count,
                MetricType::MonotonicCount,
                MetricType::Rate,
                MetricType::Histogram,
                MetricType::Distribution,
            ][rng.below(6) as usize];
            cx.metric(Metric {
                name: rng.text(),
                kind,
                value: rng.value(),
                tags: rng.tags(),
                hostname: match rng.below(4) {
                    0 => Some(rng.text()),
                    1 => Some(String::new()),
                    _ => None,
                },
            });
        }
        6 => {
            let status = [
                Status::Ok,
                Status::Warning,
                Status::Critical,
                Status::Unknown,
            ][rng.below(4) as usize];
            let message = rng.text();
            let name = rng.text();
            let tags = rng.tags();
            cx.service_check(&name, status, Some(&message), &tags);
        }
        7 => {
            let mut event = Event::new(rng.text(), rng.text());
            event.alert_type = [
                AlertType::Error,
                AlertType::Warning,
                AlertType::Info,
                AlertType::Success,
            ][rng.below(4) as usize];
            event.priority = [Priority::Normal, Priority::Low][rng.below(2) as usize];
            event.aggregation_key = Some(rng.text());
            event.source_type_name = Some(rng.text());
            event.tags = rng.tags();
            cx.event(event);
        }
        _ => {
            let level =
                [Level::Debug, Level::Info, Level::Warn, Level::Error][rng.below(4) as usize];
            let line = rng.text();
            cx.log(level, &line);
        }
    }
}

export_check!(TestPlugin);
