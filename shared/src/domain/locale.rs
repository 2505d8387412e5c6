//! Countries we ship to and languages we speak, parsed once at the edge.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The ten ship-to countries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum CountryCode {
    DE,
    AT,
    CH,
    FR,
    IT,
    NL,
    BE,
    LU,
    ES,
    DK,
}

impl CountryCode {
    pub const ALL: [CountryCode; 10] = [
        CountryCode::DE,
        CountryCode::AT,
        CountryCode::CH,
        CountryCode::FR,
        CountryCode::IT,
        CountryCode::NL,
        CountryCode::BE,
        CountryCode::LU,
        CountryCode::ES,
        CountryCode::DK,
    ];

    pub fn code(self) -> &'static str {
        match self {
            CountryCode::DE => "DE",
            CountryCode::AT => "AT",
            CountryCode::CH => "CH",
            CountryCode::FR => "FR",
            CountryCode::IT => "IT",
            CountryCode::NL => "NL",
            CountryCode::BE => "BE",
            CountryCode::LU => "LU",
            CountryCode::ES => "ES",
            CountryCode::DK => "DK",
        }
    }

    pub fn parse(raw: &str) -> Option<CountryCode> {
        CountryCode::ALL.into_iter().find(|c| c.code() == raw)
    }

    /// Whether `postal_code` has this country's format (digits, and for the
    /// Netherlands four digits, an optional space and two letters).
    pub fn postal_code_valid(self, postal_code: &str) -> bool {
        let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
        match self {
            CountryCode::DE | CountryCode::FR | CountryCode::IT | CountryCode::ES => {
                digits(postal_code, 5)
            }
            CountryCode::AT | CountryCode::CH | CountryCode::BE | CountryCode::DK => {
                digits(postal_code, 4)
            }
            CountryCode::LU => {
                let rest = postal_code.strip_prefix("L-").unwrap_or(postal_code);
                digits(rest, 4)
            }
            CountryCode::NL => {
                // Bytes, not str slices: a non-ASCII character must be
                // refused, not split (a panic, found by schemathesis).
                let compact: Vec<u8> = postal_code.bytes().filter(|b| *b != b' ').collect();
                compact.len() == 6
                    && compact[..4].iter().all(u8::is_ascii_digit)
                    && compact[4..].iter().all(u8::is_ascii_uppercase)
                    && postal_code.len() <= 7
            }
        }
    }
}

impl fmt::Display for CountryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// The six languages customers are served in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Locale {
    De,
    En,
    Fr,
    It,
    Nl,
    Es,
}

impl Locale {
    pub const ALL: [Locale; 6] = [
        Locale::De,
        Locale::En,
        Locale::Fr,
        Locale::It,
        Locale::Nl,
        Locale::Es,
    ];

    pub fn code(self) -> &'static str {
        match self {
            Locale::De => "de",
            Locale::En => "en",
            Locale::Fr => "fr",
            Locale::It => "it",
            Locale::Nl => "nl",
            Locale::Es => "es",
        }
    }

    pub fn parse(raw: &str) -> Option<Locale> {
        Locale::ALL.into_iter().find(|l| l.code() == raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_codes() {
        assert_eq!(CountryCode::parse("CH"), Some(CountryCode::CH));
        assert_eq!(CountryCode::parse("ch"), None);
        assert_eq!(CountryCode::parse("US"), None);
        assert_eq!(Locale::parse("nl"), Some(Locale::Nl));
        assert_eq!(Locale::parse("pt"), None);
    }

    #[test]
    fn postal_codes_per_country() {
        assert!(CountryCode::DE.postal_code_valid("80331"));
        assert!(!CountryCode::DE.postal_code_valid("8033"));
        assert!(CountryCode::CH.postal_code_valid("8001"));
        assert!(CountryCode::NL.postal_code_valid("1012 AB"));
        assert!(CountryCode::NL.postal_code_valid("1012AB"));
        assert!(!CountryCode::NL.postal_code_valid("1012 ab"));
        assert!(CountryCode::LU.postal_code_valid("L-1234"));
        assert!(!CountryCode::AT.postal_code_valid("1O10"));
        // Six bytes, but not six ASCII characters: refused, not a panic.
        for raw in ["123áB", "1áá1", "12 3áB", "1234Ñ", "€12AB"] {
            assert!(!CountryCode::NL.postal_code_valid(raw), "{raw}");
            for c in CountryCode::ALL {
                assert!(!c.postal_code_valid(raw), "{c} {raw}");
            }
        }
    }
}
