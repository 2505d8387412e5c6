//! The product catalog: SKUs, print geometry, prices, plants, VAT and
//! shipping rates. The data lives in `shared/data/catalog.json`, compiled in;
//! [`Catalog::from_json`] loads an override and checks it as strictly.

use super::locale::CountryCode;
use super::money::{Currency, Money};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::OnceLock;

const BUILTIN: &str = include_str!("../../data/catalog.json");

/// A stock-keeping unit as written in the catalog (`poster-30x40`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Sku(String);

impl Sku {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProductKind {
    Poster,
    PhotoPrint,
    Canvas,
    GreetingCard,
    PhotoBox,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SizeMm {
    pub width: u32,
    pub height: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptionSpec {
    pub values: Vec<String>,
    pub default: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contents {
    pub sku: Sku,
    pub count: u32,
}

/// One product of the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Product {
    pub sku: Sku,
    pub kind: ProductKind,
    pub name: String,
    /// Finished size.
    pub trim_mm: SizeMm,
    /// Extra image on every side, cut away after printing.
    pub bleed_mm: u32,
    /// Canvas only: image wrapped around the stretcher frame on every side.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wrap_mm: Option<u32>,
    /// Greeting cards: the fold line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fold: Option<String>,
    pub output_dpi: u32,
    /// Below this effective DPI the item carries a warning.
    pub min_dpi: u32,
    /// Below this effective DPI the image is refused.
    pub reject_dpi: u32,
    /// Plants that can make it.
    pub plants: Vec<String>,
    /// Net unit prices in minor units.
    pub prices: BTreeMap<Currency, i64>,
    pub weight_g: u32,
    /// How many images one item takes (a photo box takes one per print).
    pub images_per_item: u32,
    pub options: BTreeMap<String, OptionSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contains: Option<Contents>,
}

impl Product {
    pub fn unit_price(&self, currency: Currency) -> Money {
        // Every product has every currency: checked when the catalog loads.
        Money::new(self.prices[&currency], currency)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShippingMethod {
    Standard,
    Express,
}

impl ShippingMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            ShippingMethod::Standard => "standard",
            ShippingMethod::Express => "express",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plant {
    pub name: String,
    /// Ship-to countries this plant serves first.
    pub countries: Vec<CountryCode>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    version: u32,
    #[serde(default)]
    #[allow(dead_code)]
    comment: Option<String>,
    countries: Vec<CountryCode>,
    vat_bp: BTreeMap<CountryCode, u32>,
    shipping: BTreeMap<CountryCode, BTreeMap<ShippingMethod, BTreeMap<Currency, i64>>>,
    plants: BTreeMap<String, Plant>,
    products: Vec<Product>,
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("catalog is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("catalog is inconsistent: {0}")]
    Inconsistent(String),
}

/// The loaded, checked catalog.
#[derive(Debug, Clone)]
pub struct Catalog {
    pub version: u32,
    products: BTreeMap<Sku, Product>,
    vat_bp: BTreeMap<CountryCode, u32>,
    shipping: BTreeMap<CountryCode, BTreeMap<ShippingMethod, BTreeMap<Currency, i64>>>,
    pub plants: BTreeMap<String, Plant>,
}

impl Catalog {
    /// The catalog compiled into the binary.
    pub fn builtin() -> &'static Catalog {
        static CATALOG: OnceLock<Catalog> = OnceLock::new();
        CATALOG.get_or_init(|| {
            Catalog::from_json(BUILTIN).expect("the built-in catalog is checked by a unit test")
        })
    }

    /// Parses and checks a catalog: every country has VAT and both shipping
    /// methods in every currency, every product a price in every currency,
    /// known plants, sane geometry and options.
    pub fn from_json(raw: &str) -> Result<Catalog, CatalogError> {
        let file: CatalogFile = serde_json::from_str(raw)?;
        let bad = |m: String| Err(CatalogError::Inconsistent(m));
        for country in &file.countries {
            if !file.vat_bp.contains_key(country) {
                return bad(format!("no VAT rate for {country}"));
            }
            for method in [ShippingMethod::Standard, ShippingMethod::Express] {
                for currency in Currency::ALL {
                    let price = file
                        .shipping
                        .get(country)
                        .and_then(|m| m.get(&method))
                        .and_then(|c| c.get(&currency));
                    match price {
                        Some(p) if *p >= 0 => {}
                        _ => {
                            return bad(format!(
                                "no {} shipping price in {currency} for {country}",
                                method.as_str()
                            ));
                        }
                    }
                }
            }
        }
        let mut products = BTreeMap::new();
        for product in file.products {
            let sku = product.sku.clone();
            if sku.0.is_empty()
                || !sku
                    .0
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            {
                return bad(format!("bad SKU {:?}", sku.0));
            }
            for currency in Currency::ALL {
                match product.prices.get(&currency) {
                    Some(p) if *p > 0 => {}
                    _ => return bad(format!("{}: no price in {currency}", sku.0)),
                }
            }
            if product.plants.is_empty()
                || product.plants.iter().any(|p| !file.plants.contains_key(p))
            {
                return bad(format!("{}: unknown or no plants", sku.0));
            }
            if product.trim_mm.width == 0 || product.trim_mm.height == 0 || product.output_dpi == 0
            {
                return bad(format!("{}: empty geometry", sku.0));
            }
            if !(product.reject_dpi <= product.min_dpi && product.min_dpi <= product.output_dpi) {
                return bad(format!(
                    "{}: reject_dpi <= min_dpi <= output_dpi does not hold",
                    sku.0
                ));
            }
            if product.images_per_item == 0 {
                return bad(format!("{}: images_per_item must be at least 1", sku.0));
            }
            for (name, spec) in &product.options {
                if !spec.values.contains(&spec.default) {
                    return bad(format!(
                        "{}: option {name} default is not one of its values",
                        sku.0
                    ));
                }
            }
            if products.insert(sku.clone(), product).is_some() {
                return bad(format!("duplicate SKU {}", sku.0));
            }
        }
        for product in products.values() {
            if let Some(contents) = &product.contains
                && !products.contains_key(&contents.sku)
            {
                return bad(format!(
                    "{}: contains unknown SKU {}",
                    product.sku.0, contents.sku.0
                ));
            }
        }
        Ok(Catalog {
            version: file.version,
            products,
            vat_bp: file.vat_bp,
            shipping: file.shipping,
            plants: file.plants,
        })
    }

    pub fn product(&self, sku: &str) -> Option<&Product> {
        // BTreeMap<Sku, _> is keyed by the newtype; Sku borrows as str below.
        self.products.get(sku)
    }

    /// The product whose sheet an item of `product` prints its photos on:
    /// a photo box prints its photos as the product it contains, anything
    /// else as itself.
    pub fn printed_as<'a>(&'a self, product: &'a Product) -> &'a Product {
        product
            .contains
            .as_ref()
            .and_then(|c| self.product(c.sku.as_str()))
            .unwrap_or(product)
    }

    pub fn products(&self) -> impl Iterator<Item = &Product> {
        self.products.values()
    }

    pub fn ships_to(&self, country: CountryCode) -> bool {
        self.vat_bp.contains_key(&country)
    }

    /// VAT rate of the ship-to country in basis points (19 % = 1900).
    pub fn vat_bp(&self, country: CountryCode) -> Option<u32> {
        self.vat_bp.get(&country).copied()
    }

    pub fn shipping_price(
        &self,
        country: CountryCode,
        method: ShippingMethod,
        currency: Currency,
    ) -> Option<Money> {
        let amount = self.shipping.get(&country)?.get(&method)?.get(&currency)?;
        Some(Money::new(*amount, currency))
    }
}

impl std::borrow::Borrow<str> for Sku {
    fn borrow(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_catalog_loads_and_has_every_product_family() {
        let catalog = Catalog::from_json(BUILTIN).expect("built-in catalog");
        for sku in [
            "poster-20x30",
            "poster-30x40",
            "poster-40x50",
            "poster-50x70",
            "poster-60x90",
            "photo-10x15",
            "photo-13x18",
            "canvas-30x40",
            "canvas-40x60",
            "canvas-50x70",
            "canvas-60x90",
            "card-a6-folded",
            "photobox-10x15",
        ] {
            assert!(catalog.product(sku).is_some(), "{sku} missing");
        }
        let canvas = catalog.product("canvas-40x60").unwrap();
        assert_eq!(canvas.wrap_mm, Some(40));
        assert_eq!(canvas.output_dpi, 150);
        assert_eq!(catalog.product("poster-30x40").unwrap().bleed_mm, 3);
        assert_eq!(catalog.product("photo-10x15").unwrap().bleed_mm, 2);
        let card = catalog.product("card-a6-folded").unwrap();
        assert_eq!((card.trim_mm.width, card.trim_mm.height), (210, 148));
        let boxed = catalog.product("photobox-10x15").unwrap();
        assert_eq!(boxed.images_per_item, 10);
        assert_eq!(boxed.contains.as_ref().unwrap().sku.as_str(), "photo-10x15");
        assert_eq!(catalog.printed_as(boxed).sku.as_str(), "photo-10x15");
        assert_eq!(catalog.printed_as(canvas).sku.as_str(), "canvas-40x60");
        for country in CountryCode::ALL {
            assert!(catalog.ships_to(country), "{country}");
        }
        assert_eq!(catalog.vat_bp(CountryCode::CH), Some(810));
        assert_eq!(catalog.vat_bp(CountryCode::DE), Some(1900));
        // canvas only in one plant
        assert_eq!(canvas.plants, vec!["btf".to_string()]);
    }

    #[test]
    fn an_inconsistent_catalog_is_refused() {
        let mut doc: serde_json::Value = serde_json::from_str(BUILTIN).unwrap();
        doc["products"][0]["prices"]
            .as_object_mut()
            .unwrap()
            .remove("CHF");
        let err = Catalog::from_json(&doc.to_string()).unwrap_err();
        assert!(err.to_string().contains("no price in CHF"), "{err}");

        let mut doc: serde_json::Value = serde_json::from_str(BUILTIN).unwrap();
        doc["shipping"]["DK"]
            .as_object_mut()
            .unwrap()
            .remove("express");
        let err = Catalog::from_json(&doc.to_string()).unwrap_err();
        assert!(err.to_string().contains("express shipping"), "{err}");

        let mut doc: serde_json::Value = serde_json::from_str(BUILTIN).unwrap();
        doc["products"][0]["plants"] = serde_json::json!(["nowhere"]);
        assert!(Catalog::from_json(&doc.to_string()).is_err());
    }
}
