//! Money, percentages, dates and parcel tracking links as a customer of a
//! language (and, where it matters, a country) expects to read them.
//!
//! The number and date shapes follow CLDR (the data behind ICU and every
//! browser's `Intl`) for the six languages we speak and the two currencies
//! we sell in. They are written out by hand in small tables rather than
//! taken from an ICU crate (`icu`, `rust_icu`): six languages times two
//! currencies is a few lines, while ICU's data and code add minutes of
//! compile time and megabytes to every Lambda package (and cold start) for
//! the one function that needs it.
//!
//! Where this deliberately follows the issue rather than CLDR to the letter:
//!
//! - a negative amount always starts with `-` (CLDR puts it after the
//!   symbol for `de-CH`, `it-CH` and `nl`);
//! - Swiss formatting (`CHF 1’234.50`: apostrophe groups, decimal point,
//!   symbol first) is used for German and Italian whenever the order is in
//!   francs or ships to Switzerland, since a Swiss customer reads prices
//!   that way; French keeps `1 234,50 CHF` (which is also what CLDR says for
//!   `fr-CH`), English, Dutch and Spanish keep their own style;
//! - Austrian German is formatted like German German (CLDR `de-AT` puts the
//!   symbol first);
//! - French dates write the first of a month `1er`, as French typography
//!   does (CLDR's pattern gives `1`).
//!
//! The symbol is separated from the number by a no-break space (U+00A0) and
//! French groups thousands with a narrow no-break space (U+202F), as CLDR
//! does, so an amount never breaks across lines in an e-mail.

use printworks::domain::locale::{CountryCode, Locale};
use printworks::domain::money::{Currency, Money};
use time::{Date, Month, OffsetDateTime, UtcOffset, Weekday};

const NBSP: &str = "\u{a0}";
const NNBSP: &str = "\u{202f}";

/// Where the currency symbol goes and what separates it from the number.
#[derive(Clone, Copy)]
enum Symbol {
    /// `€1,234.50`, `CHF 1,234.50`: the separator for `€` and for `CHF`.
    Before {
        eur: &'static str,
        chf: &'static str,
    },
    /// `1.234,50 €`.
    After,
}

/// How one language (and region) writes an amount of money.
#[derive(Clone, Copy)]
struct NumberStyle {
    group: &'static str,
    decimal: char,
    /// CLDR's `minimumGroupingDigits`: Spanish writes `1234` but `12.345`.
    min_grouping: usize,
    symbol: Symbol,
}

const SWISS: NumberStyle = NumberStyle {
    group: "\u{2019}",
    decimal: '.',
    min_grouping: 1,
    symbol: Symbol::Before {
        eur: NBSP,
        chf: NBSP,
    },
};

fn number_style(lang: Locale, currency: Currency, country: CountryCode) -> NumberStyle {
    let swiss = currency == Currency::Chf || country == CountryCode::CH;
    match lang {
        Locale::De | Locale::It if swiss => SWISS,
        Locale::De | Locale::It => NumberStyle {
            group: ".",
            decimal: ',',
            min_grouping: 1,
            symbol: Symbol::After,
        },
        Locale::En => NumberStyle {
            group: ",",
            decimal: '.',
            min_grouping: 1,
            symbol: Symbol::Before { eur: "", chf: NBSP },
        },
        Locale::Fr => NumberStyle {
            group: NNBSP,
            decimal: ',',
            min_grouping: 1,
            symbol: Symbol::After,
        },
        Locale::Nl => NumberStyle {
            group: ".",
            decimal: ',',
            min_grouping: 1,
            symbol: Symbol::Before {
                eur: NBSP,
                chf: NBSP,
            },
        },
        Locale::Es => NumberStyle {
            group: ".",
            decimal: ',',
            min_grouping: 2,
            symbol: Symbol::After,
        },
    }
}

fn symbol(currency: Currency) -> &'static str {
    match currency {
        Currency::Eur => "€",
        Currency::Chf => "CHF",
    }
}

/// Whole units with the style's grouping (`1234567` -> `1.234.567`).
fn group_digits(units: u64, style: NumberStyle) -> String {
    let digits = units.to_string();
    if digits.len() < 3 + style.min_grouping {
        return digits;
    }
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 * 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push_str(style.group);
        }
        out.push(c);
    }
    out
}

/// An amount as a customer of `lang` in `country` reads it:
/// `1.234,50 €` (de), `CHF 1’234.50` (de, CH), `€1,234.50` (en),
/// `1 234,50 €` (fr), `€ 1.234,50` (nl), `1234,50 €` (es).
pub fn money(m: Money, lang: Locale, country: CountryCode) -> String {
    let style = number_style(lang, m.currency, country);
    let abs = m.amount.unsigned_abs();
    // Both currencies have two decimals.
    let number = format!(
        "{}{}{:02}",
        group_digits(abs / 100, style),
        style.decimal,
        abs % 100
    );
    let sign = if m.amount < 0 { "-" } else { "" };
    let sym = symbol(m.currency);
    match style.symbol {
        Symbol::Before { eur, chf } => {
            let sep = if m.currency == Currency::Eur {
                eur
            } else {
                chf
            };
            format!("{sign}{sym}{sep}{number}")
        }
        Symbol::After => format!("{sign}{number}{NBSP}{sym}"),
    }
}

/// A rate in basis points as a percentage: `19 %` (de, fr, es), `8.1%`
/// (en), `8,1%` (it, nl). Trailing zeros of the fraction are dropped.
pub fn percent_bp(basis_points: u32, lang: Locale) -> String {
    let whole = basis_points / 100;
    let fraction = basis_points % 100;
    let decimal = if lang == Locale::En { '.' } else { ',' };
    let number = match fraction {
        0 => whole.to_string(),
        f if f.is_multiple_of(10) => format!("{whole}{decimal}{}", f / 10),
        f => format!("{whole}{decimal}{f:02}"),
    };
    match lang {
        Locale::De | Locale::Es => format!("{number}{NBSP}%"),
        Locale::Fr => format!("{number}{NNBSP}%"),
        Locale::En | Locale::It | Locale::Nl => format!("{number}%"),
    }
}

const MONTHS_DE: [&str; 12] = [
    "Januar",
    "Februar",
    "März",
    "April",
    "Mai",
    "Juni",
    "Juli",
    "August",
    "September",
    "Oktober",
    "November",
    "Dezember",
];
const MONTHS_EN: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const MONTHS_FR: [&str; 12] = [
    "janvier",
    "février",
    "mars",
    "avril",
    "mai",
    "juin",
    "juillet",
    "août",
    "septembre",
    "octobre",
    "novembre",
    "décembre",
];
const MONTHS_IT: [&str; 12] = [
    "gennaio",
    "febbraio",
    "marzo",
    "aprile",
    "maggio",
    "giugno",
    "luglio",
    "agosto",
    "settembre",
    "ottobre",
    "novembre",
    "dicembre",
];
const MONTHS_NL: [&str; 12] = [
    "januari",
    "februari",
    "maart",
    "april",
    "mei",
    "juni",
    "juli",
    "augustus",
    "september",
    "oktober",
    "november",
    "december",
];
const MONTHS_ES: [&str; 12] = [
    "enero",
    "febrero",
    "marzo",
    "abril",
    "mayo",
    "junio",
    "julio",
    "agosto",
    "septiembre",
    "octubre",
    "noviembre",
    "diciembre",
];

fn month_name(month: Month, lang: Locale) -> &'static str {
    let table = match lang {
        Locale::De => &MONTHS_DE,
        Locale::En => &MONTHS_EN,
        Locale::Fr => &MONTHS_FR,
        Locale::It => &MONTHS_IT,
        Locale::Nl => &MONTHS_NL,
        Locale::Es => &MONTHS_ES,
    };
    table[usize::from(u8::from(month)) - 1]
}

/// A date in the language's long form: `29. November 2026` (de),
/// `29 November 2026` (en), `29 novembre 2026` (fr, it), `29 november 2026`
/// (nl), `29 de noviembre de 2026` (es).
pub fn date(d: Date, lang: Locale) -> String {
    let (day, month, year) = (d.day(), month_name(d.month(), lang), d.year());
    match lang {
        Locale::De => format!("{day}. {month} {year}"),
        Locale::Fr if day == 1 => format!("1er {month} {year}"),
        Locale::En | Locale::Fr | Locale::It | Locale::Nl => format!("{day} {month} {year}"),
        Locale::Es => format!("{day} de {month} de {year}"),
    }
}

/// The calendar day of `at` for our customers: every country we ship to
/// keeps Central European time (UTC+1, and UTC+2 from the last Sunday of
/// March to the last Sunday of October, switching at 01:00 UTC), so an
/// order placed at 00:30 in Berlin is dated that day, not the day before.
pub fn customer_date(at: OffsetDateTime) -> Date {
    let utc = at.to_offset(UtcOffset::UTC);
    let year = utc.year();
    let switch = |month: Month| {
        last_sunday(year, month)
            .map(|d| d.with_hms(1, 0, 0).map(|t| t.assume_utc()))
            .and_then(Result::ok)
    };
    let summer = match (switch(Month::March), switch(Month::October)) {
        (Some(start), Some(end)) => utc >= start && utc < end,
        _ => false,
    };
    let hours = if summer { 2 } else { 1 };
    let offset = UtcOffset::from_hms(hours, 0, 0).unwrap_or(UtcOffset::UTC);
    utc.checked_to_offset(offset).unwrap_or(utc).date()
}

fn last_sunday(year: i32, month: Month) -> Option<Date> {
    let last = Date::from_calendar_date(year, month, month.length(year)).ok()?;
    let back = last.weekday().number_days_from_sunday();
    last.checked_sub(time::Duration::days(i64::from(back)))
        .filter(|d| d.weekday() == Weekday::Sunday)
}

/// `tracking` for a URL: ASCII letters and digits pass, every other byte
/// is percent-encoded.
fn encode(tracking: &str) -> String {
    let mut out = String::with_capacity(tracking.len());
    for b in tracking.bytes() {
        if b.is_ascii_alphanumeric() {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The public tracking page of a parcel, for the carriers plants ship
/// with in our countries; the carrier name is matched ignoring case,
/// spaces and punctuation (`POST CH`, `Swiss Post`, `La Poste`,
/// `Colissimo`...). `None` for an unknown carrier (the simulator's
/// `SIM-POST`) or an empty tracking number.
pub fn tracking_url(carrier: &str, tracking: &str) -> Option<String> {
    let tracking = tracking.trim();
    if tracking.is_empty() {
        return None;
    }
    let carrier: String = carrier
        .chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect();
    let (prefix, suffix) = match carrier.as_str() {
        "dhl" | "dhlexpress" | "dhlpaket" | "dhlparcel" | "deutschepost" => (
            "https://www.dhl.com/global-en/home/tracking.html?tracking-id=",
            "&submit=1",
        ),
        "dpd" => ("https://tracking.dpd.de/status/en_US/parcel/", ""),
        "ups" => ("https://www.ups.com/track?tracknum=", ""),
        "gls" => ("https://gls-group.eu/EU/en/parcel-tracking?match=", ""),
        "postnl" => ("https://postnl.nl/tracktrace/?B=", ""),
        "postch" | "swisspost" | "diepost" | "lapostesuisse" | "postesuisse" => {
            ("https://service.post.ch/ekp-web/ui/entry/search/", "")
        }
        "laposte" | "colissimo" => ("https://www.laposte.fr/outils/suivre-vos-envois?code=", ""),
        "correos" => (
            "https://www.correos.es/es/es/herramientas/localizador/envios/detalle?tracking-number=",
            "",
        ),
        "posteitaliane" | "poste" => (
            "https://www.poste.it/cerca/index.html#/risultati-spedizioni/",
            "",
        ),
        "bpost" => ("https://track.bpost.cloud/btr/web/#/search?itemCode=", ""),
        "postat" | "österreichischepost" | "austrianpost" => {
            ("https://www.post.at/s/sendungsdetails?snr=", "")
        }
        "postnord" => (
            "https://www.postnord.dk/varktojer/track-trace?shipmentId=",
            "",
        ),
        "hermes" => (
            "https://www.myhermes.de/empfangen/sendungsverfolgung/sendungsinformation#",
            "",
        ),
        "fedex" | "tnt" => ("https://www.fedex.com/fedextrack/?trknbr=", ""),
        _ => return None,
    };
    Some(format!("{prefix}{}{suffix}", encode(tracking)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::{date, datetime};

    fn eur(amount: i64) -> Money {
        Money::new(amount, Currency::Eur)
    }

    fn chf(amount: i64) -> Money {
        Money::new(amount, Currency::Chf)
    }

    /// Spaces in expectations written readably: `~` is U+00A0 and `^` U+202F.
    fn s(readable: &str) -> String {
        readable.replace('~', NBSP).replace('^', NNBSP)
    }

    #[test]
    fn money_per_language_in_euros() {
        use CountryCode::*;
        let cases = [
            (Locale::De, DE, "1.234,50~€"),
            (Locale::De, AT, "1.234,50~€"),
            (Locale::En, DE, "€1,234.50"),
            (Locale::Fr, FR, "1^234,50~€"),
            (Locale::It, IT, "1.234,50~€"),
            (Locale::Nl, NL, "€~1.234,50"),
            (Locale::Es, ES, "1234,50~€"),
        ];
        for (lang, country, expected) in cases {
            assert_eq!(money(eur(123_450), lang, country), s(expected), "{lang:?}");
        }
        assert_eq!(
            money(eur(1_234_550), Locale::Es, CountryCode::ES),
            s("12.345,50~€")
        );
        assert_eq!(
            money(eur(99_999), Locale::Es, CountryCode::ES),
            s("999,99~€")
        );
        assert_eq!(money(eur(5), Locale::De, CountryCode::DE), s("0,05~€"));
        assert_eq!(money(eur(0), Locale::En, CountryCode::DE), "€0.00");
    }

    #[test]
    fn money_per_language_in_francs_and_in_switzerland() {
        use CountryCode::*;
        let cases = [
            (Locale::De, CH, "CHF~1’234.50"),
            (Locale::En, CH, "CHF~1,234.50"),
            (Locale::Fr, CH, "1^234,50~CHF"),
            (Locale::It, CH, "CHF~1’234.50"),
            (Locale::Nl, CH, "CHF~1.234,50"),
            (Locale::Es, CH, "1234,50~CHF"),
            // A franc order elsewhere still reads Swiss in German.
            (Locale::De, DE, "CHF~1’234.50"),
            (Locale::En, DE, "CHF~1,234.50"),
        ];
        for (lang, country, expected) in cases {
            assert_eq!(money(chf(123_450), lang, country), s(expected), "{lang:?}");
        }
        // Euros shipped to Switzerland, in German: Swiss digits, euro sign first.
        assert_eq!(money(eur(123_450), Locale::De, CH), s("€~1’234.50"));
    }

    #[test]
    fn negative_and_seven_digit_amounts() {
        use CountryCode::*;
        let big = 123_456_789; // 1,234,567.89
        let cases = [
            (Locale::De, DE, eur(big), "1.234.567,89~€"),
            (Locale::De, CH, chf(big), "CHF~1’234’567.89"),
            (Locale::En, DE, eur(big), "€1,234,567.89"),
            (Locale::Fr, FR, eur(big), "1^234^567,89~€"),
            (Locale::It, IT, eur(big), "1.234.567,89~€"),
            (Locale::Nl, NL, eur(big), "€~1.234.567,89"),
            (Locale::Es, ES, eur(big), "1.234.567,89~€"),
            (Locale::De, DE, eur(-123_450), "-1.234,50~€"),
            (Locale::De, CH, chf(-123_450), "-CHF~1’234.50"),
            (Locale::En, DE, eur(-5), "-€0.05"),
            (Locale::En, DE, chf(-123_450), "-CHF~1,234.50"),
            (Locale::Fr, FR, eur(-123_450), "-1^234,50~€"),
            (Locale::It, IT, eur(-99), "-0,99~€"),
            (Locale::Nl, NL, eur(-123_450), "-€~1.234,50"),
            (Locale::Es, ES, eur(-1_234_550), "-12.345,50~€"),
        ];
        for (lang, country, m, expected) in cases {
            assert_eq!(money(m, lang, country), s(expected), "{lang:?} {m:?}");
        }
        // The extremes do not overflow.
        assert!(money(eur(i64::MIN), Locale::En, DE).starts_with("-€92,233,720,368,547,758.08"));
        assert!(
            money(eur(i64::MAX), Locale::Es, ES).ends_with(",07~€".replace('~', NBSP).as_str())
        );
    }

    #[test]
    fn percentages() {
        assert_eq!(percent_bp(1900, Locale::De), s("19~%"));
        assert_eq!(percent_bp(810, Locale::De), s("8,1~%"));
        assert_eq!(percent_bp(810, Locale::En), "8.1%");
        assert_eq!(percent_bp(2000, Locale::Fr), s("20^%"));
        assert_eq!(percent_bp(2200, Locale::It), "22%");
        assert_eq!(percent_bp(2100, Locale::Nl), "21%");
        assert_eq!(percent_bp(2100, Locale::Es), s("21~%"));
        assert_eq!(percent_bp(1705, Locale::En), "17.05%");
        assert_eq!(percent_bp(0, Locale::En), "0%");
    }

    #[test]
    fn long_dates() {
        let d = date!(2026 - 11 - 29);
        assert_eq!(date(d, Locale::De), "29. November 2026");
        assert_eq!(date(d, Locale::En), "29 November 2026");
        assert_eq!(date(d, Locale::Fr), "29 novembre 2026");
        assert_eq!(date(d, Locale::It), "29 novembre 2026");
        assert_eq!(date(d, Locale::Nl), "29 november 2026");
        assert_eq!(date(d, Locale::Es), "29 de noviembre de 2026");
        let first = date!(2027 - 03 - 01);
        assert_eq!(date(first, Locale::De), "1. März 2027");
        assert_eq!(date(first, Locale::Fr), "1er mars 2027");
        assert_eq!(date(date!(2026 - 08 - 15), Locale::Fr), "15 août 2026");
        assert_eq!(
            date(date!(2026 - 01 - 02), Locale::Es),
            "2 de enero de 2026"
        );
        for lang in Locale::ALL {
            for month in 1..=12u8 {
                let d =
                    Date::from_calendar_date(2026, Month::try_from(month).unwrap(), 10).unwrap();
                assert!(!date(d, lang).is_empty());
            }
        }
    }

    #[test]
    fn customer_dates_are_central_european() {
        // Winter: UTC+1.
        assert_eq!(
            customer_date(datetime!(2026-11-28 22:59 UTC)),
            date!(2026 - 11 - 28)
        );
        assert_eq!(
            customer_date(datetime!(2026-11-28 23:30 UTC)),
            date!(2026 - 11 - 29)
        );
        // Summer: UTC+2.
        assert_eq!(
            customer_date(datetime!(2026-07-14 21:59 UTC)),
            date!(2026 - 07 - 14)
        );
        assert_eq!(
            customer_date(datetime!(2026-07-14 22:00 UTC)),
            date!(2026 - 07 - 15)
        );
        // The switches (2026: 29 March and 25 October, at 01:00 UTC).
        assert_eq!(last_sunday(2026, Month::March), Some(date!(2026 - 03 - 29)));
        assert_eq!(
            last_sunday(2026, Month::October),
            Some(date!(2026 - 10 - 25))
        );
        assert_eq!(
            customer_date(datetime!(2026-03-29 22:30 UTC)),
            date!(2026 - 03 - 30)
        );
        assert_eq!(
            customer_date(datetime!(2026-10-25 22:30 UTC)),
            date!(2026 - 10 - 25)
        );
        // Any offset in, the same instant out.
        let berlin = datetime!(2026-11-29 00:30 +1);
        assert_eq!(customer_date(berlin), date!(2026 - 11 - 29));
    }

    #[test]
    fn tracking_links_for_known_carriers() {
        assert_eq!(
            tracking_url("DHL", "00340434161234567890").as_deref(),
            Some(
                "https://www.dhl.com/global-en/home/tracking.html?tracking-id=00340434161234567890&submit=1"
            )
        );
        assert_eq!(
            tracking_url("POST CH", "99.00.123456.12345678").as_deref(),
            Some("https://service.post.ch/ekp-web/ui/entry/search/99%2E00%2E123456%2E12345678")
        );
        for carrier in [
            "dhl",
            "DPD",
            "UPS",
            "GLS",
            "PostNL",
            "Swiss Post",
            "post-ch",
            "La Poste",
            "Colissimo",
            "Correos",
            "Poste Italiane",
            "bpost",
            "Post AT",
            "Österreichische Post",
            "PostNord",
            "Hermes",
            "FedEx",
        ] {
            let url = tracking_url(carrier, "AB 12/3?x=1&y#").unwrap_or_default();
            assert!(url.starts_with("https://"), "{carrier}");
            assert!(
                url.contains("AB%2012%2F3%3Fx%3D1%26y%23"),
                "{carrier}: {url}"
            );
        }
        // Non-ASCII bytes are encoded byte by byte.
        assert!(
            tracking_url("UPS", "ü1")
                .unwrap_or_default()
                .ends_with("%C3%BC1")
        );
    }

    #[test]
    fn no_link_for_unknown_carriers_or_empty_numbers() {
        assert_eq!(tracking_url("SIM-POST", "SIM123"), None);
        assert_eq!(tracking_url("", "123"), None);
        assert_eq!(tracking_url("DHL", "  "), None);
    }
}
