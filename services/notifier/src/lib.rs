//! kagi's notifier: owns every e-mail kagi sends. A gRPC call queues a reset-code mail or a
//! key-reissued notice durably and returns; a worker in the same process delivers it over
//! pooled SMTP exactly once across replicas, retrying transient failures with backoff until
//! the mail stops being useful, and wipes the stored code once the message is handled.

pub mod app;
pub mod config;
pub mod domain;
pub mod error;
pub mod grpc;
pub mod mail;
pub mod store;
pub mod transport;
pub mod worker;

pub use app::Application;
pub use config::Settings;
pub use error::Error;
