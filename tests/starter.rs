//! Every starter fixture (signed by real cosign 2.5 / skopeo 1.18) gets its expected
//! `signature` verdict from a real docker-registry, through the engine and through the CLI.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{engine, signed_only_config, trusted_pub, untrusted_pub, TestRegistry};
use portcullis::verdict::{DenyReason, Verdict};

#[tokio::test]
async fn every_starter_fixture_gets_its_expected_signature_verdict() {
    let reg = TestRegistry::starter().await;
    let (_dir, engine) = engine(&signed_only_config(&reg.addr, &[trusted_pub()]));
    let fixtures = common::starter_fixtures();
    let mut checked = 0;
    for f in fixtures["fixtures"].as_array().unwrap() {
        let name = f["name"].as_str().unwrap();
        let expect = f["expect"]["signature"].as_str().unwrap();
        // Fixtures with a tag are checked by tag and by digest; children only by digest.
        let mut refs = vec![reg.reference(f["digest_reference"].as_str().unwrap())];
        if let Some(r) = f["reference"].as_str() {
            let r = reg.reference(r);
            if !refs.contains(&r) {
                refs.push(r);
            }
        }
        for r in refs {
            let v = engine.verify_image(&r, None).await;
            let got = if v.verdict.is_allowed() {
                "allow"
            } else {
                "deny"
            };
            assert_eq!(got, expect, "{name} ({r}): {v}");
            assert_eq!(v.digest.as_deref(), f["digest"].as_str(), "{name}: digest");
            checked += 1;
        }
    }
    assert!(checked >= 12, "only {checked} references checked");
}

#[tokio::test]
async fn untrusted_key_control_matches_the_peers() {
    let reg = TestRegistry::starter().await;
    let (_dir, engine) = engine(&signed_only_config(&reg.addr, &[untrusted_pub()]));
    for f in common::starter_fixtures()["fixtures"].as_array().unwrap() {
        let r = reg.reference(f["digest_reference"].as_str().unwrap());
        let v = engine.verify_image(&r, None).await;
        let expect = f["expect"]["signature_untrusted_key"].as_str().unwrap();
        assert_eq!(v.verdict.is_allowed(), expect == "allow", "{r}: {v}");
    }
}

#[tokio::test]
async fn reasons_distinguish_unsigned_untrusted_and_missing() {
    let reg = TestRegistry::starter().await;
    let (_dir, engine) = engine(&signed_only_config(&reg.addr, &[trusted_pub()]));
    let unsigned = engine
        .verify_image(&format!("{}/starter/unsigned:v1", reg.addr), None)
        .await;
    let text = unsigned.to_string();
    assert!(
        matches!(&unsigned.verdict, Verdict::Denied { reasons } if matches!(reasons[0], DenyReason::NoSignatures { .. })),
        "{text}"
    );
    assert!(
        text.contains("starter/unsigned:v1") && text.contains(".sig"),
        "{text}"
    );

    let untrusted = engine
        .verify_image(&format!("{}/starter/signed-untrusted:v1", reg.addr), None)
        .await;
    assert!(
        untrusted
            .to_string()
            .contains("signed, but not by a trusted key"),
        "{untrusted}"
    );

    let missing = engine
        .verify_image(&format!("{}/starter/nope:v1", reg.addr), None)
        .await;
    assert!(
        matches!(&missing.verdict, Verdict::Denied { reasons } if matches!(reasons[0], DenyReason::ImageNotFound { .. })),
        "{missing}"
    );
    assert!(missing.to_string().contains("image not found"), "{missing}");
}

#[tokio::test]
async fn the_same_digest_in_an_unsigned_repository_is_unsigned() {
    let reg = TestRegistry::starter().await;
    let digest = "sha256:8e6cba58cced9bc2ff1f761e3052122cab0205520c4b69267bcf8462cd6bbf23";
    reg.copy_image(
        None,
        "starter/signed-cosign",
        digest,
        "elsewhere/copy",
        "v1",
    )
    .await;
    let (_dir, engine) = engine(&signed_only_config(&reg.addr, &[trusted_pub()]));
    let original = engine
        .verify_image(
            &format!("{}/starter/signed-cosign@{digest}", reg.addr),
            None,
        )
        .await;
    assert!(original.verdict.is_allowed(), "{original}");
    let copy = engine
        .verify_image(&format!("{}/elsewhere/copy:v1", reg.addr), None)
        .await;
    assert_eq!(copy.digest.as_deref(), Some(digest));
    assert!(copy.to_string().contains("no signatures found"), "{copy}");
}

#[tokio::test]
async fn docker_schema2_image_resolves_to_its_real_digest() {
    // Without the schema-2 type in Accept, distribution converts it to schema 1 and the digest
    // changes per request; the .sig would then never be found.
    let reg = TestRegistry::starter().await;
    let (_dir, engine) = engine(&signed_only_config(&reg.addr, &[trusted_pub()]));
    let v = engine
        .verify_image(&format!("{}/starter/signed-v2s2:v1", reg.addr), None)
        .await;
    assert!(v.verdict.is_allowed(), "{v}");
    assert_eq!(
        v.digest.as_deref(),
        Some("sha256:1e4b8cba1db036a4862ada320c949b8deff1d318e33348ed3a19c60e8653c8b5")
    );
}

#[tokio::test]
async fn anonymous_cold_verification_makes_three_registry_requests() {
    let reg = TestRegistry::starter().await;
    let (_dir, engine) = engine(&signed_only_config(&reg.addr, &[trusted_pub()]));
    let before = engine.registry().requests_made();
    let v = engine
        .verify_image(&format!("{}/starter/signed-cosign:v1", reg.addr), None)
        .await;
    assert!(v.verdict.is_allowed(), "{v}");
    // image manifest, .sig manifest, one signature blob
    assert_eq!(engine.registry().requests_made() - before, 3);
}
