//! API key authentication. The tenant comes from the key alone. Verified
//! keys are cached for a minute per cold start (a revoked key stops working
//! within that minute); unknown keys are not cached.

use crate::error::ApiError;
use axum::http::HeaderMap;
use printworks::domain::tenant::{ApiKeyRecord, KeyKind, PresentedKey, Tenant};
use printworks::ports::TenantStore;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CACHE_TTL: Duration = Duration::from_secs(60);
const CACHE_MAX: usize = 10_000;

#[derive(Default)]
pub struct KeyCache(Mutex<HashMap<String, (Instant, Verified)>>);

/// A stored key and its tenant.
type Verified = Arc<(ApiKeyRecord, Tenant)>;

impl KeyCache {
    fn get(&self, key_id: &str) -> Option<Verified> {
        let map = self.0.lock().ok()?;
        map.get(key_id)
            .filter(|(at, _)| at.elapsed() < CACHE_TTL)
            .map(|(_, v)| v.clone())
    }

    fn put(&self, key_id: &str, value: Verified) {
        if let Ok(mut map) = self.0.lock() {
            if map.len() >= CACHE_MAX {
                map.retain(|_, (at, _)| at.elapsed() < CACHE_TTL);
                if map.len() >= CACHE_MAX {
                    map.clear();
                }
            }
            map.insert(key_id.to_string(), (Instant::now(), value));
        }
    }
}

/// The tenant of the request's `Authorization: Bearer` key, or 401.
pub async fn authenticate(
    headers: &HeaderMap,
    env: &str,
    store: &dyn TenantStore,
    cache: &KeyCache,
) -> Result<Tenant, ApiError> {
    Ok(caller(headers, env, store, cache).await?.tenant)
}

/// Who calls: the tenant, and the id of the key it used (what a change
/// records as made by; never the secret).
pub struct Caller {
    pub tenant: Tenant,
    pub key_id: String,
}

/// The tenant and key id of the request's `Authorization: Bearer` key, or 401.
pub async fn caller(
    headers: &HeaderMap,
    env: &str,
    store: &dyn TenantStore,
    cache: &KeyCache,
) -> Result<Caller, ApiError> {
    let raw = crate::request::bearer(headers).ok_or_else(ApiError::unauthorized)?;
    let presented = PresentedKey::parse(raw).map_err(|_| ApiError::unauthorized())?;
    if presented.kind != KeyKind::Tenant {
        return Err(ApiError::new(
            http::StatusCode::UNAUTHORIZED,
            "unauthorized",
            "an operator key (pwop_...) is not a tenant's API key: operators use /v1/ops/...",
        ));
    }
    if presented.env != env {
        return Err(ApiError::unauthorized());
    }
    let entry = match cache.get(&presented.key_id) {
        Some(entry) => entry,
        None => {
            let record = store
                .api_key(&presented.key_id)
                .await?
                .ok_or_else(ApiError::unauthorized)?;
            let tenant = store
                .tenant(&record.tenant_id)
                .await?
                .ok_or_else(ApiError::unauthorized)?;
            let entry = Arc::new((record, tenant));
            if presented.matches(&entry.0) {
                cache.put(&presented.key_id, entry.clone());
            }
            entry
        }
    };
    if presented.matches(&entry.0) {
        Ok(Caller {
            tenant: entry.1.clone(),
            key_id: entry.0.key_id.clone(),
        })
    } else {
        Err(ApiError::unauthorized())
    }
}
