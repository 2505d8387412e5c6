//! The white-label brands a message can come from: `brands.json`, one
//! [`Brand`] per brand (who a message comes from, its colours, its SMS
//! sender), with the fallback brand `default`; checked when loaded
//! ([`Brands::from_json`]).

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// Why `brands.json` was refused.
#[derive(Debug, thiserror::Error)]
pub enum BrandsError {
    #[error("brands.json is not a list of brands")]
    Json(#[source] serde_json::Error),
    #[error("brand {id:?}: {reason}")]
    Invalid { id: String, reason: String },
}

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
    /// Where the customer replaces a photo an order is held for: an https
    /// URL template of the storefront with `{order_id}`, `{line}` and
    /// `{image}` (the tenant API's `PUT .../items/{line}/images/{image}`
    /// behind it). Absent: `{website}/orders/{order_id}/items/{line}/images/{image}`.
    #[serde(default)]
    pub fix_photo_url: Option<String>,
}

/// The placeholders of [`Brand::fix_photo_url`].
const FIX_PHOTO_PLACEHOLDERS: [&str; 3] = ["{order_id}", "{line}", "{image}"];

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
    /// The storefront page where the customer replaces photo `image` (from
    /// 0) of item `line` of `order_id`.
    pub fn fix_photo_link(&self, order_id: &str, line: u32, image: u32) -> String {
        let template = self.fix_photo_url.clone().unwrap_or_else(|| {
            format!(
                "{}/orders/{{order_id}}/items/{{line}}/images/{{image}}",
                self.website
            )
        });
        template
            .replace("{order_id}", order_id)
            .replace("{line}", &line.to_string())
            .replace("{image}", &image.to_string())
    }

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
        if let Some(template) = &self.fix_photo_url {
            let mut rest = template.clone();
            for placeholder in FIX_PHOTO_PLACEHOLDERS {
                rest = rest.replace(placeholder, "x");
            }
            if !is_https_url(template)
                || !template.contains("{order_id}")
                || rest.contains(['{', '}'])
            {
                return Err(format!(
                    "fix_photo_url {template:?} must be an https URL with {{order_id}} (and may use {{line}}, {{image}}), no other braces"
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
    pub fn builtin() -> Result<Brands, BrandsError> {
        Brands::from_json(BRANDS_JSON)
    }

    /// A JSON list of brands, each checked: colours `#rrggbb`, addresses
    /// with one `@`, https website and logo, SMS sender 3 to 11
    /// alphanumerics; ids unique, and a brand `default`.
    pub fn from_json(raw: &str) -> Result<Brands, BrandsError> {
        let brands: Vec<Brand> = serde_json::from_str(raw).map_err(BrandsError::Json)?;
        let mut seen = BTreeSet::new();
        for brand in &brands {
            brand.check().map_err(|reason| BrandsError::Invalid {
                id: brand.id.clone(),
                reason,
            })?;
            if !seen.insert(brand.id.as_str()) {
                return Err(BrandsError::Invalid {
                    id: brand.id.clone(),
                    reason: "listed twice".into(),
                });
            }
        }
        let default = brands
            .iter()
            .position(|b| b.id == "default")
            .ok_or_else(|| BrandsError::Invalid {
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
            (
                "/fix_photo_url",
                json!("http://demo-posters.example/{order_id}"),
            ),
            (
                "/fix_photo_url",
                json!("https://demo-posters.example/photo"),
            ),
            (
                "/fix_photo_url",
                json!("https://demo-posters.example/{order_id}/{sku}"),
            ),
        ] {
            let result = with(1, pointer, value.clone());
            assert!(
                matches!(result, Err(BrandsError::Invalid { .. })),
                "{pointer} = {value}"
            );
        }
        // The storefront's page for a held photo: the brand's template, or
        // one under its website.
        assert_eq!(
            posters.fix_photo_link("ord_1", 2, 0),
            "https://demo-posters.example/account/orders/ord_1/photo?item=2&image=0"
        );
        assert_eq!(
            brands.get("default").fix_photo_link("ord_1", 1, 3),
            "https://printworks.example/orders/ord_1/items/1/images/3"
        );
        // No default brand.
        assert!(with(0, "/id", json!("printworks")).is_err());
        assert!(matches!(Brands::from_json("{}"), Err(BrandsError::Json(_))));
        let mut doc = base.clone();
        doc[0]["colour"] = json!("#ffffff");
        assert!(
            Brands::from_json(&doc.to_string()).is_err(),
            "unknown fields are refused"
        );
    }
}
