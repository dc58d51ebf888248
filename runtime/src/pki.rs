//! A throwaway certificate authority for `kagi dev --tls` and the tests (feature `dev-pki`):
//! one CA, server certificates for the services and client certificates naming the
//! callers, written as PEM files the services' TLS settings point at. Production uses the
//! cluster's own CA (cert-manager); nothing here is meant to outlive a dev session.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// Why certificates could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("generating a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("writing {path}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A certificate and its private key, as PEM files.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A CA whose key lives only in memory: it issues what a session needs and is dropped.
pub struct CertAuthority {
    dir: PathBuf,
    issuer: Issuer<'static, KeyPair>,
    ca_file: PathBuf,
}

impl std::fmt::Debug for CertAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertAuthority")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl CertAuthority {
    /// A new CA called `name`, its certificate written to `dir/ca.crt`.
    ///
    /// # Errors
    /// Key generation fails, or `dir` cannot be written.
    pub fn create(dir: &Path, name: &str) -> Result<Self, PkiError> {
        write(dir, "", &[])?;
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key)?;
        let ca_file = write(dir, "ca.crt", cert.pem().as_bytes())?;
        Ok(Self {
            dir: dir.to_owned(),
            issuer: Issuer::new(params, key),
            ca_file,
        })
    }

    /// The CA certificate clients and servers are told to trust.
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// A server certificate for `names` (DNS names or IP addresses), as `dir/<file>.crt/.key`.
    ///
    /// # Errors
    /// As [`CertAuthority::create`].
    pub fn server(&self, file: &str, names: &[&str]) -> Result<Issued, PkiError> {
        self.issue(file, names, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate whose subjectAltName carries `names` (what
    /// `auth.certificate_callers` maps to a caller).
    ///
    /// # Errors
    /// As [`CertAuthority::create`].
    pub fn client(&self, file: &str, names: &[&str]) -> Result<Issued, PkiError> {
        self.issue(file, names, ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn issue(
        &self,
        file: &str,
        names: &[&str],
        usage: ExtendedKeyUsagePurpose,
    ) -> Result<Issued, PkiError> {
        let key = KeyPair::generate()?;
        let sans: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(sans)?;
        params
            .distinguished_name
            .push(DnType::CommonName, names.first().copied().unwrap_or(file));
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert: write(&self.dir, &format!("{file}.crt"), cert.pem().as_bytes())?,
            key: write(
                &self.dir,
                &format!("{file}.key"),
                key.serialize_pem().as_bytes(),
            )?,
        })
    }
}

/// Writes `dir/name` (private keys readable by the owner only); an empty name only
/// creates `dir`.
fn write(dir: &Path, name: &str, contents: &[u8]) -> Result<PathBuf, PkiError> {
    let path = dir.join(name);
    let err = |source| PkiError::Write {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(err)?;
    if name.is_empty() {
        return Ok(path);
    }
    std::fs::write(&path, contents).map_err(err)?;
    #[cfg(unix)]
    if name.ends_with(".key") {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    }
    Ok(path)
}
