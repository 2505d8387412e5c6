//! The SQLite `OperatorStore`: tables `operators` and `operator_keys`
//! (apart from the tenants' `api_keys`: an operator key is never looked up
//! as a tenant's).

use super::db::{json_err, sql};
use super::store::SqliteStore;
use crate::domain::operator::{Operator, OperatorId, OperatorKeyRecord};
use crate::ports::{OperatorStore, StoreError};
use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};

#[async_trait]
impl OperatorStore for SqliteStore {
    async fn operator_key(&self, key_id: &str) -> Result<Option<OperatorKeyRecord>, StoreError> {
        let key_id = key_id.to_string();
        let doc: Option<String> = self
            .db()
            .read(move |c| {
                c.query_row(
                    "SELECT doc FROM operator_keys WHERE key_id = ?1",
                    [key_id],
                    |r| r.get(0),
                )
                .optional()
                .map_err(sql)
            })
            .await?;
        doc.map(|d| serde_json::from_str(&d).map_err(json_err))
            .transpose()
    }

    async fn operator(&self, id: &OperatorId) -> Result<Option<Operator>, StoreError> {
        let id = id.as_str().to_string();
        let doc: Option<String> = self
            .db()
            .read(move |c| {
                c.query_row("SELECT doc FROM operators WHERE id = ?1", [id], |r| {
                    r.get(0)
                })
                .optional()
                .map_err(sql)
            })
            .await?;
        doc.map(|d| serde_json::from_str(&d).map_err(json_err))
            .transpose()
    }

    async fn add_operator(
        &self,
        operator: &Operator,
        key: &OperatorKeyRecord,
    ) -> Result<(), StoreError> {
        let operator_doc = serde_json::to_string(operator).map_err(json_err)?;
        let key_doc = serde_json::to_string(key).map_err(json_err)?;
        let id = operator.id.as_str().to_string();
        let key_id = key.key_id.clone();
        self.db()
            .write(move |c| {
                let added = c
                    .execute(
                        "INSERT INTO operators (id, doc) VALUES (?1, ?2) ON CONFLICT(id) DO NOTHING",
                        params![id, operator_doc],
                    )
                    .map_err(sql)?;
                if added == 0 {
                    return Err(StoreError::Conflict);
                }
                c.execute(
                    "INSERT INTO operator_keys (key_id, operator_id, doc) VALUES (?1, ?2, ?3)",
                    params![key_id, id, key_doc],
                )
                .map_err(sql)?;
                Ok(())
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::local::db::{Db, Durability};
    use crate::domain::operator::{Role, mint_operator_key};
    use crate::domain::tenant::PresentedKey;
    use crate::ports::TenantStore;
    use std::sync::Arc;
    use time::OffsetDateTime;

    #[tokio::test]
    async fn an_operator_is_added_once_and_found_by_its_key_only_as_an_operator() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Db::open(dir.path().join("p.db"), Durability::Normal).unwrap());
        let store = SqliteStore::new(db.clone());
        let id = OperatorId::parse("anna").unwrap();
        let operator = Operator {
            id: id.clone(),
            role: Role::Plant("muc".into()),
            created_at: OffsetDateTime::UNIX_EPOCH,
        };
        let key = mint_operator_key("local", &id);
        store.add_operator(&operator, &key.record).await.unwrap();

        let presented = PresentedKey::parse(&key.full).unwrap();
        let record = store
            .operator_key(&presented.key_id)
            .await
            .unwrap()
            .unwrap();
        assert!(presented.matches_operator(&record));
        assert_eq!(
            store.operator(&record.operator_id).await.unwrap(),
            Some(operator.clone())
        );
        assert!(
            store.api_key(&presented.key_id).await.unwrap().is_none(),
            "an operator key is not a tenant's"
        );

        // The same id again, with another key: refused, and that key not kept.
        let again = mint_operator_key("local", &id);
        let second = Operator {
            role: Role::Admin,
            ..operator.clone()
        };
        assert!(matches!(
            store.add_operator(&second, &again.record).await,
            Err(StoreError::Conflict)
        ));
        assert!(
            store
                .operator_key(&again.record.key_id)
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(store.operator(&id).await.unwrap(), Some(operator));
        db.close();
    }
}
