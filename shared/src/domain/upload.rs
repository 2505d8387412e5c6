//! Uploads: the ids `POST /v1/uploads` hands out and where their photos
//! are stored. An upload is stored under the uploading tenant's prefix, and
//! an order may only use its own tenant's uploads: the key is built from
//! the order's tenant, never taken from a client, and checked again before
//! a photo is read.

use super::tenant::TenantId;

/// `upl_` and 32 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UploadId(String);

/// A string that is not an upload id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("is not an upload id from POST /v1/uploads")]
pub struct InvalidUploadId;

impl UploadId {
    /// A fresh, unguessable id (a random UUID).
    pub fn new() -> UploadId {
        UploadId(format!("upl_{}", uuid::Uuid::new_v4().simple()))
    }

    pub fn parse(raw: &str) -> Result<UploadId, InvalidUploadId> {
        if upload_id_valid(raw) {
            Ok(UploadId(raw.to_string()))
        } else {
            Err(InvalidUploadId)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Where `tenant`'s upload of this id is stored.
    pub fn key(&self, tenant: &TenantId) -> String {
        upload_key(tenant, &self.0)
    }
}

impl Default for UploadId {
    fn default() -> Self {
        UploadId::new()
    }
}

impl std::fmt::Display for UploadId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<UploadId> for String {
    fn from(id: UploadId) -> String {
        id.0
    }
}

/// Whether `raw` has the shape of an upload id (`upl_` and 32 lowercase
/// hex digits).
pub fn upload_id_valid(raw: &str) -> bool {
    raw.strip_prefix("upl_").is_some_and(|hex| {
        hex.len() == 32
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// The blob key of an upload: always under the uploading tenant's prefix,
/// so an order can only ever point at its own tenant's photos.
pub fn upload_key(tenant: &TenantId, upload_id: &str) -> String {
    format!("uploads/{tenant}/{upload_id}")
}

/// Whether an order of `tenant` may use the upload stored at `key`: only
/// one under the tenant's own prefix.
pub fn tenant_may_use(tenant: &TenantId, key: &str) -> bool {
    key.strip_prefix("uploads/")
        .and_then(|rest| rest.strip_prefix(tenant.as_str()))
        .is_some_and(|rest| rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked_and_keys_are_under_the_tenant() {
        let id = UploadId::new();
        assert!(upload_id_valid(id.as_str()), "{id}");
        assert_eq!(UploadId::parse(id.as_str()), Ok(id.clone()));
        for bad in [
            "",
            "upl_",
            "../etc/passwd",
            "upl_0123456789ABCDEF0123456789abcdef",
            "upl_0123456789abcdef0123456789abcde",
            "upl_0123456789abcdef0123456789abcdef0",
        ] {
            assert_eq!(UploadId::parse(bad), Err(InvalidUploadId), "{bad}");
        }
        let tenant = TenantId::parse("demo-brand").unwrap();
        let key = id.key(&tenant);
        assert_eq!(key, format!("uploads/demo-brand/{id}"));
        assert!(tenant_may_use(&tenant, &key));
        let other = TenantId::parse("demo").unwrap();
        assert!(!tenant_may_use(&other, &key), "a prefix of the tenant id");
        assert!(!tenant_may_use(&other, &format!("prints/demo/{id}")));
        assert!(tenant_may_use(&other, &upload_key(&other, id.as_str())));
    }
}
