//! Every log line an activity writes names its workflow, run and order: an operator who finds
//! a line can open the payment in the Web UI, and one who has a payment can grep its lines.

use payflow_tests::{Logs, Stack};
use payflow_workflows::{
    payment_workflow_id,
    types::{PaymentMethod, PaymentStage},
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activity_log_lines_carry_the_workflow_the_run_and_the_order() {
    let logs = Logs::capture("info,apache_avro=error");
    let stack = Stack::start().await;
    let products = stack.products(&[5]).await;
    let order = stack.order("USR-LOG", &[(&products[0], 1)]).await;
    let decision = stack.pay(&order, PaymentMethod::Card, None).await;
    assert!(decision.approved, "{decision:?}");
    assert_eq!(
        stack.outcome(&order.order_id).await.stage,
        PaymentStage::OrderCompleted
    );

    let workflow_id = payment_workflow_id(&order.order_id);
    let text = logs.text();
    for message in ["stock confirmed", "push sent"] {
        let line = text
            .lines()
            .find(|l| l.contains(message) && l.contains(&order.order_id))
            .unwrap_or_else(|| panic!("no {message:?} line for {}:\n{text}", order.order_id));
        // The SDK's span names the workflow and the run; payflow's names the order.
        assert!(
            line.contains(&format!("temporalWorkflowID=\"{workflow_id}\"")),
            "no workflow id: {line}"
        );
        assert!(line.contains("temporalRunID="), "no run id: {line}");
        assert!(
            line.contains(&format!(
                "payment{{order_id=\"{}\" attempt=1}}",
                order.order_id
            )),
            "not in the payment's span: {line}"
        );
    }
}
