//! The example policy shipped in deploy/configmap.yaml is a valid config.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

#[test]
fn the_deploy_example_policy_loads() {
    let text = std::fs::read_to_string(common::root().join("deploy/configmap.yaml")).unwrap();
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let policy = doc["data"]["portcullis.yaml"].as_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("keys")).unwrap();
    // The ConfigMap's key is a placeholder: stand a real one in.
    std::fs::copy(common::trusted_pub(), dir.path().join("keys/release.pub")).unwrap();
    let ca = common::pki::Ca::new("deploy test");
    let leaf = ca.server();
    let tls = dir.path().join("tls");
    std::fs::create_dir_all(&tls).unwrap();
    std::fs::write(tls.join("tls.crt"), &leaf.cert_pem).unwrap();
    std::fs::write(tls.join("tls.key"), &leaf.key_pem).unwrap();
    std::fs::write(tls.join("apiserver-ca.crt"), &ca.cert_pem).unwrap();
    let policy = policy.replace("/etc/portcullis/tls/", &format!("{}/", tls.display()));
    let path = dir.path().join("portcullis.yaml");
    std::fs::write(&path, policy).unwrap();
    let config = portcullis::config::load(&path).unwrap();
    assert!(config.policy.rules.len() >= 3);
    portcullis::server::tls::load(config.server.tls.as_ref().unwrap()).unwrap();
}
