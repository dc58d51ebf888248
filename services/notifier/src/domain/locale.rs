//! The language of a mail, and instants shown in the deployment's time zone.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::InvalidInput;

/// The language of an e-mail. Japanese unless the caller asks for English.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Locale {
    Ja,
    En,
}

impl Locale {
    /// Parses a request's locale; empty means the default, Japanese.
    ///
    /// # Errors
    /// [`InvalidInput::Locale`] for anything but `ja`/`en` (and their region forms).
    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "" | "ja" | "ja-jp" | "ja_jp" => Ok(Self::Ja),
            "en" | "en-us" | "en-gb" | "en_us" | "en_gb" => Ok(Self::En),
            _ => Err(InvalidInput::Locale(raw.chars().take(32).collect())),
        }
    }

    /// The language tag stored with the message and used in template names.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ja => "ja",
            Self::En => "en",
        }
    }
}

/// Formats an instant for the mail body, in the deployment's time zone.
pub fn format_local(at: DateTime<Utc>, tz: chrono_tz::Tz, locale: Locale) -> String {
    let local = at.with_timezone(&tz);
    match locale {
        Locale::Ja => local.format("%Y/%m/%d %H:%M:%S").to_string(),
        Locale::En => local.format("%-d %B %Y, %H:%M:%S %Z").to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn expiry_is_shown_in_tokyo_time() {
        let at = Utc.with_ymd_and_hms(2024, 7, 8, 7, 45, 52).unwrap();
        assert_eq!(
            format_local(at, chrono_tz::Asia::Tokyo, Locale::Ja),
            "2024/07/08 16:45:52"
        );
        assert_eq!(
            format_local(at, chrono_tz::Asia::Tokyo, Locale::En),
            "8 July 2024, 16:45:52 JST"
        );
    }
}
