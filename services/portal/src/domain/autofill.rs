//! Menu 3, "\[Apple端末向け\] ワンタイムパスワードの自動入力を設定する": offered only to Safari on
//! iPhone, iPad (including iPadOS's desktop-style user agent, which says "Macintosh") and
//! macOS. Every other browser, including the other browsers on iOS, sees the menu greyed out.

/// Whether this browser can take an `apple-otpauth://` link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppleAutofill {
    Available,
    Unavailable,
}

/// Tokens other iOS and macOS browsers add to Safari's own user agent.
const OTHER_BROWSERS: &[&str] = &[
    "CriOS",
    "FxiOS",
    "EdgiOS",
    "OPiOS",
    "OPT/",
    "GSA/",
    "YaBrowser",
    "DuckDuckGo",
    "Brave",
    "Chrome/",
    "Chromium/",
    "Edg/",
    "Firefox/",
    "OPR/",
    "Vivaldi",
    "SamsungBrowser",
];

impl AppleAutofill {
    /// Decides from the `User-Agent` header alone.
    pub fn for_user_agent(user_agent: &str) -> Self {
        let apple_device = ["iPhone", "iPad", "iPod", "Macintosh"]
            .iter()
            .any(|d| user_agent.contains(d));
        let safari = user_agent.contains("Safari/") && user_agent.contains("Version/");
        let other = OTHER_BROWSERS.iter().any(|t| user_agent.contains(t));
        if apple_device && safari && !other && !user_agent.contains("Android") {
            Self::Available
        } else {
            Self::Unavailable
        }
    }

    pub fn is_available(self) -> bool {
        self == Self::Available
    }
}

/// The link that hands a key to Apple's password manager: the otpauth URI with the scheme
/// replaced (`otpauth://totp/...` → `apple-otpauth://totp/...`).
pub fn apple_otpauth_link(otpauth_uri: &str) -> Option<String> {
    otpauth_uri
        .strip_prefix("otpauth://")
        .map(|rest| format!("apple-otpauth://{rest}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const IPHONE_SAFARI: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1";
    const IPAD_SAFARI: &str = "Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/16.6 Mobile/15E148 Safari/604.1";
    const IPADOS_DESKTOP_MODE: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15";
    const MACOS_SAFARI: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15";
    const IOS_CHROME: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/126.0.6478.54 Mobile/15E148 Safari/604.1";
    const IOS_FIREFOX: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) FxiOS/127.0 Mobile/15E148 Safari/605.1.15";
    const IOS_EDGE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 EdgiOS/126.2592.56 Mobile/15E148 Safari/605.1.15";
    const WINDOWS_CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36";
    const WINDOWS_EDGE: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36 Edg/126.0.2592.68";
    const MACOS_CHROME: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36";
    const MACOS_EDGE: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36 Edg/126.0.2592.68";
    const MACOS_FIREFOX: &str =
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 14.5; rv:127.0) Gecko/20100101 Firefox/127.0";
    const ANDROID_CHROME: &str = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.6478.71 Mobile Safari/537.36";

    #[test]
    fn safari_on_iphone_ipad_and_macos_can_set_up_autofill() {
        for ua in [
            IPHONE_SAFARI,
            IPAD_SAFARI,
            IPADOS_DESKTOP_MODE,
            MACOS_SAFARI,
        ] {
            assert_eq!(
                AppleAutofill::for_user_agent(ua),
                AppleAutofill::Available,
                "{ua}"
            );
        }
    }

    #[test]
    fn other_browsers_on_apple_devices_see_the_menu_greyed_out() {
        for ua in [
            IOS_CHROME,
            IOS_FIREFOX,
            IOS_EDGE,
            MACOS_CHROME,
            MACOS_EDGE,
            MACOS_FIREFOX,
        ] {
            assert_eq!(
                AppleAutofill::for_user_agent(ua),
                AppleAutofill::Unavailable,
                "{ua}"
            );
        }
    }

    #[test]
    fn windows_and_android_see_the_menu_greyed_out() {
        for ua in [
            WINDOWS_CHROME,
            WINDOWS_EDGE,
            ANDROID_CHROME,
            "",
            "curl/8.5.0",
        ] {
            assert_eq!(
                AppleAutofill::for_user_agent(ua),
                AppleAutofill::Unavailable,
                "{ua}"
            );
        }
    }

    #[test]
    fn the_apple_link_is_the_otpauth_uri_with_its_scheme_replaced() {
        let uri = "otpauth://totp/kagi:taro?secret=JBSWY3DPEHPK3PXP&issuer=kagi&algorithm=SHA1&digits=6&period=30";
        assert_eq!(
            apple_otpauth_link(uri).unwrap(),
            "apple-otpauth://totp/kagi:taro?secret=JBSWY3DPEHPK3PXP&issuer=kagi&algorithm=SHA1&digits=6&period=30"
        );
        assert_eq!(apple_otpauth_link("https://example.com"), None);
    }
}
