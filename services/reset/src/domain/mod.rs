//! The reset saga's pure logic: states and the steps each allows, confirmation codes and
//! reset handles, masking. No I/O here; time and randomness come in as arguments.

pub mod code;
pub mod state;
pub mod token;

pub use code::{CodeHasher, ConfirmationCode};
pub use kagi_runtime::mask::mask_email;
pub use state::{Policy, ResetState};
pub use token::ResetToken;

/// A request field that cannot be used; its message goes back to the caller as is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidInput {
    #[error(transparent)]
    AccountId(#[from] kagi_runtime::InvalidAccountId),
    #[error("password must be 1-1024 bytes")]
    Password,
    #[error("client_ip must be an IPv4 or IPv6 address")]
    ClientIp,
    #[error("locale must be \"ja\", \"en\" or empty")]
    Locale,
    #[error("reset_id is malformed")]
    ResetId,
    #[error("code must be exactly 6 ASCII digits")]
    Code,
    #[error("recovery e-mail address is malformed")]
    Email,
    #[error("view_id must be 1 to 64 printable ASCII characters")]
    ViewId,
    #[error("displayed_at is missing")]
    DisplayedAt,
    #[error(transparent)]
    Operator(#[from] kagi_runtime::operator::InvalidOperatorContext),
    #[error("notice_id must be 1 to 64 printable ASCII characters")]
    NoticeId,
    #[error("action must be UNLOCK or REVOKE_KEY (a cancelled reset mails by itself)")]
    Action,
    #[error("acted_at is missing")]
    ActedAt,
}

/// Checks an account ID with the rule every kagi service shares
/// ([`kagi_runtime::AccountId`]), so every ID accepted here is one the keystore accepts too.
///
/// # Errors
/// [`InvalidInput::AccountId`].
pub fn check_account_id(raw: &str) -> Result<(), InvalidInput> {
    kagi_runtime::AccountId::parse(raw)?;
    Ok(())
}

/// A plausible addr-spec: one `@`, a non-empty local part, a dotted domain, no spaces.
///
/// # Errors
/// [`InvalidInput::Email`].
pub fn check_email(raw: &str) -> Result<(), InvalidInput> {
    let Some((local, domain)) = raw.split_once('@') else {
        return Err(InvalidInput::Email);
    };
    let ok = !local.is_empty()
        && raw.len() <= 254
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains('@')
        && raw.chars().all(|c| c.is_ascii_graphic() || !c.is_ascii());
    if ok { Ok(()) } else { Err(InvalidInput::Email) }
}

/// The mail language: "ja" unless "en" is asked for.
///
/// # Errors
/// [`InvalidInput::Locale`] for anything else.
pub fn parse_locale(raw: &str) -> Result<&'static str, InvalidInput> {
    match raw {
        "" | "ja" => Ok("ja"),
        "en" => Ok("en"),
        _ => Err(InvalidInput::Locale),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_ids_follow_the_keystore_rules() {
        assert!(check_account_id("a23b456c").is_ok());
        assert!(check_account_id("taro.yamada@omu").is_ok());
        assert!(check_account_id("").is_err());
        assert!(check_account_id("-x").is_err());
        assert!(check_account_id("a:b").is_err());
        assert!(check_account_id(&"a".repeat(65)).is_err());
    }

    #[test]
    fn recovery_addresses_need_a_local_part_and_a_dotted_domain() {
        assert!(check_email("taro@example.ac.jp").is_ok());
        assert!(check_email("taro@localhost").is_err());
        assert!(check_email("@example.jp").is_err());
        assert!(check_email("ta ro@example.jp").is_err());
    }
}
