//! Trusted public keys (PEM SPKI), verified through sigstore-rs.

use std::fmt;

use base64::Engine as _;
use sigstore::crypto::{CosignVerificationKey, Signature};

/// Why a key or a signature encoding was rejected.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{name}: not a PEM public key: {detail}")]
    Parse { name: String, detail: String },
    #[error("signature is not valid base64: {0}")]
    SignatureEncoding(#[from] base64::DecodeError),
    #[error("signature is empty")]
    EmptySignature,
}

/// One trusted public key, with the name the policy gave it (its file path).
#[derive(Clone)]
pub struct TrustedKey {
    name: String,
    /// RSA keys verify PKCS#1 v1.5 (what cosign signs with) and PSS; other keys have one scheme.
    schemes: Vec<CosignVerificationKey>,
}

impl TrustedKey {
    /// Parses a PEM `PUBLIC KEY` (SPKI): ECDSA P-256/P-384/P-521, RSA or Ed25519.
    pub fn from_pem(name: &str, pem: &[u8]) -> Result<Self, KeyError> {
        let parse_err = |detail: String| KeyError::Parse {
            name: name.to_owned(),
            detail,
        };
        let key = CosignVerificationKey::try_from_pem(pem).map_err(|e| parse_err(e.to_string()))?;
        let schemes = match key {
            CosignVerificationKey::RSA_PKCS1_SHA256(der) => vec![
                CosignVerificationKey::RSA_PKCS1_SHA256(der.clone()),
                CosignVerificationKey::RSA_PSS_SHA256(der),
            ],
            other => vec![other],
        };
        Ok(Self {
            name: name.to_owned(),
            schemes,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether `signature` (raw bytes: DER for ECDSA) verifies over `message`.
    pub fn verifies(&self, signature: &[u8], message: &[u8]) -> bool {
        self.schemes.iter().any(|k| {
            k.verify_signature(Signature::Raw(signature), message)
                .is_ok()
        })
    }
}

impl fmt::Debug for TrustedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrustedKey")
            .field("name", &self.name)
            .finish()
    }
}

/// Decodes a base64 signature (standard alphabet; surrounding whitespace ignored).
pub fn decode_signature(b64: &str) -> Result<Vec<u8>, KeyError> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64.trim())?;
    if bytes.is_empty() {
        return Err(KeyError::EmptySignature);
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_non_keys_with_the_name() {
        let err = TrustedKey::from_pem("keys/x.pub", b"not a key").unwrap_err();
        assert!(err.to_string().contains("keys/x.pub"));
    }

    #[test]
    fn empty_signature_is_an_error() {
        assert!(matches!(
            decode_signature(""),
            Err(KeyError::EmptySignature)
        ));
        assert!(decode_signature("@@").is_err());
    }
}
