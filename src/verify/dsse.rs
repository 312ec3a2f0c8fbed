//! DSSE envelopes carrying in-toto statements (cosign attestations).
//!
//! The signature covers PAE = `"DSSEv1" SP len(type) SP type SP len(body) SP body`, lengths
//! as ASCII decimal byte counts, `body` the base64-decoded payload. The statement must be
//! in-toto `Statement/v0.1` (what cosign writes) or `/v1`; its `predicateType` decides (the
//! layer's `predicateType` annotation is only a hint, and is not trusted).

use base64::Engine as _;
use serde::Deserialize;
use serde_json::Value as Json;

use super::TrustedKey;
use crate::reference::Digest;

/// Layer media type of a cosign attestation.
pub const DSSE_ENVELOPE: &str = "application/vnd.dsse.envelope.v1+json";
pub const IN_TOTO_PAYLOAD: &str = "application/vnd.in-toto+json";
const STATEMENT_TYPES: [&str; 2] = [
    "https://in-toto.io/Statement/v0.1",
    "https://in-toto.io/Statement/v1",
];

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    payload_type: String,
    payload: String,
    #[serde(default)]
    signatures: Vec<EnvelopeSignature>,
}

#[derive(Debug, Deserialize)]
struct EnvelopeSignature {
    sig: String,
}

/// A parsed envelope, checked once, verified against any number of authority sets.
#[derive(Debug)]
pub struct ParsedEnvelope {
    pae: Vec<u8>,
    signatures: Vec<Vec<u8>>,
    statement: Result<Json, String>,
}

/// What one envelope amounts to for one attestation requirement.
#[derive(Debug, Clone, PartialEq)]
pub enum AttestationOutcome {
    /// Signed by `authorities[authority_index]`, about this image, of the wanted type.
    Verified {
        authority_index: usize,
        statement: Json,
    },
    /// A statement of another predicate type (from the signed statement if trusted, else
    /// as read).
    OtherType(String),
    /// Of the wanted type, but no authority's key verifies it.
    NotTrusted,
    /// Trusted, of the wanted type, but about other digests.
    OtherSubject(Vec<String>),
    /// Not a DSSE envelope with an in-toto statement.
    Malformed(String),
}

/// Pre-authentication encoding.
pub fn pae(payload_type: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {} {} ",
        payload_type.len(),
        payload_type,
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

fn b64(s: &str) -> Result<Vec<u8>, base64::DecodeError> {
    let s = s.trim();
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(s))
}

/// Parses an envelope blob. Errors are reasons (`Malformed`).
pub fn parse(blob: &[u8]) -> Result<ParsedEnvelope, String> {
    let env: Envelope =
        serde_json::from_slice(blob).map_err(|e| format!("not a DSSE envelope: {e}"))?;
    if env.payload_type != IN_TOTO_PAYLOAD {
        return Err(format!(
            "payloadType {:?} is not {IN_TOTO_PAYLOAD}",
            env.payload_type
        ));
    }
    let body = b64(&env.payload).map_err(|e| format!("payload is not base64: {e}"))?;
    let signatures = env
        .signatures
        .iter()
        .filter_map(|s| b64(&s.sig).ok())
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>();
    let statement = serde_json::from_slice::<Json>(&body)
        .map_err(|e| format!("payload is not an in-toto statement: {e}"))
        .and_then(|st| match st.get("_type").and_then(Json::as_str) {
            Some(t) if STATEMENT_TYPES.contains(&t) => Ok(st),
            other => Err(format!(
                "statement _type {other:?} is not in-toto v0.1 or v1"
            )),
        });
    Ok(ParsedEnvelope {
        pae: pae(&env.payload_type, &body),
        signatures,
        statement,
    })
}

impl ParsedEnvelope {
    /// The statement's predicate type, as read (unverified).
    pub fn predicate_type(&self) -> Option<&str> {
        self.statement
            .as_ref()
            .ok()
            .and_then(|s| s.get("predicateType"))
            .and_then(Json::as_str)
    }

    /// Checks this envelope against one requirement.
    pub fn check(
        &self,
        image: &Digest,
        predicate_type: &str,
        authorities: &[TrustedKey],
    ) -> AttestationOutcome {
        let statement = match &self.statement {
            Ok(s) => s,
            Err(e) => return AttestationOutcome::Malformed(e.clone()),
        };
        let found_type = self.predicate_type().unwrap_or_default();
        if found_type != predicate_type {
            return AttestationOutcome::OtherType(found_type.to_owned());
        }
        let Some(authority_index) = authorities
            .iter()
            .position(|k| self.signatures.iter().any(|s| k.verifies(s, &self.pae)))
        else {
            return AttestationOutcome::NotTrusted;
        };
        let subjects: Vec<String> = statement
            .get("subject")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
            .filter_map(|s| s.get("digest")?.get("sha256")?.as_str())
            .map(|h| format!("sha256:{h}"))
            .collect();
        if !subjects.iter().any(|s| *s == image.to_string()) {
            return AttestationOutcome::OtherSubject(subjects);
        }
        AttestationOutcome::Verified {
            authority_index,
            statement: statement.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pae_matches_the_dsse_spec_example() {
        // From the DSSE spec (protocol.md): PAE("http://example.com/HelloWorld", "hello world").
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
    }

    #[test]
    fn rejects_other_payload_types_and_statement_types() {
        let env = |pt: &str, st: &str| {
            let payload = base64::engine::general_purpose::STANDARD.encode(st);
            format!(
                r#"{{"payloadType":"{pt}","payload":"{payload}","signatures":[{{"sig":"AAAA"}}]}}"#
            )
        };
        assert!(parse(env("text/plain", "{}").as_bytes()).is_err());
        let p = parse(env(IN_TOTO_PAYLOAD, r#"{"_type":"https://example/Statement"}"#).as_bytes())
            .unwrap();
        assert!(matches!(
            p.check(&Digest::of(b"x"), "t", &[]),
            AttestationOutcome::Malformed(_)
        ));
        // No signatures: well-formed, but trusted by nobody.
        let st = base64::engine::general_purpose::STANDARD
            .encode(r#"{"_type":"https://in-toto.io/Statement/v1","predicateType":"t"}"#);
        let nosig = format!(
            r#"{{"payloadType":"application/vnd.in-toto+json","payload":"{st}","signatures":[]}}"#
        );
        let p = parse(nosig.as_bytes()).unwrap();
        assert_eq!(
            p.check(&Digest::of(b"x"), "t", &[]),
            AttestationOutcome::NotTrusted
        );
    }
}
