//! Identifiers derived from the order id. Nothing here is random: the same order always gets
//! the same workflow id, payment id and event ids, which is what makes retries safe.

use crate::types::EventType;
use uuid::Uuid;

/// Namespace of payflow's name-based (v5) UUIDs.
const PAYFLOW_NAMESPACE: Uuid = Uuid::from_u128(0x5f0a_7c1e_2b8d_4f3a_9e61_0c4d_8a2b_1f77);

/// The workflow id of an order's payment: the business idempotency key. One order, one payment
/// workflow; starting it again finds the existing one.
pub fn payment_workflow_id(order_id: &str) -> String {
    format!("payment-{order_id}")
}

/// The order id back from a payment workflow id, if it is one.
pub fn order_id_from_workflow_id(workflow_id: &str) -> Option<&str> {
    workflow_id.strip_prefix("payment-")
}

/// The payment id of an order. It is the PG's `Idempotency-Key`, so every attempt at the PG for
/// this order is the same request and can charge at most once.
pub fn payment_id(order_id: &str) -> String {
    format!("PAY-{order_id}")
}

/// How every key of [`default_payment_key`] starts; the API refuses it on any other order's key.
pub const DEFAULT_PAYMENT_KEY_PREFIX: &str = "tpk_PAY-";

/// The payment key of an order paid without one from the PG's checkout widget. The API binds it
/// to the order like any other key, and refuses keys of its shape for any other order, so no
/// other order can take it.
pub fn default_payment_key(order_id: &str) -> String {
    // `tpk_` and the payment id.
    format!("{DEFAULT_PAYMENT_KEY_PREFIX}{order_id}")
}

/// The order id back from a payment id, if it is one.
pub fn order_id_from_payment_id(payment_id: &str) -> Option<&str> {
    payment_id.strip_prefix("PAY-")
}

/// The event id of one event type for one payment workflow: a retried publish carries the same
/// id, and consumers deduplicate on it.
pub fn event_id(workflow_id: &str, event: EventType) -> String {
    Uuid::new_v5(
        &PAYFLOW_NAMESPACE,
        format!("{workflow_id}/{}", event.name()).as_bytes(),
    )
    .to_string()
}

/// The event id of one saga tracker record: one per step and status of a payment workflow.
pub fn saga_record_id(workflow_id: &str, step: &str, status: &str) -> String {
    Uuid::new_v5(
        &PAYFLOW_NAMESPACE,
        format!("{workflow_id}/saga/{step}/{status}").as_bytes(),
    )
    .to_string()
}

/// The push gateway's deduplication key for one notification kind of one payment.
pub fn notification_id(workflow_id: &str, kind: &str) -> String {
    Uuid::new_v5(
        &PAYFLOW_NAMESPACE,
        format!("{workflow_id}/push/{kind}").as_bytes(),
    )
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_per_order_and_distinct_per_event_type() {
        let wf = payment_workflow_id("ORD-1");
        assert_eq!(wf, "payment-ORD-1");
        assert_eq!(order_id_from_workflow_id(&wf), Some("ORD-1"));
        assert_eq!(
            order_id_from_payment_id(&payment_id("ORD-1")),
            Some("ORD-1")
        );
        let a = event_id(&wf, EventType::PaymentCompleted);
        assert_eq!(a, event_id(&wf, EventType::PaymentCompleted));
        assert_ne!(a, event_id(&wf, EventType::StockConfirmed));
        assert_ne!(a, event_id("payment-ORD-2", EventType::PaymentCompleted));
        // The published contract says eventId is a UUID.
        assert!(Uuid::parse_str(&a).is_ok());
    }
}
