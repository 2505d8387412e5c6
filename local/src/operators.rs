//! `printworks operator add`: a new operator and its key, shown once, in
//! the local data directory or (feature `aws`) a deployed stack's table.

use printworks::domain::operator::{NewOperatorKey, Operator, OperatorId, Role, mint_operator_key};
use printworks::ports::{OperatorStore, StoreError};
use time::OffsetDateTime;

#[derive(Debug, thiserror::Error)]
pub enum AddError {
    #[error(transparent)]
    Invalid(#[from] printworks::domain::operator::OperatorError),
    #[error("--env {0:?}: 1 to 12 lowercase letters (local, prod, ...)")]
    BadEnv(String),
    #[error("operator {0} already exists; pick another id")]
    Exists(OperatorId),
    #[error(transparent)]
    Store(StoreError),
}

/// A key's environment, as [`printworks::domain::tenant::PresentedKey`]
/// accepts it.
fn env_valid(env: &str) -> bool {
    (1..=12).contains(&env.len()) && env.bytes().all(|b| b.is_ascii_lowercase())
}

/// Adds operator `id` with `role` and returns it with its new key.
pub async fn add(
    store: &dyn OperatorStore,
    id: &str,
    role: &str,
    env: &str,
    now: OffsetDateTime,
) -> Result<(Operator, NewOperatorKey), AddError> {
    let id = OperatorId::parse(id)?;
    let role = Role::parse(role)?;
    if !env_valid(env) {
        return Err(AddError::BadEnv(env.to_string()));
    }
    let operator = Operator {
        id: id.clone(),
        role,
        created_at: now,
    };
    let key = mint_operator_key(env, &id);
    match store.add_operator(&operator, &key.record).await {
        Ok(()) => Ok((operator, key)),
        Err(StoreError::Conflict) => Err(AddError::Exists(id)),
        Err(e) => Err(AddError::Store(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use printworks::adapters::local::db::{Db, Durability};
    use printworks::adapters::local::store::SqliteStore;
    use printworks::domain::tenant::PresentedKey;
    use std::sync::Arc;

    #[tokio::test]
    async fn add_checks_its_input_and_refuses_a_taken_id() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Db::open(dir.path().join("p.db"), Durability::Normal).unwrap());
        let store = SqliteStore::new(db.clone());
        let now = OffsetDateTime::UNIX_EPOCH;
        let (op, key) = add(&store, "anna", "support", "local", now).await.unwrap();
        assert_eq!(op.role, Role::Support);
        let presented = PresentedKey::parse(&key.full).unwrap();
        let stored = store
            .operator_key(&presented.key_id)
            .await
            .unwrap()
            .unwrap();
        assert!(presented.matches_operator(&stored));

        assert!(matches!(
            add(&store, "anna", "admin", "local", now).await,
            Err(AddError::Exists(_))
        ));
        assert!(matches!(
            add(&store, "Anna!", "admin", "local", now).await,
            Err(AddError::Invalid(_))
        ));
        assert!(matches!(
            add(&store, "bert", "plant:", "local", now).await,
            Err(AddError::Invalid(_))
        ));
        assert!(matches!(
            add(&store, "bert", "admin", "Prod", now).await,
            Err(AddError::BadEnv(_))
        ));
        db.close();
    }
}
