//! The two languages of the portal: Japanese by default, English on request.

/// The language a page is rendered in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Lang {
    #[default]
    Ja,
    En,
}

impl Lang {
    /// From the `lang` cookie's value; anything unknown is Japanese.
    pub fn from_code(code: &str) -> Self {
        match code {
            "en" => Self::En,
            _ => Self::Ja,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Self::Ja => "ja",
            Self::En => "en",
        }
    }

    /// The other language, offered by the switch in the header.
    pub fn other(self) -> Self {
        match self {
            Self::Ja => Self::En,
            Self::En => Self::Ja,
        }
    }
}
