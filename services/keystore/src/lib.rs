//! kagi's keystore: every account's TOTP setup key, encrypted at rest, shown to its owner,
//! rotated by the reset saga and checked at each off-campus login without replay or brute
//! force.

pub mod app;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod domain;
pub mod error;
pub mod grpc;
pub mod service;
pub mod store;

pub use app::Application;
pub use config::Settings;
pub use error::Error;
