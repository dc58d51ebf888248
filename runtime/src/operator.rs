//! Who acts and why, on every help-desk action (`kagi.v1.OperatorContext`): checked the same
//! way by every service that serves an admin contract, so an action one service accepts is
//! one the others accept and audit alike.

use crate::account::AccountId;

/// The longest reason kept, in characters: a sentence or two, not a document.
pub const MAX_REASON_CHARS: usize = 500;

/// An operator's identity and stated reason, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorContext {
    pub operator: AccountId,
    pub reason: String,
}

/// Why an operator context was refused; the message is shown to the caller as is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidOperatorContext {
    #[error("operator must be the operator's account ID (1 to 64 of A-Z a-z 0-9 . _ @ -)")]
    Operator,
    #[error("reason is required: say why, in 1 to 500 characters without control characters")]
    Reason,
}

impl OperatorContext {
    /// Checks both fields; the reason is trimmed.
    ///
    /// # Errors
    /// [`InvalidOperatorContext`] for a malformed operator or an empty, overlong or
    /// control-charactered reason (which could forge lines in a log or an audit export).
    pub fn parse(operator: &str, reason: &str) -> Result<Self, InvalidOperatorContext> {
        let operator = parse_operator(operator)?;
        let reason = reason.trim();
        if reason.is_empty()
            || reason.chars().count() > MAX_REASON_CHARS
            || reason.chars().any(char::is_control)
        {
            return Err(InvalidOperatorContext::Reason);
        }
        Ok(Self {
            operator,
            reason: reason.to_owned(),
        })
    }

    /// The audit trail's secret-free detail: `operator=ID reason=…` (the reason last, so it
    /// may hold spaces and `=`).
    pub fn audit_detail(&self) -> String {
        format!("operator={} reason={}", self.operator, self.reason)
    }
}

/// The operator of a look-up (which takes no reason).
///
/// # Errors
/// [`InvalidOperatorContext::Operator`].
pub fn parse_operator(raw: &str) -> Result<AccountId, InvalidOperatorContext> {
    AccountId::parse(raw).map_err(|_| InvalidOperatorContext::Operator)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_is_required_and_single_line() {
        assert_eq!(
            OperatorContext::parse("ops1", "  "),
            Err(InvalidOperatorContext::Reason)
        );
        assert_eq!(
            OperatorContext::parse("ops1", "called\nadmin=yes"),
            Err(InvalidOperatorContext::Reason)
        );
        assert_eq!(
            OperatorContext::parse("ops1", &"x".repeat(501)),
            Err(InvalidOperatorContext::Reason)
        );
        assert_eq!(
            OperatorContext::parse("", "user called"),
            Err(InvalidOperatorContext::Operator)
        );
        let ok = OperatorContext::parse("ops1", " 電話で本人確認済み ").unwrap();
        assert_eq!(ok.audit_detail(), "operator=ops1 reason=電話で本人確認済み");
    }
}
