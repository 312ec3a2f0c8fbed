//! Signatures made by an independent implementation (Python `cryptography`, see
//! scripts/gen-fixtures.py), pushed into a real docker-registry: every case gets its verdict.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{engine, root, signed_only_config, TestRegistry};

#[tokio::test]
async fn every_independent_case_gets_its_expected_verdict_and_reason() {
    let reg = TestRegistry::start(common::RegistryOptions::default()).await;
    let plan = reg.push_independent_plan(None).await;
    let cases = plan["cases"].as_array().unwrap();
    assert!(cases.len() >= 12);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let keys: Vec<_> = case["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| root().join("keys").join(k.as_str().unwrap()))
            .collect();
        let (_dir, engine) = engine(&signed_only_config(&reg.addr, &keys));
        let image = format!(
            "{}/{}:{}",
            reg.addr,
            case["repository"].as_str().unwrap(),
            case["tag"].as_str().unwrap()
        );
        let v = engine.verify_image(&image, None).await;
        let want_allow = case["expect"] == "allow";
        assert_eq!(v.verdict.is_allowed(), want_allow, "{name}: {v}");
        assert_eq!(v.digest.as_deref(), case["digest"].as_str(), "{name}");
        if let Some(reason) = case["reason_contains"].as_str() {
            assert!(
                v.to_string().contains(reason),
                "{name}: want {reason:?} in {v}"
            );
        }
    }
}

#[tokio::test]
async fn a_key_of_the_wrong_type_verifies_nothing() {
    let reg = TestRegistry::start(common::RegistryOptions::default()).await;
    reg.push_independent_plan(None).await;
    // The P-256 image checked with only the RSA and Ed25519 keys.
    let keys = [
        root().join("keys/independent-rsa.pub"),
        root().join("keys/independent-ed25519.pub"),
    ];
    let (_dir, engine) = engine(&signed_only_config(&reg.addr, &keys));
    let v = engine
        .verify_image(&format!("{}/independent/signed-p256:v1", reg.addr), None)
        .await;
    assert!(v.to_string().contains("not by a trusted key"), "{v}");
}
