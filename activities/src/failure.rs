//! How activities report failures. Classify where the failure happens: a final answer
//! (a decline, a missing reservation) is non-retryable with a type name the workflow matches
//! on; anything transient (timeouts, 5xx, lost connections) stays retryable.

use temporalio_common::error::ApplicationFailure;
use temporalio_sdk::activities::ActivityError;

/// A final failure: Temporal does not retry it; the workflow matches on `type_name`
/// (one of `payflow_workflows::errors`).
pub fn non_retryable(type_name: &str, message: impl Into<String>) -> ActivityError {
    typed(type_name, message.into(), true)
}

/// A failure Temporal retries like a transient one, but with a type name (one of
/// `payflow_workflows::errors`) that tells the workflow a person must act before a retry can
/// succeed.
pub fn retryable_refusal(type_name: &str, message: impl Into<String>) -> ActivityError {
    typed(type_name, message.into(), false)
}

fn typed(type_name: &str, message: String, non_retryable: bool) -> ActivityError {
    ApplicationFailure::builder(anyhow::anyhow!(message))
        .type_name(type_name.to_owned())
        .non_retryable(non_retryable)
        .build()
        .into()
}

/// A transient failure: Temporal retries it per the activity's retry policy. The cause chain
/// is kept in the message so the history shows why.
pub fn retryable(context: &str, err: impl Into<anyhow::Error>) -> ActivityError {
    let err: anyhow::Error = err.into();
    ApplicationFailure::new(anyhow::anyhow!("{context}: {err:#}")).into()
}

/// Extension for `?` on fallible IO inside activities: everything is transient unless
/// classified otherwise.
pub trait Transient<T> {
    /// Marks the error retryable, with context.
    fn transient(self, context: &str) -> Result<T, ActivityError>;
}

impl<T, E: Into<anyhow::Error>> Transient<T> for Result<T, E> {
    fn transient(self, context: &str) -> Result<T, ActivityError> {
        self.map_err(|e| retryable(context, e))
    }
}
