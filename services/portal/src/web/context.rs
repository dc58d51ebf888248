//! What a handler knows about the request before reading its body: the language, the
//! session cookie, the client's address (the right-most hop of `X-Forwarded-For` that is
//! not one of our proxies, believed only from a trusted proxy), its browser, and in
//! trusted-header mode the account the SSO proxy vouches for (only from a trusted proxy,
//! only with the proxy's shared secret when one is set, and never from a request carrying
//! the identity header twice).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::response::{IntoResponse as _, Response};
use http::request::Parts;
use http::{StatusCode, header};
use ipnet::IpNet;
use secrecy::ExposeSecret as _;
use subtle::ConstantTimeEq as _;

use super::AppState;
use crate::config::LoginMode;
use crate::domain::{AppleAutofill, Lang, UserMessage};

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
    /// Trusted-header mode with `login.authn_context_header` set: the proxy that vouched
    /// for the account also says (in that header, once) that the SSO asked for the
    /// one-time password.
    pub vouched_otp: bool,
    /// Trusted-header mode with `helpdesk.group_header` set: the groups the same proxy
    /// lists for the vouched account (that header exactly once), for the operator role.
    pub vouched_groups: Vec<String>,
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
    kagi_runtime::AccountId::parse(value.trim())
        .ok()
        .map(kagi_runtime::AccountId::into_string)
}

/// The client's address behind our proxies: `X-Forwarded-For` (every header line, in
/// order, joined) read from the right, skipping the hops that are our own proxies. Each
/// proxy appends the address it saw, so everything left of the first untrusted hop was
/// written by the client and may be forged. `peer` (a trusted proxy) when the header says
/// nothing usable; the last trusted hop when the next one is not an address at all.
fn client_address<'a>(
    forwarded: impl DoubleEndedIterator<Item = &'a str>,
    peer: IpAddr,
    trusted: &[IpNet],
) -> IpAddr {
    let mut last = peer;
    for hop in forwarded.rev().flat_map(|line| line.rsplit(',')) {
        let hop = hop.trim();
        let Some(ip) = hop
            .parse::<IpAddr>()
            .ok()
            .or_else(|| hop.parse::<SocketAddr>().ok().map(|a| a.ip()))
        else {
            return last;
        };
        if !trusted.iter().any(|net| net.contains(&ip)) {
            return ip;
        }
        last = ip;
    }
    last
}

impl AppState {
    /// Whether the request carries the proxy's shared secret, when one is configured
    /// (compared in constant time); true when none is.
    fn proxy_secret_ok(&self, parts: &Parts) -> bool {
        let Some(secret) = &self.proxy_secret else {
            return true;
        };
        let mut sent = parts
            .headers
            .get_all(self.settings.login.proxy_secret_header.as_str())
            .iter();
        match (sent.next(), sent.next()) {
            (Some(value), None) => {
                bool::from(value.as_bytes().ct_eq(secret.expose_secret().as_bytes()))
            }
            _ => false,
        }
    }
}

impl FromRequestParts<AppState> for Ctx {
    /// 400 for a request carrying the identity header more than once (trusted-header mode).
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let settings = &state.settings;
        let trusted = &settings.login.trusted_proxies;
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
        let from_proxy = trusted.iter().any(|net| net.contains(&peer));
        let header_str = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        // An IPv4 client of a dual-stack listener arrives as `::ffff:a.b.c.d`: counted (and
        // shown in notices) as the IPv4 address it is, not as one shared IPv6 /64.
        let client_ip = if from_proxy {
            let lines: Vec<&str> = parts
                .headers
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            client_address(lines.into_iter(), peer, trusted)
        } else {
            peer
        }
        .to_canonical();
        let trusted_header = settings.login.mode == LoginMode::TrustedHeader;
        let identities = parts
            .headers
            .get_all(settings.login.header.as_str())
            .iter()
            .count();
        let vouched_account =
            if trusted_header && from_proxy && identities == 1 && state.proxy_secret_ok(parts) {
                header_str(&settings.login.header).and_then(|v| plausible_account(&v))
            } else {
                None
            };
        let vouched_otp =
            vouched_account.is_some() && !settings.login.authn_context_header.is_empty() && {
                let mut values = parts
                    .headers
                    .get_all(settings.login.authn_context_header.as_str())
                    .iter();
                match (values.next(), values.next()) {
                    (Some(value), None) => {
                        value.to_str().is_ok_and(|v| settings.login.proves_otp(v))
                    }
                    _ => false,
                }
            };
        let group_header = settings.helpdesk.group_header.as_str();
        let vouched_groups = if vouched_account.is_some() && !group_header.is_empty() {
            let mut values = parts.headers.get_all(group_header).iter();
            match (values.next(), values.next()) {
                (Some(value), None) => value
                    .to_str()
                    .unwrap_or_default()
                    .split(',')
                    .map(|g| g.trim().to_owned())
                    .filter(|g| !g.is_empty())
                    .collect(),
                _ => Vec::new(),
            }
        } else {
            Vec::new()
        };
        let ctx = Self {
            lang: cookie(&parts.headers, "lang").map_or(Lang::Ja, Lang::from_code),
            session_cookie: cookie(&parts.headers, &session_cookie_name(settings))
                .map(str::to_owned),
            client_ip,
            user_agent: header_str("user-agent").unwrap_or_default(),
            vouched_account,
            vouched_otp,
            vouched_groups,
            path: parts.uri.path().to_owned(),
        };
        if trusted_header && identities > 1 {
            // Which line would the proxy have meant? Neither is believed.
            tracing::warn!(client_ip = %ctx.client_ip, "identity header sent more than once");
            return Err(state
                .message_page(
                    &ctx,
                    None,
                    StatusCode::BAD_REQUEST,
                    UserMessage::InvalidInput,
                    false,
                )
                .unwrap_or_else(|e| e.into_response()));
        }
        Ok(ctx)
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

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_client_is_the_right_most_hop_that_is_not_our_proxy() {
        let trusted = nets(&["10.0.0.0/8"]);
        let peer = ip("10.0.0.1");
        // The client wrote the first hop itself; our proxy appended what it saw.
        let one_line = ["6.6.6.6, 203.0.113.7"];
        assert_eq!(
            client_address(one_line.into_iter(), peer, &trusted),
            ip("203.0.113.7")
        );
        // A second proxy of ours in the chain is skipped.
        let chain = ["6.6.6.6, 203.0.113.7, 10.1.2.3"];
        assert_eq!(
            client_address(chain.into_iter(), peer, &trusted),
            ip("203.0.113.7")
        );
        // The client's own header line comes first, the proxy's line after it.
        let lines = ["6.6.6.6", "203.0.113.7"];
        assert_eq!(
            client_address(lines.into_iter(), peer, &trusted),
            ip("203.0.113.7")
        );
        // Garbage at the left is never reached; garbage right after our proxy stops there.
        let garbage = ["not-an-ip, 203.0.113.7"];
        assert_eq!(
            client_address(garbage.into_iter(), peer, &trusted),
            ip("203.0.113.7")
        );
        let after_proxy = ["203.0.113.7, junk, 10.1.2.3"];
        assert_eq!(
            client_address(after_proxy.into_iter(), peer, &trusted),
            ip("10.1.2.3")
        );
        // No header: the proxy itself; only proxies: the left-most of them.
        assert_eq!(client_address(std::iter::empty(), peer, &trusted), peer);
        let only_proxies = ["10.9.9.9, 10.1.2.3"];
        assert_eq!(
            client_address(only_proxies.into_iter(), peer, &trusted),
            ip("10.9.9.9")
        );
        // Ports and IPv6 as some proxies write them.
        let v6 = ["[2001:db8::1]:4711"];
        assert_eq!(
            client_address(v6.into_iter(), peer, &trusted),
            ip("2001:db8::1")
        );
    }
}
