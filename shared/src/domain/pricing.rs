//! Prices are computed here and only here: catalog net prices times
//! quantities, shipping by country and method, VAT by ship-to country.

use super::catalog::{Catalog, Product, ShippingMethod};
use super::locale::CountryCode;
use super::money::{Currency, Money, MoneyError};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    /// Sum of the items, net.
    pub subtotal: Money,
    /// Shipping, net.
    pub shipping: Money,
    /// VAT rate of the ship-to country in basis points (1900 = 19 %).
    pub vat_rate_bp: u32,
    /// VAT on subtotal and shipping.
    pub vat: Money,
    /// What the customer pays: subtotal + shipping + VAT.
    pub total: Money,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PricingError {
    #[error("we do not ship to {0}")]
    NoShipping(CountryCode),
    #[error(transparent)]
    Money(#[from] MoneyError),
}

/// Prices `lines` (product and quantity) for delivery to `country`.
pub fn quote(
    catalog: &Catalog,
    lines: &[(&Product, u32)],
    country: CountryCode,
    method: ShippingMethod,
    currency: Currency,
) -> Result<Totals, PricingError> {
    let mut subtotal = Money::zero(currency);
    for (product, quantity) in lines {
        subtotal = subtotal.checked_add(
            product
                .unit_price(currency)
                .checked_mul(i64::from(*quantity))?,
        )?;
    }
    with_shipping(catalog, subtotal, country, method)
}

/// The totals of items worth `subtotal` (net) shipped by `method` to
/// `country`: what a changed address or method costs an order whose items
/// are priced already.
pub fn with_shipping(
    catalog: &Catalog,
    subtotal: Money,
    country: CountryCode,
    method: ShippingMethod,
) -> Result<Totals, PricingError> {
    let currency = subtotal.currency;
    let shipping = catalog
        .shipping_price(country, method, currency)
        .ok_or(PricingError::NoShipping(country))?;
    let vat_rate_bp = catalog
        .vat_bp(country)
        .ok_or(PricingError::NoShipping(country))?;
    let net = subtotal.checked_add(shipping)?;
    let vat = net.percent_bp(vat_rate_bp)?;
    let total = net.checked_add(vat)?;
    Ok(Totals {
        subtotal,
        shipping,
        vat_rate_bp,
        vat,
        total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_adds_items_shipping_and_vat_of_the_ship_to_country() {
        let catalog = Catalog::builtin();
        let poster = catalog.product("poster-30x40").unwrap();
        let photo = catalog.product("photo-10x15").unwrap();
        let t = quote(
            catalog,
            &[(poster, 2), (photo, 10)],
            CountryCode::DE,
            ShippingMethod::Standard,
            Currency::Eur,
        )
        .unwrap();
        let expected_sub = 2 * poster.prices[&Currency::Eur] + 10 * photo.prices[&Currency::Eur];
        assert_eq!(t.subtotal, Money::new(expected_sub, Currency::Eur));
        let ship = catalog
            .shipping_price(CountryCode::DE, ShippingMethod::Standard, Currency::Eur)
            .unwrap();
        assert_eq!(t.shipping, ship);
        assert_eq!(t.vat_rate_bp, 1900);
        let net = expected_sub + ship.amount;
        assert_eq!(t.vat.amount, (net * 1900 + 5000) / 10000);
        assert_eq!(t.total.amount, net + t.vat.amount);
    }

    #[test]
    fn swiss_delivery_uses_swiss_vat_and_chf() {
        let catalog = Catalog::builtin();
        let canvas = catalog.product("canvas-40x60").unwrap();
        let t = quote(
            catalog,
            &[(canvas, 1)],
            CountryCode::CH,
            ShippingMethod::Express,
            Currency::Chf,
        )
        .unwrap();
        assert_eq!(t.vat_rate_bp, 810);
        assert_eq!(t.total.currency, Currency::Chf);
        assert!(
            t.shipping.amount
                > catalog
                    .shipping_price(CountryCode::CH, ShippingMethod::Standard, Currency::Chf)
                    .unwrap()
                    .amount
        );
    }
}
