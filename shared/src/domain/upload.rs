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

/// The photo formats printworks prints, told by their magic bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhotoFormat {
    Jpeg,
    Png,
}

/// The format of a file from its first bytes (16 are enough), or what
/// it looks like instead (`"a PDF document"`), for the customer's message.
pub fn sniff(head: &[u8]) -> Result<PhotoFormat, &'static str> {
    if head.starts_with(JPEG_MAGIC) {
        Ok(PhotoFormat::Jpeg)
    } else if head.starts_with(PNG_MAGIC) {
        Ok(PhotoFormat::Png)
    } else {
        Err(looks_like(head))
    }
}

/// How many bytes [`sniff`] and [`looks_like`] read.
pub const SNIFF_BYTES: usize = 512;

const JPEG_MAGIC: &[u8] = &[0xFF, 0xD8, 0xFF];
const PNG_MAGIC: &[u8] = &[0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];

/// Names what a refused file looks like, for the customer's message.
pub fn looks_like(bytes: &[u8]) -> &'static str {
    let head = &bytes[..bytes.len().min(512)];
    let text = String::from_utf8_lossy(head).to_ascii_lowercase();
    let text = text.trim_start_matches('\u{feff}').trim_start();
    if head.starts_with(b"%!PS") || head.starts_with(&[0xC5, 0xD0, 0xD3, 0xC6]) {
        "a PostScript file"
    } else if head.starts_with(b"%PDF") {
        "a PDF document"
    } else if text.starts_with("<svg") || (text.starts_with("<?xml") && text.contains("<svg")) {
        "an SVG image"
    } else if text.starts_with('<') {
        "an XML or HTML document"
    } else if head.starts_with(b"GIF8") {
        "a GIF image"
    } else if head.len() >= 12 && &head[..4] == b"RIFF" && &head[8..12] == b"WEBP" {
        "a WebP image"
    } else if head.len() >= 12 && &head[4..8] == b"ftyp" {
        "a HEIC/AVIF image"
    } else if head.starts_with(b"II*\0") || head.starts_with(b"MM\0*") {
        "a TIFF image"
    } else if head.starts_with(b"BM") {
        "a BMP image"
    } else if head.is_empty() {
        "an empty file"
    } else {
        "an unknown file type"
    }
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
