//! Calls from one kagi service to another (reset → keystore and notifier, portal → keystore
//! and reset, `kagi dev`, the benches): one settings shape and one builder, so every caller
//! speaks TLS (and mTLS) the same way, sends its bearer token (re-read when its file
//! changes) and the current W3C trace context, gives up after its timeout, retries the calls
//! it marks idempotent, and spreads calls over every address a DNS name resolves to.
//!
//! # Layout
//! - this module: [`ClientSettings`], [`channel`] and the [`Outgoing`] interceptor;
//! - [`balance`]: re-resolving a DNS name into the channel's endpoint set;
//! - [`retry`]: re-running idempotent calls refused with `UNAVAILABLE`.

pub mod balance;
pub mod retry;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

pub use balance::{Resolve, SystemResolver};
pub use retry::Retry;

use crate::metrics::MeteredChannel;

/// A service this one calls: where it is, how to trust it, and how it knows this caller.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientSettings {
    /// `http://host:port`, or `https://host:port` with `ca_file`.
    pub endpoint: String,
    /// The token inline (development); prefer `token_file`.
    pub token: Option<SecretString>,
    /// A file holding the token, e.g. a mounted Kubernetes Secret; re-read every
    /// `token_reload_ms`, so a rotated Secret is picked up without a restart.
    pub token_file: Option<PathBuf>,
    /// How often `token_file` is re-read.
    pub token_reload_ms: u64,
    /// Deadline of each call, and of connecting.
    pub timeout_ms: u64,
    /// PEM CA certificate(s) the callee's certificate must chain to (`https://` only).
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate presented to the callee (mTLS); with `key_file`.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    pub key_file: Option<PathBuf>,
    /// The name the callee's certificate must carry when it differs from the endpoint's
    /// host (an IP endpoint, or a Service name not in the certificate).
    pub tls_server_name: Option<String>,
    /// Spread calls over every address the endpoint's host resolves to (a headless
    /// Kubernetes Service lists every ready replica), re-resolved every `resolve_every_ms`.
    /// Off: one connection to whichever address the name first resolves to.
    pub balance: bool,
    /// How often a balanced endpoint's name is resolved again.
    pub resolve_every_ms: u64,
    /// Extra attempts of a call its caller marks idempotent ([`Retry`]) when the callee
    /// answers `UNAVAILABLE`. Other calls are never retried.
    pub retries: u32,
}

impl Default for ClientSettings {
    fn default() -> Self {
        Self {
            endpoint: String::new(),
            token: None,
            token_file: None,
            token_reload_ms: 5_000,
            timeout_ms: 5_000,
            ca_file: None,
            cert_file: None,
            key_file: None,
            tls_server_name: None,
            balance: false,
            resolve_every_ms: 30_000,
            retries: 2,
        }
    }
}

impl ClientSettings {
    /// Settings for `endpoint`, with no token and the default timeout.
    pub fn at(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            ..Self::default()
        }
    }

    /// The token from `token` or `token_file`; none is allowed (the callee then answers
    /// `UNAUTHENTICATED`, which says what is missing).
    ///
    /// # Errors
    /// Both are set (which one was meant?), or the file cannot be read.
    pub fn token(&self) -> Result<Option<SecretString>, ClientError> {
        match (&self.token, &self.token_file) {
            (Some(_), Some(_)) => Err(ClientError::TwoTokens(self.endpoint.clone())),
            (Some(token), None) => Ok(Some(token.clone())),
            (None, Some(file)) => read_token(file).map(Some),
            (None, None) => Ok(None),
        }
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.max(1))
    }

    /// The retry policy for the calls a caller marks idempotent.
    pub fn retry(&self) -> Retry {
        Retry::new(self.retries)
    }

    fn is_https(&self) -> bool {
        self.endpoint.starts_with("https://")
    }

    /// The TLS configuration for `https://` endpoints, `None` for `http://`.
    ///
    /// # Errors
    /// `https://` without a CA, TLS files with an `http://` endpoint (they would be
    /// silently unused), a certificate without its key, or unreadable files.
    pub fn tls(&self) -> Result<Option<ClientTlsConfig>, ClientError> {
        let mismatch = |what: &'static str| ClientError::TlsMismatch {
            endpoint: self.endpoint.clone(),
            what,
        };
        if !self.is_https() {
            return match (&self.ca_file, &self.cert_file, &self.key_file) {
                (None, None, None) => Ok(None),
                _ => Err(mismatch(
                    "ca_file/cert_file/key_file are set but the endpoint is not https://",
                )),
            };
        }
        let ca = self
            .ca_file
            .as_ref()
            .ok_or_else(|| mismatch("an https:// endpoint needs ca_file (the CA to trust)"))?;
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca)?));
        match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => {
                tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
            }
            (None, None) => {}
            _ => return Err(mismatch("cert_file and key_file must be set together")),
        }
        if let Some(name) = &self.tls_server_name {
            tls = tls.domain_name(name.clone());
        }
        Ok(Some(tls))
    }

    /// An endpoint for `uri` with this client's timeouts and TLS.
    pub(crate) fn endpoint_for(
        &self,
        uri: String,
        tls: Option<ClientTlsConfig>,
    ) -> Result<Endpoint, ClientError> {
        let endpoint = Endpoint::from_shared(uri.clone())
            .map_err(|source| ClientError::Endpoint {
                endpoint: uri.clone(),
                source,
            })?
            .connect_timeout(self.timeout())
            .timeout(self.timeout())
            .tcp_nodelay(true);
        match tls {
            Some(tls) => endpoint
                .tls_config(tls)
                .map_err(|source| ClientError::Endpoint {
                    endpoint: uri,
                    source,
                }),
            None => Ok(endpoint),
        }
    }
}

fn read(path: &Path) -> Result<Vec<u8>, ClientError> {
    std::fs::read(path).map_err(|source| ClientError::File {
        path: path.to_owned(),
        source,
    })
}

fn read_token(path: &Path) -> Result<SecretString, ClientError> {
    std::fs::read_to_string(path)
        .map(|text| SecretString::from(text.trim().to_owned()))
        .map_err(|source| ClientError::TokenFile {
            path: path.to_owned(),
            source,
        })
}

/// Why a client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("bad endpoint {endpoint:?}: {source}")]
    Endpoint {
        endpoint: String,
        source: tonic::transport::Error,
    },
    #[error("both token and token_file are set for {0}; set one")]
    TwoTokens(String),
    #[error("reading the token file {path}")]
    TokenFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the token for {0} must be printable ASCII")]
    TokenNotAscii(String),
    #[error("TLS settings for {endpoint}: {what}")]
    TlsMismatch {
        endpoint: String,
        what: &'static str,
    },
    #[error("cannot balance {0}")]
    Balance(String),
    #[error("reading {path}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The `authorization` value sent with each call; shared with the task re-reading the
/// token file, so a rotated token is sent from the next call on.
type SharedToken = Arc<RwLock<Option<AsciiMetadataValue>>>;

/// Adds `authorization: Bearer <token>` and `traceparent` to every outgoing call.
#[derive(Clone)]
pub struct Outgoing {
    token: SharedToken,
}

impl std::fmt::Debug for Outgoing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outgoing")
            .field("token", &"<redacted>")
            .finish()
    }
}

impl Interceptor for Outgoing {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        // A poisoned lock only means a reload panicked; the last token is still good.
        let token = match self.token.read() {
            Ok(token) => token.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        if let Some(token) = token {
            request.metadata_mut().insert("authorization", token);
        }
        crate::telemetry::inject_context(request.metadata_mut());
        Ok(request)
    }
}

/// A channel to another kagi service that authenticates and traces every call; wrap it in
/// any generated client (`KeystoreClient::new(channel)`).
pub type ServiceChannel = InterceptedService<MeteredChannel<Channel>, Outgoing>;

/// Builds the channel, resolving balanced names with the system resolver.
///
/// It connects lazily, so a service starts (and reports its own health) while its
/// neighbours are still starting, and reconnects after they restart. Must be called
/// within a Tokio runtime (the balancer and the token reloader are tasks).
///
/// # Errors
/// A malformed endpoint or token, inconsistent TLS settings, or an unreadable file.
pub fn channel(settings: &ClientSettings) -> Result<ServiceChannel, ClientError> {
    channel_with_resolver(settings, Arc::new(SystemResolver))
}

/// [`channel`] with another resolver for balanced endpoints (tests give three loopback
/// addresses to one name).
///
/// # Errors
/// As [`channel`].
pub fn channel_with_resolver(
    settings: &ClientSettings,
    resolver: Arc<dyn Resolve>,
) -> Result<ServiceChannel, ClientError> {
    let tls = settings.tls()?;
    let channel = if settings.balance {
        balance::balanced(settings, tls, resolver)?
    } else {
        settings
            .endpoint_for(settings.endpoint.clone(), tls)?
            .connect_lazy()
    };
    let token: SharedToken = Arc::new(RwLock::new(header(settings, settings.token()?)?));
    if let Some(file) = &settings.token_file {
        tokio::spawn(reload_token(
            settings.clone(),
            file.clone(),
            Arc::downgrade(&token),
        ));
    }
    Ok(InterceptedService::new(
        MeteredChannel(channel),
        Outgoing { token },
    ))
}

fn header(
    settings: &ClientSettings,
    token: Option<SecretString>,
) -> Result<Option<AsciiMetadataValue>, ClientError> {
    let Some(token) = token else { return Ok(None) };
    let mut value: AsciiMetadataValue =
        MetadataValue::try_from(format!("Bearer {}", token.expose_secret()))
            .map_err(|_| ClientError::TokenNotAscii(settings.endpoint.clone()))?;
    value.set_sensitive(true);
    Ok(Some(value))
}

/// Re-reads the token file until the channel is dropped. A file that cannot be read (a
/// Secret being swapped) keeps the last good token; the error is logged, never the token.
async fn reload_token(
    settings: ClientSettings,
    file: PathBuf,
    token: Weak<RwLock<Option<AsciiMetadataValue>>>,
) {
    let every = Duration::from_millis(settings.token_reload_ms.max(100));
    loop {
        tokio::time::sleep(every).await;
        let Some(shared) = token.upgrade() else {
            return;
        };
        let fresh = read_token(&file).and_then(|t| header(&settings, Some(t)));
        match fresh {
            Ok(Some(fresh)) => {
                let mut current = match shared.write() {
                    Ok(current) => current,
                    Err(poisoned) => poisoned.into_inner(),
                };
                if current.as_ref() != Some(&fresh) {
                    tracing::info!(endpoint = %settings.endpoint, "caller token reloaded");
                    *current = Some(fresh);
                }
            }
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(endpoint = %settings.endpoint, error = %error, "caller token not reloaded; keeping the last one");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_file_is_read_and_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "s3cret\n").unwrap();
        let settings = ClientSettings {
            token_file: Some(file),
            ..ClientSettings::at("http://127.0.0.1:1")
        };
        let token = settings.token().unwrap().unwrap();
        assert_eq!(token.expose_secret(), "s3cret");
    }

    #[test]
    fn two_tokens_for_one_service_are_refused() {
        let settings = ClientSettings {
            token: Some(SecretString::from("a")),
            token_file: Some("/nonexistent".into()),
            ..ClientSettings::at("http://127.0.0.1:1")
        };
        assert!(matches!(settings.token(), Err(ClientError::TwoTokens(_))));
    }

    #[test]
    fn tls_settings_that_would_be_ignored_are_refused() {
        let https_without_ca = ClientSettings::at("https://keystore:50051");
        assert!(matches!(
            https_without_ca.tls(),
            Err(ClientError::TlsMismatch { .. })
        ));
        let ca_over_http = ClientSettings {
            ca_file: Some("/etc/ca.crt".into()),
            ..ClientSettings::at("http://keystore:50051")
        };
        assert!(matches!(
            ca_over_http.tls(),
            Err(ClientError::TlsMismatch { .. })
        ));
        assert!(
            ClientSettings::at("http://keystore:50051")
                .tls()
                .unwrap()
                .is_none()
        );
    }

    #[tokio::test]
    async fn a_bad_endpoint_is_refused_and_the_token_never_printed() {
        assert!(matches!(
            channel(&ClientSettings::at("not a url")),
            Err(ClientError::Endpoint { .. })
        ));
        let settings = ClientSettings {
            token: Some(SecretString::from("s3cret")),
            ..ClientSettings::at("http://127.0.0.1:1")
        };
        let built = channel(&settings).unwrap();
        assert!(!format!("{built:?}").contains("s3cret"));
        assert!(!format!("{settings:?}").contains("s3cret"));
    }

    /// A callee that accepts the connection, reads the call and then `answer`s.
    async fn callee(answer: &'static str) -> String {
        use tokio::io::AsyncReadExt as _;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut buf = [0_u8; 4096];
                let _ = stream.read(&mut buf).await;
                if answer == "close" {
                    drop(stream);
                } else {
                    // Never answers, holds the connection open.
                    tokio::spawn(async move {
                        let _ = stream.read(&mut buf).await;
                        tokio::time::sleep(std::time::Duration::from_secs(30)).await;
                    });
                }
            }
        });
        format!("http://{addr}")
    }

    async fn check(endpoint: String, timeout_ms: u64) -> tonic::Status {
        let settings = ClientSettings {
            timeout_ms,
            ..ClientSettings::at(endpoint)
        };
        tonic_health::pb::health_client::HealthClient::new(channel(&settings).unwrap())
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
            .unwrap_err()
    }

    #[tokio::test]
    async fn a_callee_dying_mid_call_is_unavailable_so_callers_retry_it() {
        // tonic alone reports this as UNKNOWN or CANCELLED, which nobody retries.
        let status = check(callee("close").await, 5_000).await;
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    }

    #[tokio::test]
    async fn a_call_past_its_timeout_is_deadline_exceeded() {
        let status = check(callee("never").await, 300).await;
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
    }
}
