//! Payload encryption: an AES-256-GCM payload codec, so payment data (order ids, amounts,
//! approval numbers) never sits in plain text in Temporal's store.
//!
//! An encrypted payload has metadata `encoding: binary/encrypted` and `encryption-key-id: <id>`;
//! its data is a 12-byte nonce followed by the ciphertext of the whole original payload
//! (metadata and data). Keys come from configuration as `id:base64key,...`: the first encrypts,
//! all of them decrypt, so a key can be rotated without losing old histories. Payloads that are
//! not encrypted pass through decoding untouched (histories from before encryption was on).
//!
//! Search attributes are never encoded (the server must index them), and the SDK sends workflow
//! and activity summaries unencoded: payflow keeps amounts and approval numbers out of both.

use aes_gcm::{
    Aes256Gcm, Key, Nonce,
    aead::{Aead, AeadCore, KeyInit, OsRng},
};
use base64::Engine;
use futures::{FutureExt, future::BoxFuture};
use payflow_activities::Secret;
use prost::Message;
use std::{collections::HashMap, fmt, str::FromStr, sync::Arc};
use temporalio_common::{
    data_converters::{
        DataConverter, DefaultFailureConverter, PayloadCodec, PayloadConversionError,
        PayloadConverter, SerializationContextData,
    },
    protos::temporal::api::common::v1::Payload,
};

/// `encoding` of an encrypted payload.
pub const ENCRYPTED_ENCODING: &[u8] = b"binary/encrypted";
/// Metadata key naming the key that encrypted a payload.
pub const KEY_ID_METADATA: &str = "encryption-key-id";

/// The configured keys: the first encrypts, all decrypt.
#[derive(Clone)]
pub struct CodecKeys {
    active: String,
    keys: HashMap<String, Aes256Gcm>,
}

impl fmt::Debug for CodecKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ids: Vec<&String> = self.keys.keys().collect();
        ids.sort();
        f.debug_struct("CodecKeys")
            .field("active", &self.active)
            .field("ids", &ids)
            .finish()
    }
}

/// Why keys or payloads were refused.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The key configuration is malformed.
    #[error("invalid codec keys: {0}")]
    Config(String),
    /// A payload names a key this process does not have.
    #[error("payload encrypted with unknown key {0:?}")]
    UnknownKey(String),
    /// Decryption failed (wrong key or tampered data).
    #[error("payload does not decrypt (wrong key or tampered data)")]
    Decrypt,
    /// Encryption failed.
    #[error("payload does not encrypt")]
    Encrypt,
    /// The decrypted bytes are not a payload.
    #[error("decrypted bytes are not a payload: {0}")]
    Malformed(#[source] prost::DecodeError),
}

impl CodecKeys {
    /// Parses `id:base64key[,id:base64key...]`; each key is 32 bytes.
    pub fn parse(text: &str) -> Result<Self, CodecError> {
        let mut active = None;
        let mut keys = HashMap::new();
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (id, key) = entry
                .split_once(':')
                .ok_or_else(|| CodecError::Config("expected id:base64key".into()))?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(key)
                .map_err(|_| CodecError::Config(format!("key {id:?} is not base64")))?;
            if bytes.len() != 32 {
                return Err(CodecError::Config(format!(
                    "key {id:?} has {} bytes; AES-256 needs 32",
                    bytes.len()
                )));
            }
            if keys
                .insert(
                    id.to_owned(),
                    Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&bytes)),
                )
                .is_some()
            {
                return Err(CodecError::Config(format!("key id {id:?} given twice")));
            }
            active.get_or_insert_with(|| id.to_owned());
        }
        let active = active.ok_or_else(|| CodecError::Config("no keys".into()))?;
        Ok(Self { active, keys })
    }

    /// A fresh random key in the configuration format (`payflow admin new-codec-key`).
    pub fn generate(id: &str) -> String {
        let key = Aes256Gcm::generate_key(OsRng);
        format!(
            "{id}:{}",
            base64::engine::general_purpose::STANDARD.encode(key)
        )
    }

    /// The id of the key that encrypts.
    pub fn active_id(&self) -> &str {
        &self.active
    }

    /// Encrypts one payload with the active key.
    pub fn encrypt(&self, payload: &Payload) -> Result<Payload, CodecError> {
        let cipher = &self.keys[&self.active];
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let mut data = nonce.to_vec();
        data.extend(
            cipher
                .encrypt(&nonce, payload.encode_to_vec().as_slice())
                .map_err(|_| CodecError::Encrypt)?,
        );
        Ok(Payload {
            metadata: HashMap::from([
                ("encoding".to_owned(), ENCRYPTED_ENCODING.to_vec()),
                (KEY_ID_METADATA.to_owned(), self.active.as_bytes().to_vec()),
            ]),
            data,
            ..Default::default()
        })
    }

    /// Whether a key id is among the configured keys.
    pub fn has(&self, id: &str) -> bool {
        self.keys.contains_key(id)
    }

    /// Decrypts one payload; a payload that is not encrypted comes back as it is.
    pub fn decrypt(&self, payload: Payload) -> Result<Payload, CodecError> {
        if payload.metadata.get("encoding").map(Vec::as_slice) != Some(ENCRYPTED_ENCODING) {
            return Ok(payload);
        }
        let id = payload
            .metadata
            .get(KEY_ID_METADATA)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default();
        let cipher = self
            .keys
            .get(&id)
            .ok_or_else(|| CodecError::UnknownKey(id.clone()))?;
        if payload.data.len() < 12 {
            return Err(CodecError::Decrypt);
        }
        let (nonce, ciphertext) = payload.data.split_at(12);
        let plain = cipher
            .decrypt(Nonce::from_slice(nonce), ciphertext)
            .map_err(|_| CodecError::Decrypt)?;
        Payload::decode(plain.as_slice()).map_err(CodecError::Malformed)
    }
}

impl FromStr for CodecKeys {
    type Err = CodecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// The Temporal payload codec over [`CodecKeys`].
#[derive(Debug, Clone)]
pub struct EncryptionCodec {
    keys: Arc<CodecKeys>,
}

impl EncryptionCodec {
    /// A codec with these keys.
    pub fn new(keys: Arc<CodecKeys>) -> Self {
        Self { keys }
    }
}

fn conversion(e: CodecError) -> PayloadConversionError {
    PayloadConversionError::EncodingError(Box::new(e))
}

impl PayloadCodec for EncryptionCodec {
    fn encode(
        &self,
        _: &SerializationContextData,
        payloads: Vec<Payload>,
    ) -> BoxFuture<'static, Result<Vec<Payload>, PayloadConversionError>> {
        let keys = self.keys.clone();
        async move {
            payloads
                .iter()
                .map(|p| keys.encrypt(p).map_err(conversion))
                .collect()
        }
        .boxed()
    }

    fn decode(
        &self,
        _: &SerializationContextData,
        payloads: Vec<Payload>,
    ) -> BoxFuture<'static, Result<Vec<Payload>, PayloadConversionError>> {
        let keys = self.keys.clone();
        async move {
            payloads
                .into_iter()
                .map(|p| keys.decrypt(p).map_err(conversion))
                .collect()
        }
        .boxed()
    }
}

/// The data converter for a deployment: JSON payloads, encrypted when keys are configured
/// (failure messages too, through the failure converter's encoded attributes).
pub fn data_converter(keys: Option<Arc<CodecKeys>>) -> DataConverter {
    match keys {
        Some(keys) => DataConverter::new(
            PayloadConverter::default(),
            DefaultFailureConverter::new(true),
            EncryptionCodec::new(keys),
        ),
        None => DataConverter::default(),
    }
}

/// Parses the keys setting (empty: no encryption).
pub fn keys_from_setting(setting: &Secret) -> anyhow::Result<Option<Arc<CodecKeys>>> {
    if setting.is_empty() {
        return Ok(None);
    }
    Ok(Some(Arc::new(CodecKeys::parse(setting.expose())?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(text: &str) -> Payload {
        Payload {
            metadata: HashMap::from([("encoding".to_owned(), b"json/plain".to_vec())]),
            data: text.as_bytes().to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn a_payload_round_trips_and_its_plaintext_is_gone() {
        let keys = CodecKeys::parse(&CodecKeys::generate("k1")).unwrap();
        let plain = payload(r#"{"orderId":"ORD-SECRET","amount":50000}"#);
        let sealed = keys.encrypt(&plain).unwrap();
        assert_eq!(sealed.metadata["encoding"], ENCRYPTED_ENCODING);
        assert_eq!(sealed.metadata[KEY_ID_METADATA], b"k1");
        let bytes = sealed.encode_to_vec();
        assert!(!bytes.windows(10).any(|w| w == b"ORD-SECRET"));
        assert!(!bytes.windows(5).any(|w| w == b"50000"));
        assert_eq!(keys.decrypt(sealed).unwrap(), plain);
    }

    #[test]
    fn rotated_keys_still_decode_old_payloads_and_unknown_ones_fail_clearly() {
        let k1 = CodecKeys::generate("k1");
        let k2 = CodecKeys::generate("k2");
        let old = CodecKeys::parse(&k1)
            .unwrap()
            .encrypt(&payload("old"))
            .unwrap();
        let rotated = CodecKeys::parse(&format!("{k2},{k1}")).unwrap();
        assert_eq!(rotated.active_id(), "k2");
        assert_eq!(rotated.decrypt(old.clone()).unwrap(), payload("old"));
        let new = rotated.encrypt(&payload("new")).unwrap();
        assert_eq!(new.metadata[KEY_ID_METADATA], b"k2");
        let without_k1 = CodecKeys::parse(&k2).unwrap();
        assert!(matches!(without_k1.decrypt(old), Err(CodecError::UnknownKey(id)) if id == "k1"));
    }

    #[test]
    fn tampering_and_bad_configuration_are_refused() {
        let keys = CodecKeys::parse(&CodecKeys::generate("k1")).unwrap();
        let mut sealed = keys.encrypt(&payload("x")).unwrap();
        let last = sealed.data.len() - 1;
        sealed.data[last] ^= 1;
        assert!(matches!(keys.decrypt(sealed), Err(CodecError::Decrypt)));
        assert!(CodecKeys::parse("k1:c2hvcnQ=").is_err());
        assert!(CodecKeys::parse("nocolon").is_err());
        assert!(CodecKeys::parse("").is_err());
        // Unencrypted payloads pass through.
        assert_eq!(keys.decrypt(payload("plain")).unwrap(), payload("plain"));
    }
}
