//! What `make bench` writes into BENCHMARKS.md: the runs' table, where the CPU went (read from
//! `/proc` around each run) and the machine they ran on.

use crate::bench::{BenchReport, markdown};
use anyhow::Context;
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
};

/// The components of a bench stack, as the CPU table names them, in its column order.
const COMPONENTS: [&str; 9] = [
    "temporal dev server",
    "payflow worker",
    "no-op worker",
    "payflow API",
    "postgresql",
    "redis",
    "tansu",
    "PG/push sandbox",
    BENCH_CLIENT,
];

/// The load generator itself: it shares the machine's cores with the stack it measures.
pub const BENCH_CLIENT: &str = "bench client";

/// The bench's own processes, by the pid file `start_bg` left in the state directory.
const PID_FILES: [(&str, &str); 5] = [
    ("temporal", "temporal dev server"),
    ("worker", "payflow worker"),
    ("noop-worker", "no-op worker"),
    ("api", "payflow API"),
    ("sandbox", "PG/push sandbox"),
];

/// Shared services, by process name.
const COMMANDS: [(&str, &str); 3] = [
    ("postgres", "postgresql"),
    ("redis-server", "redis"),
    ("tansu", "tansu"),
];

/// `/proc` counts CPU time in clock ticks of USER_HZ, which Linux fixes at 100 for userspace.
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU seconds used so far by each component of the stack whose pid files are in `state`.
pub fn cpu_snapshot(state: &Path) -> BTreeMap<String, f64> {
    let pid_of = |name: &str| {
        std::fs::read_to_string(state.join(format!("{name}.pid")))
            .ok()
            .map(|p| p.trim().to_owned())
    };
    let mine: BTreeMap<String, &str> = PID_FILES
        .iter()
        .filter_map(|(file, label)| pid_of(file).map(|pid| (pid, *label)))
        .collect();
    let mut cpu = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return cpu;
    };
    for entry in entries.flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let (Ok(comm), Ok(stat)) = (
            std::fs::read_to_string(entry.path().join("comm")),
            std::fs::read_to_string(entry.path().join("stat")),
        ) else {
            continue;
        };
        let label = mine.get(&pid).copied().or_else(|| {
            COMMANDS
                .iter()
                .find(|(command, _)| *command == comm.trim())
                .map(|(_, label)| *label)
        });
        if let (Some(label), Some(seconds)) = (label, cpu_seconds(&stat)) {
            *cpu.entry(label.to_owned()).or_default() += seconds;
        }
    }
    cpu
}

/// CPU seconds (user and system) in a `/proc/<pid>/stat` line.
fn cpu_seconds(stat: &str) -> Option<f64> {
    // Fields after the command's closing parenthesis; utime and stime are the 12th and 13th.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
    Some((ticks(11)? + ticks(12)?) / TICKS_PER_SECOND)
}

/// [`cpu_snapshot`] with this process counted as the [`BENCH_CLIENT`].
pub fn cpu_snapshot_with_client(state: &Path) -> BTreeMap<String, f64> {
    let mut cpu = cpu_snapshot(state);
    if let Some(seconds) = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| cpu_seconds(&stat))
    {
        cpu.insert(BENCH_CLIENT.to_owned(), seconds);
    }
    cpu
}

/// Milliseconds of CPU per payment by component between two snapshots.
pub fn cpu_per_payment(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
    payments: usize,
) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(component, spent)| {
            let used = spent - before.get(component).unwrap_or(&0.0);
            (
                component.clone(),
                used.max(0.0) * 1000.0 / payments.max(1) as f64,
            )
        })
        .collect()
}

/// The CPU table: milliseconds per payment by component over each run's paying window (the
/// report's `cpu_ms`).
fn cpu_table(runs: &[(PathBuf, BenchReport)]) -> String {
    let mut rows = String::new();
    for (_, report) in runs {
        if report.cpu_ms.is_empty() {
            continue;
        }
        let used: Vec<f64> = COMPONENTS
            .iter()
            .map(|c| *report.cpu_ms.get(*c).unwrap_or(&0.0))
            .collect();
        let cells: Vec<String> = used.iter().map(|ms| format!("{ms:.1}")).collect();
        rows.push_str(&format!(
            "| {} | {} | {:.1} |\n",
            report.label.as_deref().unwrap_or("-"),
            cells.join(" | "),
            used.iter().sum::<f64>()
        ));
    }
    if rows.is_empty() {
        return String::new();
    }
    format!(
        "\nCPU time per payment, in milliseconds, by component, from /proc over each run's paying \
         window (the orders are created before it); the bench client shares the cores too:\n\n\
         | run | {} | total |\n| --- |{}\n{rows}",
        COMPONENTS.join(" | "),
        " ---: |".repeat(COMPONENTS.len() + 1)
    )
}

/// Each real run against the no-op run that follows it at the same concurrency (the rounds of
/// `make bench`), with the median and the pooled ratio.
pub fn ceiling_ratios(reports: &[BenchReport]) -> String {
    let mut by_concurrency: BTreeMap<usize, Vec<(f64, f64)>> = BTreeMap::new();
    for pair in reports.windows(2) {
        let (real, noop) = (&pair[0], &pair[1]);
        if !real.noop && noop.noop && real.concurrency == noop.concurrency {
            by_concurrency
                .entry(real.concurrency)
                .or_default()
                .push((real.throughput, noop.throughput));
        }
    }
    let mut s = String::new();
    for (concurrency, pairs) in by_concurrency {
        let mut ratios: Vec<f64> = pairs.iter().map(|(real, noop)| real / noop).collect();
        let listed: Vec<String> = ratios
            .iter()
            .map(|r| format!("{:.0} %", r * 100.0))
            .collect();
        ratios.sort_by(f64::total_cmp);
        let median = if ratios.len() % 2 == 1 {
            ratios[ratios.len() / 2]
        } else {
            (ratios[ratios.len() / 2 - 1] + ratios[ratios.len() / 2]) / 2.0
        };
        let (real, noop) = pairs
            .iter()
            .fold((0.0, 0.0), |(r, n), (real, noop)| (r + real, n + noop));
        s.push_str(&format!(
            "\nc{concurrency} against the no-op ceiling run right after it, round by round: {}; \
             median {:.0} %, all rounds together {:.1}/s against {:.1}/s ({:.0} %).\n",
            listed.join(", "),
            median * 100.0,
            real / pairs.len() as f64,
            noop / pairs.len() as f64,
            real / noop * 100.0
        ));
    }
    s
}

/// One line of a command's output, or `?`.
fn output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "?".to_owned())
}

/// Where and when the runs were measured.
fn machine() -> String {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, model)| model.trim().to_owned())
        .unwrap_or_else(|| "?".to_owned());
    let memory_gib = read("/proc/meminfo")
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kib| kib.parse::<u64>().ok())
        .map_or(0, |kib| kib / (1024 * 1024));
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let local_changes = output("git", &["status", "--porcelain"]);
    format!(
        "Measured {} UTC on {cores} cores ({cpu}), {memory_gib} GiB, Linux {}; commit {}{}; {}; \
         release build; each run on a fresh Temporal dev server (SQLite file, WAL, \
         synchronous=off), PostgreSQL, Redis, Tansu and payflow all on this machine.\n\n",
        chrono::Utc::now().format("%Y-%m-%d %H:%M"),
        read("/proc/sys/kernel/osrelease").trim(),
        output("git", &["rev-parse", "--short", "HEAD"]),
        if local_changes == "?" {
            ""
        } else {
            " (+ local changes)"
        },
        output("temporal", &["--version"]),
    )
}

/// Rewrites the part of `doc` between `<!-- bench:begin -->` and `<!-- bench:end -->` with the
/// machine, the runs' table and the CPU table; the rest of the file (the analysis) stays.
pub fn write(doc: &Path, reports: &[PathBuf]) -> anyhow::Result<()> {
    let mut runs = Vec::new();
    for path in reports {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        runs.push((path.clone(), serde_json::from_str::<BenchReport>(&text)?));
    }
    let results: Vec<BenchReport> = runs.iter().map(|(_, r)| r.clone()).collect();
    let section = format!(
        "{}{}{}{}",
        machine(),
        markdown(&results),
        ceiling_ratios(&results),
        cpu_table(&runs)
    );
    let (begin, end) = ("<!-- bench:begin -->", "<!-- bench:end -->");
    let old = std::fs::read_to_string(doc)
        .unwrap_or_else(|_| format!("# Benchmarks\n\n{begin}\n{end}\n"));
    let old = if old.contains(begin) && old.contains(end) {
        old
    } else {
        format!("{old}\n{begin}\n{end}\n")
    };
    let (before, rest) = old.split_once(begin).expect("has the begin marker");
    let (_, after) = rest.split_once(end).expect("has the end marker");
    std::fs::write(doc, format!("{before}{begin}\n{section}\n{end}{after}"))
        .with_context(|| format!("write {}", doc.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::{Percentiles, Via};

    fn report(label: &str, payments: usize) -> BenchReport {
        let ms = Percentiles::of(vec![10.0, 20.0]);
        BenchReport {
            label: Some(label.to_owned()),
            via: Via::Api,
            noop: false,
            payments,
            concurrency: 32,
            rate: None,
            pg_latency_ms: Some(0),
            elapsed_secs: 10.0,
            throughput: 30.0,
            decision_ms: ms.clone(),
            order_completed_ms: ms.clone(),
            closed_ms: ms,
            failures: BTreeMap::new(),
            history_events: 37.0,
            cpu_ms: BTreeMap::new(),
        }
    }

    #[test]
    fn the_section_between_the_markers_is_rewritten_and_the_analysis_kept() {
        let dir = std::env::temp_dir().join(format!("payflow-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let run = dir.join("c32-pg0.json");
        let mut c32 = report("c32-pg0", 2000);
        // 20 CPU seconds of the worker's over 2,000 payments: 10 ms each.
        let before = BTreeMap::from([
            ("payflow worker".to_owned(), 1.0),
            ("tansu".to_owned(), 1.0),
        ]);
        let after = BTreeMap::from([
            ("payflow worker".to_owned(), 21.0),
            ("tansu".to_owned(), 1.0),
        ]);
        c32.cpu_ms = cpu_per_payment(&before, &after, c32.payments);
        std::fs::write(&run, serde_json::to_string(&c32).unwrap()).unwrap();
        let doc = dir.join("BENCHMARKS.md");
        std::fs::write(
            &doc,
            "# Benchmarks\n\nintro\n<!-- bench:begin -->\nold figures\n<!-- bench:end -->\n\nanalysis\n",
        )
        .unwrap();

        write(&doc, &[run]).unwrap();
        let text = std::fs::read_to_string(&doc).unwrap();
        assert!(text.starts_with("# Benchmarks\n\nintro\n<!-- bench:begin -->\nMeasured "));
        assert!(text.ends_with("<!-- bench:end -->\n\nanalysis\n"), "{text}");
        assert!(!text.contains("old figures"));
        assert!(
            text.contains("| c32-pg0 | api | 2000 | 32 | 0 ms | 30.0/s |"),
            "{text}"
        );
        assert!(
            text.contains(
                "| c32-pg0 | 0.0 | 10.0 | 0.0 | 0.0 | 0.0 | 0.0 | 0.0 | 0.0 | 0.0 | 10.0 |"
            ),
            "{text}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn each_real_run_is_compared_with_the_no_op_run_after_it() {
        let run = |label: &str, noop: bool, throughput: f64| BenchReport {
            noop,
            throughput,
            ..report(label, 2000)
        };
        let reports = [
            run("seq-pg0", false, 20.0),
            run("c32-pg0", false, 27.0),
            run("c32-noop", true, 30.0),
            run("c32-pg0 #2", false, 30.0),
            run("c32-noop #2", true, 30.0),
            run("c32-pg0 #3", false, 24.0),
            run("c32-noop #3", true, 30.0),
        ];
        let text = ceiling_ratios(&reports);
        assert_eq!(
            text.trim(),
            "c32 against the no-op ceiling run right after it, round by round: 90 %, 100 %, \
             80 %; median 90 %, all rounds together 27.0/s against 30.0/s (90 %)."
        );
        assert_eq!(ceiling_ratios(&reports[..2]), "", "no pair, no line");
    }

    #[test]
    fn a_snapshot_counts_this_process_by_its_pid_file() {
        let dir = std::env::temp_dir().join(format!("payflow-cpu-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("worker.pid"), std::process::id().to_string()).unwrap();
        // Work until the kernel has counted at least one tick of this process (bounded).
        let started = std::time::Instant::now();
        let mut x = 0u64;
        let snapshot = loop {
            for i in 0..1_000_000u64 {
                x = x.wrapping_mul(31).wrapping_add(i);
            }
            let snapshot = cpu_snapshot(&dir);
            if snapshot.get("payflow worker").is_some_and(|s| *s > 0.0)
                || started.elapsed().as_secs() > 5
            {
                break snapshot;
            }
        };
        assert_ne!(x, 1);
        assert!(snapshot["payflow worker"] > 0.0, "{snapshot:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
