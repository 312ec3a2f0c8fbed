//! `portcullis dev-certs`: a throwaway CA, the webhook's server certificate and the
//! kube-apiserver client certificate (for mTLS), for demos, tests and first installs.
//! Production clusters should issue these from their own PKI (e.g. cert-manager).

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("cannot generate certificates: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn write(dir: &Path, name: &str, body: &str, private: bool) -> Result<(), PkiError> {
    let path = dir.join(name);
    let err = |source| PkiError::Write {
        path: path.clone(),
        source,
    };
    std::fs::write(&path, body).map_err(err)?;
    if private {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    }
    Ok(())
}

/// Writes `ca.crt`, `server.crt`/`server.key` (SANs: `sans`, IPs recognised) and
/// `apiserver-client.crt`/`apiserver-client.key` (CN `kube-apiserver`) into `out`.
pub fn generate(out: &Path, sans: &[String]) -> Result<Vec<PathBuf>, PkiError> {
    std::fs::create_dir_all(out).map_err(|source| PkiError::Write {
        path: out.to_owned(),
        source,
    })?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "portcullis dev CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let mut server = CertificateParams::new(Vec::<String>::new())?;
    for san in sans {
        server.subject_alt_names.push(match san.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(san.clone().try_into()?),
        });
    }
    server.distinguished_name.push(
        DnType::CommonName,
        sans.first().map_or("portcullis", String::as_str),
    );
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_key = KeyPair::generate()?;
    let server_cert = server.signed_by(&server_key, &issuer)?;

    let mut client = CertificateParams::new(Vec::<String>::new())?;
    client
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client_key = KeyPair::generate()?;
    let client_cert = client.signed_by(&client_key, &issuer)?;

    write(out, "ca.crt", &ca_cert.pem(), false)?;
    write(out, "server.crt", &server_cert.pem(), false)?;
    write(out, "server.key", &server_key.serialize_pem(), true)?;
    write(out, "apiserver-client.crt", &client_cert.pem(), false)?;
    write(
        out,
        "apiserver-client.key",
        &client_key.serialize_pem(),
        true,
    )?;
    Ok([
        "ca.crt",
        "server.crt",
        "server.key",
        "apiserver-client.crt",
        "apiserver-client.key",
    ]
    .iter()
    .map(|n| out.join(n))
    .collect())
}
