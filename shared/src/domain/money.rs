//! Money in integer minor units with its currency; never a float.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The currencies printworks sells in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Currency {
    #[serde(rename = "EUR")]
    Eur,
    #[serde(rename = "CHF")]
    Chf,
}

impl Currency {
    pub const ALL: [Currency; 2] = [Currency::Eur, Currency::Chf];

    pub fn code(self) -> &'static str {
        match self {
            Currency::Eur => "EUR",
            Currency::Chf => "CHF",
        }
    }

    pub fn parse(raw: &str) -> Option<Currency> {
        Currency::ALL.into_iter().find(|c| c.code() == raw)
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// An amount in minor units (cents, Rappen) of one currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Money {
    /// Minor units: 1490 EUR is 14.90 EUR.
    pub amount: i64,
    pub currency: Currency,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MoneyError {
    #[error("cannot add {0} to {1}")]
    CurrencyMismatch(Currency, Currency),
    #[error("amount overflow")]
    Overflow,
}

impl Money {
    pub const fn new(amount: i64, currency: Currency) -> Money {
        Money { amount, currency }
    }

    pub const fn zero(currency: Currency) -> Money {
        Money {
            amount: 0,
            currency,
        }
    }

    pub fn checked_add(self, other: Money) -> Result<Money, MoneyError> {
        if self.currency != other.currency {
            return Err(MoneyError::CurrencyMismatch(other.currency, self.currency));
        }
        let amount = self
            .amount
            .checked_add(other.amount)
            .ok_or(MoneyError::Overflow)?;
        Ok(Money::new(amount, self.currency))
    }

    pub fn checked_mul(self, factor: i64) -> Result<Money, MoneyError> {
        let amount = self
            .amount
            .checked_mul(factor)
            .ok_or(MoneyError::Overflow)?;
        Ok(Money::new(amount, self.currency))
    }

    /// `self * basis_points / 10_000`, rounded half away from zero (the usual
    /// commercial rounding of VAT amounts).
    pub fn percent_bp(self, basis_points: u32) -> Result<Money, MoneyError> {
        let product = i128::from(self.amount) * i128::from(basis_points);
        let half = 5_000i128;
        let rounded = if product >= 0 {
            (product + half) / 10_000
        } else {
            (product - half) / 10_000
        };
        let amount = i64::try_from(rounded).map_err(|_| MoneyError::Overflow)?;
        Ok(Money::new(amount, self.currency))
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.amount < 0 { "-" } else { "" };
        let abs = self.amount.unsigned_abs();
        write!(f, "{sign}{}.{:02} {}", abs / 100, abs % 100, self.currency)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_same_currency_and_refuses_mixed() {
        let a = Money::new(1490, Currency::Eur);
        assert_eq!(
            a.checked_add(Money::new(10, Currency::Eur)).unwrap().amount,
            1500
        );
        assert_eq!(
            a.checked_add(Money::new(10, Currency::Chf)),
            Err(MoneyError::CurrencyMismatch(Currency::Chf, Currency::Eur))
        );
        assert_eq!(
            Money::new(i64::MAX, Currency::Eur).checked_mul(2),
            Err(MoneyError::Overflow)
        );
    }

    #[test]
    fn vat_rounds_half_away_from_zero() {
        // 19 % of 2.50 = 0.475 -> 0.48
        assert_eq!(
            Money::new(250, Currency::Eur)
                .percent_bp(1900)
                .unwrap()
                .amount,
            48
        );
        // 8.1 % of 10.00 = 0.81
        assert_eq!(
            Money::new(1000, Currency::Chf)
                .percent_bp(810)
                .unwrap()
                .amount,
            81
        );
        // 19 % of 0.02 = 0.0038 -> 0.00
        assert_eq!(
            Money::new(2, Currency::Eur)
                .percent_bp(1900)
                .unwrap()
                .amount,
            0
        );
        assert_eq!(
            Money::new(-250, Currency::Eur)
                .percent_bp(1900)
                .unwrap()
                .amount,
            -48
        );
    }

    #[test]
    fn displays_minor_units() {
        assert_eq!(Money::new(1490, Currency::Eur).to_string(), "14.90 EUR");
        assert_eq!(Money::new(-5, Currency::Chf).to_string(), "-0.05 CHF");
    }
}
