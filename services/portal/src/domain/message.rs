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
    WrongCode { attempts_remaining: u32 },
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
    InvalidInput,
    FormExpired,
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
                format!("{ja}（あと{attempts_remaining}回入力できます）")
            }
            (Self::WrongCode { attempts_remaining }, Lang::En) => {
                format!("{en} ({attempts_remaining} tries left)")
            }
            (_, Lang::Ja) => ja.to_owned(),
            (_, Lang::En) => en.to_owned(),
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
            Self::Internal => (
                "システムエラーが発生しました。しばらく時間をおいてからやり直してください。",
                "A system error occurred. Please try again later.",
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reset service's messages, as its `error.rs` and state refusals word them.
    #[test]
    fn each_reset_service_answer_has_its_japanese_message() {
        let cases = [
            (
                Code::Unauthenticated,
                "the account ID or password is incorrect",
                "IDまたはパスワードが違います。",
            ),
            (
                Code::ResourceExhausted,
                "too many reset attempts; try again later",
                "試行回数が上限に達しました。しばらく時間をおいてからやり直してください。",
            ),
            (
                Code::ResourceExhausted,
                "no more codes can be sent for this reset; start again",
                "これ以上メールを再送信できません。最初からやり直してください。",
            ),
            (
                Code::ResourceExhausted,
                "the notifier refused more reset mails to this address for now; try again later",
                "このメールアドレスへの送信回数が上限に達しました。しばらく時間をおいてからやり直してください。",
            ),
            (
                Code::NotFound,
                "no such reset; start again",
                "この手続きは見つからないか、終了しています。最初からやり直してください。",
            ),
            (
                Code::FailedPrecondition,
                "a new code can be sent 3 minutes after the last one; try again in 120 s",
                "メールの再送信は、前回の送信から3分経過後に可能です。",
            ),
            (
                Code::FailedPrecondition,
                "this reset has expired; start again",
                "確認コードの有効期限（30分）が切れました。最初からやり直してください。",
            ),
            (
                Code::FailedPrecondition,
                "too many wrong codes; this reset is locked, start again",
                "確認コードを続けて間違えたため、この手続きは無効になりました。最初からやり直してください。",
            ),
            (
                Code::FailedPrecondition,
                "this reset was cancelled; start again",
                "この手続きは取り消されました。最初からやり直してください。",
            ),
            (
                Code::FailedPrecondition,
                "a newer reset for this account replaced this one; use the newest",
                "新しい再発行の手続きが始まったため、この手続きは無効になりました。最新のメールの確認コードを使ってください。",
            ),
            (
                Code::FailedPrecondition,
                "the 10 minutes to confirm have passed; start again",
                "確認から10分が経過したため、この手続きは無効になりました。最初からやり直してください。",
            ),
            (
                Code::FailedPrecondition,
                "a reissue for this account is being completed; try again in a minute",
                "このIDのセットアップキーは再発行の処理中です。1分ほどしてからやり直してください。",
            ),
            (
                Code::FailedPrecondition,
                "the confirmation code has not been verified yet",
                "確認コードの確認が済んでいません。",
            ),
            (
                Code::FailedPrecondition,
                "this account has no setup key to reissue",
                "このIDにはセットアップキーが登録されていません。先に利用開始手続きを行ってください。",
            ),
            (
                Code::FailedPrecondition,
                "the setup key was reissued again since; view it with 現在のセットアップキーを表示する",
                "新しいセットアップキーは発行済みです。「現在のセットアップキーを表示する」で確認してください。",
            ),
            (
                Code::FailedPrecondition,
                "the reissue was already confirmed and cannot be cancelled",
                "新しいセットアップキーは発行済みです。「現在のセットアップキーを表示する」で確認してください。",
            ),
            (
                Code::Unavailable,
                "the mail service cannot be reached; start again in a few minutes",
                "再設定メールを送信できませんでした。数分後に最初からやり直してください。",
            ),
            (
                Code::Unavailable,
                "the key service cannot be reached; retry the confirmation in a few minutes",
                "セットアップキーの再発行を完了できませんでした。数分後にもう一度「セットアップキーを再発行する」を押してください。",
            ),
            (
                Code::Unavailable,
                "the reset database is unavailable; retry later",
                "システムに接続できません。しばらく時間をおいてからやり直してください。",
            ),
            (
                Code::Aborted,
                "too many concurrent changes to this reset; retry",
                "混み合っています。もう一度お試しください。",
            ),
            (
                Code::Internal,
                "internal error",
                "システムエラーが発生しました。しばらく時間をおいてからやり直してください。",
            ),
            (
                Code::InvalidArgument,
                "code must be 6 ASCII digits",
                "確認コードは数字6桁で入力してください。",
            ),
        ];
        for (code, message, expected) in cases {
            assert_eq!(
                UserMessage::from_reset_status(code, message).text(Lang::Ja),
                expected,
                "{code:?} {message}"
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
