//! A setup key as the pages show it: the Base32 text grouped for reading aloud or typing,
//! the QR code as an image the page embeds, and the links for "add on this device".

use base64::Engine as _;

use super::autofill::apple_otpauth_link;

/// Everything a page needs to show one key. Contains the secret: render it only in
/// responses marked `Cache-Control: no-store`, never log it.
#[derive(Clone)]
pub struct ShownKey {
    pub account_id: String,
    /// The secret in groups of four, e.g. `JBSW Y3DP EHPK 3PXP`.
    pub grouped: String,
    pub otpauth_uri: String,
    pub apple_uri: String,
    /// `data:image/png;base64,...` of the QR code.
    pub qr_data_uri: String,
    pub digits: u32,
    pub period: u32,
}

impl std::fmt::Debug for ShownKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShownKey")
            .field("account_id", &self.account_id)
            .finish_non_exhaustive()
    }
}

impl ShownKey {
    pub fn new(
        account_id: &str,
        secret_base32: &str,
        otpauth_uri: &str,
        qr_png: &[u8],
        digits: u32,
        period: u32,
    ) -> Self {
        Self {
            account_id: account_id.to_owned(),
            grouped: group(secret_base32),
            otpauth_uri: otpauth_uri.to_owned(),
            apple_uri: apple_otpauth_link(otpauth_uri).unwrap_or_default(),
            qr_data_uri: format!(
                "data:image/png;base64,{}",
                base64::engine::general_purpose::STANDARD.encode(qr_png)
            ),
            digits,
            period,
        }
    }
}

/// Groups of four characters separated by spaces: authenticator apps ignore the spaces.
pub fn group(secret: &str) -> String {
    let chars: Vec<char> = secret.chars().collect();
    chars
        .chunks(4)
        .map(|c| c.iter().collect::<String>())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_grouped_by_four_for_reading() {
        assert_eq!(group("JBSWY3DPEHPK3PXP"), "JBSW Y3DP EHPK 3PXP");
        assert_eq!(group("ABCDEF"), "ABCD EF");
        assert_eq!(group(""), "");
    }

    #[test]
    fn debug_output_never_shows_the_secret() {
        let key = ShownKey::new(
            "taro",
            "JBSWY3DPEHPK3PXP",
            "otpauth://totp/x?secret=JBSWY3DPEHPK3PXP",
            b"png",
            6,
            30,
        );
        let debug = format!("{key:?}");
        assert!(!debug.contains("JBSW"), "{debug}");
        assert_eq!(
            key.apple_uri,
            "apple-otpauth://totp/x?secret=JBSWY3DPEHPK3PXP"
        );
    }
}
