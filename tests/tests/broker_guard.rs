//! The dev stack's broker needs no person: `scripts/broker-guard.sh` restarts Tansu when it
//! exits (SIGKILL) and when it keeps its port but takes no record (SIGSTOP stands in for the
//! wedge seen after a crash), and the broker takes records again each time; after a restart it
//! runs the events audit, which republishes what the crash lost.

use payflow_activities::events::probe::probe;
use payflow_tests::{binary, eventually, free_port, send_signal};
use std::{path::PathBuf, time::Duration};

/// The guard and its broker, stopped when the test ends.
struct Guarded {
    guard: tokio::process::Child,
    state: PathBuf,
}

impl Guarded {
    fn broker_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.state.join("tansu.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    fn signal(&self, signal: &str) {
        send_signal(self.broker_pid().expect("the broker's pid"), signal);
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        let _ = self.guard.start_kill();
        if let Some(pid) = self.broker_pid() {
            let _ = std::process::Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

/// Waits until a broker other than `old` (if given) takes a probe record.
async fn serving(address: &str, guarded: &Guarded, old: Option<u32>, what: &str) -> u32 {
    eventually(Duration::from_secs(90), what, || async {
        let pid = guarded.broker_pid()?;
        if Some(pid) == old {
            return None;
        }
        probe(address, Duration::from_secs(2)).await.ok()?;
        Some(pid)
    })
    .await
}

#[tokio::test]
async fn the_guard_restarts_a_broker_that_died_or_stopped_taking_records() {
    let address = format!("127.0.0.1:{}", free_port());
    let state = std::env::temp_dir().join(format!("payflow-guard-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&state).unwrap();
    let payflow = binary("payflow");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/broker-guard.sh");
    let guard = tokio::process::Command::new(script)
        .env("PAYFLOW_STATE_DIR", &state)
        .env("KAFKA_BOOTSTRAP_SERVERS", &address)
        .env("PAYFLOW_BROKER_CHECK_SECS", "1")
        .env("PAYFLOW_BROKER_CHECK_FAILURES", "3")
        .env("PAYFLOW_BROKER_AUDIT_AFTER_SECS", "1")
        .env("PAYFLOW_BIN", payflow.parent().unwrap())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start the broker guard");
    let guarded = Guarded { guard, state };

    let first = serving(&address, &guarded, None, "the guarded broker to serve").await;

    guarded.signal("KILL");
    let second = serving(&address, &guarded, Some(first), "a broker after a SIGKILL").await;
    // What the crash may have lost is looked for without a person: the guard runs the events
    // audit after the restart.
    let audit_log = guarded.state.join("broker-audit.log");
    eventually(
        Duration::from_secs(60),
        "the guard's audit after the restart",
        || async {
            std::fs::read_to_string(&audit_log)
                .ok()?
                .contains("audit finished")
                .then_some(())
        },
    )
    .await;

    // Stopped: the port stays open, nothing is answered.
    guarded.signal("STOP");
    assert!(probe(&address, Duration::from_secs(2)).await.is_err());
    serving(
        &address,
        &guarded,
        Some(second),
        "a broker after it stopped answering",
    )
    .await;
}
