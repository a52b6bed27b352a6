//! What a plugin says, as the runner's log and status show it.
//!
//! Every string a plugin hands the host that ends up in a log line or in `/status` (its log
//! lines, its run's error, its panic message, the names in a "dropped metric" warning) is
//! written by code the operator did not write and may not trust. Three things go wrong with
//! such text, and each was seen:
//!
//! - **Forged lines.** A newline in a message ends the runner's log line and starts another
//!   that the plugin wrote whole (`... ERROR runner: forwarder down`), and terminal escape
//!   sequences rewrite what an operator sees. [`shown`] escapes every control character (and
//!   the Unicode line and paragraph separators, which some log viewers break on) as `\n`,
//!   `\u{1b}`, ..., and backslashes as `\\` so an escape cannot be faked either: one plugin
//!   string is always one piece of one line.
//! - **Huge strings.** A 900 KB run error was logged whole at every run and kept in `/status`.
//!   [`shown`] cuts at [`SHOWN_MAX`] bytes (2 KiB: a long SQL error with its query fits; a
//!   dump does not) and marks the cut with how much went, `…(+N bytes)`, so nobody mistakes
//!   the cut text for the whole.
//! - **Floods.** One instance wrote 289 MiB of log in 10 s. Each instance has a token bucket
//!   ([`LogBudget`]) that every log line its runs cause takes a token from: its plugin's log
//!   lines and the warnings the host logs about what it submitted. It refills at
//!   `plugins.log_lines_per_second` (10) up to `plugins.log_lines_burst` (50), so a chatty
//!   run still logs its first lines and an instance in a loop logs at most 10 lines of at most
//!   2 KiB a second. Lines past it are not written; the first one suppressed writes one line
//!   saying so, the next line let through says how many went, and the count is in the
//!   instance's `/status` (`log_lines_suppressed`) and in `kennel.plugin.log_lines_suppressed`
//!   per check. A bucket per instance, not per check or per process, so that one noisy
//!   instance cannot silence the others' logs.
//!
//! The line the scheduler writes for a failed run, which quotes the run's error, takes a token
//! too. What is *not* limited: a run's warnings are still kept for `/status` (at most 20 a run,
//! each cut by [`shown`]). Service check messages and event texts are data for the intake,
//! shown neither in the log nor in `/status`: they are only capped where they are submitted.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use crate::telemetry::{Counter, InternalMetric, Telemetry};

/// The most bytes of one plugin string in a log line or in `/status`, before the cut's mark.
pub(crate) const SHOWN_MAX: usize = 2048;

/// `text` as one safe piece of a log line: control characters escaped, cut at `max` bytes of
/// output with the rest counted (`…(+N bytes)`).
pub(crate) fn shown(text: &str, max: usize) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(text.len().min(max) + 16);
    for (at, c) in text.char_indices() {
        let before = out.len();
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() || c == '\u{2028}' || c == '\u{2029}' => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
        if out.len() > max {
            out.truncate(before);
            let _ = write!(out, "…(+{} bytes)", text.len() - at);
            break;
        }
    }
    out
}

/// What the log budget says about one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Write it.
    Write,
    /// Write it, after a line saying that this many lines before it were suppressed.
    WriteAfterSuppressing(u64),
    /// Do not write it; the first of a run of suppressed lines says so in a line of its own.
    Suppress { first: bool },
}

/// A token bucket over one instance's log lines.
#[derive(Debug)]
pub(crate) struct LogBudget {
    rate: f64,
    burst: f64,
    tokens: f64,
    refilled: Instant,
    /// Lines suppressed since the last one written.
    suppressing: u64,
    /// Lines suppressed since the instance was scheduled.
    pub(crate) suppressed: u64,
    counter: Counter,
}

impl LogBudget {
    fn new(rate: f64, burst: u32, counter: Counter) -> Self {
        Self {
            rate,
            burst: f64::from(burst),
            tokens: f64::from(burst),
            refilled: Instant::now(),
            suppressing: 0,
            suppressed: 0,
            counter,
        }
    }

    /// Takes a token for one line, if there is one.
    pub(crate) fn admit(&mut self) -> Admit {
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            match std::mem::take(&mut self.suppressing) {
                0 => Admit::Write,
                n => Admit::WriteAfterSuppressing(n),
            }
        } else {
            self.suppressing += 1;
            self.suppressed += 1;
            self.counter.increment(1);
            Admit::Suppress {
                first: self.suppressing == 1,
            }
        }
    }
}

/// One instance's budget, shared by its runs (which never overlap) and the host.
pub(crate) type SharedBudget = Arc<Mutex<LogBudget>>;

/// Whether a line about `instance` may be written now; writes the line saying that lines are
/// being suppressed, or were, when that is what the budget says.
pub(crate) fn admit_line(budget: &SharedBudget, check: &str, instance: &str) -> bool {
    let admit = budget
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .admit();
    match admit {
        Admit::Write => true,
        Admit::WriteAfterSuppressing(suppressed) => {
            tracing::warn!(check = %check, instance = %instance, suppressed, "log lines were suppressed: over the instance's limit");
            true
        }
        Admit::Suppress { first: true } => {
            tracing::warn!(check = %check, instance = %instance, "suppressing log lines: over the instance's limit (runner `plugins.log_lines_per_second`, `plugins.log_lines_burst`); they are counted in its status");
            false
        }
        Admit::Suppress { first: false } => false,
    }
}

/// Every instance's log budget, kept across runs.
pub(crate) struct LogBudgets {
    rate: f64,
    burst: u32,
    telemetry: Arc<Telemetry>,
    budgets: Mutex<HashMap<String, SharedBudget>>,
}

impl LogBudgets {
    pub(crate) fn new(rate: f64, burst: u32, telemetry: Arc<Telemetry>) -> Self {
        Self {
            rate,
            burst,
            telemetry,
            budgets: Mutex::new(HashMap::new()),
        }
    }

    /// Counts suppressed lines in `telemetry` from now on (budgets made before keep theirs).
    pub(crate) fn set_telemetry(&mut self, telemetry: Arc<Telemetry>) {
        self.telemetry = telemetry;
    }

    /// The budget of `instance_id`, a check of `check`, made full on first use.
    pub(crate) fn of(&self, check: &str, instance_id: &str) -> SharedBudget {
        let mut budgets = self.budgets.lock().unwrap_or_else(PoisonError::into_inner);
        budgets
            .entry(instance_id.to_owned())
            .or_insert_with(|| {
                let counter = self
                    .telemetry
                    .counter(InternalMetric::PluginLogLinesSuppressed, Some(check));
                Arc::new(Mutex::new(LogBudget::new(self.rate, self.burst, counter)))
            })
            .clone()
    }

    /// Whether a line about `instance_id`, a check of `check`, may be written now (see
    /// [`admit_line`]).
    pub(crate) fn admit_line(&self, check: &str, instance_id: &str) -> bool {
        admit_line(&self.of(check, instance_id), check, instance_id)
    }

    /// Lets go of the budget of an instance that is no longer scheduled.
    pub(crate) fn forget(&self, instance_id: &str) {
        self.budgets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(instance_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_escapes_every_line_break_and_control_character() {
        for (raw, expected) in [
            ("plain text", "plain text"),
            ("a\nERROR runner: forged", "a\\nERROR runner: forged"),
            ("cr\r\ttab", "cr\\r\\ttab"),
            ("esc\u{1b}[31mred", "esc\\u{1b}[31mred"),
            ("nul\0del\u{7f}c1\u{85}", "nul\\u{0}del\\u{7f}c1\\u{85}"),
            ("ls\u{2028}ps\u{2029}", "ls\\u{2028}ps\\u{2029}"),
            ("already \\n escaped", "already \\\\n escaped"),
            ("naïve ✓", "naïve ✓"),
        ] {
            let out = shown(raw, SHOWN_MAX);
            assert_eq!(out, expected, "{raw:?}");
            assert!(!out.chars().any(char::is_control), "{out:?}");
        }
    }

    #[test]
    fn shown_cuts_long_text_and_says_how_much_went() {
        let long = "x".repeat(900_000);
        let out = shown(&long, 100);
        assert_eq!(out, format!("{}…(+899900 bytes)", "x".repeat(100)));
        // Escapes count toward the cut, which never splits one or a character.
        let out = shown(&"é\n".repeat(100), 10);
        assert_eq!(out, "é\\né\\né…(+292 bytes)");
        assert_eq!(shown("short", 5), "short");
    }

    #[test]
    fn a_budget_lets_a_burst_through_then_suppresses_and_counts() {
        let telemetry = Telemetry::new();
        let counter = telemetry.counter(InternalMetric::PluginLogLinesSuppressed, Some("c"));
        // A rate too slow to refill a token during the test.
        let mut budget = LogBudget::new(1e-6, 3, counter.clone());
        let admitted: Vec<Admit> = (0..6).map(|_| budget.admit()).collect();
        assert_eq!(
            admitted,
            [
                Admit::Write,
                Admit::Write,
                Admit::Write,
                Admit::Suppress { first: true },
                Admit::Suppress { first: false },
                Admit::Suppress { first: false },
            ]
        );
        assert_eq!(budget.suppressed, 3);
        assert_eq!(counter.total(), 3);

        budget.tokens = 1.0;
        assert_eq!(budget.admit(), Admit::WriteAfterSuppressing(3));
        assert_eq!(budget.suppressed, 3, "the total is kept");
    }
}
