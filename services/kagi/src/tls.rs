//! `kagi dev --tls`: a CA generated at each start under `<data-dir>/tls/`, one server
//! certificate every service presents (for `localhost` and `127.0.0.1`), and one client
//! certificate per caller whose subjectAltName (`<caller>.callers.kagi.test`) each server maps
//! to that caller. Every gRPC hop then runs TLS with client certificates, exactly the
//! settings a deployment sets, so the secure path is the one tried first.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kagi_runtime::pki::{CertAuthority, Issued};
use kagi_runtime::{AuthSettings, ClientSettings, ServerSettings};

/// The name clients check the services' certificate against (endpoints are IP addresses).
const SERVER_NAME: &str = "localhost";

/// The DNS name in `caller`'s client certificate.
fn caller_name(caller: &str) -> String {
    format!("{caller}.callers.kagi.test")
}

/// Where the dev CA put each party's files.
#[derive(Debug)]
pub struct DevTls {
    ca: PathBuf,
    server: Issued,
    callers: BTreeMap<String, Issued>,
}

impl DevTls {
    /// A fresh CA in `dir` with the services' certificate and one per caller.
    ///
    /// # Errors
    /// Key generation fails, or `dir` cannot be written.
    pub fn create(dir: &Path, callers: &[&str]) -> anyhow::Result<Self> {
        let ca = CertAuthority::create(dir, "kagi dev CA")?;
        let server = ca.server("server", &[SERVER_NAME, "127.0.0.1", "::1"])?;
        let mut issued = BTreeMap::new();
        for caller in callers {
            issued.insert(
                (*caller).to_owned(),
                ca.client(caller, &[&caller_name(caller)])?,
            );
        }
        Ok(Self {
            ca: ca.ca_file().to_owned(),
            server,
            callers: issued,
        })
    }

    /// A server presenting the services' certificate, requiring client certificates from
    /// the dev CA and knowing each caller by its certificate.
    pub fn serve(&self, server: &mut ServerSettings, auth: &mut AuthSettings) {
        server.tls_cert = Some(self.server.cert.clone());
        server.tls_key = Some(self.server.key.clone());
        server.tls_client_ca = Some(self.ca.clone());
        for caller in self.callers.keys() {
            auth.certificate_callers
                .insert(caller_name(caller), caller.clone());
        }
    }

    /// A client of another service, over TLS, presenting `caller`'s certificate.
    pub fn call(&self, client: &mut ClientSettings, caller: &str) {
        if let Some(rest) = client.endpoint.strip_prefix("http://") {
            client.endpoint = format!("https://{rest}");
        }
        client.ca_file = Some(self.ca.clone());
        client.tls_server_name = Some(SERVER_NAME.to_owned());
        if let Some(issued) = self.callers.get(caller) {
            client.cert_file = Some(issued.cert.clone());
            client.key_file = Some(issued.key.clone());
        }
    }

    /// The grpcurl flags that call as `caller` by certificate alone (no token needed).
    pub fn grpcurl_flags(&self, caller: &str) -> String {
        let Some(issued) = self.callers.get(caller) else {
            return String::from("grpcurl");
        };
        format!(
            "grpcurl -cacert {} -cert {} -key {} -servername {SERVER_NAME}",
            self.ca.display(),
            issued.cert.display(),
            issued.key.display()
        )
    }
}
