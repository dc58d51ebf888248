//! kagi's gRPC contract, generated from `proto/kagi/v1/*.proto`.
//!
//! # Layout
//! - `kagi/v1/*.proto` (beside this crate): one file per service (`keystore`, `reset`,
//!   `directory`, `notifier`), package `kagi.v1`, a request and response message per RPC;
//!   `admin` holds the help desk's contract (`KeystoreAdmin`, `ResetAdmin`,
//!   `NotifierAdmin`), each served by the service that owns its data.
//! - `build.rs`: compiles them with `protox` (no `protoc`) into [`v1`] and writes the
//!   descriptor set behind [`FILE_DESCRIPTOR_SET`] for reflection.
//! - [`timestamp`]: the one conversion from the databases' milliseconds to the contract's
//!   `Timestamp`.
//! - [`reason`]: a refusal's [`v1::ErrorReason`] put into, and read from, a `tonic::Status`
//!   as `google.rpc.ErrorInfo`.

/// Package `kagi.v1`: the messages and services every kagi component speaks.
pub mod v1 {
    #![allow(clippy::all, missing_debug_implementations)]
    tonic::include_proto!("kagi.v1");
}

/// The encoded `FileDescriptorSet` of every kagi proto, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/kagi_descriptor.bin"));

/// A time held as milliseconds since the Unix epoch (how every kagi database stores it) as
/// a protobuf `Timestamp`; times before 1970 keep their sign in `seconds`.
pub fn timestamp(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        // rem_euclid(1000) is 0..=999, so the nanoseconds always fit.
        nanos: i32::try_from(ms.rem_euclid(1000) * 1_000_000).unwrap_or(0),
    }
}

/// Machine-readable refusals (`kagi/v1/errors.proto`): a [`v1::ErrorReason`] travels as the
/// `reason` of a `google.rpc.ErrorInfo` (domain [`reason::DOMAIN`]) in the status details,
/// so callers never have to read the English message.
pub mod reason {
    use tonic::{Code, Status};
    use tonic_types::{ErrorDetails, StatusExt as _};

    use crate::v1::ErrorReason;

    /// The `ErrorInfo.domain` of every kagi reason.
    pub const DOMAIN: &str = "kagi.v1";

    /// A status with `code`, the human `message`, and `reason` in its details.
    pub fn status(code: Code, message: impl Into<String>, reason: ErrorReason) -> Status {
        let details = ErrorDetails::with_error_info(
            reason.as_str_name(),
            DOMAIN,
            std::collections::HashMap::<String, String>::new(),
        );
        Status::with_error_details(code, message, details)
    }

    /// The reason a kagi service gave for `status`; `Unspecified` when it gave none (a
    /// transport failure, another domain, an older server).
    pub fn of(status: &Status) -> ErrorReason {
        status
            .get_details_error_info()
            .filter(|info| info.domain == DOMAIN)
            .and_then(|info| ErrorReason::from_str_name(&info.reason))
            .unwrap_or(ErrorReason::Unspecified)
    }
}

/// The metadata key of a refusal's retry time: when a `RESOURCE_EXHAUSTED` limit lets the
/// caller try again, as Unix milliseconds. Part of the contract (the portal tells the user
/// the time) without being part of the message text.
pub const RETRY_AT_METADATA: &str = "kagi-retry-at-ms";

/// `status` carrying the time (Unix ms) its limit lets the caller try again.
#[must_use]
pub fn with_retry_at(mut status: tonic::Status, retry_at_ms: i64) -> tonic::Status {
    if let Ok(value) = retry_at_ms.to_string().parse() {
        status.metadata_mut().insert(RETRY_AT_METADATA, value);
    }
    status
}

/// When the limit that refused with `status` lets the caller try again (Unix ms), if said.
pub fn retry_at(status: &tonic::Status) -> Option<i64> {
    status
        .metadata()
        .get(RETRY_AT_METADATA)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::v1::ErrorReason;
    use super::{retry_at, timestamp, with_retry_at};

    #[test]
    fn a_reason_survives_the_status_details() {
        let status = super::reason::status(
            tonic::Code::FailedPrecondition,
            "a new code can be sent 3 minutes after the last one",
            ErrorReason::ResendTooSoon,
        );
        // As the peer sees it: the status rebuilt from its wire headers.
        let sent = status.into_http::<()>();
        let wire = tonic::Status::from_header_map(sent.headers()).unwrap();
        assert_eq!(super::reason::of(&wire), ErrorReason::ResendTooSoon);
        assert_eq!(wire.code(), tonic::Code::FailedPrecondition);
        assert_eq!(
            super::reason::of(&tonic::Status::unavailable("transport")),
            ErrorReason::Unspecified
        );
    }

    #[test]
    fn a_retry_time_travels_in_the_metadata() {
        let status = with_retry_at(tonic::Status::resource_exhausted("wait"), 1_700_000_000_123);
        assert_eq!(retry_at(&status), Some(1_700_000_000_123));
        assert_eq!(retry_at(&tonic::Status::resource_exhausted("wait")), None);
    }

    #[test]
    fn milliseconds_become_seconds_and_nanos() {
        let t = timestamp(1_700_000_000_123);
        assert_eq!((t.seconds, t.nanos), (1_700_000_000, 123_000_000));
        let before_epoch = timestamp(-1);
        assert_eq!(
            (before_epoch.seconds, before_epoch.nanos),
            (-1, 999_000_000)
        );
    }
}
