//! `system.cpu.*` from `/proc/stat`, `system.load.*` from `/proc/loadavg` and `system.uptime`
//! from `/proc/uptime` (the Agent's `cpu`, `load` and `uptime` checks).
//!
//! `/proc/stat` (proc(5)): the first line, `cpu`, sums every CPU's time in clock ticks, in the
//! columns user, nice, system, idle, iowait, irq, softirq, steal, guest, guest_nice (kernels
//! before 2.6.33 have fewer: missing ones are 0); a `cpuN` line per online CPU follows; `ctxt`
//! is the context switches since boot.

use std::path::Path;

use super::{BadLines, Files, Out, Source, parse_u64s};

const TOTAL_TAGS: &[&str] = &["core:cpu-total"];

/// The `cpu` line's columns, in the kernel's order.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct Ticks {
    user: u64,
    nice: u64,
    system: u64,
    idle: u64,
    iowait: u64,
    irq: u64,
    softirq: u64,
    steal: u64,
    guest: u64,
    guest_nice: u64,
}

impl Ticks {
    fn from_columns(c: [u64; 10]) -> Self {
        let [
            user,
            nice,
            system,
            idle,
            iowait,
            irq,
            softirq,
            steal,
            guest,
            guest_nice,
        ] = c;
        Self {
            user,
            nice,
            system,
            idle,
            iowait,
            irq,
            softirq,
            steal,
            guest,
            guest_nice,
        }
    }
}

/// What one `/proc/stat` says.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Stat {
    pub(super) total: Ticks,
    /// `cpuN` lines: the online CPUs, which the Agent counts as `num_cores`.
    pub(super) cores: u32,
    pub(super) context_switches: Option<u64>,
}

/// Parses `/proc/stat`; `Err` (line, what) when its `cpu` line is missing or malformed.
pub(super) fn parse_stat(text: &str) -> Result<Stat, (usize, String)> {
    let mut total = None;
    let mut cores = 0;
    let mut context_switches = None;
    for (index, line) in text.lines().enumerate() {
        let mut fields = line.split_ascii_whitespace();
        match fields.next() {
            Some("cpu") => {
                let mut columns = [0; 10];
                let parsed = parse_u64s(fields, &mut columns).unwrap_or(0);
                // user, nice, system and idle are in every kernel's.
                if parsed < 4 {
                    return Err((
                        index + 1,
                        "the `cpu` line has not four integer columns".to_owned(),
                    ));
                }
                total = Some(Ticks::from_columns(columns));
            }
            Some(name) if name.starts_with("cpu") => cores += 1,
            Some("ctxt") => context_switches = fields.next().and_then(|v| v.parse().ok()),
            _ => {}
        }
    }
    let total = total.ok_or_else(|| (0, "no `cpu` line".to_owned()))?;
    Ok(Stat {
        total,
        cores,
        context_switches,
    })
}

/// The Agent's percentages of the time between two readings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Percent {
    pub(super) user: f64,
    pub(super) system: f64,
    pub(super) interrupt: f64,
    pub(super) iowait: f64,
    pub(super) idle: f64,
    pub(super) stolen: f64,
    pub(super) guest: f64,
}

/// `None` when no tick passed.
pub(super) fn percent(last: &Ticks, now: &Ticks) -> Option<Percent> {
    // A column that went backwards (iowait can) counts as no time, not negative time.
    let d = |now: u64, last: u64| now.saturating_sub(last) as f64;
    let user = d(now.user, last.user) + d(now.nice, last.nice);
    let interrupt = d(now.irq, last.irq) + d(now.softirq, last.softirq);
    let system = d(now.system, last.system) + interrupt;
    let iowait = d(now.iowait, last.iowait);
    let idle = d(now.idle, last.idle);
    let stolen = d(now.steal, last.steal);
    // The Agent's total: the eight columns before guest, which `user` already includes.
    let total = user + system + iowait + idle + stolen;
    if total <= 0.0 {
        return None;
    }
    let pct = |v: f64| v * 100.0 / total;
    Some(Percent {
        user: pct(user),
        system: pct(system),
        interrupt: pct(interrupt),
        iowait: pct(iowait),
        idle: pct(idle),
        stolen: pct(stolen),
        guest: pct(d(now.guest, last.guest)),
    })
}

/// The previous reading, for the percentages.
#[derive(Debug, Default)]
pub(super) struct CpuState {
    last: Option<Ticks>,
}

impl CpuState {
    /// Reads `/proc/stat`; returns the number of CPUs, for `system.load.norm.*`.
    pub(super) fn read(
        &mut self,
        path: &Path,
        files: &mut Files<'_>,
        out: &mut Out<'_>,
        ticks_per_second: f64,
    ) -> Option<u32> {
        let parsed = parse_stat(files.read(Source::Cpu, path)?);
        let stat = match parsed {
            Ok(stat) => stat,
            Err((line, what)) => {
                files.problems.format(Source::Cpu, path, line, what);
                return None;
            }
        };
        let now = stat.total;
        if let Some(p) = self.last.as_ref().and_then(|last| percent(last, &now)) {
            out.gauge("system.cpu.user", p.user, &[]);
            out.gauge("system.cpu.system", p.system, &[]);
            out.gauge("system.cpu.interrupt", p.interrupt, &[]);
            out.gauge("system.cpu.iowait", p.iowait, &[]);
            out.gauge("system.cpu.idle", p.idle, &[]);
            out.gauge("system.cpu.stolen", p.stolen, &[]);
            out.gauge("system.cpu.guest", p.guest, &[]);
        }
        // Two reads within one tick keep the older baseline, so the next interval is whole.
        if self.last.is_none_or(|last| last != now) {
            self.last = Some(now);
        }

        let tags: Vec<String> = TOTAL_TAGS.iter().map(|t| (*t).to_owned()).collect();
        let seconds = |ticks: u64| ticks as f64 / ticks_per_second;
        for (name, ticks) in [
            ("system.cpu.user.total", now.user),
            ("system.cpu.nice.total", now.nice),
            ("system.cpu.system.total", now.system),
            ("system.cpu.idle.total", now.idle),
            ("system.cpu.iowait.total", now.iowait),
            ("system.cpu.irq.total", now.irq),
            ("system.cpu.softirq.total", now.softirq),
            ("system.cpu.steal.total", now.steal),
            ("system.cpu.guest.total", now.guest),
            ("system.cpu.guestnice.total", now.guest_nice),
        ] {
            out.gauge(name, seconds(ticks), &tags);
        }
        out.gauge("system.cpu.num_cores", f64::from(stat.cores), &[]);
        if let Some(switches) = stat.context_switches {
            out.monotonic("system.cpu.context_switches", switches as f64, &[]);
        }
        (stat.cores > 0).then_some(stat.cores)
    }
}

/// `system.load.*` from `/proc/loadavg` (`0.52 0.58 0.59 1/467 12345`), normalised by the
/// number of CPUs when `/proc/stat` gave it.
pub(super) fn read_load(path: &Path, cores: Option<u32>, files: &mut Files<'_>, out: &mut Out<'_>) {
    let Some(text) = files.read(Source::Load, path) else {
        return;
    };
    let mut loads = [0.0; 3];
    let mut fields = text.split_ascii_whitespace();
    let parsed = loads.iter_mut().all(|slot| {
        fields
            .next()
            .and_then(|f| f.parse().ok())
            .map(|v| *slot = v)
            .is_some()
    });
    if !parsed {
        let mut bad = BadLines::default();
        bad.note(0, "expected three load averages");
        bad.report(files.problems, Source::Load, path);
        return;
    }
    for (name, value) in ["system.load.1", "system.load.5", "system.load.15"]
        .into_iter()
        .zip(loads)
    {
        out.gauge(name, value, &[]);
    }
    if let Some(cores) = cores {
        let cores = f64::from(cores);
        for (name, value) in [
            "system.load.norm.1",
            "system.load.norm.5",
            "system.load.norm.15",
        ]
        .into_iter()
        .zip(loads)
        {
            out.gauge(name, value / cores, &[]);
        }
    }
}

/// `system.uptime` from `/proc/uptime` (`13133.91 7308.31`: seconds up, seconds idle).
pub(super) fn read_uptime(path: &Path, files: &mut Files<'_>, out: &mut Out<'_>) {
    let Some(text) = files.read(Source::Uptime, path) else {
        return;
    };
    match text
        .split_ascii_whitespace()
        .next()
        .and_then(|f| f.parse::<f64>().ok())
    {
        Some(seconds) => out.gauge("system.uptime", seconds, &[]),
        None => files
            .problems
            .format(Source::Uptime, path, 1, "expected seconds since boot"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A two-CPU host, as proc(5) documents the file.
    const STAT: &str = "\
cpu  1447745 192373 226362 730831 6991 0 6817 2534 0 0
cpu0 708863 95058 108401 388549 1884 0 2680 1292 0 0
cpu1 738881 97315 117960 342281 5106 0 4136 1242 0 0
intr 97284 18 9 0 0 0 0 0 0 1 0
ctxt 248172906
btime 1767000000
processes 25523
procs_running 2
procs_blocked 0
softirq 1 2 3 4 5 6 7 8 9 10 11
";

    #[test]
    fn stat_gives_the_total_the_online_cpus_and_the_context_switches() {
        let stat = parse_stat(STAT).unwrap();
        assert_eq!(
            stat.total,
            Ticks::from_columns([1447745, 192373, 226362, 730831, 6991, 0, 6817, 2534, 0, 0])
        );
        assert_eq!(stat.cores, 2);
        assert_eq!(stat.context_switches, Some(248172906));
    }

    #[test]
    fn an_old_kernels_shorter_cpu_line_has_zeros_for_the_missing_columns() {
        let stat = parse_stat("cpu 10 20 30 40 50 60 70\ncpu0 10 20 30 40 50 60 70\n").unwrap();
        assert_eq!(
            stat.total,
            Ticks::from_columns([10, 20, 30, 40, 50, 60, 70, 0, 0, 0])
        );
        assert_eq!(stat.context_switches, None);
    }

    #[test]
    fn a_stat_without_its_cpu_line_is_a_format_problem() {
        assert_eq!(parse_stat("ctxt 5\n").unwrap_err().0, 0);
        assert_eq!(parse_stat("cpu 1 2 x\n").unwrap_err().0, 1);
    }

    #[test]
    fn percentages_follow_the_agents_groupings() {
        let last = Ticks::default();
        // user 30 + nice 10, system 10 + irq 5 + softirq 5, idle 30, iowait 5, steal 5,
        // guest 8 (inside user): 100 ticks.
        let now = Ticks::from_columns([30, 10, 10, 30, 5, 5, 5, 5, 8, 0]);
        let p = percent(&last, &now).unwrap();
        assert_eq!(
            p,
            Percent {
                user: 40.0,
                system: 20.0,
                interrupt: 10.0,
                iowait: 5.0,
                idle: 30.0,
                stolen: 5.0,
                guest: 8.0,
            }
        );
        assert_eq!(p.user + p.system + p.iowait + p.idle + p.stolen, 100.0);
    }

    #[test]
    fn no_tick_gives_no_percentages_and_a_column_going_back_gives_zero() {
        let t = Ticks::from_columns([30, 10, 10, 30, 5, 5, 5, 5, 8, 0]);
        assert_eq!(percent(&t, &t), None);
        let mut now = t;
        now.idle += 10;
        now.iowait -= 2;
        let p = percent(&t, &now).unwrap();
        assert_eq!((p.idle, p.iowait), (100.0, 0.0));
    }
}
