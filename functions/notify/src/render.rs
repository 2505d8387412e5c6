//! Message templates (minijinja), per-language catalogs and brands: what a
//! customer reads, in their language and in the colours of the brand they
//! bought from.
//!
//! # Layout
//!
//! - `brands.json`: [`Brands`], one [`Brand`] per white-label brand, with
//!   the fallback brand `default`; checked when loaded.
//! - `i18n/<lang>.json`: one flat catalog per language, key -> text with
//!   `{name}` placeholders. Every catalog has the same keys and, per key,
//!   the same placeholders as `en` ([`Templates::builtin`] checks).
//! - `templates/email/<T>.html.j2` and `<T>.txt.j2` for every
//!   [`Template`] `T` (extending `base.html.j2` / `base.txt.j2`; the text
//!   template also holds the `subject` block), `templates/sms/<T>.txt.j2`
//!   where [`Template::has_sms`]; `macros.html.j2`, `summary.*.j2` and
//!   `address.*.j2` are shared pieces. All are compiled in; HTML templates
//!   escape, text templates do not.
//!
//! # In the templates
//!
//! - `t(key, **kwargs)` is the only source of words: it looks `key` up in
//!   the catalog of the message's language and fills `{name}` with the
//!   keyword argument `name`. In an HTML template the catalog text and the
//!   arguments are escaped (an argument that is already safe HTML, such as
//!   a macro's output, is kept), so `t(..)` output is never escaped twice.
//!   Production ([`Templates::builtin`]) is lenient: a key the language
//!   lacks comes from the tenant's default language, then `en` (then the
//!   key itself), a placeholder without argument stays visible, and both
//!   are logged as warnings. [`Templates::strict`] (tests) makes either an
//!   error, as well as an argument the text does not use.
//! - Money, percentages and dates arrive already formatted for the
//!   language and ship-to country ([`crate::format`]): `order.total`,
//!   `order.date`, `refund.amount`... There are no `money`/`date` filters;
//!   the context is the list of what a template can show.
//!
//! The context: `lang`, `fallback_lang`, `colon` (`:`, or `\u{a0}:` in
//! French), `brand` (a [`Brand`]), `ink` (`on_primary`, `on_accent`: a
//! readable text colour on the brand's colours), `customer` (`name`,
//! `first_name`), `order` (`id`, `number`, `date`, `reference`, `items`
//! (`name`, `quantity`, `total`), `subtotal`, `shipping`, `vat`,
//! `vat_rate`, `total`, `ship_to` (`lines`, `country`: a catalog key),
//! `pay_url`), and per event: `hold` (`key`, `item`), `shipments`
//! (`carrier`, `tracking`, `url`), `sms_tracking`, `cancel` (`key`),
//! `refund` (`amount`, `refunded`, `kind`: `full`, `partial` or none).
//! Event data is read defensively: a missing or odd field gives the
//! generic text, never an error.

use crate::format;
use minijinja::value::{Kwargs, Value};
use minijinja::{AutoEscape, Environment, Error, ErrorKind, Output, State, UndefinedBehavior};
use printworks::domain::events::EventEnvelope;
use printworks::domain::locale::{CountryCode, Locale};
use printworks::domain::money::Money;
use printworks::domain::notify::Template;
use printworks::domain::order::{Order, OrderId};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

// ----------------------------------------------------------------- errors --

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("brands.json is not a list of brands")]
    BrandsJson(#[source] serde_json::Error),
    #[error("brand {id:?}: {reason}")]
    InvalidBrand { id: String, reason: String },
    #[error("catalog i18n/{lang}.json is not a flat object of strings")]
    CatalogJson {
        lang: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("catalog i18n/{lang}.json: {reason}")]
    InvalidCatalog { lang: &'static str, reason: String },
    #[error("template {name} failed")]
    Template {
        name: String,
        #[source]
        source: minijinja::Error,
    },
    #[error("template {0} has no text message")]
    NoSms(&'static str),
    #[error("template {0} rendered an empty subject")]
    EmptySubject(String),
}

fn template_error(name: &str) -> impl FnOnce(minijinja::Error) -> RenderError + '_ {
    move |source| RenderError::Template {
        name: name.to_string(),
        source,
    }
}

// ----------------------------------------------------------------- brands --

/// A brand's colours, each `#rrggbb`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrandColors {
    pub primary: String,
    pub accent: String,
    pub text: String,
    pub background: String,
}

/// Who a message comes from and how it looks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Brand {
    /// What a tenant's `brand` names (`demo-posters`).
    pub id: String,
    /// As customers know it (`Demo Posters`).
    pub name: String,
    /// The display name of the `From` header.
    pub from_name: String,
    pub from_address: String,
    pub support_email: String,
    /// `https://...`, without a trailing slash.
    pub website: String,
    #[serde(default)]
    pub logo_url: Option<String>,
    /// The alphanumeric SMS sender (3 to 11 letters and digits); `None`
    /// sends from the provider's number.
    #[serde(default)]
    pub sms_sender_id: Option<String>,
    pub colors: BrandColors,
}

fn is_hex_color(raw: &str) -> bool {
    raw.len() == 7 && raw.starts_with('#') && raw.bytes().skip(1).all(|b| b.is_ascii_hexdigit())
}

fn is_address(raw: &str) -> bool {
    let mut parts = raw.split('@');
    matches!(
        (parts.next(), parts.next(), parts.next()),
        (Some(local), Some(domain), None) if !local.is_empty() && domain.contains('.')
            && !domain.starts_with('.') && !domain.ends_with('.')
    ) && !raw.chars().any(|c| c.is_whitespace() || c.is_control())
}

fn is_https_url(raw: &str) -> bool {
    raw.strip_prefix("https://")
        .is_some_and(|rest| !rest.is_empty() && !rest.starts_with('/'))
        && !raw.chars().any(|c| c.is_whitespace() || c.is_control())
}

impl Brand {
    fn check(&self) -> Result<(), String> {
        let id_ok = !self.id.is_empty()
            && self
                .id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !id_ok {
            return Err("id must be lowercase letters, digits and dashes".into());
        }
        for (field, value) in [("name", &self.name), ("from_name", &self.from_name)] {
            // from_name goes into a mail header: no line breaks.
            if value.trim().is_empty() || value.chars().any(char::is_control) {
                return Err(format!("{field} must be a non-empty line of text"));
            }
        }
        for (field, value) in [
            ("from_address", &self.from_address),
            ("support_email", &self.support_email),
        ] {
            if !is_address(value) {
                return Err(format!("{field} {value:?} is not an e-mail address"));
            }
        }
        if !is_https_url(&self.website) || self.website.ends_with('/') {
            return Err("website must be https://... without a trailing slash".into());
        }
        if let Some(logo) = &self.logo_url
            && !is_https_url(logo)
        {
            return Err("logo_url must be an https URL".into());
        }
        if let Some(sender) = &self.sms_sender_id {
            let ok = (3..=11).contains(&sender.len())
                && sender.bytes().all(|b| b.is_ascii_alphanumeric())
                && sender.bytes().any(|b| b.is_ascii_alphabetic());
            if !ok {
                return Err(format!(
                    "sms_sender_id {sender:?} must be 3 to 11 letters and digits, with a letter"
                ));
            }
        }
        let c = &self.colors;
        for (field, value) in [
            ("primary", &c.primary),
            ("accent", &c.accent),
            ("text", &c.text),
            ("background", &c.background),
        ] {
            if !is_hex_color(value) {
                return Err(format!("colors.{field} {value:?} is not #rrggbb"));
            }
        }
        Ok(())
    }
}

/// The brands, from `brands.json`; always holds the brand `default`.
#[derive(Debug, Clone)]
pub struct Brands {
    brands: Vec<Brand>,
    default: usize,
}

const BRANDS_JSON: &str = include_str!("../brands.json");

impl Brands {
    /// The compiled-in `brands.json`.
    pub fn builtin() -> Result<Brands, RenderError> {
        Brands::from_json(BRANDS_JSON)
    }

    /// A JSON list of brands, each checked: colours `#rrggbb`, addresses
    /// with one `@`, https website and logo, SMS sender 3 to 11
    /// alphanumerics; ids unique, and a brand `default`.
    pub fn from_json(raw: &str) -> Result<Brands, RenderError> {
        let brands: Vec<Brand> = serde_json::from_str(raw).map_err(RenderError::BrandsJson)?;
        let mut seen = BTreeSet::new();
        for brand in &brands {
            brand.check().map_err(|reason| RenderError::InvalidBrand {
                id: brand.id.clone(),
                reason,
            })?;
            if !seen.insert(brand.id.as_str()) {
                return Err(RenderError::InvalidBrand {
                    id: brand.id.clone(),
                    reason: "listed twice".into(),
                });
            }
        }
        let default = brands
            .iter()
            .position(|b| b.id == "default")
            .ok_or_else(|| RenderError::InvalidBrand {
                id: "default".into(),
                reason: "missing: the brand of tenants without one of their own".into(),
            })?;
        Ok(Brands { brands, default })
    }

    /// The brand `brand_id`, or `default` (with a warning) if there is none
    /// by that id.
    pub fn get(&self, brand_id: &str) -> &Brand {
        self.find(brand_id).unwrap_or_else(|| {
            tracing::warn!(brand = brand_id, "unknown brand, using the default brand");
            &self.brands[self.default]
        })
    }

    /// The brand `brand_id`, if there is one.
    pub fn find(&self, brand_id: &str) -> Option<&Brand> {
        self.brands.iter().find(|b| b.id == brand_id)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Brand> {
        self.brands.iter()
    }
}

// --------------------------------------------------------------- catalogs --

type Catalog = BTreeMap<String, String>;

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

fn parse_catalogs() -> Result<HashMap<Locale, Catalog>, RenderError> {
    CATALOG_SOURCES
        .iter()
        .map(|(lang, raw)| {
            serde_json::from_str::<Catalog>(raw)
                .map(|catalog| (*lang, catalog))
                .map_err(|source| RenderError::CatalogJson {
                    lang: lang.code(),
                    source,
                })
        })
        .collect()
}

/// The `{name}` placeholders of a catalog text.
fn placeholders(text: &str) -> BTreeSet<&str> {
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
fn check_catalogs(catalogs: &HashMap<Locale, Catalog>) -> Result<(), RenderError> {
    let invalid = |lang: Locale, reason: String| RenderError::InvalidCatalog {
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
struct I18n {
    catalogs: HashMap<Locale, Catalog>,
    strict: AtomicBool,
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
    fn translate(&self, state: &State, key: &str, kwargs: &Kwargs) -> Result<Value, Error> {
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
fn escape_html(raw: &str) -> String {
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

/// How `{{ value }}` is written: strings escaped with [`escape_html`] in
/// HTML templates, everything else as minijinja writes it.
fn write_value(out: &mut Output, state: &State, value: &Value) -> Result<(), Error> {
    let plain = value.is_safe() || value.is_none() || value.is_undefined();
    if matches!(state.auto_escape(), AutoEscape::Html) && !plain {
        out.write_str(&escape_html(&value.to_string()))?;
        Ok(())
    } else {
        minijinja::escape_formatter(out, state, value)
    }
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

// -------------------------------------------------------------- templates --

macro_rules! template_sources {
    ($($name:literal),* $(,)?) => {
        &[$(($name, include_str!(concat!("../templates/", $name)))),*]
    };
}

static TEMPLATE_SOURCES: &[(&str, &str)] = template_sources!(
    "email/macros.html.j2",
    "email/base.html.j2",
    "email/base.txt.j2",
    "email/summary.html.j2",
    "email/summary.txt.j2",
    "email/address.html.j2",
    "email/address.txt.j2",
    "email/order_placed.html.j2",
    "email/order_placed.txt.j2",
    "email/order_paid.html.j2",
    "email/order_paid.txt.j2",
    "email/payment_failed.html.j2",
    "email/payment_failed.txt.j2",
    "email/payment_action_required.html.j2",
    "email/payment_action_required.txt.j2",
    "email/order_on_hold.html.j2",
    "email/order_on_hold.txt.j2",
    "email/order_shipped.html.j2",
    "email/order_shipped.txt.j2",
    "email/order_cancelled.html.j2",
    "email/order_cancelled.txt.j2",
    "email/payment_refunded.html.j2",
    "email/payment_refunded.txt.j2",
    "sms/order_shipped.txt.j2",
    "sms/payment_action_required.txt.j2",
);

fn email_names(template: Template) -> (String, String) {
    (
        format!("email/{}.html.j2", template.name()),
        format!("email/{}.txt.j2", template.name()),
    )
}

fn sms_name(template: Template) -> String {
    format!("sms/{}.txt.j2", template.name())
}

/// A rendered e-mail: subject, plain-text part and HTML part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedEmail {
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// What a message is about and for whom.
#[derive(Debug, Clone, Copy)]
pub struct MessageContext<'a> {
    pub brand: &'a Brand,
    /// The order's locale.
    pub language: Locale,
    /// The tenant's default locale (lenient mode's first fallback).
    pub fallback: Locale,
    pub order: &'a Order,
    pub event: &'a EventEnvelope,
}

/// The compiled templates with their catalogs and brands.
pub struct Templates {
    env: Environment<'static>,
    i18n: Arc<I18n>,
    brands: Brands,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templates")
            .field(
                "brands",
                &self.brands.iter().map(|b| &b.id).collect::<Vec<_>>(),
            )
            .field("strict", &self.i18n.strict.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Templates {
    /// The compiled-in templates, catalogs and brands, lenient; fails if a
    /// catalog's keys differ from `en`'s or a template is missing.
    pub fn builtin() -> Result<Templates, RenderError> {
        let catalogs = parse_catalogs()?;
        check_catalogs(&catalogs)?;
        Templates::assemble(catalogs, Brands::builtin()?)
    }

    /// Missing keys, missing or unused `t()` arguments and undefined
    /// variables become errors (for tests).
    pub fn strict(mut self) -> Templates {
        self.i18n.strict.store(true, Ordering::Relaxed);
        self.env.set_undefined_behavior(UndefinedBehavior::Strict);
        self
    }

    pub fn brands(&self) -> &Brands {
        &self.brands
    }

    fn assemble(
        catalogs: HashMap<Locale, Catalog>,
        brands: Brands,
    ) -> Result<Templates, RenderError> {
        let i18n = Arc::new(I18n {
            catalogs,
            strict: AtomicBool::new(false),
        });
        let mut env = Environment::new();
        // Before the templates are added: their escaping is fixed when compiled.
        env.set_auto_escape_callback(|name| {
            if name.ends_with(".html.j2") {
                AutoEscape::Html
            } else {
                AutoEscape::None
            }
        });
        env.set_formatter(write_value);
        env.set_trim_blocks(true);
        // An included piece ends its last line (and so leaves a blank line).
        env.set_keep_trailing_newline(true);
        env.set_lstrip_blocks(true);
        for (name, source) in TEMPLATE_SOURCES {
            env.add_template(name, source)
                .map_err(template_error(name))?;
        }
        let lookup = Arc::clone(&i18n);
        env.add_function("t", move |state: &State, key: &str, kwargs: Kwargs| {
            lookup.translate(state, key, &kwargs)
        });
        for template in Template::ALL {
            let (html, text) = email_names(template);
            let mut names = vec![html, text];
            if template.has_sms() {
                names.push(sms_name(template));
            }
            for name in names {
                env.get_template(&name).map_err(template_error(&name))?;
            }
        }
        Ok(Templates { env, i18n, brands })
    }

    /// The e-mail of `template`: subject (one line), text and HTML.
    pub fn email(
        &self,
        template: Template,
        ctx: &MessageContext<'_>,
    ) -> Result<RenderedEmail, RenderError> {
        let view = View::new(template, ctx);
        let (html_name, text_name) = email_names(template);
        let html = self
            .env
            .get_template(&html_name)
            .and_then(|t| t.render(&view))
            .map_err(template_error(&html_name))?;
        let mut captured = self
            .env
            .get_template(&text_name)
            .and_then(|t| t.render_captured(&view))
            .map_err(template_error(&text_name))?;
        let subject = captured
            .with_state_mut(|state| state.render_block("subject"))
            .map_err(template_error(&text_name))?;
        let subject = one_line(&subject);
        if subject.is_empty() {
            return Err(RenderError::EmptySubject(text_name));
        }
        Ok(RenderedEmail {
            subject,
            text: tidy_text(&captured.into_output()),
            html: html.trim().to_string() + "\n",
        })
    }

    /// The text message of `template` (only where [`Template::has_sms`]).
    pub fn sms(&self, template: Template, ctx: &MessageContext<'_>) -> Result<String, RenderError> {
        if !template.has_sms() {
            return Err(RenderError::NoSms(template.name()));
        }
        let name = sms_name(template);
        let view = View::new(template, ctx);
        let text = self
            .env
            .get_template(&name)
            .and_then(|t| t.render(&view))
            .map_err(template_error(&name))?;
        Ok(one_line(&text))
    }
}

/// ASCII whitespace runs (line breaks included) become one space; no-break
/// spaces stay.
fn one_line(text: &str) -> String {
    text.split(|c: char| c.is_ascii_whitespace())
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Trailing spaces dropped, at most one blank line in a row, no blank
/// lines at either end, one final line break.
fn tidy_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut blank = 0;
    for line in text.lines().map(str::trim_end) {
        if line.is_empty() {
            blank += 1;
            continue;
        }
        if !out.is_empty() {
            out.push_str(if blank > 0 { "\n\n" } else { "\n" });
        }
        blank = 0;
        out.push_str(line);
    }
    out.push('\n');
    out
}

/// The number customers see: the last 8 hex digits of the order id,
/// upper-cased (`ord_...8f90a1b2` -> `8F90A1B2`).
pub fn short_order_number(id: &OrderId) -> String {
    let hex = id.as_str().strip_prefix("ord_").unwrap_or(id.as_str());
    let start = hex.len().saturating_sub(8);
    hex.get(start..).unwrap_or(hex).to_ascii_uppercase()
}

// ---------------------------------------------------------------- context --

#[derive(Serialize)]
struct View<'a> {
    lang: &'static str,
    fallback_lang: &'static str,
    colon: &'static str,
    brand: &'a Brand,
    ink: Ink,
    customer: CustomerView<'a>,
    order: OrderView<'a>,
    hold: HoldView,
    shipments: Vec<ShipmentView>,
    sms_tracking: Option<String>,
    cancel: CancelView,
    refund: RefundView,
}

#[derive(Serialize)]
struct Ink {
    on_primary: &'static str,
    on_accent: &'static str,
}

#[derive(Serialize)]
struct CustomerView<'a> {
    name: &'a str,
    first_name: &'a str,
}

#[derive(Serialize)]
struct OrderView<'a> {
    id: &'a str,
    number: String,
    date: String,
    reference: Option<&'a str>,
    items: Vec<ItemView<'a>>,
    subtotal: String,
    shipping: String,
    vat: String,
    vat_rate: String,
    total: String,
    ship_to: AddressView,
    pay_url: String,
}

#[derive(Serialize)]
struct ItemView<'a> {
    name: &'a str,
    quantity: u32,
    total: String,
}

#[derive(Serialize)]
struct AddressView {
    lines: Vec<String>,
    /// The catalog key of the country's name.
    country: String,
}

#[derive(Serialize, Default)]
struct HoldView {
    key: String,
    item: Option<String>,
}

#[derive(Serialize)]
struct ShipmentView {
    carrier: String,
    tracking: String,
    url: Option<String>,
}

#[derive(Serialize, Default)]
struct CancelView {
    key: &'static str,
}

#[derive(Serialize, Default)]
struct RefundView {
    amount: Option<String>,
    /// The refunded total, when it differs from `amount`.
    refunded: Option<String>,
    kind: Option<&'static str>,
}

/// At most this many shipments are listed (event data comes from plants).
const MAX_SHIPMENTS: usize = 20;

/// A string from outside, made fit to show: trimmed, without control
/// characters, at most `max` characters.
fn clean(raw: &str, max: usize) -> String {
    raw.trim()
        .chars()
        .filter(|c| !c.is_control())
        .take(max)
        .collect()
}

/// `#ffffff` or `#111111`, whichever reads better on `background`
/// (WCAG contrast).
fn readable_on(background: &str) -> &'static str {
    let channel = |i: usize| {
        background
            .get(i..i + 2)
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .map_or(0.0, |v| {
                let c = f64::from(v) / 255.0;
                if c <= 0.03928 {
                    c / 12.92
                } else {
                    ((c + 0.055) / 1.055).powf(2.4)
                }
            })
    };
    let luminance = 0.2126 * channel(1) + 0.7152 * channel(3) + 0.0722 * channel(5);
    let on_white = 1.05 / (luminance + 0.05);
    let on_black = (luminance + 0.05) / 0.05;
    if on_white >= on_black {
        "#ffffff"
    } else {
        "#111111"
    }
}

impl<'a> View<'a> {
    fn new(template: Template, ctx: &MessageContext<'a>) -> View<'a> {
        let order = ctx.order;
        let lang = ctx.language;
        let data = &ctx.event.data;
        let country = order.shipping.address.country;
        let money = |m: Money| format::money(m, lang, country);
        let address = &order.shipping.address;
        let mut lines = vec![address.name.clone()];
        lines.extend(address.company.clone());
        lines.push(address.line1.clone());
        lines.extend(address.line2.clone());
        lines.push(format!("{} {}", address.postal_code, address.city));
        let customer_name = order.customer.name.as_str();
        let mut view = View {
            lang: lang.code(),
            fallback_lang: ctx.fallback.code(),
            colon: if lang == Locale::Fr { "\u{a0}:" } else { ":" },
            brand: ctx.brand,
            ink: Ink {
                on_primary: readable_on(&ctx.brand.colors.primary),
                on_accent: readable_on(&ctx.brand.colors.accent),
            },
            customer: CustomerView {
                name: customer_name,
                first_name: customer_name
                    .split_whitespace()
                    .next()
                    .unwrap_or(customer_name),
            },
            order: OrderView {
                id: order.id.as_str(),
                number: short_order_number(&order.id),
                date: format::date(format::customer_date(order.created_at), lang),
                reference: order.reference.as_deref(),
                items: order
                    .items
                    .iter()
                    .map(|item| ItemView {
                        name: &item.name,
                        quantity: item.quantity,
                        total: money(item.line_total),
                    })
                    .collect(),
                subtotal: money(order.totals.subtotal),
                shipping: money(order.totals.shipping),
                vat: money(order.totals.vat),
                vat_rate: format::percent_bp(order.totals.vat_rate_bp, lang),
                total: money(order.totals.total),
                ship_to: AddressView {
                    lines,
                    country: format!("country.{}", country.code()),
                },
                pay_url: format!("{}/orders/{}/pay", ctx.brand.website, order.id),
            },
            hold: HoldView::default(),
            shipments: Vec::new(),
            sms_tracking: None,
            cancel: CancelView::default(),
            refund: RefundView::default(),
        };
        match template {
            Template::OrderOnHold => {
                let code = data.pointer("/details/code").and_then(|v| v.as_str());
                let key = match code {
                    Some(code) if HOLD_CODES.contains(&code) => format!("hold.{code}"),
                    _ => "hold.other".to_string(),
                };
                let item = data
                    .pointer("/details/line")
                    .and_then(|v| v.as_u64())
                    .and_then(|line| order.items.iter().find(|i| u64::from(i.line) == line))
                    .map(|i| i.name.clone());
                view.hold = HoldView { key, item };
            }
            Template::OrderShipped => {
                view.shipments = data
                    .get("shipments")
                    .and_then(|v| v.as_array())
                    .map(|list| {
                        list.iter()
                            .filter_map(|s| {
                                let carrier = clean(s.get("carrier")?.as_str()?, 60);
                                let tracking = clean(s.get("tracking")?.as_str()?, 80);
                                (!carrier.is_empty() && !tracking.is_empty()).then(|| {
                                    ShipmentView {
                                        url: format::tracking_url(&carrier, &tracking),
                                        carrier,
                                        tracking,
                                    }
                                })
                            })
                            .take(MAX_SHIPMENTS)
                            .collect()
                    })
                    .unwrap_or_default();
                view.sms_tracking =
                    view.shipments
                        .iter()
                        .find_map(|s| s.url.clone())
                        .or_else(|| {
                            view.shipments
                                .first()
                                .map(|s| format!("{} {}", s.carrier, s.tracking))
                        });
            }
            Template::OrderCancelled => {
                let reason = data
                    .get("reason")
                    .and_then(|v| v.as_str())
                    .or(order.cancel_reason.as_deref());
                view.cancel.key = match reason {
                    Some("refunded") => "cancel.refunded",
                    Some("chargeback") => "cancel.chargeback",
                    _ => "cancel.customer",
                };
            }
            Template::PaymentRefunded => {
                let read = |field: &str| data.get(field).and_then(|v| Money::deserialize(v).ok());
                let amount = read("amount");
                let refunded = read("refunded").filter(|r| Some(*r) != amount);
                view.refund = RefundView {
                    amount: amount.map(money),
                    refunded: amount.and(refunded).map(money),
                    kind: match data.get("full").and_then(|v| v.as_bool()) {
                        Some(true) => Some("full"),
                        Some(false) => Some("partial"),
                        None => None,
                    },
                };
            }
            Template::OrderPlaced
            | Template::OrderPaid
            | Template::PaymentFailed
            | Template::PaymentActionRequired => {}
        }
        view
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use printworks::domain::events::EventType;
    use printworks::domain::money::Currency;
    use printworks::testing::paid_order;
    use serde_json::json;
    use time::macros::datetime;

    fn strict() -> Templates {
        Templates::builtin()
            .expect("the compiled-in templates, catalogs and brands load")
            .strict()
    }

    fn order(country: &str, lang: Locale) -> Order {
        // 00:30 in Berlin: the order is dated the 29th.
        let at = datetime!(2026-11-28 23:30 UTC);
        let mut order = paid_order(&[("poster-30x40", 2), ("canvas-40x60", 1)], country, at).order;
        order.locale = lang;
        order
    }

    fn event(order: &Order, kind: EventType, data: serde_json::Value) -> EventEnvelope {
        let at = datetime!(2026-11-29 10:00 UTC);
        EventEnvelope::new(kind, &order.id, &order.tenant, at, data)
    }

    fn money_json(order: &Order, amount: i64) -> serde_json::Value {
        json!(Money::new(amount, order.currency))
    }

    const HOLD_REASON: &str = "The photo of item 1 is 640x480 px: 54 dpi at this size";
    const INTERNAL_REASON: &str = "Internal render error: out of memory";

    /// Realistic events for every template, and odd ones: (case, template, event).
    fn cases(order: &Order) -> Vec<(&'static str, Template, EventEnvelope)> {
        let total = order.totals.total;
        let checkout = json!({
            "provider": "stripe", "amount": total.amount, "currency": total.currency,
            "reference": format!("{}:{}", order.tenant, order.id),
            "field": "payment_intent.metadata.order_reference",
        });
        use EventType as E;
        use Template as T;
        vec![
            (
                "placed",
                T::OrderPlaced,
                event(
                    order,
                    E::OrderPlaced,
                    json!({"total": total, "items": 2, "payment": "provider"}),
                ),
            ),
            (
                "paid",
                T::OrderPaid,
                event(
                    order,
                    E::OrderPaid,
                    json!({"amount": total, "method": "provider", "provider": "stripe"}),
                ),
            ),
            (
                "payment-failed",
                T::PaymentFailed,
                event(
                    order,
                    E::PaymentFailed,
                    json!({"provider": "stripe", "reason": "Your card was declined.", "checkout": checkout}),
                ),
            ),
            (
                "payment-action-required",
                T::PaymentActionRequired,
                event(
                    order,
                    E::PaymentActionRequired,
                    json!({"provider": "adyen", "reason": "3ds", "checkout": checkout}),
                ),
            ),
            (
                "hold-known",
                T::OrderOnHold,
                event(
                    order,
                    E::OrderOnHold,
                    json!({"reason": HOLD_REASON, "from": "paid",
                    "details": {"code": "resolution_too_low", "line": 1, "image": 0}}),
                ),
            ),
            (
                "hold-unknown",
                T::OrderOnHold,
                event(
                    order,
                    E::OrderOnHold,
                    json!({"reason": INTERNAL_REASON, "from": "paid",
                    "details": {"code": "internal", "line": 99}}),
                ),
            ),
            (
                "hold-odd",
                T::OrderOnHold,
                event(order, E::OrderOnHold, json!({"details": 42})),
            ),
            (
                "shipped",
                T::OrderShipped,
                event(
                    order,
                    E::OrderShipped,
                    json!({"plant": "muc", "packing_ref": "PK-7F3A",
                    "shipments": [{"carrier": "DHL", "tracking": "00340434161234567890"},
                                  {"carrier": "SIM-POST", "tracking": "SIM-0001"}]}),
                ),
            ),
            (
                "shipped-unknown-carrier",
                T::OrderShipped,
                event(
                    order,
                    E::OrderShipped,
                    json!({"shipments": [{"carrier": "SIM-POST", "tracking": "SIM-0002"}]}),
                ),
            ),
            (
                "shipped-odd",
                T::OrderShipped,
                event(
                    order,
                    E::OrderShipped,
                    json!({"plant": 7, "shipments": [{"carrier": 1}, "x"]}),
                ),
            ),
            (
                "cancelled-customer",
                T::OrderCancelled,
                event(
                    order,
                    E::OrderCancelled,
                    json!({"reason": "requested by the customer", "from": "placed"}),
                ),
            ),
            (
                "cancelled-refunded",
                T::OrderCancelled,
                event(
                    order,
                    E::OrderCancelled,
                    json!({"reason": "refunded", "from": "paid"}),
                ),
            ),
            (
                "cancelled-chargeback",
                T::OrderCancelled,
                event(
                    order,
                    E::OrderCancelled,
                    json!({"reason": "chargeback", "from": "paid"}),
                ),
            ),
            (
                "cancelled-odd",
                T::OrderCancelled,
                event(order, E::OrderCancelled, json!(null)),
            ),
            (
                "refund-full",
                T::PaymentRefunded,
                event(
                    order,
                    E::PaymentRefunded,
                    json!({"amount": total, "refunded": total, "full": true}),
                ),
            ),
            (
                "refund-partial",
                T::PaymentRefunded,
                event(
                    order,
                    E::PaymentRefunded,
                    json!({"amount": money_json(order, 500),
                    "refunded": money_json(order, 500), "full": false}),
                ),
            ),
            (
                "refund-second-partial",
                T::PaymentRefunded,
                event(
                    order,
                    E::PaymentRefunded,
                    json!({"amount": money_json(order, 500),
                    "refunded": money_json(order, 1000), "full": false}),
                ),
            ),
            (
                "refund-odd",
                T::PaymentRefunded,
                event(
                    order,
                    E::PaymentRefunded,
                    json!({"amount": "lots", "full": "yes"}),
                ),
            ),
        ]
    }

    /// An error with its causes, for test failures.
    fn chain(error: &dyn std::error::Error) -> String {
        let mut out = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            out.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        out
    }

    /// The catalog text of `key` up to its first placeholder: what a
    /// rendered text part must contain.
    fn catalog_text(lang: Locale, key: &str) -> String {
        let catalogs = parse_catalogs().expect("catalogs parse");
        let text = catalogs[&lang][key].as_str();
        text.split('{').next().unwrap_or(text).trim().to_string()
    }

    /// Characters of the GSM 03.38 alphabet (1 unit) and its extension
    /// table (2 units); `None` if a character would force UCS-2.
    fn gsm_units(text: &str) -> Option<usize> {
        const BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡\
                             ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
        const EXTENSION: &str = "^{}\\[~]|€";
        text.chars().try_fold(0, |n, c| {
            if BASIC.contains(c) {
                Some(n + 1)
            } else if EXTENSION.contains(c) {
                Some(n + 2)
            } else {
                None
            }
        })
    }

    fn assert_no_template_leftovers(output: &str, what: &str) {
        assert!(
            placeholders(output).is_empty(),
            "{what}: raw placeholder {:?} in\n{output}",
            placeholders(output)
        );
        for marker in ["{{", "}}", "{%", "%}", "{#"] {
            assert!(!output.contains(marker), "{what}: {marker} in\n{output}");
        }
    }

    fn check_email(email: &RenderedEmail, ctx: &MessageContext<'_>, what: &str) {
        let number = short_order_number(&ctx.order.id);
        let name = &ctx.order.customer.name;
        let lang = ctx.language.code();
        assert!(!email.subject.trim().is_empty(), "{what}: empty subject");
        assert!(
            !email.subject.contains(['\n', '\r']),
            "{what}: subject {:?}",
            email.subject
        );
        assert!(
            email.subject.contains(&number),
            "{what}: subject {:?}",
            email.subject
        );
        for (part, body) in [("text", &email.text), ("html", &email.html)] {
            assert_no_template_leftovers(body, &format!("{what} {part}"));
            assert!(
                body.contains(name.as_str()),
                "{what} {part}: no customer name\n{body}"
            );
            assert!(
                body.contains(&number),
                "{what} {part}: no order number\n{body}"
            );
            assert!(
                body.contains(&ctx.brand.support_email),
                "{what} {part}: no support address"
            );
        }
        assert_no_template_leftovers(&email.subject, what);
        assert!(
            email.html.contains(&format!("<html lang=\"{lang}\">")),
            "{what}: html lang"
        );
        assert!(
            email.html.starts_with("<!DOCTYPE html>"),
            "{what}: html start"
        );
        assert!(
            email.html.contains(&ctx.brand.colors.primary),
            "{what}: brand colour"
        );
        assert!(
            !email.text.contains("<p") && !email.text.contains("&amp;"),
            "{what}: html in text"
        );
        assert!(
            !email.text.contains("\n\n\n"),
            "{what}: text not tidy\n{}",
            email.text
        );
        // The greeting comes first, in the message's language.
        let greeting = catalog_text(ctx.language, "common.greeting");
        assert!(
            email.text.contains(&greeting),
            "{what}: greeting {greeting:?}"
        );
    }

    fn check_sms(sms: &str, ctx: &MessageContext<'_>, what: &str) {
        assert_no_template_leftovers(sms, what);
        assert!(
            sms.contains(&short_order_number(&ctx.order.id)),
            "{what}: {sms}"
        );
        assert!(sms.contains(&ctx.brand.name), "{what}: {sms}");
        let units = gsm_units(sms).unwrap_or_else(|| panic!("{what}: not GSM 7-bit: {sms}"));
        assert!(units <= 320, "{what}: {units} GSM characters: {sms}");
        assert!(!sms.contains('\n'), "{what}: {sms:?}");
    }

    /// What each case must (and must not) say, in the text part.
    fn check_case(
        case: &str,
        lang: Locale,
        email: &RenderedEmail,
        sms: Option<&str>,
        order: &Order,
    ) {
        let text = &email.text;
        let has = |key: &str| text.contains(&catalog_text(lang, key));
        let what = format!("{case} {}", lang.code());
        let total = format::money(order.totals.total, lang, order.shipping.address.country);
        match case {
            "placed" => {
                assert!(
                    text.contains(&format::date(time::macros::date!(2026 - 11 - 29), lang)),
                    "{what}"
                );
                assert!(
                    text.contains(&total) && text.contains("Poster 30x40 cm"),
                    "{what}"
                );
                assert!(
                    has(&format!(
                        "country.{}",
                        order.shipping.address.country.code()
                    )),
                    "{what}"
                );
            }
            "paid" | "payment-failed" | "payment-action-required" => {
                assert!(text.contains(&total), "{what}: amount {total}");
            }
            _ => {}
        }
        match case {
            "payment-failed" | "payment-action-required" => {
                let url = format!("/orders/{}/pay", order.id);
                assert!(
                    text.contains(&url) && email.html.contains(&url),
                    "{what}: pay link"
                );
                assert!(!text.contains("declined"), "{what}: provider reason shown");
            }
            "hold-known" => {
                assert!(
                    has("hold.resolution_too_low") && text.contains("Poster 30x40 cm"),
                    "{what}"
                );
                assert!(
                    !text.contains(HOLD_REASON) && !email.html.contains("54 dpi"),
                    "{what}"
                );
            }
            "hold-unknown" | "hold-odd" => {
                assert!(has("hold.other"), "{what}");
                assert!(!text.contains(INTERNAL_REASON), "{what}");
            }
            "shipped" => {
                let dhl = format::tracking_url("DHL", "00340434161234567890").unwrap_or_default();
                assert!(text.contains(&dhl), "{what}: {text}");
                assert!(email.html.contains(&dhl.replace('&', "&amp;")), "{what}");
                assert!(
                    text.contains("SIM-POST") && text.contains("SIM-0001"),
                    "{what}"
                );
                assert_eq!(
                    text.matches(&catalog_text(lang, "order_shipped.tracking"))
                        .count(),
                    1,
                    "{what}"
                );
                assert!(sms.is_some_and(|s| s.contains(&dhl)), "{what}: {sms:?}");
            }
            "shipped-unknown-carrier" => {
                assert!(
                    sms.is_some_and(|s| s.contains("SIM-POST SIM-0002")),
                    "{what}: {sms:?}"
                );
            }
            "shipped-odd" => {
                let plain = catalog_text(lang, "order_shipped.sms_plain");
                let plain = plain
                    .split(['{', '}'])
                    .next_back()
                    .unwrap_or_default()
                    .trim()
                    .to_string();
                assert!(sms.is_some_and(|s| s.contains(&plain)), "{what}: {sms:?}");
            }
            "cancelled-customer" | "cancelled-odd" => assert!(has("cancel.customer"), "{what}"),
            "cancelled-refunded" => assert!(has("cancel.refunded"), "{what}"),
            "cancelled-chargeback" => assert!(has("cancel.chargeback"), "{what}"),
            "refund-full" => {
                assert!(
                    has("payment_refunded.full") && text.contains(&total),
                    "{what}"
                );
                assert!(!has("payment_refunded.partial"), "{what}");
            }
            "refund-partial" | "refund-second-partial" => {
                let five = format::money(
                    Money::new(500, order.currency),
                    lang,
                    order.shipping.address.country,
                );
                assert!(
                    has("payment_refunded.partial") && text.contains(&five),
                    "{what}"
                );
                assert!(!has("payment_refunded.full"), "{what}");
                let ten = format::money(
                    Money::new(1000, order.currency),
                    lang,
                    order.shipping.address.country,
                );
                assert_eq!(
                    text.contains(&ten),
                    case == "refund-second-partial",
                    "{what}"
                );
            }
            "refund-odd" => {
                assert!(
                    has("payment_refunded.intro") && has("payment_refunded.note"),
                    "{what}"
                );
                assert!(
                    !has("payment_refunded.full") && !has("payment_refunded.partial"),
                    "{what}"
                );
                assert!(!has("payment_refunded.amount"), "{what}");
            }
            _ => {}
        }
    }

    #[test]
    fn every_template_renders_in_every_language_for_every_brand() {
        // The catalogs agree (builtin() refuses them otherwise; said here too).
        check_catalogs(&parse_catalogs().expect("catalogs parse")).expect("same keys as en");
        let templates = strict();
        assert!(templates.brands().iter().count() >= 4);
        let sample = order("DE", Locale::En);
        let covered: BTreeSet<Template> = cases(&sample).into_iter().map(|(_, t, _)| t).collect();
        assert_eq!(
            covered,
            Template::ALL.into_iter().collect(),
            "a template without a case"
        );
        let mut rendered = 0;
        for lang in Locale::ALL {
            for country in ["DE", "CH"] {
                let mut order = order(country, lang);
                if country == "CH" {
                    order.reference = Some("PO-4711".into());
                    order.customer.phone = Some("+41791234567".into());
                }
                for brand in templates.brands().iter() {
                    for (case, template, event) in cases(&order) {
                        let ctx = MessageContext {
                            brand,
                            language: lang,
                            fallback: Locale::De,
                            order: &order,
                            event: &event,
                        };
                        let what = format!("{case} {} {} {country}", lang.code(), brand.id);
                        let email = templates
                            .email(template, &ctx)
                            .unwrap_or_else(|e| panic!("{what}: {}", chain(&e)));
                        check_email(&email, &ctx, &what);
                        let sms = if template.has_sms() {
                            let sms = templates
                                .sms(template, &ctx)
                                .unwrap_or_else(|e| panic!("{what} sms: {}", chain(&e)));
                            check_sms(&sms, &ctx, &what);
                            Some(sms)
                        } else {
                            assert!(matches!(
                                templates.sms(template, &ctx),
                                Err(RenderError::NoSms(_))
                            ));
                            None
                        };
                        check_case(case, lang, &email, sms.as_deref(), &order);
                        if country == "CH" && case == "placed" {
                            assert!(email.text.contains("PO-4711"), "{what}: reference");
                            assert!(email.text.contains("CHF"), "{what}: francs");
                        }
                        rendered += 1;
                    }
                }
            }
        }
        assert_eq!(
            rendered,
            6 * 2 * templates.brands().iter().count() * cases(&sample).len()
        );
    }

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
            Err(RenderError::InvalidCatalog { lang: "it", .. })
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

    fn without_key(lang: Locale, key: &str) -> Templates {
        let mut catalogs = parse_catalogs().expect("catalogs parse");
        catalogs.get_mut(&lang).map(|c| c.remove(key));
        Templates::assemble(catalogs, Brands::builtin().expect("brands load"))
            .expect("templates compile")
    }

    #[test]
    fn strict_mode_fails_on_a_missing_key() {
        let templates = without_key(Locale::Fr, "order_shipped.intro").strict();
        let order = order("FR", Locale::Fr);
        let event = event(&order, EventType::OrderShipped, json!({"shipments": []}));
        let brand = templates.brands().get("demo-posters");
        let ctx = MessageContext {
            brand,
            language: Locale::Fr,
            fallback: Locale::En,
            order: &order,
            event: &event,
        };
        let err = templates
            .email(Template::OrderShipped, &ctx)
            .expect_err("a missing key fails");
        let RenderError::Template { name, source } = &err else {
            panic!("not a template error: {err:?}");
        };
        assert!(name.starts_with("email/order_shipped"), "{name}");
        assert!(
            chain(&err).contains("order_shipped.intro"),
            "{}",
            chain(&err)
        );
        assert_eq!(source.kind(), ErrorKind::UndefinedError);
        // Other languages still render.
        let de = MessageContext {
            language: Locale::De,
            ..ctx
        };
        assert!(templates.email(Template::OrderShipped, &de).is_ok());
    }

    #[test]
    fn lenient_mode_falls_back_to_the_tenant_language_then_english() {
        let templates = without_key(Locale::Fr, "order_shipped.intro");
        let order = order("FR", Locale::Fr);
        let event = event(&order, EventType::OrderShipped, json!({"shipments": []}));
        let brand = templates.brands().get("default");
        let ctx = MessageContext {
            brand,
            language: Locale::Fr,
            fallback: Locale::En,
            order: &order,
            event: &event,
        };
        let email = templates
            .email(Template::OrderShipped, &ctx)
            .expect("lenient renders");
        let number = short_order_number(&order.id);
        assert!(
            email
                .text
                .contains(&format!("Good news: your order {number} has been shipped.")),
            "{}",
            email.text
        );
        assert!(email.html.contains("Good news: your order"));
        // The rest stays French.
        assert!(email.text.contains("Bonjour Erika Muster,"));
        assert!(email.subject.contains("est en route"));
        // The tenant's language comes before English.
        let ctx = MessageContext {
            fallback: Locale::De,
            ..ctx
        };
        let email = templates
            .email(Template::OrderShipped, &ctx)
            .expect("lenient renders");
        assert!(
            email
                .text
                .contains(&format!("Ihre Bestellung {number} wurde versandt")),
            "{}",
            email.text
        );
    }

    #[test]
    fn arguments_are_checked_in_strict_mode_and_shown_in_lenient_mode() {
        let cases = [
            (
                "test/missing.txt.j2",
                "{{ t('common.greeting') }}",
                ErrorKind::MissingArgument,
                "Bonjour {name},",
            ),
            (
                "test/unused.txt.j2",
                "{{ t('common.total', name='Ada') }}",
                ErrorKind::TooManyArguments,
                "Total",
            ),
            (
                "test/none.txt.j2",
                "{{ t('common.greeting', name=none) }}",
                ErrorKind::MissingArgument,
                "Bonjour {name},",
            ),
            (
                "test/unknown.txt.j2",
                "{{ t('common.nope') }}",
                ErrorKind::UndefinedError,
                "common.nope",
            ),
        ];
        for strict in [true, false] {
            let mut templates = Templates::builtin().expect("templates load");
            if strict {
                templates = templates.strict();
            }
            for (name, source, kind, lenient) in cases {
                templates.env.add_template(name, source).expect("compiles");
                let rendered = templates.env.get_template(name).and_then(|t| {
                    t.render(minijinja::context! { lang => "fr", fallback_lang => "fr" })
                });
                match rendered {
                    Err(e) if strict => assert_eq!(e.kind(), kind, "{name}: {e}"),
                    Ok(text) if !strict => assert_eq!(text, lenient, "{name}"),
                    other => panic!("{name} strict={strict}: {other:?}"),
                }
            }
            let ok = templates
                .env
                .template_from_str("{{ t('common.greeting', name='Ada') }}")
                .and_then(|t| t.render(minijinja::context! { lang => "de" }));
            assert_eq!(ok.expect("renders"), "Guten Tag Ada,");
        }
    }

    #[test]
    fn customer_text_is_escaped_in_html_only() {
        let templates = strict();
        let mut order = order("DE", Locale::De);
        order.customer.name = "<script>alert('x')</script> & Co".into();
        order.shipping.address.company = Some("Müller & <b>Söhne</b>".into());
        let event = event(&order, EventType::OrderPlaced, json!({}));
        let brand = templates.brands().get("demo-posters");
        let ctx = MessageContext {
            brand,
            language: Locale::De,
            fallback: Locale::De,
            order: &order,
            event: &event,
        };
        let email = templates
            .email(Template::OrderPlaced, &ctx)
            .expect("renders");
        assert!(
            !email.html.contains("<script>") && !email.html.contains("<b>Söhne"),
            "{}",
            email.html
        );
        assert!(
            email
                .html
                .contains("Guten Tag &lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; Co,"),
            "{}",
            email.html
        );
        assert!(email.html.contains("Müller &amp; &lt;b&gt;Söhne"));
        assert!(
            email
                .text
                .contains("Guten Tag <script>alert('x')</script> & Co,"),
            "{}",
            email.text
        );
        assert!(email.text.contains("Müller & <b>Söhne</b>"));
        // Markup from the templates themselves is kept: the support link.
        assert!(
            email
                .html
                .contains(&format!("<a href=\"mailto:{}\"", brand.support_email))
        );
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

    #[test]
    fn templates_can_be_shared_between_tasks() {
        fn shareable<T: Send + Sync + 'static>() {}
        shareable::<Templates>();
        shareable::<Brands>();
        shareable::<RenderError>();
    }

    #[test]
    fn short_numbers_and_readable_colours() {
        let id = OrderId::parse("ord_0192f1f0a0b07c3e9d2a4b5c6d7e8f90").expect("an order id");
        assert_eq!(short_order_number(&id), "6D7E8F90");
        assert_eq!(readable_on("#1f2a44"), "#ffffff");
        assert_eq!(readable_on("#edf2f4"), "#111111");
        assert_eq!(readable_on("#d98e04"), "#111111");
        assert_eq!(readable_on("#d90429"), "#ffffff");
        assert_eq!(readable_on("#ffd166"), "#111111");
    }

    #[test]
    fn brands_load_check_and_fall_back() {
        let brands = Brands::builtin().expect("brands.json is valid");
        let ids: Vec<&str> = brands.iter().map(|b| b.id.as_str()).collect();
        assert_eq!(ids, ["default", "demo-posters", "demo-b2b", "acme"]);
        let posters = brands.get("demo-posters");
        assert_eq!(posters.from_address, "noreply@demo-posters.example");
        assert_eq!(posters.support_email, "support@demo-posters.example");
        assert_eq!(posters.sms_sender_id.as_deref(), Some("DemoPoster"));
        assert_eq!(brands.get("no-such-brand").id, "default");
        assert_eq!(
            brands.get("default").from_address,
            "orders@printworks.example"
        );
        assert!(brands.find("no-such-brand").is_none());

        let base =
            serde_json::to_value(brands.iter().cloned().collect::<Vec<_>>()).expect("serializes");
        let with = |index: usize, pointer: &str, value: serde_json::Value| {
            let mut doc = base.clone();
            if let Some(slot) = doc[index].pointer_mut(pointer) {
                *slot = value;
            }
            Brands::from_json(&doc.to_string())
        };
        assert!(with(1, "/id", json!("demo-posters")).is_ok());
        for (pointer, value) in [
            ("/colors/accent", json!("#ef23")),
            ("/colors/text", json!("red")),
            ("/from_address", json!("noreply.demo-posters.example")),
            ("/support_email", json!("a@b@c.example")),
            ("/sms_sender_id", json!("DemoPosters1")),
            ("/sms_sender_id", json!("DP")),
            ("/sms_sender_id", json!("Demo Poster")),
            ("/sms_sender_id", json!("12345")),
            ("/website", json!("http://demo-posters.example")),
            ("/website", json!("https://demo-posters.example/")),
            ("/from_name", json!("Demo\r\nBcc: x@y.example")),
            ("/id", json!("acme")),
        ] {
            let result = with(1, pointer, value.clone());
            assert!(
                matches!(result, Err(RenderError::InvalidBrand { .. })),
                "{pointer} = {value}"
            );
        }
        // No default brand.
        assert!(with(0, "/id", json!("printworks")).is_err());
        assert!(matches!(
            Brands::from_json("{}"),
            Err(RenderError::BrandsJson(_))
        ));
        let mut doc = base.clone();
        doc[0]["colour"] = json!("#ffffff");
        assert!(
            Brands::from_json(&doc.to_string()).is_err(),
            "unknown fields are refused"
        );
    }

    #[test]
    fn amounts_follow_the_language_and_country() {
        let templates = strict();
        let order = order("CH", Locale::De);
        assert_eq!(order.currency, Currency::Chf);
        let event = event(&order, EventType::OrderPaid, json!({}));
        let brand = templates.brands().get("acme");
        let ctx = MessageContext {
            brand,
            language: Locale::De,
            fallback: Locale::De,
            order: &order,
            event: &event,
        };
        let email = templates.email(Template::OrderPaid, &ctx).expect("renders");
        assert!(email.text.contains("CHF\u{a0}"), "{}", email.text);
        assert!(email.text.contains("MwSt. (8,1\u{a0}%)"), "{}", email.text);
        let fr = MessageContext {
            language: Locale::Fr,
            ..ctx
        };
        let email = templates.email(Template::OrderPaid, &fr).expect("renders");
        assert!(email.text.contains("\u{a0}CHF"), "{}", email.text);
        assert!(
            email.text.contains("Numéro de commande\u{a0}: "),
            "{}",
            email.text
        );
    }
}
