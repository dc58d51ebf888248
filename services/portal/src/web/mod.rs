//! The HTTP side: the router, the security headers every response carries, and the state
//! every handler shares. Pages live in `pages` (menus 1 and 3, login), `reset` (menu 2)
//! and `helpdesk` (the help desk's console).

mod check;
mod context;
mod helpdesk;
mod login_otp;
mod pages;
mod reset;
mod response;
mod templates;
pub mod texts;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use http::{HeaderValue, header};
use kagi_runtime::Clock;

pub use context::Ctx;
pub use response::PageError;

use crate::clients::Clients;
use crate::config::Settings;
use crate::store::Db;

/// What every handler shares. Holds no per-user state: that is in the database.
#[derive(Debug, Clone)]
pub struct AppState {
    pub db: Db,
    pub clients: Clients,
    pub clock: Arc<dyn Clock>,
    pub settings: Arc<Settings>,
    /// The SSO proxy's shared secret (`login.proxy_secret_file`), when one is required.
    pub proxy_secret: Option<Arc<secrecy::SecretString>>,
    /// The folder of `.eml` files `/outbox` lists: set by `kagi dev` only
    /// ([`crate::Application::with_dev_outbox`]), never by a setting.
    pub dev_outbox: Option<Arc<std::path::PathBuf>>,
}

/// The Content-Security-Policy of every response: no inline script, only the portal's one
/// script file (`/static/portal.js`: wakes the resend button, keeps setup keys out of the
/// back/forward cache), styles and images from the portal itself (QR codes as `data:`
/// images), forms posting only back here, and never inside a frame.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const STYLESHEET: &str = include_str!("../../static/portal.css");
const SCRIPT: &str = include_str!("../../static/portal.js");

/// Every route of the portal.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(pages::top))
        .route("/key", get(pages::current_key))
        .route("/key/check", get(check::answer).post(check::submit))
        .route("/apple", get(pages::apple))
        .route("/login", get(pages::login_page).post(pages::login_submit))
        .route("/logout", get(pages::logged_out).post(pages::logout))
        .route("/lang", get(pages::switch_lang))
        .route("/outbox", get(pages::outbox))
        .route("/reset", get(reset::step1))
        .route("/reset/start", post(reset::start))
        .route("/reset/code", get(reset::step2))
        .route("/reset/verify", post(reset::verify))
        .route("/reset/resend", post(reset::resend))
        .route("/reset/cancel", post(reset::cancel))
        .route("/reset/confirm", get(reset::step3).post(reset::confirm))
        .route("/reset/done", get(reset::step4))
        .route("/helpdesk", get(helpdesk::page))
        .route("/helpdesk/action", post(helpdesk::act))
        .route("/static/portal.css", get(stylesheet))
        .route("/static/portal.js", get(script))
        .route("/healthz", get(|| async { "ok" }))
        .fallback(pages::not_found)
        .layer(axum::middleware::map_response_with_state(
            state.settings.server.secure_cookies(),
            security_headers,
        ))
        .with_state(state)
}

async fn stylesheet() -> impl axum::response::IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        STYLESHEET,
    )
}

async fn script() -> impl axum::response::IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        SCRIPT,
    )
}

/// `Strict-Transport-Security` when served over https: a year, so a hostile network cannot
/// strip TLS from a returning browser.
pub const STRICT_TRANSPORT_SECURITY: &str = "max-age=31536000";

/// Headers on every response. Pages are `no-store` (several show a setup key, and none
/// should outlive the session in a shared computer's cache) unless a handler said otherwise.
/// `https` (the public URL is https) adds HSTS.
async fn security_headers(
    axum::extract::State(https): axum::extract::State<bool>,
    mut response: axum::response::Response,
) -> axum::response::Response {
    let headers = response.headers_mut();
    if https {
        headers.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static(STRICT_TRANSPORT_SECURITY),
        );
    }
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}
