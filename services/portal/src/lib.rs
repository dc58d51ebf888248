//! kagi's portal: the manual's three menus ("現在のセットアップキーを表示する",
//! "セットアップキーを再発行する", "[Apple端末向け] ワンタイムパスワードの自動入力を設定する") as
//! server-rendered pages that work without JavaScript, over the keystore and reset services.
//!
//! Stateless: sessions, CSRF tokens and login rate limits live in the portal's database.

pub mod app;
pub mod cli;
pub mod clients;
pub mod config;
pub mod domain;
pub mod store;
pub mod web;

pub use app::Application;
pub use config::Settings;
