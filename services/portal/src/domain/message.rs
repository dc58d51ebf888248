//! What the user reads when a step fails: every answer of the reset service (and of the
//! portal itself) becomes one of these, in the manual's words. The reset service's status
//! messages are English and stable (see its `error.rs`), so they can be told apart here.

use tonic::Code;

use super::Lang;

/// A message shown on a page, in place of whatever the services said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserMessage {
    BadCredentials,
    TooManyLogins,
    TooManyAttempts,
    WrongCode {
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
    /// The message for a failed call to `kagi.v1.Reset` (or `kagi.v1.Directory`).
    pub fn from_reset_status(code: Code, message: &str) -> Self {
        let has = |s: &str| message.contains(s);
        match code {
            Code::InvalidArgument if has("reset_id") => Self::NoReset,
            Code::InvalidArgument if has("code must") => Self::CodeFormat,
            Code::InvalidArgument => Self::InvalidInput,
            Code::Unauthenticated => Self::BadCredentials,
            Code::ResourceExhausted if has("no more codes") => Self::ResendLimit,
            Code::ResourceExhausted if has("notifier") => Self::MailRateLimited,
            Code::ResourceExhausted => Self::TooManyAttempts,
            Code::NotFound => Self::NoReset,
            Code::FailedPrecondition => Self::from_refusal(message),
            Code::Unavailable if has("mail") => Self::MailUnavailable,
            Code::Unavailable if has("key service") => Self::KeystoreUnavailable,
            Code::Unavailable | Code::DeadlineExceeded => Self::Unavailable,
            Code::Aborted => Self::Busy,
            _ => Self::Internal,
        }
    }

    /// FAILED_PRECONDITION: a step the reset's state does not allow.
    fn from_refusal(message: &str) -> Self {
        let has = |s: &str| message.contains(s);
        if has("3 minutes") {
            Self::ResendTooSoon
        } else if has("10 minutes to confirm") {
            Self::ConfirmExpired
        } else if has("expired") {
            Self::CodeExpired
        } else if has("locked") {
            Self::CodeLocked
        } else if has("cancelled") && !has("cannot be cancelled") {
            Self::Cancelled
        } else if has("newer reset") {
            Self::Superseded
        } else if has("being completed") || has("under way") {
            Self::ConfirmingElsewhere
        } else if has("no setup key") {
            Self::NoSetupKey
        } else if has("not been verified") {
            Self::NotVerifiedYet
        } else if has("already verified") {
            Self::AlreadyVerified
        } else if has("reissued") || has("no longer be shown") || has("already") {
            Self::AlreadyIssued
        } else {
            Self::NoReset
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
    use kagi_reset::error::Error;

    use super::*;

    /// What the user reads when the reset service fails with `error`: the error becomes the
    /// `tonic::Status` the reset service really sends, and the portal maps that.
    fn shown_for(error: Error) -> String {
        let status = tonic::Status::from(error);
        UserMessage::from_reset_status(status.code(), status.message()).text(Lang::Ja)
    }

    const START_AGAIN_NOT_FOUND: &str =
        "この手続きは見つからないか、終了しています。最初からやり直してください。";
    const ALREADY_ISSUED: &str = "新しいセットアップキーは発行済みです。「現在のセットアップキーを表示する」で確認してください。";
    const INVALID_INPUT: &str = "入力内容に誤りがあります。確認してください。";

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

    /// A step the reset's state does not allow, refused with that state's own words.
    #[test]
    fn a_step_refused_in_each_state_has_its_japanese_message() {
        let cases = [
            (ResetState::CodeSent, "確認コードの確認が済んでいません。"),
            (
                ResetState::Verified,
                "確認コードは確認済みです。「セットアップキーを再発行する」を押して手続きを完了してください。",
            ),
            (
                ResetState::Confirming,
                "このIDのセットアップキーは再発行の処理中です。1分ほどしてからやり直してください。",
            ),
            (ResetState::Completed, ALREADY_ISSUED),
            (
                ResetState::Cancelled,
                "この手続きは取り消されました。最初からやり直してください。",
            ),
            (
                ResetState::Expired,
                "確認コードの有効期限（30分）が切れました。最初からやり直してください。",
            ),
            (
                ResetState::Locked,
                "確認コードを続けて間違えたため、この手続きは無効になりました。最初からやり直してください。",
            ),
            (
                ResetState::Superseded,
                "新しい再発行の手続きが始まったため、この手続きは無効になりました。最新のメールの確認コードを使ってください。",
            ),
        ];
        for (state, expected) in cases {
            assert_eq!(
                shown_for(Error::IllegalStep(state.refusal())),
                expected,
                "{state:?}"
            );
        }
    }

    /// Every `.rs` file of the reset service's sources, concatenated.
    fn reset_service_sources() -> String {
        fn walk(dir: &std::path::Path, out: &mut String) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(&path, out);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    out.push_str(&std::fs::read_to_string(&path).unwrap());
                }
            }
        }
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../reset/src");
        let mut sources = String::new();
        walk(&root, &mut sources);
        assert!(sources.contains("IllegalStep"), "read {}", root.display());
        sources
    }

    /// The refusals the saga words inline (not reachable as values from outside the reset
    /// crate): each is checked to be, word for word, in the reset service's sources, so a
    /// reworded refusal fails here instead of drifting.
    #[test]
    fn each_refusal_worded_inside_the_saga_has_its_japanese_message() {
        let sources = reset_service_sources();
        let cases = [
            (
                "the 10 minutes to confirm have passed; start again",
                "確認から10分が経過したため、この手続きは無効になりました。最初からやり直してください。",
            ),
            (
                "a reissue for this account is being completed; try again in a minute",
                "このIDのセットアップキーは再発行の処理中です。1分ほどしてからやり直してください。",
            ),
            (
                "this account has no setup key to reissue",
                "このIDにはセットアップキーが登録されていません。先に利用開始手続きを行ってください。",
            ),
            (
                "the setup key was reissued again since; view it with 現在のセットアップキーを表示する",
                ALREADY_ISSUED,
            ),
            (
                "the new key was issued and can no longer be shown here; view it with 現在のセットアップキーを表示する",
                ALREADY_ISSUED,
            ),
            (
                "the reissue was already confirmed and cannot be cancelled",
                ALREADY_ISSUED,
            ),
        ];
        for (refusal, expected) in cases {
            assert!(
                sources.contains(&format!("\"{refusal}\"")),
                "the reset service no longer says {refusal:?}"
            );
            assert_eq!(
                shown_for(Error::IllegalStep(refusal)),
                expected,
                "{refusal}"
            );
        }
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
}
