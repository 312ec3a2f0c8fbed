//! Pure, synchronous verification: no I/O, microseconds per signature, called inline.
//!
//! Key verification is sigstore-rs's `CosignVerificationKey` (its legacy key path is correct:
//! ECDSA P-256/P-384/P-521, RSA PKCS#1 v1.5 and PSS, Ed25519, over the exact payload bytes).
//! What a payload must say is checked here, the way cosign does it.

pub mod dsse;
pub mod key;

use serde::Deserialize;

use crate::reference::Digest;
pub use key::{KeyError, TrustedKey};

/// Layer media type of a cosign "simple signing" signature.
pub const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// Layer annotation holding the base64 signature.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// `critical.type` of a cosign container image signature.
pub const COSIGN_SIGNATURE_TYPE: &str = "cosign container image signature";

/// What one signature layer amounts to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureOutcome {
    /// Verified by `keys[key_index]` and the payload names the image digest.
    Verified { key_index: usize },
    /// Well-formed, but no trusted key verifies it.
    NotTrusted,
    /// Not decodable: bad base64, or a trusted key signed something that is not a payload.
    Malformed(String),
    /// A trusted key signed this payload, but for another digest.
    OtherDigest(String),
    /// A trusted key signed this payload, but it is not a container image signature.
    WrongType(String),
}

#[derive(Deserialize)]
struct SimpleSigning {
    critical: Critical,
}

#[derive(Deserialize)]
struct Critical {
    image: CriticalImage,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct CriticalImage {
    #[serde(rename = "docker-manifest-digest")]
    docker_manifest_digest: String,
}

/// Verifies one cosign simple-signing layer: `signature_b64` over the exact `payload` bytes
/// with one of `keys`; then the payload must be a cosign container image signature for
/// `image`. `critical.identity.docker-reference` is not checked, as cosign does not: the same
/// digest may be re-hosted, and the signature tag already lives in the image's repository.
pub fn simple_signing(
    payload: &[u8],
    signature_b64: &str,
    image: &Digest,
    keys: &[TrustedKey],
) -> SignatureOutcome {
    let signature = match key::decode_signature(signature_b64) {
        Ok(s) => s,
        Err(e) => return SignatureOutcome::Malformed(e.to_string()),
    };
    let Some(key_index) = keys.iter().position(|k| k.verifies(&signature, payload)) else {
        return SignatureOutcome::NotTrusted;
    };
    let parsed: SimpleSigning = match serde_json::from_slice(payload) {
        Ok(p) => p,
        Err(e) => {
            return SignatureOutcome::Malformed(format!(
                "signed payload is not a cosign simple-signing document: {e}"
            ))
        }
    };
    if parsed.critical.kind != COSIGN_SIGNATURE_TYPE {
        return SignatureOutcome::WrongType(parsed.critical.kind);
    }
    if parsed.critical.image.docker_manifest_digest != image.to_string() {
        return SignatureOutcome::OtherDigest(parsed.critical.image.docker_manifest_digest);
    }
    SignatureOutcome::Verified { key_index }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::signature::Signer;
    use p256::pkcs8::EncodePublicKey;

    fn keypair() -> (p256::ecdsa::SigningKey, TrustedKey) {
        let sk = p256::ecdsa::SigningKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
        let pem = sk
            .verifying_key()
            .to_public_key_pem(p256::pkcs8::LineEnding::LF)
            .unwrap();
        (
            sk,
            TrustedKey::from_pem("test.pub", pem.as_bytes()).unwrap(),
        )
    }

    fn sign(sk: &p256::ecdsa::SigningKey, payload: &[u8]) -> String {
        use base64::Engine as _;
        let sig: p256::ecdsa::Signature = sk.sign(payload);
        base64::engine::general_purpose::STANDARD.encode(sig.to_der().as_bytes())
    }

    fn payload(digest: &Digest, kind: &str) -> Vec<u8> {
        format!(
            r#"{{"critical":{{"identity":{{"docker-reference":"r/x"}},"image":{{"docker-manifest-digest":"{digest}"}},"type":"{kind}"}},"optional":null}}"#
        )
        .into_bytes()
    }

    #[test]
    fn verified_needs_key_payload_type_and_digest() {
        let (sk, key) = keypair();
        let (other_sk, other) = keypair();
        let d = Digest::of(b"image");
        let p = payload(&d, COSIGN_SIGNATURE_TYPE);
        let sig = sign(&sk, &p);
        let keys = [other.clone(), key.clone()];
        assert_eq!(
            simple_signing(&p, &sig, &d, &keys),
            SignatureOutcome::Verified { key_index: 1 }
        );
        assert_eq!(
            simple_signing(&p, &sig, &d, std::slice::from_ref(&other)),
            SignatureOutcome::NotTrusted
        );
        // Tampered payload.
        let mut tampered = p.clone();
        tampered[5] ^= 1;
        assert_eq!(
            simple_signing(&tampered, &sig, &d, &keys),
            SignatureOutcome::NotTrusted
        );
        // Replayed from another digest.
        let other_digest = Digest::of(b"other");
        assert_eq!(
            simple_signing(&p, &sig, &other_digest, &keys),
            SignatureOutcome::OtherDigest(d.to_string())
        );
        // Wrong type.
        let wt = payload(&d, "something else");
        assert_eq!(
            simple_signing(&wt, &sign(&other_sk, &wt), &d, &keys),
            SignatureOutcome::WrongType("something else".into())
        );
        // Not base64.
        assert!(matches!(
            simple_signing(&p, "***", &d, &keys),
            SignatureOutcome::Malformed(_)
        ));
        // Signed garbage.
        assert!(matches!(
            simple_signing(b"nope", &sign(&sk, b"nope"), &d, &keys),
            SignatureOutcome::Malformed(_)
        ));
    }
}
