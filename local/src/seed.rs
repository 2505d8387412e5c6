//! Demo tenants for a fresh data directory, and `printworks tenant add`.

use printworks::domain::locale::{CountryCode, Locale};
use printworks::domain::money::Currency;
use printworks::domain::tenant::{PaymentSetup, Tenant, TenantId, TenantKind, mint_api_key};
use printworks::ports::{StoreError, TenantStore};

/// A tenant created here, with its key (shown once).
#[derive(Debug, Clone)]
pub struct CreatedTenant {
    pub tenant: Tenant,
    pub api_key: String,
}

/// Stores `tenant` and a new key for it; returns the key's full text.
pub async fn add_tenant(
    store: &dyn TenantStore,
    env: &str,
    tenant: Tenant,
) -> Result<CreatedTenant, StoreError> {
    tenant
        .check()
        .map_err(|e| StoreError::Unexpected(e.into()))?;
    store.put_tenant(&tenant).await?;
    let key = mint_api_key(env, &tenant.id);
    store.put_api_key(&key.record).await?;
    Ok(CreatedTenant {
        tenant,
        api_key: key.full,
    })
}

fn id(raw: &str) -> TenantId {
    TenantId::parse(raw).expect("demo tenant ids are valid")
}

/// The demo brand (B2C, pays through a provider) and the demo B2B tenant.
pub fn demo_tenants() -> Vec<Tenant> {
    vec![
        Tenant {
            id: id("demo-brand"),
            name: "Demo Posters".into(),
            kind: TenantKind::B2c,
            brand: "demo-posters".into(),
            countries: CountryCode::ALL.to_vec(),
            currencies: vec![Currency::Eur, Currency::Chf],
            default_locale: Locale::De,
            payment: PaymentSetup::Provider {
                provider: "stripe".into(),
            },
            notifications: Default::default(),
        },
        Tenant {
            id: id("demo-b2b"),
            name: "Demo B2B GmbH".into(),
            kind: TenantKind::B2b,
            brand: "demo-b2b".into(),
            countries: vec![CountryCode::DE, CountryCode::AT, CountryCode::CH],
            currencies: vec![Currency::Eur, Currency::Chf],
            default_locale: Locale::De,
            payment: PaymentSetup::Invoice,
            notifications: Default::default(),
        },
    ]
}
