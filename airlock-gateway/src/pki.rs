//! The gateway's own certificate authority. On first start it makes a CA and
//! a server certificate in the data directory; agents are given `ca.pem` and
//! trust the gateway through it, and the gateway signs each enrolled host's
//! certificate with it. The host id and org live in the certificate's
//! subject (CN and O); its serial number is what the gateway checks against
//! the host's record, so revoking a host (or enrolling it again) retires the
//! old certificate at once.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SerialNumber,
};
use time::{Duration, OffsetDateTime};

pub const CA_FILE: &str = "ca.pem";
const CA_KEY_FILE: &str = "ca.key";
const SERVER_CERT_FILE: &str = "server.pem";
const SERVER_KEY_FILE: &str = "server.key";

/// Enrolled hosts' certificates are good this long; an agent enrolls again
/// with a new join token after that.
const HOST_CERT_DAYS: i64 = 825;

pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    ca_pem: String,
}

/// The server's certificate and key, as PEM.
pub struct ServerIdentity {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A certificate issued to an enrolled host.
pub struct IssuedCert {
    pub pem: String,
    /// Lowercase hex, as the gateway records it.
    pub serial: String,
}

impl Authority {
    /// The CA in `dir`, made on first start (key mode 0600).
    pub fn load_or_create(dir: &Path) -> Result<Authority> {
        let (cert_path, key_path) = (dir.join(CA_FILE), dir.join(CA_KEY_FILE));
        if cert_path.exists() != key_path.exists() {
            bail!("{} and {} must both exist or both be missing", cert_path.display(), key_path.display());
        }
        if !cert_path.exists() {
            let key = KeyPair::generate().context("generate the CA key")?;
            let params = ca_params();
            let cert = params.self_signed(&key).context("self-sign the CA")?;
            write_private(&key_path, &key.serialize_pem())?;
            std::fs::write(&cert_path, cert.pem()).with_context(|| format!("write {}", cert_path.display()))?;
            tracing::info!(ca = %cert_path.display(), "made the gateway's CA (give agents this file with --gateway-ca)");
        }
        Authority::load(&cert_path, &key_path)
    }

    /// A CA made elsewhere (`--ca-cert`, `--ca-key`): both files must exist;
    /// nothing is made or written.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Authority> {
        let ca_pem = read(cert_path)?;
        let key = KeyPair::from_pem(&read(key_path)?).with_context(|| format!("{} is not a private key", key_path.display()))?;
        let issuer = Issuer::from_ca_cert_pem(&ca_pem, key).with_context(|| format!("{} is not a CA certificate", cert_path.display()))?;
        Ok(Authority { issuer, ca_pem })
    }

    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The server certificate in `dir`, made for `names` on first start. A
    /// certificate that does not cover a name asked for now is made again.
    pub fn server_identity(&self, dir: &Path, names: &[String]) -> Result<ServerIdentity> {
        let (cert_path, key_path) = (dir.join(SERVER_CERT_FILE), dir.join(SERVER_KEY_FILE));
        let names_file = dir.join("server.names");
        let wanted = names.join("\n");
        let current = std::fs::read_to_string(&names_file).unwrap_or_default();
        if !cert_path.exists() || !key_path.exists() || current != wanted {
            let key = KeyPair::generate().context("generate the server key")?;
            let mut params = CertificateParams::new(names.to_vec()).context("server certificate names")?;
            params.distinguished_name = named("airlock-gateway", None);
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            params.serial_number = Some(random_serial()?);
            let cert = params.signed_by(&key, &self.issuer).context("sign the server certificate")?;
            write_private(&key_path, &key.serialize_pem())?;
            std::fs::write(&cert_path, cert.pem()).with_context(|| format!("write {}", cert_path.display()))?;
            std::fs::write(&names_file, &wanted).with_context(|| format!("write {}", names_file.display()))?;
            tracing::info!(names = ?names, cert = %cert_path.display(), "made the gateway's server certificate");
        }
        Ok(ServerIdentity { cert_pem: read(&cert_path)?, key_pem: read(&key_path)? })
    }

    /// Signs a host's CSR. Only its public key is taken from it: the subject
    /// (host id and org) and the usages are the gateway's.
    pub fn issue_host_cert(&self, csr_pem: &str, host_id: &str, org: &str) -> Result<IssuedCert> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem).context("the certificate signing request is not a valid PEM CSR")?;
        let serial = random_serial()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = named(host_id, Some(org));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::minutes(5);
        params.not_after = now + Duration::days(HOST_CERT_DAYS);
        params.serial_number = Some(serial.clone());
        let signed = CertificateSigningRequestParams { params, public_key: csr.public_key }
            .signed_by(&self.issuer)
            .context("sign the host certificate")?;
        Ok(IssuedCert { pem: signed.pem(), serial: hex::encode(serial.to_bytes()) })
    }
}

/// Who a client certificate names: the host id (CN), its org (O) and serial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    pub host_id: String,
    pub org: String,
    pub serial: String,
}

/// Reads the host identity from a DER client certificate the TLS layer has
/// already verified against the CA.
pub fn peer_identity(der: &[u8]) -> Result<PeerIdentity> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).context("parse the client certificate")?;
    let subject = cert.subject();
    let first = |attrs: Vec<&x509_parser::x509::AttributeTypeAndValue<'_>>| attrs.first().and_then(|a| a.as_str().ok()).map(str::to_string);
    let host_id = first(subject.iter_common_name().collect()).context("the client certificate names no host (CN)")?;
    let org = first(subject.iter_organization().collect()).context("the client certificate names no org (O)")?;
    Ok(PeerIdentity { host_id, org, serial: hex::encode(cert.raw_serial()) })
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.distinguished_name = named("Airlock gateway CA", None);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::minutes(5);
    params.not_after = now + Duration::days(3650);
    params
}

fn named(common_name: &str, org: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    if let Some(org) = org {
        dn.push(DnType::OrganizationName, org);
    }
    dn
}

/// 16 random bytes with the top bit clear (a positive DER integer).
fn random_serial() -> Result<SerialNumber> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("the system's random source: {e}"))?;
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    Ok(SerialNumber::from_slice(&bytes))
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))
}

/// Writes a key readable by its owner only, from its creation on.
pub fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    let tmp: PathBuf = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("create {}", tmp.display()))?;
    file.write_all(text.as_bytes()).with_context(|| format!("write {}", tmp.display()))?;
    file.sync_all().with_context(|| format!("sync {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("rename {} to {}", tmp.display(), path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_certificate_names_the_host_and_org_from_the_gateway_not_the_csr() {
        let dir = std::env::temp_dir().join(format!("airlock-pki-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = Authority::load_or_create(&dir).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut asked = CertificateParams::default();
        asked.distinguished_name = named("someone-else", Some("other-org"));
        let csr = asked.serialize_request(&key).unwrap().pem().unwrap();
        let issued = ca.issue_host_cert(&csr, "build-7", "payments").unwrap();
        let der = pem_to_der(&issued.pem);
        let who = peer_identity(&der).unwrap();
        assert_eq!(who, PeerIdentity { host_id: "build-7".into(), org: "payments".into(), serial: issued.serial.clone() });
        // The same CA is read back on the next start, and signs a different serial.
        let again = Authority::load_or_create(&dir).unwrap();
        assert_eq!(again.ca_pem(), ca.ca_pem());
        let second = again.issue_host_cert(&csr, "build-7", "payments").unwrap();
        assert_ne!(second.serial, issued.serial);
        assert!(ca.issue_host_cert("not a csr", "h", "o").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn pem_to_der(pem: &str) -> Vec<u8> {
        let (_, parsed) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        parsed.contents
    }
}
