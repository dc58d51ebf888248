//! Caller authentication and per-RPC authorization for kagi's gRPC services.
//!
//! Every calling service presents `authorization: Bearer <token>`, or, over mTLS, a client
//! certificate whose DNS name `certificate_callers` maps to a caller. Tokens are configured
//! per caller (`name → token`, or one file per token in a mounted Kubernetes Secret, re-read
//! while serving so a rotation needs no restart), and each RPC lists the callers it admits,
//! whichever way they proved who they are. Health and reflection stay open so probes and
//! grpcurl work. A missing or unknown credential is `UNAUTHENTICATED`; a known caller calling
//! an RPC not meant for it is `PERMISSION_DENIED`.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use crate::BoxFuture;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

/// The authenticated calling service, put in each request's extensions for auditing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller(pub String);

/// Which callers exist and what each may call.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// Caller name → bearer token. A name `caller.suffix` (e.g. `reset.next`) is another
    /// token of `caller`, so a caller holds two during a rotation.
    pub tokens: BTreeMap<String, SecretString>,
    /// A directory holding one file per token, named after its caller (`reset`, and
    /// `reset.next` during a rotation), containing the token: a Kubernetes Secret mounted as
    /// a volume. Adds to `tokens`; re-read every `tokens_reload_ms`, so a rotated Secret
    /// takes effect without a restart.
    pub tokens_dir: Option<PathBuf>,
    /// How often `tokens_dir` is re-read.
    pub tokens_reload_ms: u64,
    /// With mTLS (`server.tls_client_ca`): a DNS name in a client certificate's
    /// subjectAltName → the caller it is. Such a caller needs no bearer token and is held to
    /// the same allow lists.
    pub certificate_callers: BTreeMap<String, String>,
    /// RPC method name (e.g. `VerifyCode`) → callers allowed to call it. Replaces the
    /// service's default list for that method.
    pub allow: BTreeMap<String, Vec<String>>,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            tokens: BTreeMap::new(),
            tokens_dir: None,
            tokens_reload_ms: 5_000,
            certificate_callers: BTreeMap::new(),
            allow: BTreeMap::new(),
        }
    }
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
    #[error(
        "callers {0:?} and {1:?} have the same token; give each caller its own, or a call \
         could not tell them apart"
    )]
    DuplicateToken(String, String),
}

/// Token digests, one entry per token (a caller may have two during a rotation).
type Tokens = Vec<(String, [u8; 32])>;

/// The resolved policy: token digests per caller and allowed callers per method.
#[derive(Debug)]
pub struct Authorizer {
    /// Package prefix of the protected services, e.g. `/kagi.v1.`.
    protected_prefix: &'static str,
    settings: AuthSettings,
    /// Swapped whole by [`Authorizer::reload`]; never held across an await.
    callers: RwLock<Tokens>,
    allow: BTreeMap<String, BTreeSet<String>>,
}

impl Authorizer {
    /// Builds the policy from settings over the service's default allow-lists.
    ///
    /// # Errors
    /// An unreadable tokens directory, an empty or short token, or one token given to two
    /// callers.
    pub fn new(
        protected_prefix: &'static str,
        settings: &AuthSettings,
        default_allow: &[(&str, &[&str])],
    ) -> Result<Self, AuthConfigError> {
        let callers = load_tokens(settings)?;
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
            settings: settings.clone(),
            callers: RwLock::new(callers),
            allow,
        })
    }

    /// Reads the tokens again (from `tokens_dir`); on success they replace the current ones,
    /// on failure the current ones stay. Returns whether anything changed.
    ///
    /// # Errors
    /// As [`Authorizer::new`]: an unreadable directory, a bad or duplicate token.
    pub fn reload(&self) -> Result<bool, AuthConfigError> {
        let fresh = load_tokens(&self.settings)?;
        let mut current = match self.callers.write() {
            Ok(current) => current,
            Err(poisoned) => poisoned.into_inner(),
        };
        let changed = *current != fresh;
        *current = fresh;
        Ok(changed)
    }

    /// Re-reads `tokens_dir` every `tokens_reload_ms` until `stop` resolves (nothing to do
    /// without a directory). Errors keep the last good tokens and are logged by kind.
    pub async fn watch(self: Arc<Self>, stop: impl Future<Output = ()>) {
        if self.settings.tokens_dir.is_none() {
            return;
        }
        let every = Duration::from_millis(self.settings.tokens_reload_ms.max(100));
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = &mut stop => return,
            }
            match self.reload() {
                Ok(true) => tracing::info!("caller tokens reloaded"),
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(%error, "caller tokens not reloaded; keeping the last ones");
                }
            }
        }
    }

    /// Decides one request: `Ok(None)` for unprotected paths (health, reflection),
    /// `Ok(Some(caller))` when allowed. `certificate_names` are the DNS names of the
    /// client's verified certificate (empty without mTLS).
    ///
    /// # Errors
    /// `UNAUTHENTICATED` without a known token or certificate (or when they name different
    /// callers), `PERMISSION_DENIED` for a caller not allowed.
    #[allow(clippy::result_large_err)]
    pub fn authorize(
        &self,
        path: &str,
        headers: &http::HeaderMap,
        certificate_names: &[&str],
    ) -> Result<Option<Caller>, tonic::Status> {
        let Some(rest) = path.strip_prefix(self.protected_prefix) else {
            return Ok(None);
        };
        let method = rest.rsplit('/').next().unwrap_or_default();
        let by_certificate = certificate_names
            .iter()
            .find_map(|name| self.settings.certificate_callers.get(*name))
            .cloned();
        let by_token = match headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        {
            Some(token) => Some(
                self.caller_of(token)
                    .ok_or_else(|| tonic::Status::unauthenticated("unknown bearer token"))?,
            ),
            None => None,
        };
        let caller = match (by_certificate, by_token) {
            (Some(cert), Some(token)) if cert != token => {
                return Err(tonic::Status::unauthenticated(
                    "the client certificate and the bearer token name different callers",
                ));
            }
            (Some(caller), _) | (None, Some(caller)) => caller,
            (None, None) => {
                return Err(tonic::Status::unauthenticated(
                    "missing bearer token (or a client certificate mapped to a caller)",
                ));
            }
        };
        let allowed = self
            .allow
            .get(method)
            .is_some_and(|who| who.contains(&caller));
        if !allowed {
            return Err(tonic::Status::permission_denied(format!(
                "caller {caller:?} may not call {method}"
            )));
        }
        Ok(Some(Caller(caller)))
    }

    fn caller_of(&self, token: &str) -> Option<String> {
        let presented = digest(token);
        let callers = match self.callers.read() {
            Ok(callers) => callers,
            Err(poisoned) => poisoned.into_inner(),
        };
        // Compare against every token without stopping early, so timing says nothing
        // about which token came close.
        let mut found: Option<&str> = None;
        for (name, expected) in callers.iter() {
            if bool::from(presented.ct_eq(expected)) {
                found = Some(name);
            }
        }
        found.map(str::to_owned)
    }
}

/// Every configured token as `(caller, digest)`, checked: none empty or short, none shared
/// by two callers.
fn load_tokens(settings: &AuthSettings) -> Result<Tokens, AuthConfigError> {
    let mut tokens: Vec<(String, SecretString)> = settings
        .tokens
        .iter()
        .map(|(name, token)| (name.clone(), token.clone()))
        .collect();
    if let Some(dir) = &settings.tokens_dir {
        let read_err = |source| AuthConfigError::TokensDir {
            path: dir.clone(),
            source,
        };
        let mut entries = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(read_err)? {
            let entry = entry.map_err(read_err)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            // Kubernetes mounts secrets through `..data` symlinks; skip the dot entries.
            if name.starts_with('.') || !entry.path().is_file() {
                continue;
            }
            entries.push((name, entry.path()));
        }
        entries.sort();
        for (name, path) in entries {
            let token = std::fs::read_to_string(path).map_err(read_err)?;
            tokens.push((name, SecretString::from(token.trim().to_owned())));
        }
    }
    let mut callers: Tokens = Vec::with_capacity(tokens.len());
    for (name, token) in tokens {
        // `reset.next` is the second token of `reset`.
        let caller = name.split('.').next().unwrap_or_default().to_owned();
        let token = token.expose_secret();
        if token.is_empty() {
            return Err(AuthConfigError::EmptyToken(name));
        }
        if token.len() < 16 {
            return Err(AuthConfigError::WeakToken(name));
        }
        let digest = digest(token);
        match callers.iter().find(|(_, d)| *d == digest) {
            Some((other, _)) if *other != caller => {
                return Err(AuthConfigError::DuplicateToken(other.clone(), caller));
            }
            Some(_) => {}
            None => callers.push((caller, digest)),
        }
    }
    Ok(callers)
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The DNS names in the verified client certificate of an mTLS connection, if any.
fn certificate_names(extensions: &http::Extensions) -> Vec<String> {
    let Some(certs) = extensions
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(TlsConnectInfo::peer_certs)
    else {
        return Vec::new();
    };
    let Some(leaf) = certs.first() else {
        return Vec::new();
    };
    match webpki::EndEntityCert::try_from(leaf) {
        Ok(cert) => cert.valid_dns_names().map(str::to_owned).collect(),
        Err(_) => Vec::new(),
    }
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

    /// The policy this layer enforces (the server runs its [`Authorizer::watch`]).
    pub fn authorizer(&self) -> Arc<Authorizer> {
        Arc::clone(&self.authorizer)
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
        let names = if self.authorizer.settings.certificate_callers.is_empty() {
            Vec::new()
        } else {
            certificate_names(request.extensions())
        };
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        match self
            .authorizer
            .authorize(request.uri().path(), request.headers(), &names)
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
                &[],
            )
            .unwrap();
        assert_eq!(ok, Some(Caller("login".into())));
        let denied = auth
            .authorize(
                "/kagi.v1.Keystore/RotateKey",
                &bearer("login-token-0123456789"),
                &[],
            )
            .unwrap_err();
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    }

    #[test]
    fn missing_or_unknown_tokens_are_unauthenticated() {
        let auth = authorizer();
        let missing = auth
            .authorize("/kagi.v1.Keystore/VerifyCode", &http::HeaderMap::new(), &[])
            .unwrap_err();
        assert_eq!(missing.code(), tonic::Code::Unauthenticated);
        let unknown = auth
            .authorize(
                "/kagi.v1.Keystore/VerifyCode",
                &bearer("login-token-012345678X"),
                &[],
            )
            .unwrap_err();
        assert_eq!(unknown.code(), tonic::Code::Unauthenticated);
    }

    #[test]
    fn health_and_reflection_need_no_token() {
        let auth = authorizer();
        assert_eq!(
            auth.authorize("/grpc.health.v1.Health/Check", &http::HeaderMap::new(), &[])
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
                &[],
            )
            .unwrap_err();
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    }

    #[test]
    fn a_certificate_mapped_to_a_caller_needs_no_token_and_meets_the_same_allow_list() {
        let mut settings = AuthSettings::default();
        settings
            .certificate_callers
            .insert("login.kagi.internal".into(), "login".into());
        settings
            .tokens
            .insert("reset".into(), SecretString::from("reset-token-0123456789"));
        let auth = Authorizer::new(
            "/kagi.v1.",
            &settings,
            &[("VerifyCode", &["login"]), ("RotateKey", &["reset"])],
        )
        .unwrap();
        let names = ["login.kagi.internal"];
        let ok = auth
            .authorize(
                "/kagi.v1.Keystore/VerifyCode",
                &http::HeaderMap::new(),
                &names,
            )
            .unwrap();
        assert_eq!(ok, Some(Caller("login".into())));
        let denied = auth
            .authorize(
                "/kagi.v1.Keystore/RotateKey",
                &http::HeaderMap::new(),
                &names,
            )
            .unwrap_err();
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);
        let unmapped = auth
            .authorize(
                "/kagi.v1.Keystore/VerifyCode",
                &http::HeaderMap::new(),
                &["stranger.example"],
            )
            .unwrap_err();
        assert_eq!(unmapped.code(), tonic::Code::Unauthenticated);
        let mixed = auth
            .authorize(
                "/kagi.v1.Keystore/RotateKey",
                &bearer("reset-token-0123456789"),
                &names,
            )
            .unwrap_err();
        assert_eq!(mixed.code(), tonic::Code::Unauthenticated);
    }

    #[test]
    fn one_token_for_two_callers_is_refused_at_startup() {
        let mut settings = AuthSettings::default();
        for caller in ["login", "portal"] {
            settings
                .tokens
                .insert(caller.into(), SecretString::from("shared-token-0123456789"));
        }
        let err = Authorizer::new("/kagi.v1.", &settings, &[]).unwrap_err();
        assert!(matches!(err, AuthConfigError::DuplicateToken(_, _)));
        assert!(
            err.to_string().contains("\"login\" and \"portal\""),
            "{err}"
        );
        assert!(!err.to_string().contains("shared-token"), "{err}");
    }

    #[test]
    fn a_caller_holds_two_tokens_during_a_rotation() {
        let mut settings = AuthSettings::default();
        settings.tokens.insert(
            "login".into(),
            SecretString::from("login-token-old-0123456789"),
        );
        settings.tokens.insert(
            "login.next".into(),
            SecretString::from("login-token-new-0123456789"),
        );
        let auth = Authorizer::new("/kagi.v1.", &settings, &[("VerifyCode", &["login"])]).unwrap();
        for token in ["login-token-old-0123456789", "login-token-new-0123456789"] {
            let ok = auth
                .authorize("/kagi.v1.Keystore/VerifyCode", &bearer(token), &[])
                .unwrap();
            assert_eq!(ok, Some(Caller("login".into())));
        }
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
