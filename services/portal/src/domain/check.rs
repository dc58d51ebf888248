//! "Check my authenticator" (menu 1 and 「4. リセット完了」): the keystore's answer to the
//! code the user's device shows now, in the manual's words: ready; the clock N minutes or
//! seconds fast or slow (FAQ 10); no match (FAQ 7); or when the user may check again.
//! The answer crosses the POST/redirect/GET in the session as a short token
//! ([`CheckAnswer::token`]) and is worded at the GET, in the language the user reads then.

use super::{Lang, UserMessage};

/// What a check told the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckAnswer {
    /// The device holds the current key and its clock is right.
    Ready,
    /// The device holds the current key; its clock is `offset_secs` off (positive: fast).
    ClockOff { offset_secs: i64 },
    /// No step near now has this code: another or an old key (FAQ 7).
    NoMatch,
    /// The account has no setup key.
    NoKey,
    /// The check allowance is used up until `retry_at` (Unix ms).
    Limited { retry_at: Option<i64> },
    /// Not 6 to 8 digits.
    CodeFormat,
    /// The keystore could not answer.
    Unavailable,
}

/// The session flash of a check's answer starts with this, so it is never taken for (or
/// shown as) another form's message.
const PREFIX: &str = "check:";

impl CheckAnswer {
    /// The answer as kept in the session between the POST and the GET.
    pub fn token(self) -> String {
        let body = match self {
            Self::Ready => "ready".to_owned(),
            Self::ClockOff { offset_secs } => format!("clock:{offset_secs}"),
            Self::NoMatch => "no_match".to_owned(),
            Self::NoKey => "no_key".to_owned(),
            Self::Limited { retry_at } => {
                format!(
                    "limited:{}",
                    retry_at.map(|t| t.to_string()).unwrap_or_default()
                )
            }
            Self::CodeFormat => "format".to_owned(),
            Self::Unavailable => "unavailable".to_owned(),
        };
        format!("{PREFIX}{body}")
    }

    /// The answer [`CheckAnswer::token`] kept; `None` for any other flash.
    pub fn from_token(token: &str) -> Option<Self> {
        let body = token.strip_prefix(PREFIX)?;
        Some(match body.split_once(':') {
            Some(("clock", secs)) => Self::ClockOff {
                offset_secs: secs.parse().ok()?,
            },
            Some(("limited", at)) => Self::Limited {
                retry_at: at.parse().ok(),
            },
            _ => match body {
                "ready" => Self::Ready,
                "no_match" => Self::NoMatch,
                "no_key" => Self::NoKey,
                "format" => Self::CodeFormat,
                "unavailable" => Self::Unavailable,
                _ => return None,
            },
        })
    }

    /// A short name for the page (`id`/`class` of the answer, tests).
    pub fn kind(self) -> &'static str {
        match self {
            Self::Ready => "ready",
            Self::ClockOff { .. } => "clock",
            Self::NoMatch => "no-match",
            Self::NoKey => "no-key",
            Self::Limited { .. } => "limited",
            Self::CodeFormat => "format",
            Self::Unavailable => "unavailable",
        }
    }

    /// Good news (shown as such) rather than something to fix.
    pub fn is_ready(self) -> bool {
        self == Self::Ready
    }

    /// Whether the page should show the setup key above the answer: only to register it
    /// again (FAQ 7).
    pub fn shows_key(self) -> bool {
        self == Self::NoMatch
    }

    /// The answer in `lang`, one paragraph per line. `local_time` words a Unix-ms time as
    /// the user's clock shows it (with its zone).
    pub fn lines(self, lang: Lang, local_time: impl Fn(i64) -> String) -> Vec<String> {
        let ja = lang == Lang::Ja;
        let pick = |j: &str, e: &str| if ja { j.to_owned() } else { e.to_owned() };
        match self {
            Self::Ready => vec![pick(
                "この端末は正しく設定されています。現在のセットアップキーが登録されていて、時計も合っています。ログインの際は、この端末に表示されるワンタイムパスワードを入力してください。",
                "Your device is set up correctly: it holds the current setup key and its clock is right. Log in with the one-time passwords it shows.",
            )],
            Self::ClockOff { offset_secs } => {
                let amount = amount(offset_secs.unsigned_abs(), lang);
                let fast = offset_secs > 0;
                let head = match (ja, fast) {
                    (true, true) => format!(
                        "この端末には現在のセットアップキーが登録されていますが、時計が{amount}進んでいます。"
                    ),
                    (true, false) => format!(
                        "この端末には現在のセットアップキーが登録されていますが、時計が{amount}遅れています。"
                    ),
                    (false, true) => format!(
                        "Your device holds the current setup key, but its clock is {amount} fast."
                    ),
                    (false, false) => format!(
                        "Your device holds the current setup key, but its clock is {amount} slow."
                    ),
                };
                vec![
                    head,
                    pick(
                        "時計がずれているとワンタイムパスワードが受け付けられません。端末の「設定」で日付と時刻を「自動設定」にしてから、もう一度確認してください（よくある質問 10）。",
                        "One-time passwords are refused while the clock is off. Turn on \u{201c}Set automatically\u{201d} for the date and time in the device's settings, then check again (FAQ 10).",
                    ),
                ]
            }
            Self::NoMatch => vec![
                pick(
                    "入力されたワンタイムパスワードは、現在のセットアップキーのものと一致しませんでした。端末には以前のセットアップキーか、別のIDのものが登録されている可能性があります。",
                    "The one-time password does not belong to your current setup key. Your device most likely holds an earlier setup key, or another ID's.",
                ),
                pick(
                    "認証アプリに残っている古いアカウントを削除し、上に表示されているQRコードを登録し直してください（よくある質問 7）。",
                    "Delete the old account from your authenticator app and register the QR code shown above again (FAQ 7).",
                ),
            ],
            Self::NoKey => vec![UserMessage::NoSetupKey.text(lang)],
            Self::Limited { retry_at } => {
                let head = pick(
                    "確認できる回数の上限に達しました。",
                    "You have checked your authenticator too many times.",
                );
                vec![match retry_at {
                    Some(at) if ja => {
                        format!("{head}{} 以降にもう一度お試しください。", local_time(at))
                    }
                    Some(at) => format!("{head} Please try again after {}.", local_time(at)),
                    None if ja => format!("{head}しばらく時間をおいてからやり直してください。"),
                    None => format!("{head} Please wait a while and try again."),
                }]
            }
            Self::CodeFormat => vec![pick(
                "端末に表示されているワンタイムパスワード（6桁の数字）を入力してください。",
                "Type the one-time password (6 digits) your device shows.",
            )],
            Self::Unavailable => vec![UserMessage::Unavailable.text(lang)],
        }
    }
}

/// "約3分" / "about 3 minutes": seconds under a minute, else whole minutes (rounded).
fn amount(secs: u64, lang: Lang) -> String {
    let (n, ja_unit, en_unit) = if secs < 60 {
        (secs, "秒", "second")
    } else {
        ((secs + 30) / 60, "分", "minute")
    };
    match lang {
        Lang::Ja => format!("約{n}{ja_unit}"),
        Lang::En if n == 1 => format!("about 1 {en_unit}"),
        Lang::En => format!("about {n} {en_unit}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_answer_survives_the_redirect() {
        for answer in [
            CheckAnswer::Ready,
            CheckAnswer::ClockOff { offset_secs: 120 },
            CheckAnswer::ClockOff { offset_secs: -600 },
            CheckAnswer::NoMatch,
            CheckAnswer::NoKey,
            CheckAnswer::Limited {
                retry_at: Some(1_700_000_000_000),
            },
            CheckAnswer::Limited { retry_at: None },
            CheckAnswer::CodeFormat,
            CheckAnswer::Unavailable,
        ] {
            assert_eq!(CheckAnswer::from_token(&answer.token()), Some(answer));
        }
        // Another form's refusal is not a check's answer.
        assert_eq!(
            CheckAnswer::from_token("IDまたはパスワードが違います。"),
            None
        );
        assert_eq!(CheckAnswer::from_token("check:clock:x"), None);
    }

    #[test]
    fn the_clock_is_told_in_minutes_or_seconds_and_fast_or_slow() {
        let words = |secs, lang| {
            CheckAnswer::ClockOff { offset_secs: secs }.lines(lang, |_| String::new())[0].clone()
        };
        assert!(words(120, Lang::Ja).contains("約2分進んでいます"));
        assert!(words(-600, Lang::Ja).contains("約10分遅れています"));
        assert!(words(-30, Lang::Ja).contains("約30秒遅れています"));
        assert!(words(120, Lang::En).contains("about 2 minutes fast"));
        assert!(words(-60, Lang::En).contains("about 1 minute slow"));
        assert!(words(-30, Lang::En).contains("about 30 seconds slow"));
    }

    #[test]
    fn a_limited_check_says_when_to_come_back() {
        let lines =
            CheckAnswer::Limited { retry_at: Some(1) }.lines(Lang::En, |_| "15:04 JST".to_owned());
        assert!(
            lines[0].ends_with("Please try again after 15:04 JST."),
            "{lines:?}"
        );
    }
}
