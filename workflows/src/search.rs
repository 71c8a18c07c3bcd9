//! Search attributes: what operators filter on in the Web UI. The dev stack and
//! `payflow admin setup` register them with these names and types.

use temporalio_common::search_attributes::SearchAttributeKey;

/// The order id (Keyword).
pub const ORDER_ID: SearchAttributeKey<String> = SearchAttributeKey::keyword("OrderId");
/// The customer (Keyword).
pub const USER_ID: SearchAttributeKey<String> = SearchAttributeKey::keyword("UserId");
/// `CARD`, `KAKAO_PAY`, ... (Keyword).
pub const PAYMENT_METHOD: SearchAttributeKey<String> = SearchAttributeKey::keyword("PaymentMethod");
/// The current stage, e.g. `ORDER_COMPLETED` (Keyword).
pub const PAYMENT_STAGE: SearchAttributeKey<String> = SearchAttributeKey::keyword("PaymentStage");
/// Amount in won (Int).
pub const AMOUNT: SearchAttributeKey<i64> = SearchAttributeKey::int("Amount");
/// True while the workflow waits for an operator (Bool).
pub const NEEDS_ATTENTION: SearchAttributeKey<bool> = SearchAttributeKey::bool("NeedsAttention");

/// Name and Temporal type of every attribute, for registration (`temporal operator
/// search-attribute create --name N --type T`).
pub const ALL: [(&str, &str); 6] = [
    ("OrderId", "Keyword"),
    ("UserId", "Keyword"),
    ("PaymentMethod", "Keyword"),
    ("PaymentStage", "Keyword"),
    ("Amount", "Int"),
    ("NeedsAttention", "Bool"),
];
