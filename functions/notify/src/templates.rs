//! The message templates (minijinja): what a customer reads, in their
//! language and in the colours of the brand they bought from.
//! [`Templates`] holds the compiled templates with the catalogs
//! ([`crate::catalogs`]) and the brands ([`crate::brands`]) they use, and
//! renders an e-mail ([`Templates::email`]) or a text message
//! ([`Templates::sms`]) for a [`MessageContext`].
//!
//! # The templates
//!
//! `templates/email/<T>.html.j2` and `<T>.txt.j2` for every [`Template`]
//! `T` (extending `base.html.j2` / `base.txt.j2`; the text template also
//! holds the `subject` block), `templates/sms/<T>.txt.j2` where
//! [`Template::has_sms`]; `macros.html.j2`, `summary.*.j2` and
//! `address.*.j2` are shared pieces. All are compiled in; HTML templates
//! escape, text templates do not.
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
//!   the context ([`crate::context`]) is the list of what a template can
//!   show.
//!
//! The context: `lang`, `fallback_lang`, `colon` (`:`, or `\u{a0}:` in
//! French), `brand` (a [`crate::brands::Brand`]), `ink` (`on_primary`, `on_accent`: a
//! readable text colour on the brand's colours), `customer` (`name`,
//! `first_name`), `order` (`id`, `number`, `date`, `reference`, `items`
//! (`name`, `quantity`, `total`), `subtotal`, `shipping`, `vat`,
//! `vat_rate`, `total`, `ship_to` (`lines`, `country`: a catalog key),
//! `pay_url`), and per event: `hold` (`key`, `item`), `shipments`
//! (`carrier`, `tracking`, `url`), `sms_tracking`, `cancel` (`key`),
//! `refund` (`amount`, `refunded`, `kind`: `full`, `partial` or none).
//! Event data is read defensively: a missing or odd field gives the
//! generic text, never an error.

use crate::brands::{Brands, BrandsError};
use crate::catalogs::{Catalog, CatalogError, I18n, check_catalogs, escape_html, parse_catalogs};
use crate::context::{MessageContext, View};
use minijinja::value::{Kwargs, Value};
use minijinja::{AutoEscape, Environment, Error, Output, State, UndefinedBehavior};
use printworks::domain::locale::Locale;
use printworks::domain::notify::Template;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Why the templates could not be loaded, or a message not rendered.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error(transparent)]
    Brands(#[from] BrandsError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
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

fn template_error(name: &str) -> impl FnOnce(minijinja::Error) -> TemplateError + '_ {
    move |source| TemplateError::Template {
        name: name.to_string(),
        source,
    }
}

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
    "email/order_resumed.html.j2",
    "email/order_resumed.txt.j2",
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
    pub fn builtin() -> Result<Templates, TemplateError> {
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
    ) -> Result<Templates, TemplateError> {
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
    ) -> Result<RenderedEmail, TemplateError> {
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
            return Err(TemplateError::EmptySubject(text_name));
        }
        Ok(RenderedEmail {
            subject,
            text: tidy_text(&captured.into_output()),
            html: html.trim().to_string() + "\n",
        })
    }

    /// The text message of `template` (only where [`Template::has_sms`]).
    pub fn sms(
        &self,
        template: Template,
        ctx: &MessageContext<'_>,
    ) -> Result<String, TemplateError> {
        if !template.has_sms() {
            return Err(TemplateError::NoSms(template.name()));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalogs::placeholders;
    use crate::context::short_order_number;
    use crate::format;
    use minijinja::ErrorKind;
    use printworks::domain::events::EventEnvelope;
    use printworks::domain::events::EventType;
    use printworks::domain::money::Currency;
    use printworks::domain::money::Money;
    use printworks::domain::order::Order;
    use printworks::testing::paid_order;
    use serde_json::json;
    use std::collections::BTreeSet;
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
                    "details": {"code": "resolution_too_low", "line": 1, "image": 0,
                        "photo": {"line": 1, "image": 0}}}),
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
                "resumed-release",
                T::OrderResumed,
                event(
                    order,
                    E::OrderResumed,
                    json!({"action": "release", "stage": "render", "attempt": 2,
                           "reason": "INTERNAL: the customer sent a better photo"}),
                ),
            ),
            (
                "resumed-reprint",
                T::OrderResumed,
                event(
                    order,
                    E::OrderResumed,
                    json!({"action": "reprint", "stage": "dispatch", "attempt": 2,
                           "reason": "INTERNAL: parcel damaged"}),
                ),
            ),
            (
                "cancelled-by-the-shop",
                T::OrderCancelled,
                event(
                    order,
                    E::OrderCancelled,
                    json!({"reason": "INTERNAL: suspected fraud", "from": "dispatched", "by": "operator"}),
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
                // The call to action: where the customer replaces the photo.
                let cta = catalog_text(lang, "order_on_hold.fix_cta");
                let line = text
                    .lines()
                    .find(|l| l.contains(&cta))
                    .unwrap_or_else(|| panic!("{what}: no call to action\n{text}"));
                let link = line
                    .split_whitespace()
                    .find(|w| w.starts_with("https://"))
                    .unwrap_or_else(|| panic!("{what}: no link in {line:?}"));
                assert!(link.contains(order.id.as_str()), "{what}: {link}");
                assert!(
                    email
                        .html
                        .contains(&format!("href=\"{}\"", link.replace('&', "&amp;"))),
                    "{what}: no button to {link}"
                );
                assert!(has("order_on_hold.fix_intro"), "{what}");
            }
            "hold-unknown" | "hold-odd" => {
                assert!(has("hold.other"), "{what}");
                assert!(
                    !has("order_on_hold.fix_cta"),
                    "{what}: a photo cannot fix it"
                );
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
            // An operator's reason is the shop's note: never in the message.
            "cancelled-by-the-shop" => {
                assert!(has("cancel.shop") && !has("cancel.customer"), "{what}");
                assert!(
                    !text.contains("INTERNAL") && !email.html.contains("INTERNAL"),
                    "{what}"
                );
            }
            "resumed-release" | "resumed-reprint" => {
                // By what follows the order number: the subject shares
                // what precedes it in some languages.
                let tail = |key: &str| {
                    let full = parse_catalogs().expect("catalogs parse")[&lang][key].clone();
                    let after = full
                        .rsplit('}')
                        .next()
                        .unwrap_or_default()
                        .trim()
                        .to_string();
                    text.contains(&after)
                };
                let reprint = case == "resumed-reprint";
                assert_eq!(tail("order_resumed.reprint"), reprint, "{what}");
                assert_eq!(tail("order_resumed.intro"), !reprint, "{what}");
                assert!(has("order_resumed.outro"), "{what}");
                assert!(
                    !text.contains("INTERNAL") && !email.html.contains("INTERNAL"),
                    "{what}"
                );
            }
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
                                Err(TemplateError::NoSms(_))
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
        let TemplateError::Template { name, source } = &err else {
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
    fn templates_can_be_shared_between_tasks() {
        fn shareable<T: Send + Sync + 'static>() {}
        shareable::<Templates>();
        shareable::<Brands>();
        shareable::<TemplateError>();
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
