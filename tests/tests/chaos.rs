//! The short fault suite (the full one is `make chaos`): 60 payments through the real API
//! while each part but the broker is killed, paused or refused once; every outside check
//! must hold.

use payflow_tests::chaos::{Plan, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_survive_every_fault_once_and_nothing_is_lost() {
    let dir = std::env::temp_dir().join(format!(
        "payflow-chaos-test-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let report = run(&Plan::short(dir.clone())).await.expect("the fault run");
    println!("{}", report.table());
    assert!(
        report.ok(),
        "violations:\n{}\nlogs in {}",
        report.table(),
        dir.display()
    );
    assert_eq!(report.faults.len(), 10, "every fault applied");
    assert!(
        report.completed > 0 && report.cancelled > 0,
        "both paths taken"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
