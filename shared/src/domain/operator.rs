//! Operators: the shop's staff and the plants' operators, who act on orders
//! through the operator API (`/v1/ops/...`) and `printworks ops`.
//!
//! Each operator has one [`Role`]:
//!
//! - `admin`: everything;
//! - `support`: the orders of every tenant: look, release, reprint, cancel;
//! - `plant:<id>`: the orders made at that plant: look (what packing
//!   needs), and reprint their jobs (a print damaged on the floor).
//!
//! An operator key reads `pwop_<env>_<key id>_<secret>`; like a tenant key
//! only the SHA-256 of its secret is stored, and it is checked in constant
//! time ([`super::tenant::PresentedKey::matches_operator`]). Operator keys
//! and tenant keys are kept apart by their prefix and by their records: a
//! tenant key never authenticates an operator and the other way round.

use super::production::plant_id_valid;
use super::tenant::{KeyKind, mint_key};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// An operator id: lowercase letters, digits, `.`, `-` and `_`, 2 to 40
/// characters, starting with a letter (`anna`, `muc-night-shift`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct OperatorId(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OperatorError {
    #[error("operator id {0:?}: 2 to 40 of a-z, 0-9, '.', '-', '_', starting with a letter")]
    BadId(String),
    #[error("role {0:?}: one of admin, support, plant:<plant id>")]
    BadRole(String),
}

impl OperatorId {
    pub fn parse(raw: &str) -> Result<OperatorId, OperatorError> {
        let ok = (2..=40).contains(&raw.len())
            && raw.starts_with(|c: char| c.is_ascii_lowercase())
            && raw.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')
            });
        if ok {
            Ok(OperatorId(raw.to_string()))
        } else {
            Err(OperatorError::BadId(raw.to_string()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for OperatorId {
    type Error = OperatorError;
    fn try_from(raw: String) -> Result<Self, Self::Error> {
        OperatorId::parse(&raw)
    }
}

impl From<OperatorId> for String {
    fn from(id: OperatorId) -> String {
        id.0
    }
}

impl std::fmt::Display for OperatorId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What an operator may do.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Role {
    Admin,
    Support,
    /// The operators of one plant.
    Plant(String),
}

impl Role {
    /// `admin`, `support` or `plant:<plant id>`.
    pub fn parse(raw: &str) -> Result<Role, OperatorError> {
        match raw {
            "admin" => Ok(Role::Admin),
            "support" => Ok(Role::Support),
            _ => match raw.strip_prefix("plant:") {
                Some(plant) if plant_id_valid(plant) => Ok(Role::Plant(plant.to_string())),
                _ => Err(OperatorError::BadRole(raw.to_string())),
            },
        }
    }

    pub fn as_string(&self) -> String {
        match self {
            Role::Admin => "admin".into(),
            Role::Support => "support".into(),
            Role::Plant(plant) => format!("plant:{plant}"),
        }
    }

    /// Whether this role may take `action` on an order whose jobs are
    /// made at `plant` (`None`: not dispatched yet). A plant's operators
    /// see and reprint only what their plant makes; releasing and
    /// cancelling are customer service's (`support`) and `admin`'s.
    pub fn may(&self, action: OpsAction, plant: Option<&str>) -> bool {
        match self {
            Role::Admin | Role::Support => true,
            Role::Plant(own) => {
                plant == Some(own.as_str())
                    && matches!(action, OpsAction::Show | OpsAction::Reprint)
            }
        }
    }

    /// What this role may do at all, for a refusal that says so.
    pub fn allowed_actions(&self) -> &'static [OpsAction] {
        match self {
            Role::Admin | Role::Support => &OpsAction::ALL,
            Role::Plant(_) => &[OpsAction::Show, OpsAction::Reprint],
        }
    }
}

impl TryFrom<String> for Role {
    type Error = OperatorError;
    fn try_from(raw: String) -> Result<Self, Self::Error> {
        Role::parse(&raw)
    }
}

impl From<Role> for String {
    fn from(role: Role) -> String {
        role.as_string()
    }
}

/// An operator's action on an order, or on the pipeline (a redrive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpsAction {
    Show,
    Release,
    Reprint,
    Cancel,
    /// Resolve a payment flag with a note.
    Resolve,
    /// Send a queue's dead letters back to it (no order: `plant` None).
    Redrive,
}

impl OpsAction {
    pub const ALL: [OpsAction; 6] = [
        OpsAction::Show,
        OpsAction::Release,
        OpsAction::Reprint,
        OpsAction::Cancel,
        OpsAction::Resolve,
        OpsAction::Redrive,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OpsAction::Show => "show",
            OpsAction::Release => "release",
            OpsAction::Reprint => "reprint",
            OpsAction::Cancel => "cancel",
            OpsAction::Resolve => "resolve",
            OpsAction::Redrive => "redrive",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operator {
    pub id: OperatorId,
    pub role: Role,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// What the store keeps of an operator key: never the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorKeyRecord {
    pub key_id: String,
    pub operator_id: OperatorId,
    pub env: String,
    /// Hex SHA-256 of the secret.
    pub secret_sha256: String,
    pub revoked: bool,
}

/// A new operator's key: the full text is shown once, the record stored.
pub struct NewOperatorKey {
    pub full: String,
    pub record: OperatorKeyRecord,
}

pub fn mint_operator_key(env: &str, operator: &OperatorId) -> NewOperatorKey {
    let minted = mint_key(KeyKind::Operator, env);
    NewOperatorKey {
        full: minted.full,
        record: OperatorKeyRecord {
            key_id: minted.key_id,
            operator_id: operator.clone(),
            env: env.to_string(),
            secret_sha256: minted.secret_sha256,
            revoked: false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::tenant::{PresentedKey, TenantId, mint_api_key};

    #[test]
    fn roles_parse_and_print() {
        for raw in ["admin", "support", "plant:muc", "plant:btf"] {
            assert_eq!(Role::parse(raw).unwrap().as_string(), raw);
        }
        for raw in [
            "",
            "Admin",
            "plant:",
            "plant:MUC",
            "plant:a",
            "root",
            "plant:muc:x",
        ] {
            assert!(Role::parse(raw).is_err(), "{raw}");
        }
        let json = serde_json::to_string(&Role::Plant("muc".into())).unwrap();
        assert_eq!(json, r#""plant:muc""#);
        assert!(serde_json::from_str::<Role>(r#""plant:""#).is_err());
    }

    #[test]
    fn operator_ids_are_checked() {
        assert!(OperatorId::parse("anna").is_ok());
        assert!(OperatorId::parse("muc-night_shift.2").is_ok());
        for raw in [
            "",
            "a",
            "Anna",
            "1anna",
            "anna smith",
            "anna@shop",
            &"a".repeat(41),
        ] {
            assert!(OperatorId::parse(raw).is_err(), "{raw}");
        }
        assert!(serde_json::from_str::<OperatorId>(r#""Bad Id""#).is_err());
    }

    #[test]
    fn a_plant_role_acts_only_on_its_plant_and_only_shows_and_reprints() {
        let plant = Role::Plant("muc".into());
        assert!(plant.may(OpsAction::Show, Some("muc")));
        assert!(plant.may(OpsAction::Reprint, Some("muc")));
        assert!(!plant.may(OpsAction::Show, Some("btf")));
        assert!(
            !plant.may(OpsAction::Show, None),
            "not dispatched: no plant's yet"
        );
        assert!(!plant.may(OpsAction::Release, Some("muc")));
        assert!(!plant.may(OpsAction::Cancel, Some("muc")));
        for action in OpsAction::ALL {
            assert!(Role::Support.may(action, None));
            assert!(Role::Admin.may(action, Some("btf")));
        }
    }

    #[test]
    fn operator_and_tenant_keys_never_stand_for_each_other() {
        let op = mint_operator_key("local", &OperatorId::parse("anna").unwrap());
        assert!(op.full.starts_with("pwop_local_"));
        assert!(!op.full.contains(&op.record.secret_sha256));
        let presented = PresentedKey::parse(&op.full).unwrap();
        assert_eq!(presented.kind, KeyKind::Operator);
        assert!(presented.matches_operator(&op.record));

        let tenant = mint_api_key("local", &TenantId::parse("acme").unwrap());
        let as_tenant = PresentedKey::parse(&tenant.full).unwrap();
        assert_eq!(as_tenant.kind, KeyKind::Tenant);
        assert!(!as_tenant.matches_operator(&OperatorKeyRecord {
            key_id: tenant.record.key_id.clone(),
            operator_id: OperatorId::parse("anna").unwrap(),
            env: tenant.record.env.clone(),
            secret_sha256: tenant.record.secret_sha256.clone(),
            revoked: false,
        }));
        // The same id and secret under the other prefix: still not a tenant key.
        let forged = tenant.full.replacen("pw_", "pwop_", 1);
        assert!(
            !PresentedKey::parse(&forged)
                .unwrap()
                .matches(&tenant.record)
        );
        assert!(!presented.matches(&crate::domain::tenant::ApiKeyRecord {
            key_id: op.record.key_id.clone(),
            tenant_id: TenantId::parse("acme").unwrap(),
            env: op.record.env.clone(),
            secret_sha256: op.record.secret_sha256.clone(),
            revoked: false,
        }));

        let mut revoked = op.record.clone();
        revoked.revoked = true;
        assert!(!presented.matches_operator(&revoked));
    }
}
