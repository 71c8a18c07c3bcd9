//! Avro encoding of payflow's events in the existing services' contract
//! (`events/avro/*.avsc`, copied verbatim from the shared contract).
//!
//! Values use Avro single-object encoding: `C3 01`, the schema's 8-byte CRC-64-AVRO fingerprint
//! (little-endian), then the binary datum. Java's generated `fromByteBuffer` reads exactly this,
//! so no schema registry is needed.
//!
//! The fingerprint is computed here, from the specification's Parsing Canonical Form, not taken
//! from `apache-avro`: its canonical form keeps a decimal's `logicalType`, `precision` and
//! `scale` (`{"type":"bytes","logicalType":"decimal",...}` where the specification and Java's
//! `SchemaNormalization` write `"bytes"`), so its header for `PaymentCompleted` is one no Java
//! consumer knows. The unit tests pin the six fingerprints to Java's.

use apache_avro::{
    Decimal, Schema, reader::datum::GenericDatumReader, types::Value,
    writer::datum::GenericDatumWriter,
};
use payflow_workflows::types::{DomainEvent, EventBody, EventType, OrderItem};
use serde_json::Value as Json;
use std::collections::{HashMap, HashSet};

/// The byte that opens a value in the Confluent wire format.
pub const CONFLUENT_MAGIC: u8 = 0x00;

/// The two marker bytes that open a single-object-encoded value.
pub const SINGLE_OBJECT_MARKER: [u8; 2] = [0xC3, 0x01];

/// The contract's schema files, by event type.
pub const SCHEMA_FILES: [(EventType, &str); 7] = [
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
    (
        EventType::SagaTracker,
        include_str!("../../../events/avro/saga/SagaTracker.avsc"),
    ),
];

/// The contract's topic of an event type: its schema's `kafka_topic` attribute.
pub fn kafka_topic(ty: EventType) -> &'static str {
    static TOPICS: std::sync::LazyLock<HashMap<EventType, String>> =
        std::sync::LazyLock::new(|| {
            SCHEMA_FILES
                .iter()
                .map(|(ty, text)| {
                    let json: Json = serde_json::from_str(text).expect("schema is JSON");
                    let topic = json["kafka_topic"]
                        .as_str()
                        .expect("every contract schema names its kafka_topic");
                    (*ty, topic.to_owned())
                })
                .collect()
        });
    TOPICS[&ty].as_str()
}

/// The schema text of an event type, as the contract has it (what is registered).
pub fn schema_text(ty: EventType) -> &'static str {
    SCHEMA_FILES
        .iter()
        .find(|(t, _)| *t == ty)
        .map(|(_, text)| *text)
        .expect("every event type has a schema")
}

/// An event could not be encoded: a programming error, never transient.
#[derive(Debug, thiserror::Error)]
#[error("cannot encode {event}: {source}")]
pub struct EncodeError {
    event: &'static str,
    #[source]
    source: apache_avro::Error,
}

/// A value is not a single-object encoding of the expected schema, or its datum is broken.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The first ten bytes are not `C3 01` and the schema's fingerprint.
    #[error("not a single-object encoding of {0} (wrong marker or fingerprint)")]
    Header(&'static str),
    /// The datum does not read with the schema.
    #[error(transparent)]
    Datum(#[from] apache_avro::Error),
}

/// The parsed contract schemas, each with its single-object header.
pub struct Schemas {
    by_type: HashMap<EventType, (Schema, [u8; 10])>,
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
                let json: Json = serde_json::from_str(text).expect("schema is JSON");
                (*ty, (schema, single_object_header(&json)))
            })
            .collect();
        Self { by_type }
    }

    /// The schema of an event type.
    pub fn schema(&self, ty: EventType) -> &Schema {
        &self.by_type[&ty].0
    }

    /// The ten bytes every value of an event type starts with: `C3 01` and the fingerprint.
    pub fn header(&self, ty: EventType) -> [u8; 10] {
        self.by_type[&ty].1
    }

    /// Encodes an event in single-object encoding.
    pub fn encode(&self, event: &DomainEvent) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(&self.header(event.event_type()));
        self.write_datum(event, &mut out)?;
        Ok(out)
    }

    /// Encodes an event in the Confluent wire format: `0x00`, the schema's registry id (4
    /// bytes, big-endian), then the binary datum.
    pub fn encode_confluent(
        &self,
        event: &DomainEvent,
        schema_id: u32,
    ) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::with_capacity(256);
        out.push(CONFLUENT_MAGIC);
        out.extend_from_slice(&schema_id.to_be_bytes());
        self.write_datum(event, &mut out)?;
        Ok(out)
    }

    /// Appends the event's binary datum to `out`.
    fn write_datum(&self, event: &DomainEvent, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let ty = event.event_type();
        let schema = self.schema(ty);
        let wrap = |source| EncodeError {
            event: ty.name(),
            source,
        };
        GenericDatumWriter::builder(schema)
            .build()
            .and_then(|writer| writer.write_value(out, to_value(event)))
            .map_err(wrap)?;
        Ok(())
    }

    /// Decodes a single-object-encoded record of the given type (what a consumer does).
    pub fn decode(&self, ty: EventType, bytes: &[u8]) -> Result<Value, DecodeError> {
        let mut datum = bytes
            .strip_prefix(&self.header(ty))
            .ok_or(DecodeError::Header(ty.name()))?;
        Ok(GenericDatumReader::builder(self.schema(ty))
            .build()?
            .read_value(&mut datum)?)
    }
}

/// Splits a Confluent-framed value into its schema id and datum.
pub fn confluent_frame(bytes: &[u8]) -> Option<(u32, &[u8])> {
    match bytes {
        [CONFLUENT_MAGIC, a, b, c, d, datum @ ..] => {
            Some((u32::from_be_bytes([*a, *b, *c, *d]), datum))
        }
        _ => None,
    }
}

/// `C3 01` and the little-endian CRC-64-AVRO fingerprint of the schema's canonical form.
pub fn single_object_header(schema: &Json) -> [u8; 10] {
    let mut header = [0u8; 10];
    header[..2].copy_from_slice(&SINGLE_OBJECT_MARKER);
    let fingerprint = crc64_avro(parsing_canonical_form(schema).as_bytes());
    header[2..].copy_from_slice(&fingerprint.to_le_bytes());
    header
}

/// CRC-64-AVRO (the Rabin fingerprint of the Avro specification).
pub fn crc64_avro(data: &[u8]) -> u64 {
    const EMPTY: u64 = 0xc15d_213a_a4d7_a795;
    let table: Vec<u64> = (0..256u64)
        .map(|i| (0..8).fold(i, |fp, _| (fp >> 1) ^ (EMPTY & 0u64.wrapping_sub(fp & 1))))
        .collect();
    data.iter().fold(EMPTY, |fp, b| {
        (fp >> 8) ^ table[((fp ^ u64::from(*b)) & 0xff) as usize]
    })
}

/// The Parsing Canonical Form of a schema (Avro specification): primitives in their simple
/// form, full names, only `name`, `type`, `fields`, `symbols`, `items`, `values`, `size` in that
/// order (logical types and their attributes dropped), no whitespace, named types written out
/// once and then referred to by full name.
pub fn parsing_canonical_form(schema: &Json) -> String {
    let mut out = String::new();
    canonical(schema, "", &mut HashSet::new(), &mut out);
    out
}

const PRIMITIVES: [&str; 8] = [
    "null", "boolean", "int", "long", "float", "double", "bytes", "string",
];

fn quoted(s: &str) -> String {
    Json::String(s.to_owned()).to_string()
}

fn full_name(name: &str, namespace: &str) -> String {
    if name.contains('.') || namespace.is_empty() {
        name.to_owned()
    } else {
        format!("{namespace}.{name}")
    }
}

fn canonical(schema: &Json, namespace: &str, seen: &mut HashSet<String>, out: &mut String) {
    match schema {
        Json::String(name) if PRIMITIVES.contains(&name.as_str()) => out.push_str(&quoted(name)),
        Json::String(name) => out.push_str(&quoted(&full_name(name, namespace))),
        Json::Array(branches) => {
            out.push('[');
            for (i, branch) in branches.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(branch, namespace, seen, out);
            }
            out.push(']');
        }
        Json::Object(map) => {
            let ty = map.get("type").unwrap_or(&Json::Null);
            match ty.as_str() {
                Some(kind @ ("record" | "error" | "enum" | "fixed")) => {
                    let name = map.get("name").and_then(Json::as_str).unwrap_or_default();
                    let own_ns = map.get("namespace").and_then(Json::as_str);
                    let full = full_name(name, own_ns.unwrap_or(namespace));
                    if !seen.insert(full.clone()) {
                        out.push_str(&quoted(&full));
                        return;
                    }
                    let inner_ns = full.rsplit_once('.').map_or("", |(ns, _)| ns).to_owned();
                    out.push_str(&format!(
                        "{{\"name\":{},\"type\":{}",
                        quoted(&full),
                        quoted(kind)
                    ));
                    match kind {
                        "enum" => {
                            let symbols = map.get("symbols").cloned().unwrap_or(Json::Null);
                            out.push_str(&format!(",\"symbols\":{symbols}"));
                        }
                        "fixed" => {
                            let size = map.get("size").cloned().unwrap_or(Json::Null);
                            out.push_str(&format!(",\"size\":{size}"));
                        }
                        _ => {
                            out.push_str(",\"fields\":[");
                            let fields = map.get("fields").and_then(Json::as_array);
                            for (i, field) in fields.into_iter().flatten().enumerate() {
                                if i > 0 {
                                    out.push(',');
                                }
                                let name =
                                    field.get("name").and_then(Json::as_str).unwrap_or_default();
                                out.push_str(&format!("{{\"name\":{},\"type\":", quoted(name)));
                                canonical(&field["type"], &inner_ns, seen, out);
                                out.push('}');
                            }
                            out.push(']');
                        }
                    }
                    out.push('}');
                }
                Some("array") => {
                    out.push_str("{\"type\":\"array\",\"items\":");
                    canonical(&map["items"], namespace, seen, out);
                    out.push('}');
                }
                Some("map") => {
                    out.push_str("{\"type\":\"map\",\"values\":");
                    canonical(&map["values"], namespace, seen, out);
                    out.push('}');
                }
                // A primitive with attributes (a logical type among them) is just the primitive;
                // `{"type": {...}}` is the inner schema.
                _ => canonical(ty, namespace, seen, out),
            }
        }
        other => out.push_str(&other.to_string()),
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

/// A contract enum symbol: the Rust enums list their symbols in contract order, so a symbol's
/// position there is its Avro index (a test checks them against the schema files).
fn symbol(index: usize, name: &str) -> Value {
    Value::Enum(index as u32, name.to_owned())
}

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
                symbol(payment_method.index(), payment_method.as_str()),
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
                symbol(cancellation_reason.index(), cancellation_reason.as_str()),
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
                symbol(cancellation_reason.index(), cancellation_reason.as_str()),
            ),
            ("cancelledAt".to_owned(), Value::Long(*cancelled_at)),
        ]),
        EventBody::SagaTracker {
            saga_type,
            step,
            status,
            metadata,
            recorded_at,
        } => fields.extend([
            ("sagaId".to_owned(), s(&event.order_id)),
            (
                "sagaType".to_owned(),
                symbol(saga_type.index(), saga_type.as_str()),
            ),
            ("step".to_owned(), s(step)),
            ("status".to_owned(), symbol(status.index(), status.as_str())),
            order_id,
            (
                "metadata".to_owned(),
                match metadata {
                    Some(m) => Value::Union(1, Box::new(s(m))),
                    None => Value::Union(0, Box::new(Value::Null)),
                },
            ),
            ("recordedAt".to_owned(), Value::Long(*recorded_at)),
        ]),
    }
    Value::Record(fields)
}

#[cfg(test)]
mod tests {
    use super::*;
    use payflow_workflows::types::{
        OrderCancellationReason, PaymentCancellationReason, PaymentMethod, SagaStatus, SagaType,
    };

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

    /// The fingerprint bytes (little-endian, as in the header) that Java's generated classes
    /// expect, computed from the contract files with Apache Avro for Java 1.8.2
    /// (`SchemaNormalization.parsingFingerprint64`); fastavro's `fingerprint` agrees.
    const JAVA_FINGERPRINTS: [(EventType, &str); 6] = [
        (EventType::PaymentCompleted, "1f75fab80f992383"),
        (EventType::StockConfirmed, "011c779fdce329fa"),
        (EventType::PaymentFailed, "ae6b4c86adfbe244"),
        (EventType::PaymentCancelled, "ef4a0aed79e47ab2"),
        (EventType::StockConfirmationFailed, "42dcd2d0ae599724"),
        (EventType::OrderCancelled, "560222c1fe1f6fac"),
    ];

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn headers_carry_the_fingerprints_java_consumers_expect() {
        let schemas = Schemas::load();
        for (ty, java) in JAVA_FINGERPRINTS {
            let header = schemas.header(ty);
            assert_eq!(&header[..2], &SINGLE_OBJECT_MARKER);
            assert_eq!(hex(&header[2..]), java, "{}", ty.name());
            let encoded = schemas.encode(&DomainEvent {
                body: sample_body(ty),
                ..completed()
            });
            assert_eq!(&encoded.unwrap()[..10], &header, "{}", ty.name());
        }
    }

    #[test]
    fn the_canonical_form_drops_the_decimal_attributes_as_the_specification_says() {
        let (_, text) = SCHEMA_FILES[0];
        let form = parsing_canonical_form(&serde_json::from_str(text).unwrap());
        assert!(
            form.contains(r#"{"name":"totalAmount","type":"bytes"}"#),
            "{form}"
        );
        assert!(form.starts_with(
            r#"{"name":"com.groom.ecommerce.payment.event.avro.PaymentCompleted","type":"record","fields":[{"name":"eventId","type":"string"},{"name":"eventTimestamp","type":"long"}"#
        ), "{form}");
        assert!(form.contains(r#"{"name":"com.groom.ecommerce.payment.event.avro.PaymentMethod","type":"enum","symbols":["CARD","BANK_TRANSFER","KAKAO_PAY","NAVER_PAY","TOSS"]}"#), "{form}");
        // A named type is written once, then referred to by its full name.
        let twice = serde_json::json!({"type": "record", "name": "R", "namespace": "n", "fields": [
            {"name": "a", "type": {"type": "fixed", "name": "F", "size": 4}},
            {"name": "b", "type": ["null", "F"], "default": null}]});
        assert_eq!(
            parsing_canonical_form(&twice),
            r#"{"name":"n.R","type":"record","fields":[{"name":"a","type":{"name":"n.F","type":"fixed","size":4}},{"name":"b","type":["null","n.F"]}]}"#
        );
    }

    #[test]
    fn a_value_of_another_schema_or_with_a_foreign_header_is_refused() {
        let schemas = Schemas::load();
        let bytes = schemas.encode(&completed()).unwrap();
        assert!(matches!(
            schemas.decode(EventType::StockConfirmed, &bytes),
            Err(DecodeError::Header(_))
        ));
        let mut foreign = bytes.clone();
        foreign[2] ^= 0xff;
        assert!(
            schemas
                .decode(EventType::PaymentCompleted, &foreign)
                .is_err()
        );
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

    fn sample_body(ty: EventType) -> EventBody {
        let items = || {
            vec![OrderItem {
                product_id: "PRD-001".into(),
                quantity: 2,
            }]
        };
        let (payment_id, user_id) = ("PAY-ORD-12345".to_owned(), "USR-1".to_owned());
        match ty {
            EventType::PaymentCompleted => completed().body,
            EventType::StockConfirmed => EventBody::StockConfirmed {
                payment_id,
                confirmed_items: items(),
                confirmed_at: 1,
            },
            EventType::PaymentFailed => EventBody::PaymentFailed {
                payment_id,
                user_id,
                failure_reason: "INSUFFICIENT_FUNDS".into(),
                failed_at: 1,
            },
            EventType::PaymentCancelled => EventBody::PaymentCancelled {
                payment_id,
                user_id,
                cancellation_reason: PaymentCancellationReason::StockUnavailable,
                cancelled_at: 1,
            },
            EventType::StockConfirmationFailed => EventBody::StockConfirmationFailed {
                payment_id,
                failure_reason: "reservation expired".into(),
                failed_at: 1,
            },
            EventType::OrderCancelled => EventBody::OrderCancelled {
                user_id,
                items: items(),
                cancellation_reason: OrderCancellationReason::StockUnavailable,
                cancelled_at: 1,
            },
            EventType::SagaTracker => EventBody::SagaTracker {
                saga_type: SagaType::PaymentCompletion,
                step: "STOCK_CONFIRMATION".into(),
                status: SagaStatus::Compensated,
                metadata: Some(r#"{"workflowId":"payment-ORD-12345"}"#.into()),
                recorded_at: 1,
            },
        }
    }

    #[test]
    fn every_event_type_round_trips_with_its_contract_schema() {
        let schemas = Schemas::load();
        for ty in EventType::ALL {
            let event = DomainEvent {
                body: sample_body(ty),
                ..completed()
            };
            let bytes = schemas.encode(&event).unwrap();
            let Value::Record(fields) = schemas.decode(ty, &bytes).unwrap() else {
                panic!("not a record")
            };
            let get = |name: &str| fields.iter().find(|(n, _)| n == name).map(|f| f.1.clone());
            assert_eq!(get("orderId"), Some(Value::String("ORD-12345".into())));
            if ty == EventType::OrderCancelled {
                assert_eq!(
                    get("cancellationReason"),
                    Some(Value::Enum(2, "STOCK_UNAVAILABLE".into()))
                );
            }
            if ty == EventType::SagaTracker {
                assert_eq!(get("sagaId"), Some(Value::String("ORD-12345".into())));
                assert_eq!(
                    get("sagaType"),
                    Some(Value::Enum(1, "PAYMENT_COMPLETION".into()))
                );
                assert_eq!(get("status"), Some(Value::Enum(4, "COMPENSATED".into())));
            }
        }
    }

    #[test]
    fn confluent_framing_is_magic_byte_id_then_the_datum() {
        let schemas = Schemas::load();
        let event = completed();
        let framed = schemas.encode_confluent(&event, 258).unwrap();
        assert_eq!(framed[..5], [0x00, 0x00, 0x00, 0x01, 0x02]);
        let (id, datum) = confluent_frame(&framed).unwrap();
        assert_eq!(id, 258);
        let single = schemas.encode(&event).unwrap();
        assert_eq!(
            datum,
            &single[10..],
            "the same datum as single-object encoding"
        );
        assert_eq!(confluent_frame(&single), None);
    }

    /// Every enum's symbols in the schema files, by the enum's name.
    fn contract_enums() -> HashMap<String, Vec<String>> {
        fn walk(json: &Json, out: &mut HashMap<String, Vec<String>>) {
            match json {
                Json::Object(map) => {
                    if map.get("type").and_then(Json::as_str) == Some("enum") {
                        let name = map["name"].as_str().unwrap_or_default().to_owned();
                        let symbols = map["symbols"].as_array().cloned().unwrap_or_default();
                        let symbols = symbols.iter().filter_map(|s| s.as_str()).map(str::to_owned);
                        out.insert(name, symbols.collect());
                    }
                    map.values().for_each(|v| walk(v, out));
                }
                Json::Array(items) => items.iter().for_each(|v| walk(v, out)),
                _ => {}
            }
        }
        let mut out = HashMap::new();
        for (_, text) in SCHEMA_FILES {
            walk(&serde_json::from_str(text).unwrap(), &mut out);
        }
        out
    }

    #[test]
    fn the_rust_enums_list_the_contract_symbols_in_contract_order() {
        let contract = contract_enums();
        fn names<T: Copy>(all: &[T], name: fn(T) -> &'static str) -> Vec<String> {
            all.iter().map(|s| name(*s).to_owned()).collect()
        }
        for (name, symbols) in [
            (
                "PaymentMethod",
                names(PaymentMethod::ALL, PaymentMethod::as_str),
            ),
            (
                "PaymentCancellationReason",
                names(
                    PaymentCancellationReason::ALL,
                    PaymentCancellationReason::as_str,
                ),
            ),
            (
                "CancellationReason",
                names(
                    OrderCancellationReason::ALL,
                    OrderCancellationReason::as_str,
                ),
            ),
            ("SagaType", names(SagaType::ALL, SagaType::as_str)),
            ("SagaStatus", names(SagaStatus::ALL, SagaStatus::as_str)),
        ] {
            assert_eq!(contract.get(name), Some(&symbols), "{name}: {contract:?}");
        }
    }

    #[test]
    fn topics_are_the_schemas_kafka_topics() {
        assert_eq!(
            kafka_topic(EventType::PaymentCompleted),
            "c4ang.payment.completed"
        );
        assert_eq!(
            kafka_topic(EventType::StockConfirmationFailed),
            "c4ang.stock.confirmation-failed"
        );
        assert_eq!(kafka_topic(EventType::SagaTracker), "c4ang.saga.tracker");
        for ty in EventType::ALL {
            assert!(kafka_topic(ty).starts_with("c4ang."), "{ty:?}");
        }
    }

    #[test]
    fn decimals_are_minimal_twos_complement() {
        let raw = |won| <Vec<u8>>::try_from(won_to_decimal(won)).unwrap();
        assert_eq!(raw(1), vec![100]);
        assert_eq!(raw(2), vec![0x00, 200]); // 200 needs a sign byte
        assert_eq!(raw(-1), vec![0x9C]); // -100
    }
}
