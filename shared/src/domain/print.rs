//! Print files: where an image's print file and preview are stored
//! ([`PrintFileKeys`]), and why an image cannot be printed
//! ([`Unprintable`]) with the hold the order then goes on, in words the
//! customer can be told ([`Order::hold_unprintable`]).

use super::changes::PhotoRef;
use super::events::EventEnvelope;
use super::order::{Order, OrderId, OrderItem, TransitionError};
use super::tenant::TenantId;
use time::OffsetDateTime;

/// The keys of one image's files in the prints bucket. They are a function
/// of the order, the item's line and the image, so rendering again after a
/// crash overwrites the same objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrintFileKeys {
    pub print: String,
    pub preview: String,
}

impl PrintFileKeys {
    /// `<tenant>/<order>/<line>-<image, from 1>/{print,preview}.jpg`;
    /// `image` counts from 0 (the index into the item's images).
    pub fn new(tenant: &TenantId, order: &OrderId, line: u32, image: usize) -> PrintFileKeys {
        let base = format!("{tenant}/{order}/{line}-{}", image + 1);
        PrintFileKeys {
            print: format!("{base}/print.jpg"),
            preview: format!("{base}/preview.jpg"),
        }
    }

    /// The keys of `order`'s item `line`, image `image` (from 0).
    pub fn of(order: &Order, line: u32, image: usize) -> PrintFileKeys {
        PrintFileKeys::new(&order.tenant, &order.id, line, image)
    }
}

/// A permanent problem with one image of an item: retrying cannot help,
/// the customer has to act, so the order goes on hold. The text (its
/// `Display`) is the customer's; [`Unprintable::code`] is the machine's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unprintable {
    #[error("the product {sku} is no longer offered")]
    UnknownProduct { sku: String },
    /// The upload is under another tenant's prefix.
    #[error("the photo belongs to another account")]
    ForeignUpload,
    #[error("the photo upload was never completed")]
    UploadMissing,
    /// The photo URL was refused for good (its address, a 404, its size).
    #[error("the photo URL cannot be used ({cause})")]
    UrlRefused { cause: String },
    /// The photo URL kept failing in ways that may pass, over `attempts`
    /// deliveries.
    #[error("we could not read the photo after {attempts} attempts")]
    SourceUnavailable { attempts: u32 },
    /// The render pipeline refused the photo (its format, its size, its
    /// resolution), with the pipeline's own code and words.
    #[error("{message}")]
    Image { code: &'static str, message: String },
}

impl Unprintable {
    /// The stable code of the hold (`details.code` of `OrderOnHold`).
    pub fn code(&self) -> &'static str {
        match self {
            Unprintable::UnknownProduct { .. } => "unknown_product",
            Unprintable::ForeignUpload => "foreign_upload",
            Unprintable::UploadMissing => "upload_missing",
            Unprintable::UrlRefused { .. } => "url_refused",
            Unprintable::SourceUnavailable { .. } => "source_unavailable",
            Unprintable::Image { code, .. } => code,
        }
    }

    /// The hold reason for image `image` (from 0) of `item`: which item
    /// (and which photo, when the item has several) and what is wrong.
    pub fn hold_reason(&self, item: &OrderItem, image: usize) -> String {
        if item.images.len() > 1 {
            format!(
                "Item {} ({}), photo {}: {self}",
                item.line,
                item.name,
                image + 1
            )
        } else {
            format!("Item {} ({}): {self}", item.line, item.name)
        }
    }
}

impl Order {
    /// Puts the order on hold because image `image` (from 0) of `item`
    /// cannot be printed; `OrderOnHold` carries the code, line and image.
    pub fn hold_unprintable(
        &self,
        item: &OrderItem,
        image: usize,
        problem: &Unprintable,
        now: OffsetDateTime,
    ) -> Result<(Order, EventEnvelope), TransitionError> {
        // Another photo lifts the hold, unless the product itself is the
        // problem: `details.photo` names it (the e-mail links to where the
        // customer replaces it).
        let photo = (!matches!(problem, Unprintable::UnknownProduct { .. })).then_some(PhotoRef {
            line: item.line,
            image: image as u32,
        });
        let details = serde_json::json!({
            "code": problem.code(), "line": item.line, "image": image, "photo": photo,
        });
        let (mut next, event) = self.hold(&problem.hold_reason(item, image), details, now)?;
        if let Some(hold) = next.hold.as_mut() {
            hold.photo = photo;
        }
        Ok((next, event))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::money::{Currency, Money};
    use crate::domain::order::{ImageSource, ItemImage};
    use std::collections::BTreeMap;

    fn item(images: usize) -> OrderItem {
        let image = ItemImage {
            source: ImageSource::Url {
                url: "https://example.com/a.jpg".into(),
            },
            fit: Default::default(),
            crop: None,
            background: None,
        };
        OrderItem {
            line: 2,
            sku: "poster-30x40".into(),
            name: "Poster 30x40".into(),
            quantity: 1,
            options: BTreeMap::new(),
            images: vec![image; images],
            unit_price: Money::new(1490, Currency::Eur),
            line_total: Money::new(1490, Currency::Eur),
            renders: Vec::new(),
        }
    }

    #[test]
    fn keys_are_a_function_of_order_line_and_image() {
        let tenant = TenantId::parse("demo-brand").unwrap();
        let order = OrderId::parse("ord_0123456789abcdef0123456789abcdef").unwrap();
        let keys = PrintFileKeys::new(&tenant, &order, 3, 0);
        assert_eq!(
            keys.print,
            "demo-brand/ord_0123456789abcdef0123456789abcdef/3-1/print.jpg"
        );
        assert_eq!(
            keys.preview,
            "demo-brand/ord_0123456789abcdef0123456789abcdef/3-1/preview.jpg"
        );
        assert_eq!(keys, PrintFileKeys::new(&tenant, &order, 3, 0));
        assert_ne!(keys, PrintFileKeys::new(&tenant, &order, 3, 1));
    }

    #[test]
    fn the_hold_names_the_item_and_the_photo() {
        let problem = Unprintable::SourceUnavailable { attempts: 4 };
        assert_eq!(problem.code(), "source_unavailable");
        assert_eq!(
            problem.hold_reason(&item(1), 0),
            "Item 2 (Poster 30x40): we could not read the photo after 4 attempts"
        );
        assert_eq!(
            Unprintable::UploadMissing.hold_reason(&item(3), 1),
            "Item 2 (Poster 30x40), photo 2: the photo upload was never completed"
        );
        let refused = Unprintable::UrlRefused {
            cause: "404".into(),
        };
        assert_eq!(
            (refused.code(), refused.to_string().as_str()),
            ("url_refused", "the photo URL cannot be used (404)")
        );
        let image = Unprintable::Image {
            code: "too_small",
            message: "the photo is too small".into(),
        };
        assert_eq!(
            (image.code(), image.to_string().as_str()),
            ("too_small", "the photo is too small")
        );
    }
}
