//! A real docker-registry over TLS with a test CA, and one with htpasswd basic auth.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{engine, pki, trusted_pub, RegistryOptions, TestRegistry};

const DIGEST: &str = "sha256:8e6cba58cced9bc2ff1f761e3052122cab0205520c4b69267bcf8462cd6bbf23";

fn config(registry: &str, settings: &str) -> String {
    format!(
        "registries:\n  \"{registry}\": {settings}\nrules:\n  - name: signed-only\n    images: [\"{registry}/**\"]\n    signatures: {{keys: [{:?}]}}\n",
        trusted_pub().display().to_string()
    )
}

/// Verifies `starter/signed-cosign:v1` on a TLS registry whose certificate `server_ca` signed,
/// with Portcullis trusting only `trusted_ca` for that registry.
async fn verify_over_tls(
    server_ca: &pki::Ca,
    trusted_ca: &pki::Ca,
) -> portcullis::verdict::ImageVerdict {
    let reg = TestRegistry::start(RegistryOptions {
        starter: true,
        tls: Some(server_ca.server()),
        ..Default::default()
    })
    .await;
    let (dir, _) = common::write_config("");
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, &trusted_ca.cert_pem).unwrap();
    let settings = format!("{{ca: {:?}}}", ca_path.display().to_string());
    let (_d, engine) = engine(&config(&reg.addr, &settings));
    engine
        .verify_image(&format!("{}/starter/signed-cosign:v1", reg.addr), None)
        .await
}

#[tokio::test]
async fn verifies_through_a_tls_registry_with_a_private_ca() {
    let ca = pki::Ca::new("portcullis test registry CA");
    let v = verify_over_tls(&ca, &ca).await;
    assert!(v.verdict.is_allowed(), "{v}");
    assert_eq!(v.digest.as_deref(), Some(DIGEST));
}

#[tokio::test]
async fn a_tls_registry_signed_by_another_ca_is_denied_as_unreachable() {
    let v = verify_over_tls(&pki::Ca::new("registry CA"), &pki::Ca::new("some other CA")).await;
    assert!(!v.verdict.is_allowed());
    assert!(v.to_string().contains("registry unreachable"), "{v}");
    assert!(v.to_string().to_lowercase().contains("certificate"), "{v}");
}

#[tokio::test]
async fn plain_http_is_not_used_unless_configured() {
    let reg = TestRegistry::starter().await;
    // No `insecure: true`: Portcullis speaks HTTPS to a plain-HTTP registry and fails closed.
    let yaml = format!(
        "rules:\n  - name: r\n    images: [\"{}/**\"]\n    signatures: {{keys: [{:?}]}}\n",
        reg.addr,
        trusted_pub().display().to_string()
    );
    let (_d, engine) = engine(&yaml);
    let v = engine
        .verify_image(&format!("{}/starter/signed-cosign:v1", reg.addr), None)
        .await;
    assert!(!v.verdict.is_allowed(), "{v}");
    assert!(v.to_string().contains("https://"), "{v}");
}

async fn basic_auth_registry() -> TestRegistry {
    let reg = TestRegistry::start(RegistryOptions {
        htpasswd: Some(("ci".into(), "test-password-not-secret".into())),
        ..Default::default()
    })
    .await;
    // Load one signed image (and its .sig) through the authenticated API.
    let starter = TestRegistry::starter().await;
    let m = starter
        .get(
            None,
            &format!("/v2/starter/signed-cosign/manifests/{DIGEST}"),
            portcullis::registry::manifest::ACCEPT_MANIFESTS,
        )
        .await;
    let sig_tag = format!("sha256-{}.sig", &DIGEST[7..]);
    let sig = starter
        .get(
            None,
            &format!("/v2/starter/signed-cosign/manifests/{sig_tag}"),
            portcullis::registry::manifest::ACCEPT_MANIFESTS,
        )
        .await;
    for manifest in [&m, &sig] {
        let v: serde_json::Value = serde_json::from_slice(manifest).unwrap();
        let mut descs = vec![v["config"].clone()];
        descs.extend(v["layers"].as_array().unwrap().iter().cloned());
        for d in descs {
            let blob = starter
                .get(
                    None,
                    &format!(
                        "/v2/starter/signed-cosign/blobs/{}",
                        d["digest"].as_str().unwrap()
                    ),
                    "*/*",
                )
                .await;
            reg.push_blob(None, "private/app", &blob).await;
        }
    }
    let oci = "application/vnd.oci.image.manifest.v1+json";
    reg.push_manifest(None, "private/app", "v1", oci, &m).await;
    reg.push_manifest(None, "private/app", &sig_tag, oci, &sig)
        .await;
    reg
}

#[tokio::test]
async fn verifies_through_a_registry_with_basic_auth() {
    let reg = basic_auth_registry().await;
    let (dir, _) = common::write_config("");
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "test-password-not-secret\n").unwrap();
    let settings = format!(
        "{{insecure: true, username: ci, passwordFile: {:?}}}",
        pw.display().to_string()
    );
    let (_d, engine) = engine(&config(&reg.addr, &settings));
    let before = engine.registry().requests_made();
    let v = engine
        .verify_image(&format!("{}/private/app:v1", reg.addr), None)
        .await;
    assert!(v.verdict.is_allowed(), "{v}");
    // One 401 challenge, then Basic is sent up front: 1 + 3 requests.
    assert_eq!(engine.registry().requests_made() - before, 4);
}

#[tokio::test]
async fn basic_auth_failures_say_auth_failed_and_never_show_the_password() {
    let reg = basic_auth_registry().await;
    // Anonymous.
    let (_d, engine) = engine(&config(&reg.addr, "{insecure: true}"));
    let v = engine
        .verify_image(&format!("{}/private/app:v1", reg.addr), None)
        .await;
    assert!(v.to_string().contains("authentication failed"), "{v}");
    assert!(
        v.to_string().contains("no credentials are configured"),
        "{v}"
    );
    // Wrong password.
    let (dir, _) = common::write_config("");
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "wrong-password-xyz").unwrap();
    let settings = format!(
        "{{insecure: true, username: ci, passwordFile: {:?}}}",
        pw.display().to_string()
    );
    let (_d2, engine) = common::engine(&config(&reg.addr, &settings));
    let v = engine
        .verify_image(&format!("{}/private/app:v1", reg.addr), None)
        .await;
    let text = v.to_string();
    assert!(text.contains("authentication failed"), "{text}");
    assert!(!text.contains("wrong-password-xyz"), "{text}");
}
