//! Caller authentication and per-RPC authorization for kagi's gRPC services.
//!
//! Every calling service presents `authorization: Bearer <token>`. Tokens are configured per
//! caller (`name → token`, or one file per caller in a mounted Kubernetes Secret), and each
//! RPC lists the callers it admits. Health and reflection stay open so probes and grpcurl
//! work. A missing or unknown token is `UNAUTHENTICATED`; a known caller calling an RPC not
//! meant for it is `PERMISSION_DENIED`.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The authenticated calling service, put in each request's extensions for auditing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller(pub String);

/// Which callers exist and what each may call.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// Caller name → bearer token.
    pub tokens: BTreeMap<String, SecretString>,
    /// A directory holding one file per caller, named after it, containing its token
    /// (a Kubernetes Secret mounted as a volume). Adds to `tokens`.
    pub tokens_dir: Option<PathBuf>,
    /// RPC method name (e.g. `VerifyCode`) → callers allowed to call it. Replaces the
    /// service's default list for that method.
    pub allow: BTreeMap<String, Vec<String>>,
}

/// Why the auth settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    #[error("cannot read caller tokens from {path}: {source}")]
    TokensDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("caller {0:?} has an empty token")]
    EmptyToken(String),
    #[error("caller {0:?} has a token shorter than 16 characters")]
    WeakToken(String),
}

/// The resolved policy: token digests per caller and allowed callers per method.
#[derive(Debug)]
pub struct Authorizer {
    /// Package prefix of the protected services, e.g. `/kagi.v1.`.
    protected_prefix: &'static str,
    callers: Vec<(String, [u8; 32])>,
    allow: BTreeMap<String, BTreeSet<String>>,
}

impl Authorizer {
    /// Builds the policy from settings over the service's default allow-lists.
    ///
    /// # Errors
    /// An unreadable tokens directory, or an empty or short token.
    pub fn new(
        protected_prefix: &'static str,
        settings: &AuthSettings,
        default_allow: &[(&str, &[&str])],
    ) -> Result<Self, AuthConfigError> {
        let mut tokens: BTreeMap<String, SecretString> = settings.tokens.clone();
        if let Some(dir) = &settings.tokens_dir {
            let read_err = |source| AuthConfigError::TokensDir {
                path: dir.clone(),
                source,
            };
            for entry in std::fs::read_dir(dir).map_err(read_err)? {
                let entry = entry.map_err(read_err)?;
                let name = entry.file_name().to_string_lossy().into_owned();
                // Kubernetes mounts secrets through `..data` symlinks; skip the dot entries.
                if name.starts_with('.') || !entry.path().is_file() {
                    continue;
                }
                let token = std::fs::read_to_string(entry.path()).map_err(read_err)?;
                tokens.insert(name, SecretString::from(token.trim().to_owned()));
            }
        }
        let mut callers = Vec::with_capacity(tokens.len());
        for (name, token) in tokens {
            let token = token.expose_secret();
            if token.is_empty() {
                return Err(AuthConfigError::EmptyToken(name));
            }
            if token.len() < 16 {
                return Err(AuthConfigError::WeakToken(name));
            }
            callers.push((name, digest(token)));
        }
        let mut allow: BTreeMap<String, BTreeSet<String>> = default_allow
            .iter()
            .map(|(method, who)| {
                (
                    (*method).to_owned(),
                    who.iter().map(|w| (*w).to_owned()).collect(),
                )
            })
            .collect();
        for (method, who) in &settings.allow {
            allow.insert(method.clone(), who.iter().cloned().collect());
        }
        Ok(Self {
            protected_prefix,
            callers,
            allow,
        })
    }

    /// Decides one request: `Ok(None)` for unprotected paths (health, reflection),
    /// `Ok(Some(caller))` when allowed.
    ///
    /// # Errors
    /// `UNAUTHENTICATED` without a known token, `PERMISSION_DENIED` for a caller not allowed.
    #[allow(clippy::result_large_err)]
    pub fn authorize(
        &self,
        path: &str,
        headers: &http::HeaderMap,
    ) -> Result<Option<Caller>, tonic::Status> {
        let Some(rest) = path.strip_prefix(self.protected_prefix) else {
            return Ok(None);
        };
        let method = rest.rsplit('/').next().unwrap_or_default();
        let token = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| tonic::Status::unauthenticated("missing bearer token"))?;
        let presented = digest(token);
        // Compare against every caller without stopping early, so timing says nothing
        // about which token came close.
        let mut found: Option<&str> = None;
        for (name, expected) in &self.callers {
            if bool::from(presented.ct_eq(expected)) {
                found = Some(name);
            }
        }
        let caller = found.ok_or_else(|| tonic::Status::unauthenticated("unknown bearer token"))?;
        let allowed = self
            .allow
            .get(method)
            .is_some_and(|who| who.contains(caller));
        if !allowed {
            return Err(tonic::Status::permission_denied(format!(
                "caller {caller:?} may not call {method}"
            )));
        }
        Ok(Some(Caller(caller.to_owned())))
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Tower layer that runs [`Authorizer::authorize`] before any protected handler.
#[derive(Debug, Clone)]
pub struct CallerAuthLayer {
    authorizer: Arc<Authorizer>,
}

impl CallerAuthLayer {
    pub fn new(authorizer: Authorizer) -> Self {
        Self {
            authorizer: Arc::new(authorizer),
        }
    }
}

impl<S> tower::Layer<S> for CallerAuthLayer {
    type Service = CallerAuth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CallerAuth {
            inner,
            authorizer: Arc::clone(&self.authorizer),
        }
    }
}

/// The service [`CallerAuthLayer`] wraps around the router.
#[derive(Debug, Clone)]
pub struct CallerAuth<S> {
    inner: S,
    authorizer: Arc<Authorizer>,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for CallerAuth<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        match self
            .authorizer
            .authorize(request.uri().path(), request.headers())
        {
            Ok(caller) => {
                if let Some(caller) = caller {
                    request.extensions_mut().insert(caller);
                }
                Box::pin(self.inner.call(request))
            }
            Err(status) => {
                tracing::warn!(code = ?status.code(), reason = status.message(), path = request.uri().path(), "caller refused");
                Box::pin(std::future::ready(Ok(status.into_http())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authorizer() -> Authorizer {
        let mut settings = AuthSettings::default();
        settings
            .tokens
            .insert("login".into(), SecretString::from("login-token-0123456789"));
        settings
            .tokens
            .insert("reset".into(), SecretString::from("reset-token-0123456789"));
        Authorizer::new(
            "/kagi.v1.",
            &settings,
            &[("VerifyCode", &["login"]), ("RotateKey", &["reset"])],
        )
        .unwrap()
    }

    fn bearer(token: &str) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::AUTHORIZATION,
            format!("Bearer {token}").parse().unwrap(),
        );
        headers
    }

    #[test]
    fn each_rpc_admits_only_its_callers() {
        let auth = authorizer();
        let ok = auth
            .authorize(
                "/kagi.v1.Keystore/VerifyCode",
                &bearer("login-token-0123456789"),
            )
            .unwrap();
        assert_eq!(ok, Some(Caller("login".into())));
        let denied = auth
            .authorize(
                "/kagi.v1.Keystore/RotateKey",
                &bearer("login-token-0123456789"),
            )
            .unwrap_err();
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    }

    #[test]
    fn missing_or_unknown_tokens_are_unauthenticated() {
        let auth = authorizer();
        let missing = auth
            .authorize("/kagi.v1.Keystore/VerifyCode", &http::HeaderMap::new())
            .unwrap_err();
        assert_eq!(missing.code(), tonic::Code::Unauthenticated);
        let unknown = auth
            .authorize(
                "/kagi.v1.Keystore/VerifyCode",
                &bearer("login-token-012345678X"),
            )
            .unwrap_err();
        assert_eq!(unknown.code(), tonic::Code::Unauthenticated);
    }

    #[test]
    fn health_and_reflection_need_no_token() {
        let auth = authorizer();
        assert_eq!(
            auth.authorize("/grpc.health.v1.Health/Check", &http::HeaderMap::new())
                .unwrap(),
            None
        );
    }

    #[test]
    fn configured_allow_lists_replace_the_defaults() {
        let mut settings = AuthSettings::default();
        settings
            .tokens
            .insert("login".into(), SecretString::from("login-token-0123456789"));
        settings
            .allow
            .insert("VerifyCode".into(), vec!["portal".into()]);
        let auth = Authorizer::new("/kagi.v1.", &settings, &[("VerifyCode", &["login"])]).unwrap();
        let denied = auth
            .authorize(
                "/kagi.v1.Keystore/VerifyCode",
                &bearer("login-token-0123456789"),
            )
            .unwrap_err();
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    }

    #[test]
    fn short_tokens_are_refused_at_startup() {
        let mut settings = AuthSettings::default();
        settings
            .tokens
            .insert("login".into(), SecretString::from("short"));
        assert!(matches!(
            Authorizer::new("/kagi.v1.", &settings, &[]),
            Err(AuthConfigError::WeakToken(_))
        ));
    }
}
