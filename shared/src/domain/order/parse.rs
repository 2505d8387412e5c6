//! The request parsed at the edge: each raw part of an [`OrderRequest`]
//! becomes a domain value through its `parse`, or the reasons it cannot,
//! so what [`Order::place`](super::Order::place) composes is valid by
//! construction.
//!
//! - single fields: [`Text`], [`EmailAddress`], [`PhoneNumber`],
//!   [`Quantity`], [`Fit::parse`], [`Crop::check`], [`ImageSource::parse`];
//!   refused with an [`InvalidField`];
//! - parts: [`Customer::parse`], [`Address::parse`], [`Shipping::parse`],
//!   [`ItemImage::parse`], [`OrderLine::parse`] and the whole request,
//!   [`OrderParts::parse`]; refused with every [`FieldError`] found, at its
//!   field's path (relative to the part), so a client learns all that is
//!   wrong at once.

use super::{
    Address, AddressRequest, Crop, Customer, CustomerRequest, FieldError, Fit, ImageRequest,
    ImageSource, ItemImage, ItemRequest, MAX_ITEMS, MAX_PHOTO_SIDE, MAX_QUANTITY, OrderItem,
    OrderRequest, Shipping, ShippingRequest,
};
use crate::domain::catalog::{Catalog, Product, ShippingMethod};
use crate::domain::locale::{CountryCode, Locale};
use crate::domain::money::{Currency, Money};
use crate::domain::tenant::{Tenant, TenantId};
use crate::domain::upload::{InvalidUploadId, UploadId};
use std::collections::BTreeMap;

/// Why one field of a request is refused; the text is what the client
/// reads (`FieldError::message`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidField {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {0} characters")]
    TooLong(usize),
    #[error("must not contain control characters")]
    ControlCharacters,
    #[error("must be one of de, en, fr, it, nl, es")]
    Locale,
    #[error("must be EUR or CHF")]
    Currency,
    /// A currency or ship-to country the tenant does not have.
    #[error("{0} is not enabled for this account")]
    NotEnabled(String),
    #[error("is not a valid e-mail address")]
    Email,
    #[error("must be in international format, e.g. +4930123456")]
    Phone,
    #[error("must be standard or express")]
    ShippingMethod,
    #[error("we do not ship to {0:?}")]
    Country(String),
    #[error("is not a valid postal code for {0}")]
    PostalCode(CountryCode),
    #[error("must contain at least one item")]
    NoItems,
    #[error("must contain at most {MAX_ITEMS} items")]
    TooManyItems,
    #[error("unknown product {0:?}")]
    UnknownProduct(String),
    #[error("must be between 1 and {MAX_QUANTITY}")]
    Quantity,
    #[error("{sku} has no option {name:?}")]
    UnknownOption { sku: String, name: String },
    /// The values the option takes, joined.
    #[error("must be one of {0}")]
    OptionValue(String),
    #[error("{sku} takes exactly {n} image{}", if *.n == 1 { "" } else { "s" })]
    ImageCount { sku: String, n: u32 },
    #[error(transparent)]
    UploadId(#[from] InvalidUploadId),
    #[error("must be an https URL of at most 2048 characters")]
    Url,
    #[error("needs exactly one of upload_id or url")]
    ImageSource,
    #[error("must be fill or fit")]
    Fit,
    #[error("needs a width and height above 0, inside {MAX_PHOTO_SIDE} pixels")]
    Crop,
    #[error("must be a colour like #ffffff")]
    Background,
}

/// `field` inside `prefix`: `a.b`, `prefix` itself for the part as a whole.
fn under(prefix: &str, field: &str) -> String {
    match (prefix.is_empty(), field.is_empty()) {
        (true, _) => field.to_string(),
        (false, true) => prefix.to_string(),
        (false, false) => format!("{prefix}.{field}"),
    }
}

/// The problems found while a part is parsed, in the order its fields are
/// checked.
#[derive(Debug, Default)]
struct Problems(Vec<FieldError>);

impl Problems {
    /// The value of one field, or its refusal noted at `field`.
    fn check<T>(&mut self, field: &str, parsed: Result<T, InvalidField>) -> Option<T> {
        match parsed {
            Ok(value) => Some(value),
            Err(why) => self.refuse(field, why),
        }
    }

    fn refuse<T>(&mut self, field: &str, why: InvalidField) -> Option<T> {
        self.0.push(FieldError {
            field: field.to_string(),
            message: why.to_string(),
        });
        None
    }

    /// The value of a part, or its problems noted under `prefix`.
    fn within<T>(&mut self, prefix: &str, parsed: Result<T, Vec<FieldError>>) -> Option<T> {
        match parsed {
            Ok(value) => Some(value),
            Err(errors) => {
                self.0.extend(errors.into_iter().map(|e| FieldError {
                    field: under(prefix, &e.field),
                    message: e.message,
                }));
                None
            }
        }
    }

    /// The part built from its fields if none was refused.
    fn finish<T>(self, build: impl FnOnce() -> Option<T>) -> Result<T, Vec<FieldError>> {
        if !self.0.is_empty() {
            return Err(self.0);
        }
        build().ok_or(self.0)
    }
}

// ------------------------------------------------------------- fields --

/// A free-text field: not blank, at most `max` characters and no control
/// characters (tab and newline included) as sent; kept trimmed. The limits
/// apply to the value as sent so that they are the OpenAPI schema's
/// (`maxLength`, `pattern`), which cannot trim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text(String);

impl Text {
    pub fn parse(raw: &str, max: usize) -> Result<Text, InvalidField> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            Err(InvalidField::Empty)
        } else if raw.chars().count() > max {
            Err(InvalidField::TooLong(max))
        } else if raw.chars().any(char::is_control) {
            Err(InvalidField::ControlCharacters)
        } else {
            Ok(Text(trimmed.to_string()))
        }
    }

    /// An optional free-text field: absent stays absent.
    pub fn parse_optional(raw: Option<&str>, max: usize) -> Result<Option<Text>, InvalidField> {
        raw.map(|raw| Text::parse(raw, max)).transpose()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<Text> for String {
    fn from(text: Text) -> String {
        text.0
    }
}

/// An e-mail address, trimmed: one `@`, a local part of 1 to 64 bytes, a
/// domain with a dot inside, no blanks, at most 254 bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailAddress(String);

impl EmailAddress {
    pub fn parse(raw: &str) -> Result<EmailAddress, InvalidField> {
        let email = raw.trim();
        let mut parts = email.splitn(2, '@');
        let (Some(local), Some(domain)) = (parts.next(), parts.next()) else {
            return Err(InvalidField::Email);
        };
        let valid = email.len() <= 254
            && !local.is_empty()
            && local.len() <= 64
            && !domain.contains('@')
            && domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !email.chars().any(|c| c.is_whitespace() || c.is_control());
        if valid {
            Ok(EmailAddress(email.to_string()))
        } else {
            Err(InvalidField::Email)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<EmailAddress> for String {
    fn from(email: EmailAddress) -> String {
        email.0
    }
}

/// A phone number in international format, `+` and 6 to 15 digits; blanks
/// and dashes as sent are dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhoneNumber(String);

impl PhoneNumber {
    pub fn parse(raw: &str) -> Result<PhoneNumber, InvalidField> {
        let phone = raw.replace([' ', '-'], "");
        let valid = phone.strip_prefix('+').is_some_and(|digits| {
            (6..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
        });
        if valid {
            Ok(PhoneNumber(phone))
        } else {
            Err(InvalidField::Phone)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<PhoneNumber> for String {
    fn from(phone: PhoneNumber) -> String {
        phone.0
    }
}

/// How many copies of an item: 1 to [`MAX_QUANTITY`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantity(u32);

impl Quantity {
    pub fn parse(raw: i64) -> Result<Quantity, InvalidField> {
        if (1..=MAX_QUANTITY).contains(&raw) {
            u32::try_from(raw)
                .map(Quantity)
                .map_err(|_| InvalidField::Quantity)
        } else {
            Err(InvalidField::Quantity)
        }
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

/// A currency the tenant sells in.
fn currency_for(tenant: &Tenant, raw: &str) -> Result<Currency, InvalidField> {
    match Currency::parse(raw) {
        None => Err(InvalidField::Currency),
        Some(c) if !tenant.currencies.contains(&c) => Err(InvalidField::NotEnabled(c.to_string())),
        Some(c) => Ok(c),
    }
}

fn shipping_method(raw: &str) -> Result<ShippingMethod, InvalidField> {
    match raw {
        "standard" => Ok(ShippingMethod::Standard),
        "express" => Ok(ShippingMethod::Express),
        _ => Err(InvalidField::ShippingMethod),
    }
}

/// An `https` URL of at most 2048 characters with a host and no user
/// part, blanks or control characters.
fn https_url(url: &str) -> Result<String, InvalidField> {
    let acceptable = url.len() <= 2048
        && url.strip_prefix("https://").is_some_and(|rest| {
            let host = rest.split(['/', '?', '#']).next().unwrap_or("");
            !host.is_empty()
                && !host.contains('@')
                && !url.chars().any(|c| c.is_whitespace() || c.is_control())
        });
    if acceptable {
        Ok(url.to_string())
    } else {
        Err(InvalidField::Url)
    }
}

/// `#rrggbb`.
fn background_colour(raw: &str) -> Result<String, InvalidField> {
    let hex = raw.strip_prefix('#').unwrap_or("");
    if hex.len() == 6 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(raw.to_string())
    } else {
        Err(InvalidField::Background)
    }
}

impl Fit {
    /// `fill` (also when absent) or `fit`.
    pub fn parse(raw: Option<&str>) -> Result<Fit, InvalidField> {
        match raw {
            None | Some("fill") => Ok(Fit::Fill),
            Some("fit") => Ok(Fit::Fit),
            Some(_) => Err(InvalidField::Fit),
        }
    }
}

impl Crop {
    /// The crop if it has an area and lies inside [`MAX_PHOTO_SIDE`].
    pub fn check(self) -> Result<Crop, InvalidField> {
        let inside =
            |at: u32, len: u32| u64::from(at) + u64::from(len) <= u64::from(MAX_PHOTO_SIDE);
        if self.width > 0
            && self.height > 0
            && inside(self.x, self.width)
            && inside(self.y, self.height)
        {
            Ok(self)
        } else {
            Err(InvalidField::Crop)
        }
    }
}

// -------------------------------------------------------------- parts --

impl Customer {
    pub fn parse(raw: &CustomerRequest) -> Result<Customer, Vec<FieldError>> {
        let mut p = Problems::default();
        let name = p.check("name", Text::parse(&raw.name, 100));
        let email = p.check("email", EmailAddress::parse(&raw.email));
        let phone = p.check(
            "phone",
            raw.phone.as_deref().map(PhoneNumber::parse).transpose(),
        );
        p.finish(|| {
            Some(Customer {
                name: name?.into(),
                email: email?.into(),
                phone: phone?.map(String::from),
            })
        })
    }
}

impl Address {
    /// The address, shipped to a country the catalog serves and `tenant`
    /// has enabled, with that country's postal code.
    pub fn parse(
        raw: &AddressRequest,
        tenant: &Tenant,
        catalog: &Catalog,
    ) -> Result<Address, Vec<FieldError>> {
        let mut p = Problems::default();
        let postal_code = raw.postal_code.trim();
        let country = match CountryCode::parse(&raw.country) {
            None => p.refuse("country", InvalidField::Country(raw.country.clone())),
            Some(c) if !tenant.countries.contains(&c) || !catalog.ships_to(c) => {
                p.refuse("country", InvalidField::NotEnabled(c.to_string()))
            }
            Some(c) if !c.postal_code_valid(postal_code) => {
                p.refuse("postal_code", InvalidField::PostalCode(c))
            }
            Some(c) => Some(c),
        };
        let name = p.check("name", Text::parse(&raw.name, 100));
        let company = p.check("company", Text::parse_optional(raw.company.as_deref(), 100));
        let line1 = p.check("line1", Text::parse(&raw.line1, 100));
        let line2 = p.check("line2", Text::parse_optional(raw.line2.as_deref(), 100));
        let city = p.check("city", Text::parse(&raw.city, 60));
        p.finish(|| {
            Some(Address {
                name: name?.into(),
                company: company?.map(String::from),
                line1: line1?.into(),
                line2: line2?.map(String::from),
                postal_code: postal_code.to_string(),
                city: city?.into(),
                country: country?,
            })
        })
    }
}

impl Shipping {
    pub fn parse(
        raw: &ShippingRequest,
        tenant: &Tenant,
        catalog: &Catalog,
    ) -> Result<Shipping, Vec<FieldError>> {
        let mut p = Problems::default();
        let method = p.check("method", shipping_method(&raw.method));
        let address = p.within("address", Address::parse(&raw.address, tenant, catalog));
        p.finish(|| {
            Some(Shipping {
                method: method?,
                address: address?,
            })
        })
    }
}

impl ImageSource {
    /// Exactly one of an upload (of `tenant`'s: its key is built under the
    /// tenant's prefix) or an `https` URL; refused at `upload_id`, `url`
    /// or at the image itself (`""`).
    pub fn parse(
        raw: &ImageRequest,
        tenant: &TenantId,
    ) -> Result<ImageSource, (&'static str, InvalidField)> {
        match (&raw.upload_id, &raw.url) {
            (Some(id), None) => {
                let id = UploadId::parse(id).map_err(|e| ("upload_id", e.into()))?;
                Ok(ImageSource::Upload {
                    key: id.key(tenant),
                    upload_id: id.into(),
                })
            }
            (None, Some(url)) => Ok(ImageSource::Url {
                url: https_url(url).map_err(|e| ("url", e))?,
            }),
            _ => Err(("", InvalidField::ImageSource)),
        }
    }
}

impl ItemImage {
    pub fn parse(raw: &ImageRequest, tenant: &TenantId) -> Result<ItemImage, Vec<FieldError>> {
        let mut p = Problems::default();
        let source = match ImageSource::parse(raw, tenant) {
            Ok(source) => Some(source),
            Err((field, why)) => p.refuse(field, why),
        };
        let fit = p.check("fit", Fit::parse(raw.fit.as_deref()));
        let crop = p.check("crop", raw.crop.map(Crop::check).transpose());
        let background = p.check(
            "background",
            raw.background.as_deref().map(background_colour).transpose(),
        );
        p.finish(|| {
            Some(ItemImage {
                source: source?,
                fit: fit?,
                crop: crop?,
                background: background?,
            })
        })
    }
}

/// One item of a request, parsed: a product of the catalog, its quantity,
/// every option (defaults filled in) and the images it takes. Priced once
/// the order's currency is known ([`OrderLine::priced`]).
#[derive(Debug, Clone)]
pub struct OrderLine<'c> {
    pub product: &'c Product,
    pub quantity: Quantity,
    pub options: BTreeMap<String, String>,
    pub images: Vec<ItemImage>,
}

impl<'c> OrderLine<'c> {
    /// An item of `catalog`'s for `tenant`. An unknown product is the only
    /// problem reported for the item (the rest depends on the product).
    pub fn parse(
        raw: &ItemRequest,
        catalog: &'c Catalog,
        tenant: &TenantId,
    ) -> Result<OrderLine<'c>, Vec<FieldError>> {
        let mut p = Problems::default();
        let Some(product) = catalog.product(&raw.sku) else {
            p.refuse::<()>("sku", InvalidField::UnknownProduct(raw.sku.clone()));
            return Err(p.0);
        };
        let quantity = p.check("quantity", Quantity::parse(raw.quantity));
        let mut options = BTreeMap::new();
        for (name, value) in &raw.options {
            let field = format!("options.{name}");
            match product.options.get(name) {
                None => p.refuse(
                    &field,
                    InvalidField::UnknownOption {
                        sku: raw.sku.clone(),
                        name: name.clone(),
                    },
                ),
                Some(spec) if !spec.values.contains(value) => {
                    p.refuse(&field, InvalidField::OptionValue(spec.values.join(", ")))
                }
                Some(_) => options.insert(name.clone(), value.clone()),
            };
        }
        for (name, spec) in &product.options {
            options
                .entry(name.clone())
                .or_insert_with(|| spec.default.clone());
        }
        if raw.images.len() != product.images_per_item as usize {
            p.refuse::<()>(
                "images",
                InvalidField::ImageCount {
                    sku: raw.sku.clone(),
                    n: product.images_per_item,
                },
            );
        }
        let images: Vec<Option<ItemImage>> = raw
            .images
            .iter()
            .enumerate()
            .map(|(j, image)| p.within(&format!("images[{j}]"), ItemImage::parse(image, tenant)))
            .collect();
        p.finish(|| {
            Some(OrderLine {
                product,
                quantity: quantity?,
                options,
                images: images.into_iter().collect::<Option<_>>()?,
            })
        })
    }

    /// The order's item at `line` (from 1), at the catalog's price in
    /// `currency`.
    pub fn priced(self, line: u32, currency: Currency) -> OrderItem {
        let quantity = self.quantity.get();
        let unit_price = self.product.unit_price(currency);
        let line_total = Money::new(unit_price.amount * i64::from(quantity), currency);
        OrderItem {
            line,
            sku: self.product.sku.as_str().to_string(),
            name: self.product.name.clone(),
            quantity,
            options: self.options,
            images: self.images,
            unit_price,
            line_total,
            renders: Vec::new(),
        }
    }
}

/// An [`OrderRequest`] with every part parsed for a tenant against the
/// catalog: what [`Order::place`](super::Order::place) prices and stores.
#[derive(Debug, Clone)]
pub struct OrderParts<'c> {
    pub locale: Locale,
    pub currency: Currency,
    pub customer: Customer,
    pub shipping: Shipping,
    pub lines: Vec<OrderLine<'c>>,
    pub reference: Option<String>,
}

impl<'c> OrderParts<'c> {
    /// Every problem of the request, at its field's path in the request,
    /// in the order of the request's fields. Only the first [`MAX_ITEMS`]
    /// items are looked at.
    pub fn parse(
        request: &OrderRequest,
        catalog: &'c Catalog,
        tenant: &Tenant,
    ) -> Result<OrderParts<'c>, Vec<FieldError>> {
        let mut p = Problems::default();
        let locale = p.check(
            "locale",
            Locale::parse(&request.locale).ok_or(InvalidField::Locale),
        );
        let currency = p.check("currency", currency_for(tenant, &request.currency));
        let customer = p.within("customer", Customer::parse(&request.customer));
        let shipping = p.within(
            "shipping",
            Shipping::parse(&request.shipping, tenant, catalog),
        );
        let reference = p.check(
            "reference",
            Text::parse_optional(request.reference.as_deref(), 64),
        );
        if request.items.is_empty() {
            p.refuse::<()>("items", InvalidField::NoItems);
        } else if request.items.len() > MAX_ITEMS {
            p.refuse::<()>("items", InvalidField::TooManyItems);
        }
        let lines: Vec<Option<OrderLine<'c>>> = request
            .items
            .iter()
            .take(MAX_ITEMS)
            .enumerate()
            .map(|(i, item)| {
                p.within(
                    &format!("items[{i}]"),
                    OrderLine::parse(item, catalog, &tenant.id),
                )
            })
            .collect();
        p.finish(|| {
            Some(OrderParts {
                locale: locale?,
                currency: currency?,
                customer: customer?,
                shipping: shipping?,
                lines: lines.into_iter().collect::<Option<_>>()?,
                reference: reference?.map(String::from),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_parse_or_say_why_not() {
        assert_eq!(Text::parse("  Erika ", 10).unwrap().as_str(), "Erika");
        assert_eq!(Text::parse("   ", 10), Err(InvalidField::Empty));
        // The limit is on the value as sent, blanks included.
        assert_eq!(Text::parse(" abc ", 4), Err(InvalidField::TooLong(4)));
        assert_eq!(
            Text::parse("a\tb", 10),
            Err(InvalidField::ControlCharacters)
        );
        assert_eq!(Text::parse_optional(None, 10), Ok(None));

        assert_eq!(
            EmailAddress::parse(" erika@example.com ").unwrap().as_str(),
            "erika@example.com"
        );
        for bad in [
            "erika",
            "@example.com",
            "erika@example",
            "erika@.com",
            "e rika@example.com",
        ] {
            assert_eq!(EmailAddress::parse(bad), Err(InvalidField::Email), "{bad}");
        }
        assert_eq!(
            PhoneNumber::parse("+49 30-123456").unwrap().as_str(),
            "+4930123456"
        );
        for bad in ["4930123456", "+12", "+49301234567890123", "+49 30 abc"] {
            assert_eq!(PhoneNumber::parse(bad), Err(InvalidField::Phone), "{bad}");
        }
        assert_eq!(Quantity::parse(1).map(Quantity::get), Ok(1));
        assert_eq!(Quantity::parse(MAX_QUANTITY).map(Quantity::get), Ok(100));
        for bad in [0, -1, MAX_QUANTITY + 1, i64::MAX] {
            assert_eq!(Quantity::parse(bad), Err(InvalidField::Quantity), "{bad}");
        }
        assert_eq!(Fit::parse(None), Ok(Fit::Fill));
        assert_eq!(Fit::parse(Some("fit")), Ok(Fit::Fit));
        assert_eq!(Fit::parse(Some("cover")), Err(InvalidField::Fit));
        assert_eq!(background_colour("#a0B1c2"), Ok("#a0B1c2".to_string()));
        assert_eq!(background_colour("a0b1c2"), Err(InvalidField::Background));
        let crop = Crop {
            x: MAX_PHOTO_SIDE - 10,
            y: 0,
            width: 10,
            height: 1,
        };
        assert_eq!(crop.check(), Ok(crop));
        let outside = Crop { width: 11, ..crop };
        assert_eq!(outside.check(), Err(InvalidField::Crop));
    }

    #[test]
    fn messages_are_the_api_s() {
        assert_eq!(
            InvalidField::ImageCount {
                sku: "photobox-10x15".into(),
                n: 10
            }
            .to_string(),
            "photobox-10x15 takes exactly 10 images"
        );
        assert_eq!(
            InvalidField::ImageCount {
                sku: "poster-30x40".into(),
                n: 1
            }
            .to_string(),
            "poster-30x40 takes exactly 1 image"
        );
        assert_eq!(
            InvalidField::from(InvalidUploadId).to_string(),
            "is not an upload id from POST /v1/uploads"
        );
        assert_eq!(
            InvalidField::Country("US".into()).to_string(),
            "we do not ship to \"US\""
        );
        assert_eq!(
            InvalidField::TooManyItems.to_string(),
            "must contain at most 50 items"
        );
    }

    #[test]
    fn a_part_s_problems_are_placed_under_its_path() {
        let raw = CustomerRequest {
            name: " ".into(),
            email: "nope".into(),
            phone: Some("12".into()),
        };
        let errors = Customer::parse(&raw).unwrap_err();
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["name", "email", "phone"]);
        let mut p = Problems::default();
        assert!(p.within::<()>("customer", Err(errors)).is_none());
        assert!(
            p.within::<()>(
                "items[0].images[1]",
                Err(vec![FieldError {
                    field: String::new(),
                    message: "x".into()
                }])
            )
            .is_none()
        );
        let fields: Vec<_> = p.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "customer.name",
                "customer.email",
                "customer.phone",
                "items[0].images[1]"
            ]
        );
    }
}
