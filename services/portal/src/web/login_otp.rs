//! The second factor of the portal's own login (issue 9): a password alone must not show
//! the setup key, so local login asks, exactly where the university's SSO would (the
//! keystore's `CheckLoginPolicy`: off campus), for the current one-time password as well,
//! and checks it with the keystore's `VerifyCode` before any session is made. A user who
//! lost the phone has no code: the form sends them to menu 2. In trusted-header mode the
//! SSO did that step; `login.authn_context_header` lets the portal check that it says so.

use std::net::IpAddr;

use kagi_proto::v1 as pb;

use super::AppState;
use crate::domain::{Lang, UserMessage};

/// The login form's texts for the one-time password.
#[derive(Debug)]
pub struct OtpTexts {
    pub label: &'static str,
    pub hint: &'static str,
    pub lost_phone: &'static str,
    pub lost_phone_link: &'static str,
    /// Trusted-header mode: the SSO's login did not include the one-time password.
    pub sso_without_otp: &'static str,
}

const JA: OtpTexts = OtpTexts {
    label: "ワンタイムパスワード",
    hint: "学外からのログインには、認証アプリに表示されている6桁のワンタイムパスワードも必要です。",
    lost_phone: "スマートフォンを紛失した・機種変更した場合は、",
    lost_phone_link: "セットアップキーを再発行する",
    sso_without_otp: "セットアップキーを表示するには、ワンタイムパスワードを使ったログインが必要です。ワンタイムパスワードを入力してログインし直してください。",
};

const EN: OtpTexts = OtpTexts {
    label: "One-time password",
    hint: "Logging in from outside the campus also needs the 6-digit one-time password your authenticator app shows.",
    lost_phone: "Lost or replaced your phone? ",
    lost_phone_link: "Reissue the setup key",
    sso_without_otp: "Showing the setup key needs a login with the one-time password. Please log in again with your one-time password.",
};

impl OtpTexts {
    pub fn of(lang: Lang) -> &'static Self {
        match lang {
            Lang::Ja => &JA,
            Lang::En => &EN,
        }
    }
}

/// A one-time password as typed, read as every code field reads it
/// ([`kagi_runtime::typed_code::typed_digits`]: full-width digits from a Japanese IME,
/// spaces and hyphens between groups); anything but 6 to 8 digits then is no code at all.
pub(super) fn normalized(typed: &str) -> Option<String> {
    let code = kagi_runtime::typed_code::typed_digits(typed);
    ((6..=8).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_digit())).then_some(code)
}

impl AppState {
    /// Whether a login from `client_ip` must give the one-time password too, as the
    /// keystore's `CheckLoginPolicy` says. When the keystore cannot say, the login cannot
    /// go on (fail closed): [`UserMessage::Unavailable`].
    pub(super) async fn otp_required(&self, client_ip: IpAddr) -> Result<bool, UserMessage> {
        let request = pb::CheckLoginPolicyRequest {
            client_ip: client_ip.to_string(),
        };
        match self
            .clients
            .keystore
            .clone()
            .check_login_policy(request)
            .await
        {
            Ok(reply) => Ok(reply.into_inner().otp_required),
            Err(status) => {
                tracing::warn!(code = ?status.code(), "keystore CheckLoginPolicy failed");
                Err(UserMessage::Unavailable)
            }
        }
    }

    /// Checks `code` ([`normalized`]) as `account`'s current one-time password (keystore
    /// `VerifyCode`, so each code counts once and wrong ones count towards the keystore's
    /// lockout). A wrong or replayed code reads exactly like a wrong password.
    pub(super) async fn check_otp(&self, account: &str, code: String) -> Result<(), UserMessage> {
        let request = pb::VerifyCodeRequest {
            account_id: account.to_owned(),
            code,
        };
        match self.clients.keystore.clone().verify_code(request).await {
            Ok(reply) => match reply.into_inner().result() {
                pb::VerifyResult::Accepted => Ok(()),
                pb::VerifyResult::LockedOut => Err(UserMessage::TooManyLogins),
                result => {
                    tracing::info!(
                        account_id = account,
                        ?result,
                        "login refused: one-time password"
                    );
                    Err(UserMessage::BadCredentialsOrOtp)
                }
            },
            Err(status) => match UserMessage::from_reset_status(&status) {
                // A code of another length than the key's.
                UserMessage::CodeFormat | UserMessage::InvalidInput => {
                    Err(UserMessage::BadCredentialsOrOtp)
                }
                _ => {
                    tracing::warn!(code = ?status.code(), "keystore VerifyCode failed");
                    Err(UserMessage::Unavailable)
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::normalized;

    #[test]
    fn codes_are_read_as_typed_full_width_digits_and_groups_included() {
        assert_eq!(normalized(" 123 456 ").as_deref(), Some("123456"));
        assert_eq!(normalized("12345678").as_deref(), Some("12345678"));
        assert_eq!(normalized(""), None);
        assert_eq!(normalized("12345"), None);
        assert_eq!(
            normalized("１２３\u{3000}４５６").as_deref(),
            Some("123456"),
            "a Japanese IME's full-width digits (issue 14)"
        );
        assert_eq!(normalized("123-456").as_deref(), Some("123456"));
        assert_eq!(normalized("12345a"), None);
        assert_eq!(normalized("１２３４５a"), None);
    }
}
