//! The message catalogs: `i18n/<lang>.json`, one flat catalog per
//! language, key -> text with `{name}` placeholders. Every catalog has the
//! same keys and, per key, the same placeholders as `en`
//! ([`check_catalogs`], run by `Templates::builtin`); `en` has the texts
//! the code picks by name ([`HOLD_CODES`], cancellations, countries, each
//! template's subject, heading and intro).
//!
//! [`I18n`] is the lookup behind the templates' `t(key, **kwargs)`: the
//! text of `key` in the message's language, `{name}` filled with the
//! keyword argument `name`, HTML-escaped in HTML templates ([`escape_html`]).

use minijinja::value::{Kwargs, Value};
use minijinja::{AutoEscape, Error, ErrorKind, State};
use printworks::domain::locale::{CountryCode, Locale};
use printworks::domain::notify::Template;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};

/// Why the compiled-in catalogs were refused.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("catalog i18n/{lang}.json is not a flat object of strings")]
    Json {
        lang: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("catalog i18n/{lang}.json: {reason}")]
    Invalid { lang: &'static str, reason: String },
}

pub(crate) type Catalog = BTreeMap<String, String>;

/// The hold codes the earlier stages set (`details.code` of
/// `OrderOnHold`), each with a `hold.<code>` text; any other code reads
/// `hold.other`.
pub const HOLD_CODES: [&str; 12] = [
    "unsupported_format",
    "too_many_pixels",
    "file_too_large",
    "corrupt_image",
    "resolution_too_low",
    "bad_crop",
    "source_unavailable",
    "unknown_product",
    "no_plant",
    "production_failed",
    "refunded",
    "chargeback",
];

const CATALOG_SOURCES: [(Locale, &str); 6] = [
    (Locale::De, include_str!("../i18n/de.json")),
    (Locale::En, include_str!("../i18n/en.json")),
    (Locale::Fr, include_str!("../i18n/fr.json")),
    (Locale::It, include_str!("../i18n/it.json")),
    (Locale::Nl, include_str!("../i18n/nl.json")),
    (Locale::Es, include_str!("../i18n/es.json")),
];

pub(crate) fn parse_catalogs() -> Result<HashMap<Locale, Catalog>, CatalogError> {
    CATALOG_SOURCES
        .iter()
        .map(|(lang, raw)| {
            serde_json::from_str::<Catalog>(raw)
                .map(|catalog| (*lang, catalog))
                .map_err(|source| CatalogError::Json {
                    lang: lang.code(),
                    source,
                })
        })
        .collect()
}

/// The `{name}` placeholders of a catalog text.
pub(crate) fn placeholders(text: &str) -> BTreeSet<&str> {
    let mut found = BTreeSet::new();
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        rest = &rest[open + 1..];
        if let Some(close) = rest.find('}') {
            let name = &rest[..close];
            if is_placeholder_name(name) {
                found.insert(name);
                rest = &rest[close + 1..];
            }
        }
    }
    found
}

fn is_placeholder_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Every language has the keys of `en` and no others, with the same
/// placeholders per key; `en` has the texts the code picks by name.
pub(crate) fn check_catalogs(catalogs: &HashMap<Locale, Catalog>) -> Result<(), CatalogError> {
    let invalid = |lang: Locale, reason: String| CatalogError::Invalid {
        lang: lang.code(),
        reason,
    };
    let en = catalogs
        .get(&Locale::En)
        .ok_or_else(|| invalid(Locale::En, "missing".into()))?;
    let mut required: Vec<String> = HOLD_CODES.iter().map(|c| format!("hold.{c}")).collect();
    required.extend(
        [
            "hold.other",
            "cancel.customer",
            "cancel.refunded",
            "cancel.chargeback",
            "cancel.shop",
            "order_resumed.reprint",
        ]
        .map(String::from),
    );
    required.extend(
        CountryCode::ALL
            .iter()
            .map(|c| format!("country.{}", c.code())),
    );
    for template in Template::ALL {
        for part in ["subject", "heading", "intro"] {
            required.push(format!("{}.{part}", template.name()));
        }
    }
    if let Some(key) = required.iter().find(|k| !en.contains_key(k.as_str())) {
        return Err(invalid(Locale::En, format!("no text for {key}")));
    }
    for lang in Locale::ALL {
        let catalog = catalogs
            .get(&lang)
            .ok_or_else(|| invalid(lang, "missing".into()))?;
        if let Some(key) = en.keys().find(|k| !catalog.contains_key(*k)) {
            return Err(invalid(lang, format!("no text for {key} (en has one)")));
        }
        if let Some(key) = catalog.keys().find(|k| !en.contains_key(*k)) {
            return Err(invalid(lang, format!("{key} is not a key of en")));
        }
        for (key, text) in catalog {
            if text.trim().is_empty() {
                return Err(invalid(lang, format!("{key} is empty")));
            }
            if placeholders(text) != placeholders(&en[key]) {
                return Err(invalid(
                    lang,
                    format!("{key} has other placeholders than in en"),
                ));
            }
        }
    }
    Ok(())
}

/// The catalogs and the lookup behind `t()`.
pub(crate) struct I18n {
    pub(crate) catalogs: HashMap<Locale, Catalog>,
    /// Missing keys and missing or unused arguments are errors.
    pub(crate) strict: AtomicBool,
}

fn context_locale(state: &State, name: &str) -> Option<Locale> {
    state
        .lookup(name)
        .and_then(|v| v.as_str().and_then(Locale::parse))
}

impl I18n {
    fn text(&self, lang: Locale, key: &str) -> Option<&str> {
        self.catalogs
            .get(&lang)
            .and_then(|c| c.get(key))
            .map(String::as_str)
    }

    /// `t(key, **kwargs)`.
    pub(crate) fn translate(
        &self,
        state: &State,
        key: &str,
        kwargs: &Kwargs,
    ) -> Result<Value, Error> {
        let strict = self.strict.load(Ordering::Relaxed);
        let lang = context_locale(state, "lang").ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidOperation,
                "t() needs `lang` in the context",
            )
        })?;
        let text = match self.text(lang, key) {
            Some(text) => text,
            None if strict => {
                return Err(Error::new(
                    ErrorKind::UndefinedError,
                    format!("catalog {} has no key {key:?}", lang.code()),
                ));
            }
            None => {
                let fallback = context_locale(state, "fallback_lang").unwrap_or(Locale::En);
                tracing::warn!(
                    key,
                    lang = lang.code(),
                    fallback = fallback.code(),
                    template = state.name(),
                    "catalog key missing, using the fallback language"
                );
                [fallback, Locale::En]
                    .into_iter()
                    .find_map(|l| self.text(l, key))
                    .unwrap_or(key)
            }
        };
        let html = !matches!(state.auto_escape(), AutoEscape::None);
        let mut args = Vec::new();
        for name in kwargs.args() {
            let value: Value = kwargs.peek(name)?;
            // none/undefined count as missing.
            if value.is_none() || value.is_undefined() {
                continue;
            }
            let shown = if html && !value.is_safe() {
                escape_html(&value.to_string())
            } else {
                value.to_string()
            };
            args.push((name, shown));
        }
        let filled = fill(text, &args, html);
        if !filled.missing.is_empty() {
            if strict {
                return Err(Error::new(
                    ErrorKind::MissingArgument,
                    format!(
                        "{key:?} ({}) needs {}",
                        lang.code(),
                        filled.missing.join(", ")
                    ),
                ));
            }
            tracing::warn!(
                key,
                lang = lang.code(),
                missing = ?filled.missing,
                template = state.name(),
                "catalog text left with placeholders"
            );
        }
        if strict {
            let unused: Vec<&str> = kwargs
                .args()
                .filter(|name| !filled.used.contains(name))
                .collect();
            if !unused.is_empty() {
                return Err(Error::new(
                    ErrorKind::TooManyArguments,
                    format!(
                        "{key:?} ({}) does not use {}",
                        lang.code(),
                        unused.join(", ")
                    ),
                ));
            }
        }
        Ok(if html {
            Value::from_safe_string(filled.text)
        } else {
            Value::from(filled.text)
        })
    }
}

/// `&`, `<`, `>`, `"` and `'` as entities: enough for HTML text and quoted
/// attributes. (minijinja's own escaping also turns `/` into `&#x2f;`,
/// which makes every link in an e-mail's source unreadable and trips
/// naive link rewriters.)
pub(crate) fn escape_html(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len() + 16);
    for c in raw.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

struct Filled<'a> {
    text: String,
    used: BTreeSet<&'a str>,
    missing: Vec<String>,
}

/// `text` with each `{name}` replaced by its argument (already escaped
/// for HTML where needed); the rest of `text` escaped in HTML. A
/// placeholder without argument stays as it is.
fn fill<'a>(text: &str, args: &[(&'a str, String)], html: bool) -> Filled<'a> {
    let push = |out: &mut String, literal: &str| {
        if html {
            out.push_str(&escape_html(literal));
        } else {
            out.push_str(literal);
        }
    };
    let mut out = String::with_capacity(text.len() + 32);
    let mut used = BTreeSet::new();
    let mut missing = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        push(&mut out, &rest[..open]);
        let after = &rest[open + 1..];
        let name = after.find('}').map(|close| &after[..close]);
        match name {
            Some(name) if is_placeholder_name(name) => {
                match args.iter().find(|(n, _)| *n == name) {
                    Some((n, value)) => {
                        out.push_str(value);
                        used.insert(*n);
                    }
                    None => {
                        push(&mut out, &format!("{{{name}}}"));
                        missing.push(name.to_string());
                    }
                }
                rest = &after[name.len() + 1..];
            }
            _ => {
                push(&mut out, "{");
                rest = after;
            }
        }
    }
    push(&mut out, rest);
    Filled {
        text: out,
        used,
        missing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogs_have_identical_keys_and_placeholders() {
        let catalogs = parse_catalogs().expect("catalogs parse");
        check_catalogs(&catalogs).expect("catalogs agree");
        let en: Vec<&String> = catalogs[&Locale::En].keys().collect();
        for lang in Locale::ALL {
            let keys: Vec<&String> = catalogs[&lang].keys().collect();
            assert_eq!(keys, en, "{}", lang.code());
            for (key, text) in &catalogs[&lang] {
                assert_eq!(
                    placeholders(text),
                    placeholders(&catalogs[&Locale::En][key]),
                    "{key}"
                );
            }
        }
        // The check itself fails on a missing key, an extra key, or other placeholders.
        let mut broken = catalogs.clone();
        broken
            .get_mut(&Locale::It)
            .map(|c| c.remove("hold.bad_crop"));
        assert!(matches!(
            check_catalogs(&broken),
            Err(CatalogError::Invalid { lang: "it", .. })
        ));
        let mut broken = catalogs.clone();
        broken
            .get_mut(&Locale::Nl)
            .map(|c| c.insert("common.extra".into(), "x".into()));
        assert!(check_catalogs(&broken).is_err());
        let mut broken = catalogs;
        broken
            .get_mut(&Locale::Es)
            .map(|c| c.insert("common.greeting".into(), "Hola, {nombre}:".into()));
        assert!(check_catalogs(&broken).is_err());
    }

    #[test]
    fn placeholders_are_filled_and_other_braces_kept() {
        let args = [("name", "Ada".to_string()), ("x", "&lt;".to_string())];
        let filled = fill("Hi {name}, {x} { y } {Name} {} {", &args, false);
        assert_eq!(filled.text, "Hi Ada, &lt; { y } {Name} {} {");
        assert!(filled.missing.is_empty());
        assert_eq!(filled.used.into_iter().collect::<Vec<_>>(), ["name", "x"]);
        let filled = fill("<{name}> & {who}", &args[..1], true);
        assert_eq!(filled.text, "&lt;Ada&gt; &amp; {who}");
        assert_eq!(filled.missing, ["who"]);
        assert_eq!(
            placeholders("a {b} {C} {d_1} {} {e"),
            BTreeSet::from(["b", "d_1"])
        );
    }
}
