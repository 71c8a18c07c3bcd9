//! Cluster set-up: payflow's search attributes on any Temporal namespace.

use payflow_workflows::search;
use std::collections::HashMap;
use temporalio_client::{Client, grpc::OperatorService, tonic};
use temporalio_common::protos::temporal::api::{
    enums::v1::IndexedValueType,
    operatorservice::v1::{AddSearchAttributesRequest, ListSearchAttributesRequest},
};

/// Registers the search attributes payflow sets (`OrderId`, `UserId`, `PaymentMethod`,
/// `PaymentStage`, `Amount`, `NeedsAttention`) that the namespace lacks; answers the ones added.
/// Idempotent: a second run adds nothing.
pub async fn register_search_attributes(
    client: &Client,
    namespace: &str,
) -> anyhow::Result<Vec<String>> {
    let mut operator = client.clone();
    let existing = operator
        .list_search_attributes(tonic::Request::new(ListSearchAttributesRequest {
            namespace: namespace.to_owned(),
        }))
        .await?
        .into_inner()
        .custom_attributes;
    let mut missing = HashMap::new();
    for (name, kind) in search::ALL {
        if existing.contains_key(name) {
            continue;
        }
        let kind = match kind {
            "Keyword" => IndexedValueType::Keyword,
            "Int" => IndexedValueType::Int,
            "Bool" => IndexedValueType::Bool,
            other => anyhow::bail!("unsupported search attribute type {other}"),
        };
        missing.insert(name.to_owned(), kind as i32);
    }
    if missing.is_empty() {
        return Ok(Vec::new());
    }
    let mut added: Vec<String> = missing.keys().cloned().collect();
    added.sort();
    match operator
        .add_search_attributes(tonic::Request::new(AddSearchAttributesRequest {
            search_attributes: missing,
            namespace: namespace.to_owned(),
        }))
        .await
    {
        Ok(_) => Ok(added),
        // Another process registered them at the same moment.
        Err(s) if s.code() == tonic::Code::AlreadyExists => Ok(Vec::new()),
        Err(s) => Err(s.into()),
    }
}
