//! Reading configuration: every function reads the environment once at
//! start into its typed configuration (`<function>::Config` for what both
//! the Lambda and the local runner set, `<function>::Resources` for the AWS
//! resource names only the Lambda has), through [`Vars`]; a missing or bad
//! variable fails fast with its name, and nothing calls `set_var` at run
//! time. Tests and the local runner pass a map ([`vars_from`]) instead of
//! the process environment.

use std::time::Duration;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("environment variable {0} is not set")]
    Missing(&'static str),
    #[error("environment variable {name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
}

/// Reads variables through `get`, so tests pass a map instead of touching
/// the process environment.
pub struct Vars<F: Fn(&str) -> Option<String>>(pub F);

impl<F: Fn(&str) -> Option<String>> Vars<F> {
    pub fn required(&self, name: &'static str) -> Result<String, ConfigError> {
        match (self.0)(name) {
            Some(v) if !v.trim().is_empty() => Ok(v),
            _ => Err(ConfigError::Missing(name)),
        }
    }

    pub fn optional(&self, name: &'static str) -> Option<String> {
        (self.0)(name).filter(|v| !v.trim().is_empty())
    }

    /// A whole number in `range`, `default` when unset.
    pub fn number(
        &self,
        name: &'static str,
        default: u32,
        range: std::ops::RangeInclusive<u32>,
    ) -> Result<u32, ConfigError> {
        let Some(raw) = self.optional(name) else {
            return Ok(default);
        };
        let n: u32 = raw.parse().map_err(|_| ConfigError::Invalid {
            name,
            reason: format!("{raw:?} is not a whole number"),
        })?;
        if !range.contains(&n) {
            return Err(ConfigError::Invalid {
                name,
                reason: format!("must be between {} and {}", range.start(), range.end()),
            });
        }
        Ok(n)
    }

    pub fn seconds(
        &self,
        name: &'static str,
        default: u64,
        range: std::ops::RangeInclusive<u64>,
    ) -> Result<Duration, ConfigError> {
        let Some(raw) = self.optional(name) else {
            return Ok(Duration::from_secs(default));
        };
        let secs: u64 = raw.parse().map_err(|_| ConfigError::Invalid {
            name,
            reason: format!("{raw:?} is not a number of seconds"),
        })?;
        if !range.contains(&secs) {
            return Err(ConfigError::Invalid {
                name,
                reason: format!("must be between {} and {}", range.start(), range.end()),
            });
        }
        Ok(Duration::from_secs(secs))
    }
}

pub fn process_env() -> Vars<impl Fn(&str) -> Option<String>> {
    Vars(|name: &str| std::env::var(name).ok())
}

/// Variables from `pairs` only (tests, the local runner, and the defaults).
pub fn vars_from(pairs: &[(&str, &str)]) -> Vars<impl Fn(&str) -> Option<String> + use<>> {
    let map: std::collections::HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Vars(move |name: &str| map.get(name).cloned())
}

/// `AWS_ENDPOINT_URL`, set for an emulator: S3 then uses path-style URLs.
pub fn endpoint_url<F: Fn(&str) -> Option<String>>(vars: &Vars<F>) -> Option<String> {
    vars.optional("AWS_ENDPOINT_URL")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_invalid_variables_are_named() {
        let vars = vars_from(&[("N", "many"), ("T", "86400"), ("BLANK", " ")]);
        assert_eq!(vars.required("BLANK"), Err(ConfigError::Missing("BLANK")));
        assert_eq!(vars.required("UNSET"), Err(ConfigError::Missing("UNSET")));
        let err = vars.number("N", 4, 1..=20).unwrap_err();
        assert!(
            err.to_string().contains("N") && err.to_string().contains("many"),
            "{err}"
        );
        let err = vars.seconds("T", 900, 60..=3600).unwrap_err();
        assert!(
            matches!(err, ConfigError::Invalid { name: "T", .. }),
            "{err}"
        );
        assert_eq!(vars.number("UNSET", 4, 1..=20), Ok(4));
        assert_eq!(
            vars.seconds("UNSET", 900, 60..=3600),
            Ok(Duration::from_secs(900))
        );
        assert!(vars_from(&[("N", "21")]).number("N", 4, 1..=20).is_err());
    }
}
