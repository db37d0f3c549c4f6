//! A test PKI for the API's mutual TLS: a CA, a server certificate for
//! localhost and 127.0.0.1, a client certificate from the CA, and one from a
//! CA the server does not trust.

use std::net::TcpListener;
use std::path::PathBuf;

use super::TempDir;

pub struct Pki {
    dir: TempDir,
}

impl Pki {
    /// A test CA, a server certificate for localhost/127.0.0.1, a client
    /// certificate from the CA, and one from another CA the server does not trust.
    pub fn new() -> Pki {
        let dir = TempDir::new("pki");
        let ca = ca_pair("Airlock test CA");
        let rogue = ca_pair("Someone else's CA");
        let write = |name: &str, text: String| std::fs::write(dir.0.join(name), text).expect("write PEM");
        write("ca.pem", ca.1.pem());
        let leaf = |names: Vec<String>, purpose: rcgen::ExtendedKeyUsagePurpose, issuer: &rcgen::Issuer<'_, rcgen::KeyPair>| {
            let key = rcgen::KeyPair::generate().expect("key");
            let mut params = rcgen::CertificateParams::new(names).expect("params");
            params.extended_key_usages = vec![purpose];
            params.distinguished_name.push(rcgen::DnType::CommonName, "airlock test");
            let cert = params.signed_by(&key, issuer).expect("sign");
            (cert.pem(), key.serialize_pem())
        };
        let (cert, key) = leaf(vec!["localhost".into(), "127.0.0.1".into()], rcgen::ExtendedKeyUsagePurpose::ServerAuth, &ca.0);
        write("server.pem", cert);
        write("server.key", key);
        let (cert, key) = leaf(vec![], rcgen::ExtendedKeyUsagePurpose::ClientAuth, &ca.0);
        write("client.pem", cert);
        write("client.key", key);
        let (cert, key) = leaf(vec![], rcgen::ExtendedKeyUsagePurpose::ClientAuth, &rogue.0);
        write("rogue.pem", cert);
        write("rogue.key", key);
        Pki { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.0.join(name)
    }

    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).expect("read PEM")
    }

    pub fn daemon_args(&self, port: u16) -> Vec<String> {
        vec![
            "--api-listen".into(),
            format!("127.0.0.1:{port}"),
            "--tls-cert".into(),
            self.path("server.pem").display().to_string(),
            "--tls-key".into(),
            self.path("server.key").display().to_string(),
            "--tls-client-ca".into(),
            self.path("ca.pem").display().to_string(),
        ]
    }
}

fn ca_pair(name: &str) -> (rcgen::Issuer<'static, rcgen::KeyPair>, rcgen::Certificate) {
    let key = rcgen::KeyPair::generate().expect("CA key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::DigitalSignature];
    let cert = params.self_signed(&key).expect("self-sign the CA");
    (rcgen::Issuer::new(params, key), cert)
}

/// A loopback port nobody listens on now (the daemon binds it next).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

