//! A setup key: the shared TOTP secret and the parameters an authenticator needs, and how it
//! is written for the user (Base32 text, otpauth URI; its QR code: `crate::render`).

use std::fmt;
use std::str::FromStr;

use data_encoding::BASE32_NOPAD;
use zeroize::Zeroizing;

use super::AccountId;

/// The HMAC hash of a key. Recorded per key, so changing the default never breaks keys
/// already in authenticators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Sha1,
    Sha256,
    Sha512,
}

impl Algorithm {
    /// The name used in otpauth URIs and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sha1 => "SHA1",
            Self::Sha256 => "SHA256",
            Self::Sha512 => "SHA512",
        }
    }

    pub(crate) fn to_totp(self) -> totp_rs::Algorithm {
        match self {
            Self::Sha1 => totp_rs::Algorithm::SHA1,
            Self::Sha256 => totp_rs::Algorithm::SHA256,
            Self::Sha512 => totp_rs::Algorithm::SHA512,
        }
    }
}

impl FromStr for Algorithm {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_uppercase().as_str() {
            "SHA1" => Ok(Self::Sha1),
            "SHA256" => Ok(Self::Sha256),
            "SHA512" => Ok(Self::Sha512),
            other => Err(format!(
                "unknown TOTP algorithm {other:?} (SHA1, SHA256 or SHA512)"
            )),
        }
    }
}

/// How codes are computed for one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyParams {
    pub algorithm: Algorithm,
    /// 6 to 8.
    pub digits: u32,
    /// Seconds per time step.
    pub period: u32,
}

impl Default for KeyParams {
    /// What every authenticator app understands: SHA1, 6 digits, 30 seconds.
    fn default() -> Self {
        Self {
            algorithm: Algorithm::Sha1,
            digits: 6,
            period: 30,
        }
    }
}

impl KeyParams {
    /// # Errors
    /// Digits outside 6–8 (RFC 4226) or a period outside 15–300 seconds.
    pub fn validate(self) -> Result<Self, String> {
        if !(6..=8).contains(&self.digits) {
            return Err(format!("digits must be 6 to 8, not {}", self.digits));
        }
        if !(15..=300).contains(&self.period) {
            return Err(format!(
                "period must be 15 to 300 seconds, not {}",
                self.period
            ));
        }
        Ok(self)
    }
}

/// The raw shared secret. Wiped from memory on drop and never printed.
#[derive(Clone)]
pub struct SetupKeySecret(Zeroizing<Vec<u8>>);

impl fmt::Debug for SetupKeySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SetupKeySecret(<redacted>)")
    }
}

impl SetupKeySecret {
    /// 160 bits, the length RFC 4226 recommends.
    pub const LEN: usize = 20;

    /// A fresh secret straight from the operating system's CSPRNG.
    ///
    /// # Errors
    /// When the OS cannot provide randomness; no key is better than a weak one.
    pub fn generate() -> Result<Self, kagi_runtime::random::RandomError> {
        let mut bytes = Zeroizing::new(vec![0_u8; Self::LEN]);
        kagi_runtime::random::fill(&mut bytes)?;
        Ok(Self(bytes))
    }

    pub fn from_bytes(bytes: Zeroizing<Vec<u8>>) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// RFC 4648 Base32 without padding, as authenticators expect it.
    pub fn to_base32(&self) -> Zeroizing<String> {
        Zeroizing::new(BASE32_NOPAD.encode(&self.0))
    }
}

/// `otpauth://totp/ISSUER:ACCOUNT?secret=..&issuer=..&algorithm=..&digits=..&period=..`,
/// every parameter spelled out so no app has to guess a default.
pub fn otpauth_uri(
    issuer: &str,
    account: &AccountId,
    secret: &SetupKeySecret,
    params: KeyParams,
) -> Zeroizing<String> {
    let issuer = percent_encode(issuer);
    Zeroizing::new(format!(
        "otpauth://totp/{issuer}:{account}?secret={secret}&issuer={issuer}&algorithm={algorithm}&digits={digits}&period={period}",
        account = percent_encode(account.as_str()),
        secret = secret.to_base32().as_str(),
        algorithm = params.algorithm.as_str(),
        digits = params.digits,
        period = params.period,
    ))
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_spells_out_every_parameter_and_encodes_the_issuer() {
        let secret = SetupKeySecret::from_bytes(Zeroizing::new(b"12345678901234567890".to_vec()));
        let account = AccountId::parse("taro.yamada").unwrap();
        let uri = otpauth_uri("大阪公立大学 OMU", &account, &secret, KeyParams::default());
        assert_eq!(
            uri.as_str(),
            "otpauth://totp/%E5%A4%A7%E9%98%AA%E5%85%AC%E7%AB%8B%E5%A4%A7%E5%AD%A6%20OMU:taro.yamada\
             ?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=%E5%A4%A7%E9%98%AA%E5%85%AC%E7%AB%8B%E5%A4%A7%E5%AD%A6%20OMU\
             &algorithm=SHA1&digits=6&period=30"
        );
    }

    #[test]
    fn generated_secrets_are_160_bits_and_distinct() {
        let a = SetupKeySecret::generate().unwrap();
        let b = SetupKeySecret::generate().unwrap();
        assert_eq!(a.as_bytes().len(), 20);
        assert_ne!(a.as_bytes(), b.as_bytes());
        assert_eq!(a.to_base32().len(), 32);
        assert!(!format!("{a:?}").contains(a.to_base32().as_str()));
    }

    #[test]
    fn params_outside_the_rfc_are_refused() {
        assert!(
            KeyParams {
                digits: 9,
                ..KeyParams::default()
            }
            .validate()
            .is_err()
        );
        assert!(
            KeyParams {
                digits: 8,
                period: 5,
                ..KeyParams::default()
            }
            .validate()
            .is_err()
        );
        assert!(
            KeyParams {
                digits: 8,
                period: 60,
                ..KeyParams::default()
            }
            .validate()
            .is_ok()
        );
    }
}
