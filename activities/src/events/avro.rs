//! Avro encoding of payflow's events in the existing services' contract
//! (`events/avro/*.avsc`, copied verbatim from the shared contract).
//!
//! Values use Avro single-object encoding: `C3 01`, the schema's 8-byte CRC-64-AVRO fingerprint
//! (little-endian), then the binary datum. Java's generated `fromByteBuffer` reads exactly this,
//! so no schema registry is needed.

use apache_avro::{
    Decimal, GenericSingleObjectReader, GenericSingleObjectWriter, Schema, types::Value,
};
use payflow_workflows::types::{DomainEvent, EventBody, EventType, OrderItem};
use std::collections::HashMap;

/// The contract's schema files, by event type.
pub const SCHEMA_FILES: [(EventType, &str); 6] = [
    (
        EventType::PaymentCompleted,
        include_str!("../../../events/avro/payment/PaymentCompleted.avsc"),
    ),
    (
        EventType::StockConfirmed,
        include_str!("../../../events/avro/order/StockConfirmed.avsc"),
    ),
    (
        EventType::PaymentFailed,
        include_str!("../../../events/avro/payment/PaymentFailed.avsc"),
    ),
    (
        EventType::PaymentCancelled,
        include_str!("../../../events/avro/payment/PaymentCancelled.avsc"),
    ),
    (
        EventType::StockConfirmationFailed,
        include_str!("../../../events/avro/saga/StockConfirmationFailed.avsc"),
    ),
    (
        EventType::OrderCancelled,
        include_str!("../../../events/avro/order/OrderCancelled.avsc"),
    ),
];

/// An event could not be encoded: a programming error, never transient.
#[derive(Debug, thiserror::Error)]
#[error("cannot encode {event}: {source}")]
pub struct EncodeError {
    event: &'static str,
    #[source]
    source: apache_avro::Error,
}

/// The parsed contract schemas.
pub struct Schemas {
    by_type: HashMap<EventType, Schema>,
}

impl std::fmt::Debug for Schemas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Schemas")
            .field("types", &self.by_type.len())
            .finish()
    }
}

impl Schemas {
    /// Parses the contract schemas. They are compiled in, so failing here is a build defect.
    pub fn load() -> Self {
        let by_type = SCHEMA_FILES
            .iter()
            .map(|(ty, text)| {
                let schema = Schema::parse_str(text).unwrap_or_else(|e| {
                    panic!("contract schema for {} is invalid: {e}", ty.name())
                });
                (*ty, schema)
            })
            .collect();
        Self { by_type }
    }

    /// The schema of an event type.
    pub fn schema(&self, ty: EventType) -> &Schema {
        &self.by_type[&ty]
    }

    /// Encodes an event in single-object encoding.
    pub fn encode(&self, event: &DomainEvent) -> Result<Vec<u8>, EncodeError> {
        let ty = event.event_type();
        let schema = self.schema(ty);
        let wrap = |source| EncodeError {
            event: ty.name(),
            source,
        };
        let mut writer = GenericSingleObjectWriter::new_with_capacity(schema, 256).map_err(wrap)?;
        let mut out = Vec::with_capacity(256);
        writer
            .write_value(to_value(event), &mut out)
            .map_err(wrap)?;
        Ok(out)
    }

    /// Decodes a single-object-encoded record of the given type (what a consumer does).
    pub fn decode(&self, ty: EventType, mut bytes: &[u8]) -> Result<Value, apache_avro::Error> {
        GenericSingleObjectReader::builder()
            .schema(self.schema(ty).clone())
            .build()?
            .read_value(&mut bytes)
    }
}

/// Won to the contract's `decimal(10,2)`: the unscaled value (won × 100) as minimal big-endian
/// two's complement bytes.
pub fn won_to_decimal(won: i64) -> Decimal {
    let unscaled = i128::from(won) * 100;
    let bytes = unscaled.to_be_bytes();
    // Drop leading bytes that only repeat the sign.
    let mut start = 0;
    while start < bytes.len() - 1 {
        let (b, next) = (bytes[start], bytes[start + 1]);
        let redundant = (b == 0x00 && next & 0x80 == 0) || (b == 0xFF && next & 0x80 != 0);
        if !redundant {
            break;
        }
        start += 1;
    }
    Decimal::from(&bytes[start..])
}

fn items(items: &[OrderItem], record: &str) -> Value {
    let _ = record;
    Value::Array(
        items
            .iter()
            .map(|i| {
                Value::Record(vec![
                    ("productId".into(), Value::String(i.product_id.clone())),
                    ("quantity".into(), Value::Int(i.quantity)),
                ])
            })
            .collect(),
    )
}

fn symbol(symbols: &[&str], value: &str) -> Value {
    let index = symbols
        .iter()
        .position(|s| *s == value)
        .expect("payflow only emits contract symbols");
    Value::Enum(index as u32, value.to_owned())
}

const PAYMENT_METHODS: [&str; 5] = ["CARD", "BANK_TRANSFER", "KAKAO_PAY", "NAVER_PAY", "TOSS"];
const PAYMENT_CANCELLATION_REASONS: [&str; 4] = [
    "STOCK_UNAVAILABLE",
    "ADMIN_CANCEL",
    "USER_CANCEL",
    "SYSTEM_ERROR",
];
const ORDER_CANCELLATION_REASONS: [&str; 4] = [
    "PAYMENT_TIMEOUT",
    "USER_REQUESTED",
    "STOCK_UNAVAILABLE",
    "SYSTEM_ERROR",
];

/// The Avro record of an event, fields in contract order.
fn to_value(event: &DomainEvent) -> Value {
    let s = |v: &str| Value::String(v.to_owned());
    let mut fields = vec![
        ("eventId".to_owned(), s(&event.event_id)),
        (
            "eventTimestamp".to_owned(),
            Value::Long(event.event_timestamp),
        ),
    ];
    let order_id = ("orderId".to_owned(), s(&event.order_id));
    match &event.body {
        EventBody::PaymentCompleted {
            payment_id,
            user_id,
            total_amount,
            payment_method,
            pg_approval_number,
            completed_at,
        } => fields.extend([
            ("paymentId".to_owned(), s(payment_id)),
            order_id,
            ("userId".to_owned(), s(user_id)),
            (
                "totalAmount".to_owned(),
                Value::Decimal(won_to_decimal(*total_amount)),
            ),
            (
                "paymentMethod".to_owned(),
                symbol(&PAYMENT_METHODS, payment_method.as_str()),
            ),
            ("pgApprovalNumber".to_owned(), s(pg_approval_number)),
            ("completedAt".to_owned(), Value::Long(*completed_at)),
        ]),
        EventBody::StockConfirmed {
            payment_id,
            confirmed_items,
            confirmed_at,
        } => fields.extend([
            order_id,
            ("paymentId".to_owned(), s(payment_id)),
            (
                "confirmedItems".to_owned(),
                items(confirmed_items, "ConfirmedOrderItem"),
            ),
            ("confirmedAt".to_owned(), Value::Long(*confirmed_at)),
        ]),
        EventBody::PaymentFailed {
            payment_id,
            user_id,
            failure_reason,
            failed_at,
        } => fields.extend([
            ("paymentId".to_owned(), s(payment_id)),
            order_id,
            ("userId".to_owned(), s(user_id)),
            ("failureReason".to_owned(), s(failure_reason)),
            ("failedAt".to_owned(), Value::Long(*failed_at)),
        ]),
        EventBody::PaymentCancelled {
            payment_id,
            user_id,
            cancellation_reason,
            cancelled_at,
        } => fields.extend([
            ("paymentId".to_owned(), s(payment_id)),
            order_id,
            ("userId".to_owned(), s(user_id)),
            (
                "cancellationReason".to_owned(),
                symbol(&PAYMENT_CANCELLATION_REASONS, cancellation_reason.as_str()),
            ),
            ("cancelledAt".to_owned(), Value::Long(*cancelled_at)),
        ]),
        EventBody::StockConfirmationFailed {
            payment_id,
            failure_reason,
            failed_at,
        } => fields.extend([
            order_id,
            ("paymentId".to_owned(), s(payment_id)),
            ("failureReason".to_owned(), s(failure_reason)),
            ("failedAt".to_owned(), Value::Long(*failed_at)),
        ]),
        EventBody::OrderCancelled {
            user_id,
            items: cancelled,
            cancellation_reason,
            cancelled_at,
        } => fields.extend([
            order_id,
            ("userId".to_owned(), s(user_id)),
            ("items".to_owned(), items(cancelled, "CancelledOrderItem")),
            (
                "cancellationReason".to_owned(),
                symbol(&ORDER_CANCELLATION_REASONS, cancellation_reason.as_str()),
            ),
            ("cancelledAt".to_owned(), Value::Long(*cancelled_at)),
        ]),
    }
    Value::Record(fields)
}

#[cfg(test)]
mod tests {
    use super::*;
    use payflow_workflows::types::{OrderCancellationReason, PaymentMethod};

    /// CRC-64-AVRO straight from the Avro specification, to check the header independently.
    fn crc64_avro(data: &[u8]) -> u64 {
        const EMPTY: u64 = 0xc15d_213a_a4d7_a795;
        let table: Vec<u64> = (0..256u64)
            .map(|i| {
                let mut fp = i;
                for _ in 0..8 {
                    fp = (fp >> 1) ^ (EMPTY & (0u64.wrapping_sub(fp & 1)));
                }
                fp
            })
            .collect();
        data.iter().fold(EMPTY, |fp, b| {
            (fp >> 8) ^ table[((fp ^ u64::from(*b)) & 0xff) as usize]
        })
    }

    fn completed() -> DomainEvent {
        DomainEvent {
            event_id: "0b0e7a0e-1111-5222-8333-444455556666".into(),
            event_timestamp: 1_699_999_999_000,
            order_id: "ORD-12345".into(),
            body: EventBody::PaymentCompleted {
                payment_id: "PAY-ORD-12345".into(),
                user_id: "USR-001".into(),
                total_amount: 50_000,
                payment_method: PaymentMethod::Card,
                pg_approval_number: "PG-APPROVE-001".into(),
                completed_at: 1_699_999_999_000,
            },
        }
    }

    #[test]
    fn header_is_c3_01_and_the_little_endian_crc64_of_the_canonical_form() {
        let schemas = Schemas::load();
        for ty in EventType::ALL {
            let schema = schemas.schema(ty);
            let expected = crc64_avro(schema.canonical_form().as_bytes()).to_le_bytes();
            let header = apache_avro::headers::RabinFingerprintHeader::from_schema(schema);
            let built = apache_avro::headers::HeaderBuilder::build_header(&header);
            assert_eq!(&built[..2], &[0xC3, 0x01]);
            assert_eq!(&built[2..], &expected, "{}", ty.name());
        }
    }

    #[test]
    fn payment_completed_round_trips_with_the_contract_schema() {
        let schemas = Schemas::load();
        let bytes = schemas.encode(&completed()).unwrap();
        assert_eq!(&bytes[..2], &[0xC3, 0x01]);
        let Value::Record(fields) = schemas.decode(EventType::PaymentCompleted, &bytes).unwrap()
        else {
            panic!("not a record")
        };
        let get = |name: &str| fields.iter().find(|(n, _)| n == name).unwrap().1.clone();
        assert_eq!(get("orderId"), Value::String("ORD-12345".into()));
        assert_eq!(get("paymentMethod"), Value::Enum(0, "CARD".into()));
        let Value::Decimal(amount) = get("totalAmount") else {
            panic!("amount is not a decimal")
        };
        // 50,000.00 won at scale 2 is 5,000,000 unscaled.
        let bytes = <Vec<u8>>::try_from(amount).unwrap();
        assert_eq!(bytes, 5_000_000i32.to_be_bytes()[1..].to_vec());
    }

    #[test]
    fn every_event_type_encodes() {
        let schemas = Schemas::load();
        let cancelled = DomainEvent {
            body: EventBody::OrderCancelled {
                user_id: "USR-1".into(),
                items: vec![OrderItem {
                    product_id: "PRD-001".into(),
                    quantity: 2,
                }],
                cancellation_reason: OrderCancellationReason::StockUnavailable,
                cancelled_at: 1,
            },
            ..completed()
        };
        let bytes = schemas.encode(&cancelled).unwrap();
        let Value::Record(fields) = schemas.decode(EventType::OrderCancelled, &bytes).unwrap()
        else {
            panic!("not a record")
        };
        assert!(
            fields.iter().any(|(n, v)| n == "cancellationReason"
                && *v == Value::Enum(2, "STOCK_UNAVAILABLE".into()))
        );
    }

    #[test]
    fn decimals_are_minimal_twos_complement() {
        let raw = |won| <Vec<u8>>::try_from(won_to_decimal(won)).unwrap();
        assert_eq!(raw(1), vec![100]);
        assert_eq!(raw(2), vec![0x00, 200]); // 200 needs a sign byte
        assert_eq!(raw(-1), vec![0x9C]); // -100
    }
}
