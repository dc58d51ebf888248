//! kagi's portal: the manual's three menus ("現在のセットアップキーを表示する",
//! "セットアップキーを再発行する", "\[Apple端末向け\] ワンタイムパスワードの自動入力を設定する") as
//! server-rendered pages that work without JavaScript, over the keystore and reset services.
//!
//! Stateless: sessions, CSRF tokens and login rate limits live in the portal's database.
//!
//! # Layout
//!
//! - `main.rs` only parses the command line; [`cli`] loads the [`Settings`] and
//!   starts telemetry, then runs `serve` or `migrate`.
//! - [`config`]: the typed settings (`portal.toml` overlaid by `KAGI_PORTAL_*`).
//! - [`app`]: [`Application::build`] connects the database, prepares the gRPC clients and
//!   binds the listener; `run_until_stopped` serves the router and purges idle sessions.
//! - [`clients`]: the outgoing gRPC clients (keystore; reset and directory), each call
//!   carrying the portal's bearer token and the trace context.
//! - [`store`]: the portal's database ([`store::Db`]): sessions with their CSRF token and
//!   the menu-2 reset in progress, and the login rate-limit counters.
//! - [`domain`]: pure decisions with no I/O: which Japanese/English [`domain::UserMessage`]
//!   a service's answer becomes, the language, how a setup key is shown, whether the
//!   browser can use Apple's autofill (menu 3), how a reset's handle is sealed in the
//!   session row (`domain::sealed_handle`, AES-256-GCM).
//! - [`web`]: the HTTP side. `web::context` reads what a handler needs from the request
//!   (language, session cookie, client address, identity header), `web::response` holds
//!   sessions, CSRF, cookies and rendering, `web::pages` the top page, menu 1, menu 3 and
//!   login, `web::login_otp` the login's one-time password off campus (keystore
//!   `CheckLoginPolicy` + `VerifyCode`), `web::reset` menu 2's four screens, `web::check` "check my authenticator" under the key (keystore `CheckAuthenticator`, worded by `domain::check`), `web::templates` + `templates/*.html` the
//!   askama pages and `web::texts` their fixed words.
//!
//! One request, `POST /reset/verify` (the user typed the code from the mail):
//! 1. [`web::router`] routes it to `web::reset::verify`; the `Ctx` extractor
//!    (`web::context`) has read the language, the session cookie and the client address.
//! 2. `posted_reset` loads the session from [`store::Db`], checks the form's CSRF token
//!    against it and takes the reset's handle from it (no reset: 303 to `/reset`).
//! 3. `clients.reset.verify_code` asks the reset service; a right code answers 303 to
//!    `/reset/confirm`.
//! 4. Otherwise the answer becomes a [`domain::UserMessage`] (the manual's
//!    "確認コードが違います", or why the reset is over), and `reset_on` loads the reset
//!    again (GetReset), maps its state to the screen it belongs on (`Screen::of`, the one
//!    place that choice is made) and renders step 2 with the message, or redirects, or shows
//!    why the user must start again.
//! 5. The `security_headers` layer adds the CSP, `no-store` and the other headers.

pub mod app;
pub mod cli;
pub mod clients;
pub mod config;
pub mod domain;
pub mod store;
pub mod web;

pub use app::Application;
pub use config::Settings;
