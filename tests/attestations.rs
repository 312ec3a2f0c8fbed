//! Attestations, thresholds, multi-arch and warn mode against a real docker-registry:
//! cosign 2.5's own attestations (starter fixtures), DSSE envelopes made by securesystemslib /
//! in-toto (fixtures/attestations), and signatures made here for the truth tables.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use base64::Engine as _;
use common::{root, starter_dir, trusted_pub, RegistryOptions, TestRegistry};
use p256::ecdsa::signature::Signer as _;
use p256::pkcs8::EncodePublicKey as _;
use portcullis::verdict::{AllowBasis, Verdict};

fn key_path(p: &std::path::Path) -> String {
    format!("{:?}", p.display().to_string())
}

/// The starter's attestation columns: cosign verify-attestation semantics (no signature check).
#[tokio::test]
async fn starter_attestations_match_cosign_for_every_column() {
    let reg = TestRegistry::starter().await;
    let key = key_path(&trusted_pub());
    let builder = "https://ci.starter.example/builder@v1";
    let columns = [
        ("slsa", "https://slsa.dev/provenance/v1", None),
        ("cyclonedx", "https://cyclonedx.org/bom", None),
        (
            "vuln",
            "https://cosign.sigstore.dev/attestation/vuln/v1",
            None,
        ),
        (
            "builder",
            "https://slsa.dev/provenance/v1",
            Some(format!("predicate.runDetails.builder.id == \"{builder}\"")),
        ),
    ];
    for (column, predicate_type, condition) in columns {
        let condition = condition
            .map(|c| format!("\n        condition: '{c}'"))
            .unwrap_or_default();
        let yaml = format!(
            "registries: {{\"{r}\": {{insecure: true}}}}\nrules:\n  - name: {column}\n    images: [\"{r}/**\"]\n    attestations:\n      - name: {column}\n        predicateType: {predicate_type}\n        authorities: [{{key: {key}}}]{condition}\n",
            r = reg.addr
        );
        let (_d, engine) = common::engine(&yaml);
        for f in common::starter_fixtures()["fixtures"].as_array().unwrap() {
            let image = reg.reference(f["digest_reference"].as_str().unwrap());
            let v = engine.verify_image(&image, None).await;
            let want = f["expect"][column] == "allow";
            assert_eq!(v.verdict.is_allowed(), want, "{column} {image}: {v}");
        }
    }
}

#[tokio::test]
async fn independent_dsse_attestations_get_their_expected_verdicts() {
    let reg = TestRegistry::start(RegistryOptions::default()).await;
    let plan = reg.push_plan(None, "fixtures/attestations/plan.json").await;
    let mut policy = plan["policy"]
        .as_str()
        .unwrap()
        .replace("REGISTRY", &reg.addr);
    for k in ["attest-ci.pub", "attest-scanner.pub"] {
        policy = policy.replace(
            &format!("keys/{k}"),
            &root().join("keys").join(k).display().to_string(),
        );
    }
    let (_d, engine) = common::engine(&policy);
    let cases = plan["cases"].as_array().unwrap();
    assert!(cases.len() >= 11);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let image = format!(
            "{}/{}:{}",
            reg.addr,
            case["repository"].as_str().unwrap(),
            case["tag"].as_str().unwrap()
        );
        let v = engine.verify_image(&image, None).await;
        assert_eq!(
            v.verdict.is_allowed(),
            case["expect"] == "allow",
            "{name}: {v}"
        );
        let text = v.to_string();
        if let Some(phrase) = case["reason_contains"].as_str() {
            assert!(text.contains(phrase), "{name}: want {phrase:?} in {text}");
        }
        match case["deny_from"].as_str() {
            Some("signatures") => assert!(text.contains("signature"), "{name}: {text}"),
            Some(req) => assert!(
                text.contains(&format!("attestation {req:?}")),
                "{name}: {text}"
            ),
            None => {}
        }
        if case["expect"] == "allow" {
            let Verdict::Allowed {
                basis: AllowBasis::Verified { attestations, .. },
            } = &v.verdict
            else {
                panic!("{name}: {v}");
            };
            assert_eq!(attestations.len(), 2, "{name}: {v}");
        }
    }
}

// --- Signatures made here, for truth tables ------------------------------------------------

struct Signer {
    key: p256::ecdsa::SigningKey,
    path: std::path::PathBuf,
}

fn signers(dir: &std::path::Path, n: usize) -> Vec<Signer> {
    (0..n)
        .map(|i| {
            let key = p256::ecdsa::SigningKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
            let pem = key
                .verifying_key()
                .to_public_key_pem(p256::pkcs8::LineEnding::LF)
                .unwrap();
            let path = dir.join(format!("k{i}.pub"));
            std::fs::write(&path, pem).unwrap();
            Signer { key, path }
        })
        .collect()
}

/// Pushes a cosign `.sig` for `digest` in `repo` with one layer per signer (in order).
async fn push_sig(reg: &TestRegistry, repo: &str, digest: &str, by: &[&Signer]) {
    let payload = format!(
        r#"{{"critical":{{"identity":{{"docker-reference":"{repo}"}},"image":{{"docker-manifest-digest":"{digest}"}},"type":"cosign container image signature"}},"optional":null}}"#
    );
    let config = br#"{"architecture":"","config":{},"created":"0001-01-01T00:00:00Z","os":"","rootfs":{"type":"layers","diff_ids":[]}}"#;
    reg.push_blob(None, repo, config).await;
    reg.push_blob(None, repo, payload.as_bytes()).await;
    let pd = portcullis::reference::Digest::of(payload.as_bytes()).to_string();
    let layers: Vec<String> = by
        .iter()
        .map(|s| {
            let sig: p256::ecdsa::Signature = s.key.sign(payload.as_bytes());
            let b64 = base64::engine::general_purpose::STANDARD.encode(sig.to_der().as_bytes());
            format!(
                r#"{{"mediaType":"application/vnd.dev.cosign.simplesigning.v1+json","size":{},"digest":"{pd}","annotations":{{"dev.cosignproject.cosign/signature":"{b64}"}}}}"#,
                payload.len()
            )
        })
        .collect();
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","size":{},"digest":"{}"}},"layers":[{}]}}"#,
        config.len(),
        portcullis::reference::Digest::of(config),
        layers.join(",")
    );
    let tag = format!("sha256-{}.sig", &digest[7..]);
    reg.push_manifest(
        None,
        repo,
        &tag,
        "application/vnd.oci.image.manifest.v1+json",
        manifest.as_bytes(),
    )
    .await;
}

#[tokio::test]
async fn threshold_truth_table_counts_distinct_authorities() {
    let reg = TestRegistry::starter().await;
    let dir = tempfile::tempdir().unwrap();
    let k = signers(dir.path(), 3);
    let digest = "sha256:814460ecefcf12ca1f09a7b33272925bbe432b58bb656c4d664924f47c514b9c";
    // starter/unsigned, signed here by k0 twice and k1 once.
    push_sig(&reg, "starter/unsigned", digest, &[&k[0], &k[0], &k[1]]).await;
    let image = format!("{}/starter/unsigned:v1", reg.addr);
    let authorities = |idx: &[usize]| {
        idx.iter()
            .map(|&i| format!("{{key: {}}}", key_path(&k[i].path)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    // (authorities, threshold, allowed, phrase)
    let table: &[(&[usize], usize, bool, &str)] = &[
        (&[0], 1, true, ""),
        (&[1], 1, true, ""),
        (&[2], 1, false, "not by a trusted key"),
        (&[0, 1], 2, true, ""),
        (
            &[0, 2],
            2,
            false,
            "1 of the 2 required authorities verified",
        ),
        (&[0, 1, 2], 2, true, ""),
        (
            &[0, 1, 2],
            3,
            false,
            "2 of the 3 required authorities verified",
        ),
        (&[2], 1, false, "none of the 3 signature(s)"),
    ];
    for (idx, threshold, allowed, phrase) in table {
        let yaml = format!(
            "registries: {{\"{r}\": {{insecure: true}}}}\nrules:\n  - name: t\n    images: [\"{r}/**\"]\n    signatures: {{threshold: {threshold}, authorities: [{}]}}\n",
            authorities(idx),
            r = reg.addr
        );
        let (_d, engine) = common::engine(&yaml);
        let v = engine.verify_image(&image, None).await;
        assert_eq!(
            v.verdict.is_allowed(),
            *allowed,
            "{idx:?} threshold {threshold}: {v}"
        );
        assert!(
            v.to_string().contains(phrase),
            "{idx:?} threshold {threshold}: {v}"
        );
    }
    // Duplicate signatures by one key count once: k0 signed twice, threshold 2 of [k0, k2].
    let yaml = format!(
        "registries: {{\"{r}\": {{insecure: true}}}}\nrules:\n  - name: t\n    images: [\"{r}/**\"]\n    signatures: {{threshold: 2, authorities: [{}]}}\n",
        authorities(&[0, 2]),
        r = reg.addr
    );
    let (_d, engine) = common::engine(&yaml);
    assert!(!engine.verify_image(&image, None).await.verdict.is_allowed());
}

#[tokio::test]
async fn multi_arch_index_mode_trusts_the_index_and_platforms_mode_checks_each_child() {
    let reg = TestRegistry::starter().await;
    let dir = tempfile::tempdir().unwrap();
    let k = signers(dir.path(), 1);
    let image = format!("{}/starter/multiarch:v1", reg.addr);
    let yaml = |mode: &str| {
        format!(
            "registries: {{\"{r}\": {{insecure: true}}}}\nrules:\n  - name: m\n    images: [\"{r}/**\"]\n    multiArch: {mode}\n    signatures: {{keys: [{}, {}]}}\n",
            key_path(&trusted_pub()),
            key_path(&k[0].path),
            r = reg.addr
        )
    };
    let (_d, index_engine) = common::engine(&yaml("index"));
    assert!(index_engine
        .verify_image(&image, None)
        .await
        .verdict
        .is_allowed());
    let (_d, engine) = common::engine(&yaml("platforms"));
    let v = engine.verify_image(&image, None).await;
    assert!(!v.verdict.is_allowed(), "{v}");
    let text = v.to_string();
    assert!(
        text.contains("platform linux/amd64") && text.contains("platform linux/arm64/v8"),
        "{text}"
    );
    assert!(text.contains("no signatures found"), "{text}");
    // Sign one child: still denied, naming only the other.
    let amd64 = "sha256:208fcf00faa7e47088f0a8059de4dee97874dd06b3768e4beace45fcedc54da3";
    let arm64 = "sha256:64106884f9d6b651b9f372a277179373354491991ab7deccb018bc998de4ff44";
    push_sig(&reg, "starter/multiarch", amd64, &[&k[0]]).await;
    let (_d, engine) = common::engine(&yaml("platforms"));
    let text = engine.verify_image(&image, None).await.to_string();
    assert!(
        !text.contains("platform linux/amd64 ") && text.contains("platform linux/arm64/v8"),
        "{text}"
    );
    push_sig(&reg, "starter/multiarch", arm64, &[&k[0]]).await;
    let (_d, engine) = common::engine(&yaml("platforms"));
    let v = engine.verify_image(&image, None).await;
    assert!(v.verdict.is_allowed(), "{v}");
    assert!(
        v.to_string()
            .contains("platforms linux/amd64, linux/arm64/v8 verified"),
        "{v}"
    );
}

#[tokio::test]
async fn warn_mode_admits_and_says_what_failed() {
    let reg = TestRegistry::starter().await;
    let yaml = format!(
        "registries: {{\"{r}\": {{insecure: true}}}}\nrules:\n  - name: soft\n    mode: warn\n    images: [\"{r}/**\"]\n    signatures: {{keys: [{}]}}\n",
        key_path(&trusted_pub()),
        r = reg.addr
    );
    let (_d, engine) = common::engine(&yaml);
    let v = engine
        .verify_image(&format!("{}/starter/unsigned:v1", reg.addr), None)
        .await;
    assert!(v.verdict.is_allowed(), "{v}");
    let text = v.to_string();
    assert!(
        text.contains("warn mode") && text.contains("no signatures found"),
        "{text}"
    );
    let signed = engine
        .verify_image(&format!("{}/starter/signed-cosign:v1", reg.addr), None)
        .await;
    assert!(
        matches!(
            signed.verdict,
            Verdict::Allowed {
                basis: AllowBasis::Verified { .. }
            }
        ),
        "{signed}"
    );
}

#[test]
fn cel_errors_are_reported_with_the_rule_path_at_load() {
    let (_d, path) = common::write_config(&format!(
        "rules:\n  - name: r\n    images: [\"**\"]\n    attestations:\n      - name: a\n        predicateType: t\n        authorities: [{{key: {}}}]\n        condition: 'predicate.('\n",
        key_path(&starter_dir().join("keys/trusted.pub"))
    ));
    let err = portcullis::config::load(&path).unwrap_err().to_string();
    assert!(err.contains("rules[0].attestations[0].condition"), "{err}");
}
