//! The pages' data, one askama template each (`templates/*.html`). Every page extends
//! `base.html`, which reads the shared [`Chrome`].

use askama::Template;

use super::texts::Texts;
use crate::domain::ShownKey;

/// What every page shows around its content: texts, institution, login state, the
/// session's CSRF token (for the logout form and the page's own forms).
#[derive(Debug)]
pub struct Chrome {
    pub t: &'static Texts,
    pub lang: &'static str,
    pub lang_href: String,
    pub other_lang_code: &'static str,
    pub inst_name: String,
    /// "二要素認証管理システム": the institution's name for the system.
    pub system_name: String,
    pub welcome: String,
    pub id_label: String,
    pub footer: String,
    pub trouble_url: String,
    pub manual_url: String,
    pub onboarding_url: String,
    pub account: Option<String>,
    pub csrf: String,
    pub outbox: bool,
    /// A phone or tablet: "この端末の認証アプリに追加する" (an otpauth link) only works there.
    pub phone: bool,
}

#[derive(Debug, Template)]
#[template(path = "top.html")]
pub struct TopPage {
    pub c: Chrome,
    pub autofill: bool,
}

#[derive(Debug, Template)]
#[template(path = "login_prompt.html")]
pub struct LoginPromptPage {
    pub c: Chrome,
    pub heading: &'static str,
    pub next: &'static str,
    /// Why a logged-in user must log in again (step-up), in place of "not logged in".
    pub reason: Option<String>,
}

#[derive(Debug, Template)]
#[template(path = "login.html")]
pub struct LoginFormPage {
    pub c: Chrome,
    pub next: String,
    pub account_id: String,
    pub message: Option<String>,
    /// The address needs the one-time password too (off campus): its field, and the way
    /// to menu 2 for a lost phone.
    pub otp: Option<&'static super::login_otp::OtpTexts>,
}

#[derive(Debug, Template)]
#[template(path = "continue.html")]
pub struct ContinuePage {
    pub c: Chrome,
    pub heading: &'static str,
    pub text: String,
    pub next: String,
    /// Follow `next` at once (a same-site navigation, so SameSite=Strict cookies go along).
    pub refresh: bool,
}

#[derive(Debug, Template)]
#[template(path = "key.html")]
pub struct KeyPage {
    pub c: Chrome,
    pub key: ShownKey,
}

#[derive(Debug, Template)]
#[template(path = "apple.html")]
pub struct ApplePage {
    pub c: Chrome,
    pub key: Option<ShownKey>,
}

#[derive(Debug, Template)]
#[template(path = "message.html")]
pub struct MessagePage {
    pub c: Chrome,
    pub heading: &'static str,
    pub message: String,
    /// Offer "最初からやり直す" (menu 2).
    pub restart: bool,
}

#[derive(Debug, Template)]
#[template(path = "reset1.html")]
pub struct Reset1Page {
    pub c: Chrome,
    pub account_id: String,
    pub message: Option<String>,
}

#[derive(Debug, Template)]
#[template(path = "reset2.html")]
pub struct Reset2Page {
    pub c: Chrome,
    pub masked: String,
    pub message: Option<String>,
    pub notice: Option<&'static str>,
    pub resend_enabled: bool,
    /// When "メールを再送信する" works (for the no-script text), and how long until then
    /// (for the script that enables it).
    pub resend_at: String,
    pub resend_wait_ms: i64,
}

#[derive(Debug, Template)]
#[template(path = "reset3.html")]
pub struct Reset3Page {
    pub c: Chrome,
    pub message: Option<String>,
}

#[derive(Debug, Template)]
#[template(path = "reset4.html")]
pub struct Reset4Page {
    pub c: Chrome,
    pub key: ShownKey,
}

/// "Check my authenticator": the answer to the code the user typed (`CheckAnswer`).
#[derive(Debug, Template)]
#[template(path = "check.html")]
pub struct CheckPage {
    pub c: Chrome,
    /// The answer's short name (`data-answer`).
    pub kind: &'static str,
    pub ready: bool,
    pub lines: Vec<String>,
    /// The key, to be registered again (no match, FAQ 7).
    pub key: Option<ShownKey>,
    /// Offer the form again (not when the allowance is used up or there is no key).
    pub again: bool,
    /// Menu 1 can show the key to this session (a login, not only a reissue).
    pub logged_in: bool,
}

/// One mail of the dev outbox.
#[derive(Debug)]
pub struct OutboxMail {
    pub name: String,
    /// When it was sent, in the institution's zone.
    pub date: String,
    pub to: String,
    pub subject: String,
    pub body: String,
}

#[derive(Debug, Template)]
#[template(path = "outbox.html")]
pub struct OutboxPage {
    pub c: Chrome,
    pub mails: Vec<OutboxMail>,
}
