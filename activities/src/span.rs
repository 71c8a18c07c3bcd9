//! The span every activity runs in. The SDK's own `RunActivity` span already names the
//! activity, the workflow id and the run id; this one adds what payflow knows: the order and the
//! attempt. So each log line of an activity can be traced to its payment in the Web UI, and a
//! payment's lines found by its order id.

use temporalio_sdk::activities::ActivityContext;
use tracing::Span;

/// The span of one attempt of an activity for `order_id`.
pub(crate) fn activity_span(ctx: &ActivityContext, order_id: &str) -> Span {
    tracing::info_span!("payment", order_id, attempt = ctx.info().attempt)
}
