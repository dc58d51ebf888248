//! What the user reads when a step fails: every answer of the reset service (and of the
//! portal itself) becomes one of these, in the manual's words. Refusals are told apart by
//! their machine-readable `kagi.v1.ErrorReason` (`kagi_proto::reason`), never by the
//! wording of a status message.

use kagi_proto::v1::ErrorReason;
use tonic::Code;

use super::Lang;

/// A message shown on a page, in place of whatever the services said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserMessage {
    BadCredentials,
    /// A login that needed the one-time password too: wrong password, wrong or missing
    /// code, one answer.
    BadCredentialsOrOtp,
    TooManyLogins,
    TooManyAttempts,
    WrongCode {
        attempts_remaining: u32,
    },
    /// A wrong code that is the one a resend replaced: the user typed the older mail's.
    CodeReplaced {
        attempts_remaining: u32,
    },
    CodeFormat,
    CodeExpired,
    CodeLocked,
    ResendTooSoon,
    ResendLimit,
    MailRateLimited,
    MailUnavailable,
    KeystoreUnavailable,
    NoReset,
    Cancelled,
    Superseded,
    ConfirmExpired,
    ConfirmingElsewhere,
    AlreadyIssued,
    /// The account changed (password, recovery address, disabled) since the reset began.
    AccountChanged,
    /// The new key was issued, and the short window in which a retried confirmation shows
    /// it again is over: menu 1 shows it.
    KeyNoLongerShown,
    NoSetupKey,
    NotVerifiedYet,
    AlreadyVerified,
    InvalidInput,
    FormExpired,
    /// Step-up: the login is too old to show the setup key; log in again.
    LoginAgainToShowKey,
    Busy,
    Unavailable,
    Internal,
}

impl UserMessage {
    /// The message for a failed call to `kagi.v1.Reset`, `kagi.v1.Directory` or
    /// `kagi.v1.Keystore`, by the reason the service gave; by the status code alone when it
    /// gave none (the transport failed, a deadline passed).
    pub fn from_reset_status(status: &tonic::Status) -> Self {
        use ErrorReason as R;
        match kagi_proto::reason::of(status) {
            R::InvalidInput | R::AlreadyEnrolled => Self::InvalidInput,
            R::CodeFormat => Self::CodeFormat,
            R::BadCredentials => Self::BadCredentials,
            R::RateLimited => Self::TooManyAttempts,
            R::ResendLimit => Self::ResendLimit,
            R::MailRateLimited => Self::MailRateLimited,
            R::UnknownReset => Self::NoReset,
            R::ResendTooSoon => Self::ResendTooSoon,
            R::NotVerified => Self::NotVerifiedYet,
            R::AlreadyVerified => Self::AlreadyVerified,
            R::Confirming => Self::ConfirmingElsewhere,
            R::Completed | R::KeyReissuedSince => Self::AlreadyIssued,
            R::Cancelled => Self::Cancelled,
            R::CodeExpired => Self::CodeExpired,
            R::CodeLocked => Self::CodeLocked,
            R::Superseded => Self::Superseded,
            R::ConfirmWindowPassed => Self::ConfirmExpired,
            R::AccountChanged => Self::AccountChanged,
            R::ReplayWindowPassed => Self::KeyNoLongerShown,
            R::NoSetupKey => Self::NoSetupKey,
            R::MailUnavailable => Self::MailUnavailable,
            R::KeystoreUnavailable => Self::KeystoreUnavailable,
            R::BackendUnavailable => Self::Unavailable,
            R::Contended => Self::Busy,
            // Only ever in a VerifyCode reply (see `web::reset::verify`), never a status.
            R::Internal | R::CodeReplaced => Self::Internal,
            R::Unspecified => match status.code() {
                Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => Self::Unavailable,
                Code::ResourceExhausted => Self::TooManyAttempts,
                _ => Self::Internal,
            },
        }
    }

    /// True when the only way on is "最初からやり直す".
    pub fn must_start_again(self) -> bool {
        matches!(
            self,
            Self::CodeExpired
                | Self::CodeLocked
                | Self::NoReset
                | Self::Cancelled
                | Self::Superseded
                | Self::ConfirmExpired
                | Self::ResendLimit
                | Self::MailUnavailable
                | Self::AccountChanged
        )
    }

    /// The text in `lang`.
    pub fn text(self, lang: Lang) -> String {
        let (ja, en) = self.texts();
        match (self, lang) {
            (Self::WrongCode { attempts_remaining }, Lang::Ja) => {
                format!("{ja}（あと{attempts_remaining}回入力できます）。")
            }
            (Self::WrongCode { attempts_remaining }, Lang::En) => {
                format!("{en} ({attempts_remaining} tries left).")
            }
            (Self::CodeReplaced { attempts_remaining }, Lang::Ja) => {
                format!("{ja}（あと{attempts_remaining}回入力できます）。")
            }
            (Self::CodeReplaced { attempts_remaining }, Lang::En) => {
                format!("{en} ({attempts_remaining} tries left).")
            }
            (_, Lang::Ja) => ja.to_owned(),
            (_, Lang::En) => en.to_owned(),
        }
    }

    /// The text in `lang` of a refusal by a limit that lets the user try again at `at` (a
    /// time as the user's clock shows it, with its zone): when to come back instead of
    /// "wait a while". Other messages read as [`UserMessage::text`].
    pub fn text_until(self, lang: Lang, at: &str) -> String {
        let head = match self {
            Self::TooManyLogins => (
                "ログインの試行回数が上限に達しました。",
                "Too many login attempts.",
            ),
            Self::TooManyAttempts => ("試行回数が上限に達しました。", "Too many attempts."),
            Self::MailRateLimited => (
                "このメールアドレスへの送信回数が上限に達しました。",
                "Too many mails were sent to this address.",
            ),
            _ => return self.text(lang),
        };
        match lang {
            Lang::Ja => format!("{}{at} 以降にもう一度お試しください。", head.0),
            Lang::En => format!("{} Please try again after {at}.", head.1),
        }
    }

    fn texts(self) -> (&'static str, &'static str) {
        match self {
            Self::BadCredentials => (
                "IDまたはパスワードが違います。",
                "The ID or password is incorrect.",
            ),
            Self::BadCredentialsOrOtp => (
                "ID、パスワードまたはワンタイムパスワードが違います。",
                "The ID, password or one-time password is incorrect.",
            ),
            Self::TooManyLogins => (
                "ログインの試行回数が上限に達しました。しばらく時間をおいてからやり直してください。",
                "Too many login attempts. Please wait a while and try again.",
            ),
            Self::TooManyAttempts => (
                "試行回数が上限に達しました。しばらく時間をおいてからやり直してください。",
                "Too many attempts. Please wait a while and try again.",
            ),
            Self::WrongCode { .. } => {
                ("確認コードが違います", "The confirmation code is incorrect")
            }
            Self::CodeReplaced { .. } => (
                "この確認コードは、メールの再送信により新しいコードに置き換えられました。最新のメールに記載された確認コードを入力してください",
                "This confirmation code was replaced when the mail was sent again. Enter the code in the newest mail",
            ),
            Self::CodeFormat => (
                "確認コードは数字6桁で入力してください。",
                "Enter the 6-digit confirmation code.",
            ),
            Self::CodeExpired => (
                "確認コードの有効期限（30分）が切れました。最初からやり直してください。",
                "The confirmation code expired (30 minutes). Please start again.",
            ),
            Self::CodeLocked => (
                "確認コードを続けて間違えたため、この手続きは無効になりました。最初からやり直してください。",
                "Too many wrong codes: this reissue is no longer valid. Please start again.",
            ),
            Self::ResendTooSoon => (
                "メールの再送信は、前回の送信から3分経過後に可能です。",
                "The mail can be sent again 3 minutes after the last one.",
            ),
            Self::ResendLimit => (
                "これ以上メールを再送信できません。最初からやり直してください。",
                "No more mails can be sent for this reissue. Please start again.",
            ),
            Self::MailRateLimited => (
                "このメールアドレスへの送信回数が上限に達しました。しばらく時間をおいてからやり直してください。",
                "Too many mails were sent to this address. Please wait a while and try again.",
            ),
            Self::MailUnavailable => (
                "再設定メールを送信できませんでした。数分後に最初からやり直してください。",
                "The mail could not be sent. Please start again in a few minutes.",
            ),
            Self::KeystoreUnavailable => (
                "セットアップキーの再発行を完了できませんでした。数分後にもう一度「セットアップキーを再発行する」を押してください。",
                "The setup key could not be reissued yet. Press \"Reissue the setup key\" again in a few minutes.",
            ),
            Self::NoReset => (
                "この手続きは見つからないか、終了しています。最初からやり直してください。",
                "This reissue was not found or is over. Please start again.",
            ),
            Self::Cancelled => (
                "この手続きは取り消されました。最初からやり直してください。",
                "This reissue was cancelled. Please start again.",
            ),
            Self::Superseded => (
                "新しい再発行の手続きが始まったため、この手続きは無効になりました。最新のメールの確認コードを使ってください。",
                "A newer reissue replaced this one. Use the code in the newest mail.",
            ),
            Self::ConfirmExpired => (
                "確認から10分が経過したため、この手続きは無効になりました。最初からやり直してください。",
                "More than 10 minutes passed since the code was confirmed. Please start again.",
            ),
            Self::ConfirmingElsewhere => (
                "このIDのセットアップキーは再発行の処理中です。1分ほどしてからやり直してください。",
                "A reissue for this ID is being completed. Please try again in a minute.",
            ),
            Self::AlreadyIssued => (
                "新しいセットアップキーは発行済みです。「現在のセットアップキーを表示する」で確認してください。",
                "The new setup key was already issued. View it with \"Show the current setup key\".",
            ),
            Self::AccountChanged => (
                "この手続きの開始後にアカウントの情報（パスワードや連絡先メールアドレス）が変更されたか、アカウントが無効になったため、この手続きは取り消されました。最初からやり直してください。",
                "The account's password or recovery address changed, or the account was disabled, after this reissue began, so it was cancelled. Please start again.",
            ),
            Self::KeyNoLongerShown => (
                "新しいセットアップキーは発行済みですが、安全のため、この画面ではもう表示できません。「現在のセットアップキーを表示する」で確認してください。",
                "The new setup key was issued, but for your safety it can no longer be shown here. View it with \"Show the current setup key\".",
            ),
            Self::NoSetupKey => (
                "このIDにはセットアップキーが登録されていません。先に利用開始手続きを行ってください。",
                "This ID has no setup key yet. Please complete the onboarding first.",
            ),
            Self::NotVerifiedYet => (
                "確認コードの確認が済んでいません。",
                "The confirmation code has not been confirmed yet.",
            ),
            Self::AlreadyVerified => (
                "確認コードは確認済みです。「セットアップキーを再発行する」を押して手続きを完了してください。",
                "The confirmation code was already confirmed. Press \"Reissue the setup key\" to finish.",
            ),
            Self::InvalidInput => (
                "入力内容に誤りがあります。確認してください。",
                "Some of the input is invalid. Please check it.",
            ),
            Self::FormExpired => (
                "ページの有効期限が切れました。もう一度やり直してください。",
                "This page expired. Please try again.",
            ),
            Self::Busy => (
                "混み合っています。もう一度お試しください。",
                "The system is busy. Please try again.",
            ),
            Self::Unavailable => (
                "システムに接続できません。しばらく時間をおいてからやり直してください。",
                "The system cannot be reached. Please try again later.",
            ),
            Self::LoginAgainToShowKey => (
                "セットアップキーを表示するには、もう一度ログインしてください（安全のため、ログインから時間が経っている場合は再度のログインが必要です）。",
                "Please log in again to see the setup key (for your safety, it is shown only shortly after logging in).",
            ),
            Self::Internal => (
                "システムエラーが発生しました。しばらく時間をおいてからやり直してください。",
                "A system error occurred. Please try again later.",
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use kagi_reset::directory::DirectoryError;
    use kagi_reset::domain::{InvalidInput, ResetState};
    use kagi_reset::error::{Error, Refusal};

    use super::*;

    /// What the user reads when the reset service fails with `error`: the error becomes the
    /// `tonic::Status` the reset service really sends (reason in its details), sent over the
    /// wire's headers, and the portal maps that.
    fn shown_for(error: Error) -> String {
        let sent = tonic::Status::from(error).into_http::<()>();
        let received = tonic::Status::from_header_map(sent.headers()).unwrap();
        UserMessage::from_reset_status(&received).text(Lang::Ja)
    }

    const START_AGAIN_NOT_FOUND: &str =
        "この手続きは見つからないか、終了しています。最初からやり直してください。";
    const ALREADY_ISSUED: &str = "新しいセットアップキーは発行済みです。「現在のセットアップキーを表示する」で確認してください。";
    const INVALID_INPUT: &str = "入力内容に誤りがあります。確認してください。";
    const CONFIRMING: &str =
        "このIDのセットアップキーは再発行の処理中です。1分ほどしてからやり直してください。";

    #[test]
    fn each_reset_service_error_has_its_japanese_message() {
        let cases = [
            (Error::BadCredentials, "IDまたはパスワードが違います。"),
            (
                Error::RateLimited { retry_at: 0 },
                "試行回数が上限に達しました。しばらく時間をおいてからやり直してください。",
            ),
            (
                Error::ResendLimit,
                "これ以上メールを再送信できません。最初からやり直してください。",
            ),
            (
                Error::MailRateLimited,
                "このメールアドレスへの送信回数が上限に達しました。しばらく時間をおいてからやり直してください。",
            ),
            (Error::UnknownReset, START_AGAIN_NOT_FOUND),
            (
                Error::ResendTooSoon { wait_secs: 120 },
                "メールの再送信は、前回の送信から3分経過後に可能です。",
            ),
            (
                Error::MailUnavailable,
                "再設定メールを送信できませんでした。数分後に最初からやり直してください。",
            ),
            (
                Error::KeystoreUnavailable,
                "セットアップキーの再発行を完了できませんでした。数分後にもう一度「セットアップキーを再発行する」を押してください。",
            ),
            (
                Error::Directory(DirectoryError::Unavailable(anyhow::anyhow!("ldap down"))),
                "システムに接続できません。しばらく時間をおいてからやり直してください。",
            ),
            (
                Error::Database(sqlx::Error::PoolTimedOut),
                "システムに接続できません。しばらく時間をおいてからやり直してください。",
            ),
            (
                Error::Contended,
                "混み合っています。もう一度お試しください。",
            ),
            (
                Error::Internal(anyhow::anyhow!("a bug")),
                "システムエラーが発生しました。しばらく時間をおいてからやり直してください。",
            ),
        ];
        for (error, expected) in cases {
            let name = format!("{error:?}");
            assert_eq!(shown_for(error), expected, "{name}");
        }
    }

    #[test]
    fn each_refused_input_has_its_japanese_message() {
        let cases = [
            (
                InvalidInput::AccountId(kagi_runtime::InvalidAccountId),
                INVALID_INPUT,
            ),
            (InvalidInput::Password, INVALID_INPUT),
            (InvalidInput::ClientIp, INVALID_INPUT),
            (InvalidInput::Locale, INVALID_INPUT),
            (InvalidInput::Email, INVALID_INPUT),
            (InvalidInput::ResetId, START_AGAIN_NOT_FOUND),
            (
                InvalidInput::Code,
                "確認コードは数字6桁で入力してください。",
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(shown_for(Error::InvalidInput(input)), expected, "{input:?}");
        }
    }

    /// Every refusal the saga can give, each with its own words: none falls through to a
    /// generic text (as "account changed" once did, read as "not found").
    #[test]
    fn each_refusal_has_its_japanese_message() {
        let expected = |refusal: Refusal| match refusal {
            Refusal::NotVerified => "確認コードの確認が済んでいません。",
            Refusal::AlreadyVerified => {
                "確認コードは確認済みです。「セットアップキーを再発行する」を押して手続きを完了してください。"
            }
            Refusal::Confirming | Refusal::ConfirmingElsewhere => CONFIRMING,
            Refusal::Completed | Refusal::NotCancellable | Refusal::KeyReissuedSince => {
                ALREADY_ISSUED
            }
            Refusal::Cancelled => "この手続きは取り消されました。最初からやり直してください。",
            Refusal::Expired => {
                "確認コードの有効期限（30分）が切れました。最初からやり直してください。"
            }
            Refusal::Locked => {
                "確認コードを続けて間違えたため、この手続きは無効になりました。最初からやり直してください。"
            }
            Refusal::Superseded => {
                "新しい再発行の手続きが始まったため、この手続きは無効になりました。最新のメールの確認コードを使ってください。"
            }
            Refusal::ConfirmWindowPassed => {
                "確認から10分が経過したため、この手続きは無効になりました。最初からやり直してください。"
            }
            Refusal::AccountChanged => {
                "この手続きの開始後にアカウントの情報（パスワードや連絡先メールアドレス）が変更されたか、アカウントが無効になったため、この手続きは取り消されました。最初からやり直してください。"
            }
            Refusal::NoLongerShown => {
                "新しいセットアップキーは発行済みですが、安全のため、この画面ではもう表示できません。「現在のセットアップキーを表示する」で確認してください。"
            }
            Refusal::NoSetupKey => {
                "このIDにはセットアップキーが登録されていません。先に利用開始手続きを行ってください。"
            }
        };
        for refusal in Refusal::ALL {
            assert_eq!(
                shown_for(Error::IllegalStep(refusal)),
                expected(refusal),
                "{refusal:?}"
            );
        }
        for state in [
            ResetState::CodeSent,
            ResetState::Verified,
            ResetState::Confirming,
            ResetState::Completed,
            ResetState::Cancelled,
            ResetState::Expired,
            ResetState::Locked,
            ResetState::Superseded,
        ] {
            assert_eq!(
                shown_for(Error::IllegalStep(state.refusal())),
                expected(state.refusal()),
                "{state:?}"
            );
        }
    }

    /// The wording of a status message does not matter: only its reason does.
    #[test]
    fn a_reworded_message_maps_the_same_and_no_reason_is_never_guessed_from_text() {
        let reworded = kagi_proto::reason::status(
            Code::FailedPrecondition,
            "something entirely different",
            ErrorReason::ResendTooSoon,
        );
        assert_eq!(
            UserMessage::from_reset_status(&reworded),
            UserMessage::ResendTooSoon
        );
        let bare = tonic::Status::failed_precondition("wait 3 minutes; already locked");
        assert_eq!(UserMessage::from_reset_status(&bare), UserMessage::Internal);
    }

    #[test]
    fn a_wrong_code_reads_as_in_the_manual() {
        let text = UserMessage::WrongCode {
            attempts_remaining: 3,
        }
        .text(Lang::Ja);
        assert!(text.starts_with("確認コードが違います"), "{text}");
        assert!(text.contains('3'));
    }

    #[test]
    fn a_replaced_code_says_so_and_how_many_tries_are_left() {
        let replaced = UserMessage::CodeReplaced {
            attempts_remaining: 2,
        };
        assert_eq!(
            replaced.text(Lang::Ja),
            "この確認コードは、メールの再送信により新しいコードに置き換えられました。最新のメールに記載された確認コードを入力してください（あと2回入力できます）。"
        );
        assert_eq!(
            replaced.text(Lang::En),
            "This confirmation code was replaced when the mail was sent again. Enter the code in the newest mail (2 tries left)."
        );
    }
}
