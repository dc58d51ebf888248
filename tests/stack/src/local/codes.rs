//! One-time passwords as the user's authenticator computes them (RFC 6238 by hand over the
//! Base32 secret the user sees), and a code that is surely not the right one.

/// The code `secret_base32` shows at `unix_secs` with `digits` digits and a `period_seconds`
/// step (HMAC-SHA-1, the keystore's algorithm).
///
/// # Panics
/// The secret is not Base32, or the parameters are out of range.
#[allow(clippy::unwrap_used)]
pub fn totp(secret_base32: &str, digits: u32, period_seconds: u32, unix_secs: u64) -> String {
    let secret = data_encoding::BASE32_NOPAD
        .decode(secret_base32.as_bytes())
        .unwrap();
    totp_rs::Builder::new()
        .with_algorithm(totp_rs::Algorithm::SHA1)
        .with_digits(u8::try_from(digits).unwrap())
        .with_step_duration(u64::from(period_seconds))
        .with_secret(secret)
        .build()
        .unwrap()
        .generate(unix_secs)
        .to_string()
}

/// The code `key` shows at `unix_secs`.
pub fn totp_of(key: &kagi_proto::v1::SetupKey, unix_secs: u64) -> String {
    totp(
        &key.secret_base32,
        key.digits,
        key.period_seconds,
        unix_secs,
    )
}

/// A six-digit code that is not `right`.
///
/// # Panics
/// `right` is not a number.
#[allow(clippy::unwrap_used)]
pub fn wrong(right: &str) -> String {
    let n: u32 = right.parse().unwrap();
    format!("{:06}", (n + 1) % 1_000_000)
}
