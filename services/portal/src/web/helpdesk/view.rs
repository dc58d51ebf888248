//! What the console's account page shows, worded from the three admin services' replies:
//! every time in the institution's zone, every address masked (the services already mask
//! them), nothing secret (the services hold none of it back because none is sent).

use kagi_proto::v1 as pb;

use super::texts::HelpdeskTexts;
use crate::web::AppState;

/// The keystore's part.
#[derive(Debug, Default)]
pub struct KeyView {
    pub status: &'static str,
    pub created: String,
    pub params: String,
    pub locked: bool,
    pub failures: u32,
    pub locked_until: String,
    pub times_locked: u32,
    pub last_login: String,
    pub drift: String,
}

/// The reset service's part.
#[derive(Debug, Default)]
pub struct ResetView {
    pub recovery: String,
    pub in_progress: bool,
    pub state: String,
    pub started: String,
    pub code_sent: String,
    pub expires: String,
    pub attempts_left: u32,
    pub resends: String,
}

#[derive(Debug)]
pub struct MailRow {
    pub kind: &'static str,
    pub state: &'static str,
    pub attempts: u32,
    pub last_reply: String,
    pub queued: String,
    pub to: String,
}

#[derive(Debug)]
pub struct EventRow {
    pub at_ms: i64,
    pub at: String,
    pub source: &'static str,
    pub caller: String,
    pub action: String,
    pub detail: String,
}

fn ms(t: Option<&prost_types::Timestamp>) -> Option<i64> {
    t.map(|t| t.seconds.saturating_mul(1000) + i64::from(t.nanos) / 1_000_000)
}

impl AppState {
    fn when(&self, t: Option<&prost_types::Timestamp>, none: &'static str) -> String {
        ms(t).map_or_else(|| none.to_owned(), |at| self.local_time_full(at))
    }

    pub(super) fn key_view(&self, t: &HelpdeskTexts, a: &pb::GetAccountResponse) -> KeyView {
        let lockout = a.lockout.unwrap_or_default();
        let locked = ms(lockout.locked_until.as_ref()).is_some_and(|until| until > self.now());
        let period = i64::from(a.period_seconds);
        KeyView {
            status: if a.enrolled {
                t.enrolled
            } else if a.revoked_at.is_some() {
                t.revoked
            } else {
                t.not_enrolled
            },
            created: format!(
                "{}{}",
                self.when(a.key_created_at.as_ref(), t.none),
                if a.reissued { t.reissued } else { "" }
            ),
            params: format!(
                "{} / {} digits / {} s",
                a.algorithm()
                    .as_str_name()
                    .trim_start_matches("HASH_ALGORITHM_"),
                a.digits,
                a.period_seconds
            ),
            locked,
            failures: lockout.failures,
            locked_until: if locked {
                self.when(lockout.locked_until.as_ref(), t.none)
            } else {
                t.not_locked.to_owned()
            },
            times_locked: lockout.times_locked,
            last_login: self.when(a.last_login_at.as_ref(), t.none),
            drift: if a.last_login_at.is_some() {
                let secs = i64::from(a.last_login_drift_steps) * period;
                format!("{:+} steps ({secs:+} s)", a.last_login_drift_steps)
            } else {
                t.none.to_owned()
            },
        }
    }

    pub(super) fn reset_view(
        &self,
        t: &HelpdeskTexts,
        r: &pb::GetAccountResetResponse,
    ) -> ResetView {
        let mut view = ResetView {
            recovery: if r.masked_recipient.is_empty() {
                t.none.to_owned()
            } else {
                r.masked_recipient.clone()
            },
            in_progress: r.in_progress,
            ..ResetView::default()
        };
        if let Some(latest) = &r.latest {
            view.state = latest
                .state()
                .as_str_name()
                .trim_start_matches("RESET_STATE_")
                .to_owned();
            view.started = self.when(latest.started_at.as_ref(), t.none);
            view.code_sent = self.when(latest.code_sent_at.as_ref(), t.none);
            view.expires = self.when(latest.code_expires_at.as_ref(), t.none);
            view.attempts_left = latest.attempts_remaining;
            view.resends = format!("{} (+{})", latest.resends, latest.resends_remaining);
        }
        view
    }

    pub(super) fn mail_rows(&self, t: &HelpdeskTexts, mails: &[pb::RecentMail]) -> Vec<MailRow> {
        mails
            .iter()
            .filter_map(|m| m.delivery.as_ref().map(|d| (m, d)))
            .map(|(m, d)| MailRow {
                kind: d.kind().as_str_name().trim_start_matches("MESSAGE_KIND_"),
                state: d
                    .state()
                    .as_str_name()
                    .trim_start_matches("DELIVERY_STATE_"),
                attempts: d.attempts,
                last_reply: d.last_reply.clone(),
                queued: self.when(d.queued_at.as_ref(), t.none),
                to: m.masked_recipient.clone(),
            })
            .collect()
    }

    /// The keystore's and the reset service's trails, merged newest first.
    pub(super) fn event_rows(
        &self,
        keystore: &[pb::AuditEvent],
        reset: &[pb::AuditEvent],
    ) -> Vec<EventRow> {
        let row = |source: &'static str| {
            move |e: &pb::AuditEvent| {
                let at_ms = ms(e.at.as_ref()).unwrap_or_default();
                EventRow {
                    at_ms,
                    at: self.local_time_full(at_ms),
                    source,
                    caller: e.caller.clone(),
                    action: e.action.clone(),
                    detail: e.detail.clone(),
                }
            }
        };
        let mut rows: Vec<EventRow> = keystore
            .iter()
            .map(row("keystore"))
            .chain(reset.iter().map(row("reset")))
            .collect();
        rows.sort_by_key(|r| std::cmp::Reverse(r.at_ms));
        rows
    }
}
