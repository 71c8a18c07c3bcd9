//! Determinism guard. `tests/histories/` holds histories of every path, exactly as
//! `temporal workflow show -o json` (and the Web UI's Download) writes them, one directory per
//! generation of the workflow:
//!
//! - `v1/`: before the `lean-saga-v2` patch; `v2/`: after it.
//! - `v3/`: after `platform-events-v3` (saga tracker records, no `order.cancelled` after an
//!   approval) and `pg-rejection-final` (a PG rejection is a definite failure: `v3/pg_rejected`).
//! - `v4/`: after `event-outbox-v4` (events drained from an outbox beside the steps, attention
//!   kept per problem).
//! - `v5/`: after `publish-attention-v5` (a publication only a person can unblock raises the
//!   attention flag: `v5/publish_refused_then_lifted`; other paths never consult it, so their v4
//!   histories are what v5 records too). `v5/late_approval_taken_back`, a void that found
//!   nothing, was recorded before v6.
//! - `v6/`: after `late-charge-check-v6` (a void that found nothing looks again and cancels a
//!   charge the PG completed late: `v6/late_charge_voided`). `v6/deadline_during_completion`,
//!   the deadline firing while the order's completion waited, was recorded before v7.
//! - `v7/`: after `completion-outlives-deadline-v7` (that deadline lets the completion finish:
//!   `v7/deadline_during_completion`).
//! - `v8/`: after `void-attention-v8`, which every void of an outbox run before v11 consults:
//!   `v8/void_refused_then_restored` (a void the PG refused until its key was set back, listed
//!   for operators meanwhile) and the other void paths under it (`pg_timeout`,
//!   `deadline_before_pg_decided`, `late_approval_taken_back`, `late_charge_voided`), whose
//!   v4-v6 histories replay the unpatched branch. `v8/cancelled_while_registry_away`, an
//!   operator's cancel while the registry was away, was recorded before v9: its publisher
//!   retried without rest.
//! - `v9/`: after `publish-pause-outlives-cancel-v9` (the same run rests between tries).
//!   `v9/void_refused_for_good`, a void the PG refused for good, was recorded before v10: the
//!   tracker said `COMPENSATED`.
//! - `v10/`: after `compensation-failure-tracked-v10` (the same run records `FAILED`). Its
//!   `deadline_after_approval`, `stock_expired_refunded`, `refund_failed_then_retried` and
//!   `refund_failed_then_done_by_hand` were recorded before v11 (the refund waited for the
//!   stock's release), and `refund_signal_before_the_wait` before v12: an operator's
//!   "refunded by hand" sent while the refund was still in its tries ended the wait at once.
//! - `v11/`: after `compensation-watched-v11`, which every compensation consults (the refund
//!   beside the stock's release; a step that has not succeeded after `stuck_step_secs` listed
//!   while it goes on: `v11/deadline_after_approval`, with no product worker, and
//!   `v11/refund_without_payment_worker`; `v11/late_charge_still_deciding`, a second look
//!   that found the PG still deciding and went on looking) and
//!   `refund-signals-while-waiting-v12` (the same early signal dropped, the refund waiting for
//!   an operator: `v11/refund_signal_before_the_wait`). `v11/long_publish_outage`, a registry
//!   away for over a minute, was recorded before v13: the pauses between publish tries stopped
//!   growing at 30 s.
//! - `v13/`: after `publish-pause-grows-v13` (the same outage: the pause after 30 s is 60 s).
//!
//! A patch no path of a generation consults leaves that path's history as the generation
//! before recorded it. Each history must replay against the current workflow code: a change to
//! the workflow's decisions that is not behind `ctx.patched(..)` breaks them, as it would break
//! running payments after a deploy.
//!
//! When a change adds a new generation, record it into a new directory (never over an old one,
//! and never to paper over a divergence):
//! `PAYFLOW_RECORD_HISTORIES=$PWD/tests/histories/v14 cargo test -p payflow-tests`.

use payflow_starter::replay::{NamedHistory, Verdict, parse_history, replay, replay_as};
use std::path::PathBuf;

const PATHS: [&str; 9] = [
    "success_card",
    "declined",
    "pg_timeout",
    "flaky_pg_retried",
    "stock_expired_refunded",
    "refund_failed_then_retried",
    "refund_failed_then_done_by_hand",
    "deadline_before_pg_decided",
    "deadline_after_approval",
];

/// Every golden history, named `<generation>/<path>.json`.
fn golden() -> Vec<NamedHistory> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("histories");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("tests/histories")
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .flat_map(|dir| std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| NamedHistory {
            name: path.strip_prefix(&root).unwrap().display().to_string(),
            history: parse_history(&std::fs::read(&path).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e:#}", path.display())),
        })
        .collect()
}

/// Fails unless every one of `required` is among the golden histories' `names`.
fn require(names: &[String], required: &[&str], what: &str) {
    for name in required {
        assert!(
            names.iter().any(|n| n == name),
            "no golden history {name} of {what}: {names:?}"
        );
    }
}

#[tokio::test]
async fn every_recorded_path_replays_against_the_current_workflow() {
    let histories = golden();
    let names: Vec<String> = histories.iter().map(|h| h.name.clone()).collect();
    for generation in ["v1", "v2", "v3", "v4"] {
        for path in PATHS {
            let name = format!("{generation}/{path}.json");
            assert!(names.contains(&name), "no golden history {name}: {names:?}");
        }
    }
    require(
        &names,
        &["v3/pg_rejected.json", "v4/pg_rejected.json"],
        "the pg-rejection-final path",
    );
    require(
        &names,
        &["v5/publish_refused_then_lifted.json"],
        "the publish-attention-v5 path",
    );
    require(
        &names,
        &["v6/late_charge_voided.json"],
        "the late-charge-check-v6 path",
    );
    // Recorded before late-charge-check-v6 (at e00ee59): its void found nothing at the PG, the
    // branch that now consults the patch; without the marker it must close as it did.
    require(
        &names,
        &["v5/late_approval_taken_back.json"],
        "a void that found nothing before late-charge-check-v6",
    );
    // Recorded before completion-outlives-deadline-v7 (at aae1c18): the deadline fired while
    // the order's completion waited, and the old code cancelled it and refunded; without the
    // marker it must do so again. v7 is the same run under the patch: the order completes.
    require(
        &names,
        &[
            "v6/deadline_during_completion.json",
            "v7/deadline_during_completion.json",
        ],
        "the deadline firing during the completion",
    );
    // Every void of an outbox run before v11 consults void-attention-v8: each void path before it (v4-v6)
    // replays the unpatched branch, and again under it, with a void the PG refused for a while.
    require(
        &names,
        &[
            "v4/pg_timeout.json",
            "v4/deadline_before_pg_decided.json",
            "v5/late_approval_taken_back.json",
            "v6/late_charge_voided.json",
            "v8/pg_timeout.json",
            "v8/deadline_before_pg_decided.json",
            "v8/late_approval_taken_back.json",
            "v8/late_charge_voided.json",
            "v8/void_refused_then_restored.json",
        ],
        "a void before or after void-attention-v8",
    );
    // Recorded before publish-pause-outlives-cancel-v9: after the cancel the publisher retried
    // without a pause; without the marker it must do so again. v9 is the same run under it.
    require(
        &names,
        &[
            "v8/cancelled_while_registry_away.json",
            "v9/cancelled_while_registry_away.json",
        ],
        "a cancel while events waited",
    );
    // Recorded before compensation-failure-tracked-v10: a void that failed for good was tracked
    // COMPENSATED, with no marker; v10 is the same run under the patch.
    require(
        &names,
        &[
            "v9/void_refused_for_good.json",
            "v10/void_refused_for_good.json",
        ],
        "a void that failed for good",
    );
    // Recorded before compensation-watched-v11: the refund waited for the stock's release, and
    // an early "refunded by hand" ended the refund's wait at once (before
    // refund-signals-while-waiting-v12). v11 is the same runs under the patches.
    require(
        &names,
        &[
            "v10/deadline_after_approval.json",
            "v11/deadline_after_approval.json",
            "v10/refund_signal_before_the_wait.json",
            "v11/refund_signal_before_the_wait.json",
        ],
        "a refund beside the stock's release, and an early operator signal",
    );
    // Recorded before publish-pause-grows-v13: the pauses stopped growing at 30 s; v13 is the
    // same outage under the patch.
    require(
        &names,
        &[
            "v11/long_publish_outage.json",
            "v13/long_publish_outage.json",
        ],
        "a publish outage past 30 s",
    );
    // Each pair replays both sides of its patch: the history recorded before it has no marker
    // of it (the old branch), the one recorded under it has (the new branch). A history
    // recorded again over an old one would lose the old branch without this.
    for (before, under, patch) in PATCH_PAIRS {
        let patches = |name: &str| {
            let history = histories
                .iter()
                .find(|h| h.name == name)
                .unwrap_or_else(|| panic!("no golden history {name}"));
            patch_markers(history)
        };
        assert!(
            !patches(before).contains(patch),
            "{before} was recorded before {patch}, so it holds no marker of it"
        );
        assert!(
            patches(under).contains(patch),
            "{under} was recorded under {patch}, so it holds its marker"
        );
    }
    let count = histories.len();
    let results = replay(histories, Default::default()).await.unwrap();
    assert_eq!(results.len(), count, "every history has a verdict");
    for result in results {
        assert_eq!(result.verdict, Verdict::Replayed, "{}", result.name);
    }
}

/// `(recorded before the patch, recorded under it, patch id)`.
const PATCH_PAIRS: [(&str, &str, &str); 8] = [
    (
        "v5/late_approval_taken_back.json",
        "v6/late_charge_voided.json",
        "late-charge-check-v6",
    ),
    (
        "v6/deadline_during_completion.json",
        "v7/deadline_during_completion.json",
        "completion-outlives-deadline-v7",
    ),
    (
        "v4/pg_timeout.json",
        "v8/pg_timeout.json",
        "void-attention-v8",
    ),
    (
        "v8/cancelled_while_registry_away.json",
        "v9/cancelled_while_registry_away.json",
        "publish-pause-outlives-cancel-v9",
    ),
    (
        "v9/void_refused_for_good.json",
        "v10/void_refused_for_good.json",
        "compensation-failure-tracked-v10",
    ),
    (
        "v10/deadline_after_approval.json",
        "v11/deadline_after_approval.json",
        "compensation-watched-v11",
    ),
    (
        "v10/refund_signal_before_the_wait.json",
        "v11/refund_signal_before_the_wait.json",
        "refund-signals-while-waiting-v12",
    ),
    (
        "v11/long_publish_outage.json",
        "v13/long_publish_outage.json",
        "publish-pause-grows-v13",
    ),
];

/// The ids of the patch markers a history holds.
fn patch_markers(history: &NamedHistory) -> std::collections::BTreeSet<String> {
    use temporalio_common::protos::temporal::api::history::v1::history_event::Attributes;
    history
        .history
        .events
        .iter()
        .filter_map(|e| match &e.attributes {
            Some(Attributes::MarkerRecordedEventAttributes(m)) if m.marker_name == "core_patch" => {
                m.details.get("patch-data")
            }
            _ => None,
        })
        .flat_map(|payloads| payloads.payloads.iter())
        .filter_map(|p| serde_json::from_slice::<serde_json::Value>(&p.data).ok())
        .filter_map(|v| v["id"].as_str().map(str::to_owned))
        .collect()
}

/// A change to the workflow's decisions without a patch: it confirms the stock before the PG
/// has approved. Everything else (name, input, handlers) is the same.
#[allow(unreachable_pub)] // the SDK's workflow macros want public handlers
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
        .filter(|h| h.name == "v1/success_card.json")
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
