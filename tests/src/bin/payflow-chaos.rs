//! `payflow-chaos` (`make chaos`): the fault suite at full size. Prints its table, writes it to
//! `--report` (RELIABILITY.md's figures) and exits non-zero on any violation. `--payments N`
//! changes the size; `--keep` keeps the parts' logs and state after a clean run.

use payflow_tests::chaos::{Plan, run};
use std::path::PathBuf;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut report = None;
    let mut payments = None;
    let mut keep = false;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--report" => report = args.next().map(PathBuf::from),
            "--payments" => payments = args.next().map(|n| n.parse()).transpose()?,
            "--keep" => keep = true,
            other => {
                anyhow::bail!("unknown argument {other:?} (--report FILE, --payments N, --keep)")
            }
        }
    }
    let dir = std::env::temp_dir().join(format!("payflow-chaos-{}", std::process::id()));
    let mut plan = Plan::full(dir);
    if let Some(n) = payments {
        plan.payments = n;
    }
    eprintln!(
        "payflow-chaos: {} payments through {} faults; the parts' logs are in {}",
        plan.payments,
        plan.faults.len(),
        plan.dir.display()
    );
    let outcome = run(&plan).await?;
    let table = outcome.table();
    println!("{table}");
    if let Some(path) = report {
        let document = format!(
            "What `make chaos` measured on {} ({} cores): {} payments through the real API, \
             paid by a client that retries network errors and 5xx with the same order id, while \
             {} faults were applied one after another ({} s apart; held faults lasted {} s). \
             Every part but PostgreSQL ran as a process of the run's own; PostgreSQL was \
             reached through a gate that refused connections and cut the open ones. \
             `tests/src/chaos.rs` has each fault and check.\n\n{}\n\n{}\n",
            chrono::Utc::now().format("%Y-%m-%d"),
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            plan.payments,
            plan.faults.len(),
            plan.gap.as_secs(),
            plan.hold.as_secs(),
            table,
            if outcome.ok() {
                "Verdict: every check held."
            } else {
                "Verdict: VIOLATIONS (listed above)."
            }
        );
        // Between the markers of an existing file (its prose stays), or a file of its own.
        let (begin, end) = ("<!-- chaos:begin -->\n", "<!-- chaos:end -->");
        let existing = std::fs::read_to_string(&path).unwrap_or_default();
        let written = match (existing.find(begin), existing.find(end)) {
            (Some(b), Some(e)) if b < e => {
                format!("{}{begin}{document}{}", &existing[..b], &existing[e..])
            }
            _ => format!("# Reliability\n\n{begin}{document}{end}\n"),
        };
        std::fs::write(&path, written)?;
        eprintln!("payflow-chaos: table written to {}", path.display());
    }
    if !outcome.ok() {
        eprintln!(
            "payflow-chaos: VIOLATIONS (see above); logs in {}",
            plan.dir.display()
        );
        std::process::exit(1);
    }
    if keep {
        eprintln!(
            "payflow-chaos: the parts' logs and state are kept in {}",
            plan.dir.display()
        );
    } else {
        let _ = std::fs::remove_dir_all(&plan.dir);
    }
    Ok(())
}
