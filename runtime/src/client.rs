//! Calls from one kagi service to another (reset → keystore and notifier, portal → keystore
//! and reset): one settings shape and one way to build the channel, so every caller sends
//! its bearer token and the current W3C trace context and gives up after its timeout.

use std::path::PathBuf;
use std::time::Duration;

use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::metrics::MeteredChannel;

/// A service this one calls: where it is, and the bearer token it knows this caller by.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientSettings {
    /// `http://host:port`.
    pub endpoint: String,
    /// The token inline (development); prefer `token_file`.
    pub token: Option<SecretString>,
    /// A file holding the token, e.g. a mounted Kubernetes Secret.
    pub token_file: Option<PathBuf>,
    /// Deadline of each call, and of connecting.
    pub timeout_ms: u64,
}

impl Default for ClientSettings {
    fn default() -> Self {
        Self {
            endpoint: String::new(),
            token: None,
            token_file: None,
            timeout_ms: 5_000,
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
            (None, Some(file)) => std::fs::read_to_string(file)
                .map(|text| Some(SecretString::from(text.trim().to_owned())))
                .map_err(|source| ClientError::TokenFile {
                    path: file.clone(),
                    source,
                }),
            (None, None) => Ok(None),
        }
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.max(1))
    }
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
}

/// Adds `authorization: Bearer <token>` and `traceparent` to every outgoing call.
#[derive(Clone)]
pub struct Outgoing {
    token: Option<AsciiMetadataValue>,
}

impl std::fmt::Debug for Outgoing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outgoing")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Interceptor for Outgoing {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = &self.token {
            request
                .metadata_mut()
                .insert("authorization", token.clone());
        }
        crate::telemetry::inject_context(request.metadata_mut());
        Ok(request)
    }
}

/// A channel to another kagi service that authenticates and traces every call; wrap it in
/// any generated client (`KeystoreClient::new(channel)`).
pub type ServiceChannel = InterceptedService<MeteredChannel<Channel>, Outgoing>;

/// Builds the channel. It connects lazily, so a service starts (and reports its own health)
/// while its neighbours are still starting, and reconnects after they restart.
///
/// # Errors
/// A malformed endpoint or token, or an unreadable token file.
pub fn channel(settings: &ClientSettings) -> Result<ServiceChannel, ClientError> {
    let endpoint = Endpoint::from_shared(settings.endpoint.clone()).map_err(|source| {
        ClientError::Endpoint {
            endpoint: settings.endpoint.clone(),
            source,
        }
    })?;
    let channel = endpoint
        .connect_timeout(settings.timeout())
        .timeout(settings.timeout())
        .connect_lazy();
    let token = match settings.token()? {
        Some(token) => {
            let mut value: AsciiMetadataValue =
                MetadataValue::try_from(format!("Bearer {}", token.expose_secret()))
                    .map_err(|_| ClientError::TokenNotAscii(settings.endpoint.clone()))?;
            value.set_sensitive(true);
            Some(value)
        }
        None => None,
    };
    Ok(InterceptedService::new(
        MeteredChannel(channel),
        Outgoing { token },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_file_is_read_and_trimmed() {
        let dir = std::env::temp_dir().join(format!("kagi-client-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("token");
        std::fs::write(&file, "s3cret\n").unwrap();
        let settings = ClientSettings {
            token_file: Some(file),
            ..ClientSettings::at("http://127.0.0.1:1")
        };
        let token = settings.token().unwrap().unwrap();
        assert_eq!(token.expose_secret(), "s3cret");
        let _ = std::fs::remove_dir_all(dir);
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
}
