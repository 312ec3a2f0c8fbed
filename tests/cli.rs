//! `portcullis verify` and `check-config`: output and exit codes (0 allowed, 1 denied,
//! 2 usage or config error) are a contract CI scripts rely on.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::{Command, Output};

use common::{signed_only_config, trusted_pub, TestRegistry};

fn portcullis(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(args)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[tokio::test]
async fn verify_exits_0_when_all_allowed_and_1_when_any_denied() {
    let reg = TestRegistry::starter().await;
    let (_d, cfg) = common::write_config(&signed_only_config(&reg.addr, &[trusted_pub()]));
    let cfg = cfg.to_str().unwrap();
    let signed = format!("{}/starter/signed-cosign:v1", reg.addr);
    let unsigned = format!("{}/starter/unsigned:v1", reg.addr);

    let o = portcullis(&["verify", "--config", cfg, &signed]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    let out = stdout(&o);
    assert!(out.starts_with("ALLOWED image "), "{out}");
    assert!(
        out.contains("@sha256:8e6cba58"),
        "one line per image with its digest: {out}"
    );

    let o = portcullis(&["verify", "--config", cfg, &signed, &unsigned]);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(
        out.lines().nth(1).unwrap().starts_with("DENIED image "),
        "{out}"
    );
    assert!(out.contains("no signatures found"), "{out}");
}

#[tokio::test]
async fn verify_json_output_carries_verdicts_digests_and_reasons() {
    let reg = TestRegistry::starter().await;
    let (_d, cfg) = common::write_config(&signed_only_config(&reg.addr, &[trusted_pub()]));
    let unsigned = format!("{}/starter/unsigned:v1", reg.addr);
    let signed = format!("{}/starter/signed-cosign:v1", reg.addr);
    let o = portcullis(&[
        "verify",
        "-c",
        cfg.to_str().unwrap(),
        "--output",
        "json",
        &signed,
        &unsigned,
    ]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["allowed"], false);
    assert_eq!(v["images"][0]["verdict"], "allowed");
    assert_eq!(v["images"][0]["basis"]["kind"], "verified");
    assert!(v["images"][0]["basis"]["signed_by"][0]
        .as_str()
        .unwrap()
        .ends_with("trusted.pub"));
    assert_eq!(v["images"][1]["verdict"], "denied");
    assert_eq!(v["images"][1]["reasons"][0]["kind"], "no-signatures");
    assert_eq!(
        v["images"][1]["digest"],
        "sha256:814460ecefcf12ca1f09a7b33272925bbe432b58bb656c4d664924f47c514b9c"
    );
}

#[test]
fn usage_and_config_errors_exit_2() {
    assert_eq!(portcullis(&["verify"]).status.code(), Some(2));
    assert_eq!(portcullis(&["frobnicate"]).status.code(), Some(2));
    let o = portcullis(&["verify", "--config", "/nonexistent.yaml", "nginx"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent.yaml"));
}

#[test]
fn check_config_prints_every_problem() {
    let (_d, cfg) = common::write_config(
        "rules:\n  - {name: a, images: [\"a//b\"], signatures: {keys: [nope.pub]}}\n  - {images: []}\ndefaultAction: maybe\n",
    );
    let o = portcullis(&["check-config", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    for field in [
        "rules[0].images[0]",
        "rules[0].signatures.keys[0]",
        "rules[1].name",
        "rules[1].images",
        "defaultAction",
    ] {
        assert!(err.contains(field), "{field} missing from {err}");
    }
    let (_d, good) =
        common::write_config("rules: [{name: all, images: [\"**\"], action: allow}]\n");
    let o = portcullis(&["check-config", good.to_str().unwrap()]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[tokio::test]
async fn verify_reports_which_attestations_passed() {
    let reg = TestRegistry::starter().await;
    let key = format!("{:?}", trusted_pub().display().to_string());
    let (_d, cfg) = common::write_config(&format!(
        "registries: {{\"{r}\": {{insecure: true}}}}\nrules:\n  - name: attested\n    images: [\"{r}/**\"]\n    signatures: {{keys: [{key}]}}\n    attestations:\n      - {{name: provenance, predicateType: \"https://slsa.dev/provenance/v1\", authorities: [{{key: {key}}}], condition: 'predicate.runDetails.builder.id == \"https://ci.starter.example/builder@v1\"'}}\n      - {{name: sbom, predicateType: \"https://cyclonedx.org/bom\", authorities: [{{key: {key}}}]}}\n",
        r = reg.addr
    ));
    let cfg = cfg.to_str().unwrap();
    let attested = format!("{}/starter/attested:v1", reg.addr);
    let o = portcullis(&["verify", "-c", cfg, &attested]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    let out = stdout(&o);
    assert!(
        out.contains("attestation \"provenance\" verified")
            && out.contains("attestation \"sbom\" verified"),
        "{out}"
    );
    let o = portcullis(&["verify", "-c", cfg, "-o", "json", &attested]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let names: Vec<&str> = v["images"][0]["basis"]["attestations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["provenance", "sbom"]);
    let builder = format!("{}/starter/attested-untrusted-builder:v1", reg.addr);
    let o = portcullis(&["verify", "-c", cfg, &builder]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stdout(&o).contains("attestation \"provenance\": condition is false"),
        "{}",
        stdout(&o)
    );
}
