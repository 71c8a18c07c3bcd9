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
const COMPONENTS: [&str; 8] = [
    "temporal dev server",
    "payflow worker",
    "no-op worker",
    "payflow API",
    "postgresql",
    "redis",
    "tansu",
    "PG/push sandbox",
];

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
        // Fields after the command's closing parenthesis; utime and stime are the 12th and 13th.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
        if let (Some(label), Some(user), Some(system)) = (label, ticks(11), ticks(12)) {
            *cpu.entry(label.to_owned()).or_default() += (user + system) / TICKS_PER_SECOND;
        }
    }
    cpu
}

/// The CPU table: milliseconds per payment by component, from each report's snapshots
/// (`<name>.cpu-before.json` and `<name>.cpu-after.json` beside `<name>.json`).
fn cpu_table(runs: &[(PathBuf, BenchReport)]) -> String {
    let snapshot = |report: &Path, when: &str| -> Option<BTreeMap<String, f64>> {
        let path = report.with_extension(format!("cpu-{when}.json"));
        serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
    };
    let mut rows = String::new();
    for (path, report) in runs {
        let (Some(before), Some(after)) = (snapshot(path, "before"), snapshot(path, "after"))
        else {
            continue;
        };
        let payments = report.payments.max(1) as f64;
        let used: Vec<f64> = COMPONENTS
            .iter()
            .map(|c| {
                let spent = after.get(*c).unwrap_or(&0.0) - before.get(*c).unwrap_or(&0.0);
                spent.max(0.0) * 1000.0 / payments
            })
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
        "\nCPU time per payment, in milliseconds, by component (from /proc over each run; the bench \
         client itself is not counted):\n\n| run | {} | total |\n| --- |{}\n{rows}",
        COMPONENTS.join(" | "),
        " ---: |".repeat(COMPONENTS.len() + 1)
    )
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
    let section = format!("{}{}{}", machine(), markdown(&results), cpu_table(&runs));
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
        }
    }

    #[test]
    fn the_section_between_the_markers_is_rewritten_and_the_analysis_kept() {
        let dir = std::env::temp_dir().join(format!("payflow-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let run = dir.join("c32-pg0.json");
        std::fs::write(
            &run,
            serde_json::to_string(&report("c32-pg0", 2000)).unwrap(),
        )
        .unwrap();
        let cpu = |worker: f64| serde_json::json!({ "payflow worker": worker, "tansu": 1.0 });
        std::fs::write(dir.join("c32-pg0.cpu-before.json"), cpu(1.0).to_string()).unwrap();
        std::fs::write(dir.join("c32-pg0.cpu-after.json"), cpu(21.0).to_string()).unwrap();
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
        // 20 CPU seconds over 2,000 payments: 10 ms each, all the worker's.
        assert!(
            text.contains("| c32-pg0 | 0.0 | 10.0 | 0.0 | 0.0 | 0.0 | 0.0 | 0.0 | 0.0 | 10.0 |"),
            "{text}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
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
