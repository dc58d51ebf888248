//! What a handler knows about the request before reading its body: the language, the
//! session cookie, the client's address (believing `X-Forwarded-For` only from a trusted
//! proxy), its browser, and in trusted-header mode the account the SSO proxy vouches for.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use http::header;
use http::request::Parts;

use super::AppState;
use crate::config::LoginMode;
use crate::domain::{AppleAutofill, Lang};

/// The request as the pages see it.
#[derive(Clone)]
pub struct Ctx {
    pub lang: Lang,
    /// The session cookie's value (a bearer secret: never log it).
    pub session_cookie: Option<String>,
    pub client_ip: IpAddr,
    pub user_agent: String,
    /// The account the SSO proxy authenticated; only set in trusted-header mode, for
    /// requests that really came from a trusted proxy.
    pub vouched_account: Option<String>,
    pub path: String,
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("lang", &self.lang)
            .field("client_ip", &self.client_ip)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Ctx {
    pub fn autofill(&self) -> AppleAutofill {
        AppleAutofill::for_user_agent(&self.user_agent)
    }
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The session cookie's name: `__Host-` + the configured name when served over https, so
/// the browser keeps it only if it is `Secure`, `Path=/` and set by this very host (no
/// sibling subdomain can plant or overwrite it); the plain name on http (`kagi dev`, tests),
/// where browsers refuse `__Host-` cookies.
pub fn session_cookie_name(settings: &crate::config::Settings) -> String {
    if settings.server.secure_cookies() {
        format!("__Host-{}", settings.session.cookie_name)
    } else {
        settings.session.cookie_name.clone()
    }
}

/// An account ID as the SSO proxy may send it: 1–64 printable ASCII characters.
fn plausible_account(value: &str) -> Option<String> {
    let value = value.trim();
    (!value.is_empty() && value.len() <= 64 && value.bytes().all(|b| b.is_ascii_graphic()))
        .then(|| value.to_owned())
}

impl FromRequestParts<AppState> for Ctx {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let settings = &state.settings;
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
        let from_proxy = settings
            .login
            .trusted_proxies
            .iter()
            .any(|net| net.contains(&peer));
        let header_str = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        // The proxy appends the address it saw: the rightmost entry is the one to trust.
        let client_ip = if from_proxy {
            header_str("x-forwarded-for")
                .and_then(|v| v.rsplit(',').next().and_then(|ip| ip.trim().parse().ok()))
                .unwrap_or(peer)
        } else {
            peer
        };
        let vouched_account = if settings.login.mode == LoginMode::TrustedHeader && from_proxy {
            header_str(&settings.login.header).and_then(|v| plausible_account(&v))
        } else {
            None
        };
        Ok(Self {
            lang: cookie(&parts.headers, "lang").map_or(Lang::Ja, Lang::from_code),
            session_cookie: cookie(&parts.headers, &session_cookie_name(settings))
                .map(str::to_owned),
            client_ip,
            user_agent: header_str("user-agent").unwrap_or_default(),
            vouched_account,
            path: parts.uri.path().to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_among_others() {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            header::COOKIE,
            "a=1; kagi_session=abc; lang=en".parse().unwrap(),
        );
        assert_eq!(cookie(&headers, "kagi_session"), Some("abc"));
        assert_eq!(cookie(&headers, "lang"), Some("en"));
        assert_eq!(cookie(&headers, "missing"), None);
    }

    #[test]
    fn only_plausible_account_ids_are_believed() {
        assert_eq!(plausible_account(" taro "), Some("taro".into()));
        assert_eq!(plausible_account(""), None);
        assert_eq!(plausible_account("a b"), None);
        assert_eq!(plausible_account(&"x".repeat(65)), None);
    }
}
