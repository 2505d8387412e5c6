//! Demo tenants for a fresh data directory, their sample photo, the example
//! order the banner prints, and `printworks tenant add`.

use printworks::domain::locale::{CountryCode, Locale};
use printworks::domain::money::Currency;
use printworks::domain::tenant::{PaymentSetup, Tenant, TenantId, TenantKind, mint_api_key};
use printworks::domain::upload::upload_key;
use printworks::ports::{BlobStore, StoreError, TenantStore};
use printworks::render::{JpegOut, Raster, encode_jpeg};

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
                merchant_account: None,
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

/// The upload id of the sample photo each demo tenant has from its first
/// start on (a real upload, under the tenant's own prefix), so the example
/// order needs no network and no file of the user's.
pub const SAMPLE_UPLOAD_ID: &str = "upl_5a3b1e00000000000000000000000000";

/// The sample photo's size: about 200 dpi on a 30x40 cm poster (150 is the
/// products' minimum), so the example poster renders without a warning
/// that would stop it.
pub const SAMPLE_PHOTO: (u32, u32) = (2400, 3200);

/// Stores the sample photo as `tenant`'s upload [`SAMPLE_UPLOAD_ID`], as a
/// presigned `PUT` would have stored it.
pub async fn add_sample_photo(uploads: &dyn BlobStore, tenant: &TenantId) -> anyhow::Result<()> {
    let jpeg = photo(SAMPLE_PHOTO.0, SAMPLE_PHOTO.1)?;
    uploads
        .put(&upload_key(tenant, SAMPLE_UPLOAD_ID), jpeg, "image/jpeg")
        .await?;
    Ok(())
}

/// A `w` x `h` JPEG: a colour gradient with a few bands, so the print
/// files show the crop.
pub fn photo(w: u32, h: u32) -> anyhow::Result<Vec<u8>> {
    let mut data = Vec::with_capacity((w * h * 3) as usize);
    for y in 0..h {
        for x in 0..w {
            let band = if (x / 200 + y / 200) % 2 == 0 { 0 } else { 40 };
            data.extend_from_slice(&[(x * 255 / w) as u8, (y * 255 / h) as u8, (100 + band) as u8]);
        }
    }
    let raster = Raster {
        width: w,
        height: h,
        channels: 3,
        data,
    };
    let out = JpegOut {
        quality: 90,
        full_chroma: false,
        dpi: 72,
    };
    Ok(encode_jpeg(&raster, out, &[])?)
}

/// The body of the example order the banner prints: a 30x40 poster of the
/// sample photo, shipped to Cologne. A demo-b2b order is paid on
/// placement, so it goes on to render, a plant, and ships.
pub fn example_order() -> serde_json::Value {
    serde_json::json!({
        "locale": "de",
        "currency": "EUR",
        "customer": {"name": "Erika Mustermann", "email": "erika@example.com"},
        "shipping": {"method": "standard", "address": {
            "name": "Erika Mustermann", "line1": "Heidestr. 17",
            "postal_code": "51147", "city": "Köln", "country": "DE"}},
        "items": [{"sku": "poster-30x40", "quantity": 1, "options": {"finish": "matte"},
                   "images": [{"upload_id": SAMPLE_UPLOAD_ID}]}]
    })
}

/// The example request the banner prints: a `curl` that places
/// [`example_order`] with `key`, then the one that reads it back.
pub fn example_request(base: &str, key: &str) -> String {
    let body = serde_json::to_string_pretty(&example_order())
        .expect("the example order is JSON")
        .replace('\'', "'\\''");
    format!(
        r#"curl -s -X POST {base}/v1/orders \
  -H 'Authorization: Bearer {key}' \
  -H 'Content-Type: application/json' \
  -H "Idempotency-Key: $(date +%s%N)" \
  -d '{body}'

then follow it until it ships (GET the order's id from the answer):
curl -s {base}/v1/orders/ORDER_ID -H 'Authorization: Bearer {key}'"#
    )
}
