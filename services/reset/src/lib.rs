//! kagi's reset service: the manual's menu 2, "セットアップキーを再発行する", as a saga
//! over the keystore and the notifier. The user proves who they are with ID and password,
//! receives a 6-digit code at the recovery address, enters it, confirms, and sees a new
//! setup key; every step is persisted before its side effect and every side effect is
//! idempotent, so crashes and retries rotate exactly once and mail exactly once per send.

pub mod accounts;
pub mod app;
pub mod cli;
pub mod config;
pub mod directory;
pub mod domain;
pub mod downstream;
pub mod error;
pub mod grpc;
pub mod saga;
pub mod store;

pub use app::Application;
pub use config::Settings;
pub use error::Error;
