//! How a code a person typed is read, the same way in every service that takes one: a
//! Japanese IME types full-width digits (「３６６２６２」), phones and mails group digits with
//! spaces or hyphens (`366 262`, `366-262`). NFKC folds the full-width forms to ASCII, then
//! separators are dropped; what remains is checked by the service's own rule (6 digits, or
//! the key's length), so nothing but digits ever gets through.

use unicode_normalization::UnicodeNormalization as _;

/// Longest input read at all: a code with a separator between every digit, and some.
const MAX_TYPED: usize = 64;

/// `raw` as the digits the person meant: NFKC-normalised, whitespace and hyphen-like
/// separators removed. Anything else (letters, other symbols) is kept, so the caller's
/// digits-only check still refuses it; an absurdly long input is returned unread (and
/// refused by that check).
pub fn typed_digits(raw: &str) -> String {
    if raw.len() > MAX_TYPED * 4 {
        return raw.to_owned();
    }
    raw.nfkc()
        .filter(|c| !c.is_whitespace() && !is_hyphen(*c))
        .take(MAX_TYPED)
        .collect()
}

/// Hyphens and dashes people put between digit groups (NFKC leaves most of them alone).
fn is_hyphen(c: char) -> bool {
    matches!(
        c,
        '-' | '\u{2010}'..='\u{2015}' | '\u{2212}' | '\u{30FC}' | '\u{FF70}' | '\u{FE63}'
    )
}

#[cfg(test)]
mod tests {
    use super::typed_digits;

    #[test]
    fn full_width_digits_and_separators_become_the_digits_meant() {
        assert_eq!(typed_digits("３６６２６２"), "366262");
        assert_eq!(typed_digits("366 262"), "366262");
        assert_eq!(typed_digits("３６６　２６２"), "366262");
        assert_eq!(typed_digits("366-262"), "366262");
        assert_eq!(typed_digits("３６６－２６２"), "366262");
        assert_eq!(typed_digits("366ー262"), "366262");
        assert_eq!(typed_digits(" 366262\n"), "366262");
    }

    #[test]
    fn what_is_not_a_digit_stays_for_the_digit_check_to_refuse() {
        assert_eq!(typed_digits("36626a"), "36626a");
        assert_eq!(typed_digits("366.262"), "366.262");
        assert_eq!(
            typed_digits("٣٦٦٢٦٢"),
            "٣٦٦٢٦٢",
            "Arabic-Indic digits are not ASCII"
        );
    }
}
