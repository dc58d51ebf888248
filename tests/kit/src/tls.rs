//! Certificates made fresh for one test (rcgen, through `kagi_runtime::pki`): a CA, a server
//! certificate for every name the tests dial, and client certificates naming callers the
//! way `kagi dev --tls` does (`<caller>.callers.kagi.test`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use kagi_runtime::pki::{CertAuthority, Issued};
use kagi_runtime::{AuthSettings, ClientSettings, ServerSettings};

/// The name balanced tests give three replicas; in the server certificate too.
pub const SERVICE_NAME: &str = "keystore.kagi.test";

/// The DNS name in `caller`'s client certificate.
pub fn caller_name(caller: &str) -> String {
    format!("{caller}.callers.kagi.test")
}

/// One test's CA and what it issued, deleted with it.
#[derive(Debug)]
pub struct TestPki {
    dir: tempfile::TempDir,
    ca: CertAuthority,
    server: Issued,
}

impl TestPki {
    /// A fresh CA and a server certificate for `localhost`, 127.0.0.1–3 and [`SERVICE_NAME`].
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = CertAuthority::create(dir.path(), "kagi test CA").unwrap();
        let server = ca
            .server(
                "server",
                &[
                    "localhost",
                    SERVICE_NAME,
                    "127.0.0.1",
                    "127.0.0.2",
                    "127.0.0.3",
                ],
            )
            .unwrap();
        Self { dir, ca, server }
    }

    pub fn ca_file(&self) -> &Path {
        self.ca.ca_file()
    }

    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_owned()
    }

    /// A client certificate naming `caller`.
    pub fn client(&self, caller: &str) -> Issued {
        self.ca.client(caller, &[&caller_name(caller)]).unwrap()
    }

    /// TLS with client certificates required, each of `callers` known by its certificate.
    pub fn serve_mtls(
        &self,
        server: &mut ServerSettings,
        auth: &mut AuthSettings,
        callers: &[&str],
    ) {
        server.tls_cert = Some(self.server.cert.clone());
        server.tls_key = Some(self.server.key.clone());
        server.tls_client_ca = Some(self.ca_file().to_owned());
        for caller in callers {
            auth.certificate_callers
                .insert(caller_name(caller), (*caller).to_owned());
        }
    }

    /// A client of `https://addr` trusting this CA, presenting `caller`'s certificate.
    pub fn client_settings(&self, addr: SocketAddr, caller: Option<&str>) -> ClientSettings {
        let mut settings = ClientSettings::at(format!("https://{addr}"));
        settings.ca_file = Some(self.ca_file().to_owned());
        settings.tls_server_name = Some("localhost".into());
        if let Some(caller) = caller {
            let issued = self.client(caller);
            settings.cert_file = Some(issued.cert);
            settings.key_file = Some(issued.key);
        }
        settings
    }
}

impl Default for TestPki {
    fn default() -> Self {
        Self::new()
    }
}
