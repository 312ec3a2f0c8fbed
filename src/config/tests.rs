use super::*;
use crate::policy::RuleAction;

fn write(dir: &Path, name: &str, body: &str) {
    std::fs::create_dir_all(dir.join(name).parent().unwrap()).unwrap();
    std::fs::write(dir.join(name), body).unwrap();
}

const KEY: &str = include_str!("../../fixtures/registry-starter/keys/trusted.pub");

#[test]
fn loads_the_contract_example_with_relative_paths() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "keys/release.pub", KEY);
    write(dir.path(), "secrets/pw", "s3cret\n");
    write(
        dir.path(),
        "portcullis.yaml",
        r#"
registries:
  "127.0.0.1:5000": {insecure: true}
  "registry.example.com": {username: ci, passwordFile: secrets/pw}
rules:
  - name: prod
    images: ["registry.example.com/prod/**"]
    namespaces: [payments]
    tags: {forbidLatest: true, requireDigest: false}
    signatures: {keys: [keys/release.pub]}
  - {name: system, images: ["registry.k8s.io/**"], action: allow}
defaultAction: deny
"#,
    );
    let c = load(&dir.path().join("portcullis.yaml")).unwrap();
    assert_eq!(c.policy.rules.len(), 2);
    assert!(c.policy.rules[0].tags.forbid_latest);
    assert!(
        matches!(&c.policy.rules[0].action, RuleAction::Verify(v) if v.signatures.as_ref().unwrap().authorities.len() == 1)
    );
    assert!(c.registries["127.0.0.1:5000"].insecure);
    assert_eq!(
        c.registries["registry.example.com"].credentials,
        Some(Credentials::new("ci", "s3cret"))
    );
    assert_eq!(c.policy.default_action, DefaultAction::Deny);
    assert_ne!(c.policy.rules[0].fingerprint, c.policy.rules[1].fingerprint);
}

#[test]
fn reports_every_problem_at_once_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "bad.pub", "not a key");
    write(
        dir.path(),
        "c.yaml",
        r#"
registries:
  "https://r.io/": {username: u}
limits: {requestTimeout: soon}
rules:
  - name: a
    images: ["r.io//x"]
    signatures: {keys: [missing.pub, bad.pub]}
  - {images: ["q.io/**"]}
  - {name: a, images: ["z.io/**"], action: maybe}
defaultAction: perhaps
server: {reviewTimeout: 40s}
"#,
    );
    let err = load(&dir.path().join("c.yaml")).unwrap_err();
    let ConfigError::Invalid { problems, .. } = &err else {
        panic!("{err}");
    };
    let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
    for want in [
        "limits.requestTimeout",
        "registries[\"https://r.io/\"]",
        "registries[\"https://r.io/\"].passwordFile",
        "rules[0].images[0]",
        "rules[0].signatures.keys[0]",
        "rules[0].signatures.keys[1]",
        "rules[1].name",
        "rules[1].action",
        "rules[2].action",
        "rules[2].name",
        "defaultAction",
        "server.reviewTimeout",
    ] {
        assert!(fields.contains(&want), "missing {want} in {fields:?}");
    }
    let text = err.to_string();
    assert!(text.contains("problem(s)"), "{text}");
}

#[test]
fn unknown_fields_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "c.yaml", "rulez: []\n");
    let err = load(&dir.path().join("c.yaml")).unwrap_err();
    assert!(matches!(err, ConfigError::Parse { .. }));
    assert!(err.to_string().contains("rulez"), "{err}");
}

#[test]
fn docker_config_supplies_credentials_and_explicit_ones_win() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "pw", "explicit");
    write(
        dir.path(),
        "docker.json",
        r#"{"auths":{"a.io":{"auth":"dTpw"},"b.io":{"auth":"dTpw"}}}"#,
    );
    write(
        dir.path(),
        "c.yaml",
        "dockerConfig: docker.json\nregistries:\n  a.io: {username: me, passwordFile: pw}\n",
    );
    let c = load(&dir.path().join("c.yaml")).unwrap();
    assert_eq!(
        c.registries["a.io"].credentials,
        Some(Credentials::new("me", "explicit"))
    );
    assert_eq!(
        c.registries["b.io"].credentials,
        Some(Credentials::new("u", "p"))
    );
}
