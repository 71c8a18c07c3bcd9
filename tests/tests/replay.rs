//! Determinism guard. `tests/histories/` holds histories of every path, exactly as
//! `temporal workflow show -o json` (and the Web UI's Download) writes them. Each must replay
//! against the current workflow code: a change to the workflow's decisions that is not behind
//! `ctx.patched(..)` breaks these, as it would break running payments after a deploy.
//!
//! Record them again (only when adding a path, never to paper over a divergence) with
//! `PAYFLOW_RECORD_HISTORIES=$PWD/tests/histories cargo test -p payflow-tests`.

use payflow_starter::replay::{NamedHistory, Verdict, parse_history, replay, replay_as};
use std::path::PathBuf;

fn golden() -> Vec<NamedHistory> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("histories");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/histories")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| NamedHistory {
            name: path.file_name().unwrap().to_string_lossy().into_owned(),
            history: parse_history(&std::fs::read(&path).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e:#}", path.display())),
        })
        .collect()
}

#[tokio::test]
async fn every_recorded_path_replays_against_the_current_workflow() {
    let histories = golden();
    let names: Vec<String> = histories.iter().map(|h| h.name.clone()).collect();
    for path in [
        "success_card",
        "declined",
        "pg_timeout",
        "flaky_pg_retried",
        "stock_expired_refunded",
        "refund_failed_then_retried",
        "refund_failed_then_done_by_hand",
        "deadline_before_pg_decided",
        "deadline_after_approval",
    ] {
        assert!(
            names.contains(&format!("{path}.json")),
            "no golden history of {path}: {names:?}"
        );
    }
    for result in replay(histories, Default::default()).await.unwrap() {
        assert_eq!(result.verdict, Verdict::Replayed, "{}", result.name);
    }
}

/// A change to the workflow's decisions without a patch: it confirms the stock before the PG
/// has approved. Everything else (name, input, handlers) is the same.
mod unpatched {
    use payflow_workflows::{
        activities::ProductActivities,
        types::{ConfirmStock, PaymentDecision, PaymentOutcome, PaymentRequest, PaymentStage},
    };
    use std::time::Duration;
    use temporalio_macros::{workflow, workflow_methods};
    use temporalio_workflow::{
        ActivityOptions, WorkflowContext, WorkflowContextView, WorkflowResult,
    };

    #[workflow]
    pub struct ReorderedPaymentWorkflow {
        request: PaymentRequest,
    }

    #[workflow_methods]
    impl ReorderedPaymentWorkflow {
        #[init]
        pub fn new(_ctx: &WorkflowContextView, request: PaymentRequest) -> Self {
            Self { request }
        }

        #[run(name = "PaymentWorkflow")]
        pub async fn run(ctx: &mut WorkflowContext<Self>) -> WorkflowResult<PaymentOutcome> {
            let order_id = ctx.state(|s| s.request.order_id.clone());
            let _ = ctx
                .execute_activity(
                    ProductActivities::confirm,
                    ConfirmStock {
                        order_id: order_id.clone(),
                        payment_id: String::new(),
                    },
                    ActivityOptions::start_to_close_timeout(Duration::from_secs(10)),
                )
                .await;
            Ok(PaymentOutcome {
                order_id,
                payment_id: String::new(),
                stage: PaymentStage::OrderCompleted,
                approval_number: None,
                failure_code: None,
                failure_reason: None,
            })
        }

        #[update(name = "payment_decision")]
        pub async fn payment_decision(ctx: &mut WorkflowContext<Self>) -> PaymentDecision {
            let _ = ctx.wait_condition(|_| false).await;
            unreachable!("never decides")
        }
    }
}

#[tokio::test]
async fn a_workflow_change_without_a_patch_fails_replay() {
    let histories: Vec<NamedHistory> = golden()
        .into_iter()
        .filter(|h| h.name == "success_card.json")
        .collect();
    assert_eq!(histories.len(), 1);
    let results = replay_as::<unpatched::ReorderedPaymentWorkflow>(histories, Default::default())
        .await
        .unwrap();
    assert!(
        matches!(results[0].verdict, Verdict::Nondeterministic(_)),
        "{:?}",
        results[0].verdict
    );
}
