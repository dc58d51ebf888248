//! An e-mail address as a screen shows it: enough to recognise, not enough to learn. Shared
//! by the reset service (its pages and the help desk) and the notifier (the help desk's mail list).

/// `taro@example.ac.jp` → `t****@e*****.ac.jp`: the first character of the local part and
/// of the first domain label, fixed-length masks (so the length is not shown either), and
/// the rest of the domain.
pub fn mask_email(address: &str) -> String {
    let (local, domain) = address.split_once('@').unwrap_or((address, ""));
    let first = |s: &str| s.chars().next().map(String::from).unwrap_or_default();
    let (label, rest) = domain.split_once('.').unwrap_or((domain, ""));
    let rest = if rest.is_empty() {
        String::new()
    } else {
        format!(".{rest}")
    };
    format!("{}****@{}*****{rest}", first(local), first(label))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_like_the_portal_screen() {
        assert_eq!(mask_email("taro@example.ac.jp"), "t****@e*****.ac.jp");
        assert_eq!(mask_email("a@b.jp"), "a****@b*****.jp");
        assert_eq!(
            mask_email("very.long.name@mail.omu.ac.jp"),
            "v****@m*****.omu.ac.jp"
        );
    }
}
