//! The front door: what a file is, how big it says it is, and its metadata,
//! read from the header only. Nothing here decodes a pixel or allocates in
//! proportion to the image's claimed size.

use super::RenderError;
use crate::domain::upload::{PhotoFormat, sniff};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Jpeg,
    Png,
}

/// How the stored pixels must be turned to be shown as the customer saw
/// them: the EXIF orientation, 1..=8 (1 = as stored).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Orientation(pub u8);

impl Orientation {
    pub const UPRIGHT: Orientation = Orientation(1);
}

/// JPEG colour models the decoder distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JpegColor {
    Gray,
    /// YCbCr or RGB: decoded to RGB.
    Rgb,
    /// CMYK or YCCK: decoded to CMYK, then converted.
    Cmyk,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub format: Format,
    /// Stored (not oriented) size.
    pub width: u32,
    pub height: u32,
    pub orientation: Orientation,
    /// The embedded ICC profile, reassembled (JPEG) or inflated (PNG: filled
    /// in by the PNG decoder, which owns the zlib stream).
    pub icc: Option<Vec<u8>>,
    pub progressive: bool,
    /// JPEG only.
    pub jpeg_color: Option<JpegColor>,
    /// JPEG: an Adobe APP14 marker was present (CMYK values are stored
    /// inverted, as Photoshop writes them).
    pub adobe: bool,
}

/// Sniffs the format by magic bytes and reads the header. Refuses anything
/// that is not JPEG or PNG, and any image over `max_pixels`.
pub fn probe(bytes: &[u8], max_pixels: u64) -> Result<Probe, RenderError> {
    let probe = match sniff(bytes) {
        Ok(PhotoFormat::Jpeg) => jpeg(bytes, max_pixels)?,
        Ok(PhotoFormat::Png) => png(bytes)?,
        Err(detected) => return Err(RenderError::Unsupported { detected }),
    };
    if probe.width == 0 || probe.height == 0 {
        return Err(RenderError::Corrupt("the image has no pixels".into()));
    }
    let pixels = u64::from(probe.width) * u64::from(probe.height);
    if pixels > max_pixels {
        return Err(RenderError::TooManyPixels {
            width: probe.width,
            height: probe.height,
            limit: max_pixels,
        });
    }
    Ok(probe)
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn truncated() -> RenderError {
    RenderError::Corrupt("the file ends inside its header".into())
}

/// Walks the JPEG marker segments up to the first scan.
fn jpeg(bytes: &[u8], max_pixels: u64) -> Result<Probe, RenderError> {
    let mut at = 2;
    let mut probe = Probe {
        format: Format::Jpeg,
        width: 0,
        height: 0,
        orientation: Orientation::UPRIGHT,
        icc: None,
        progressive: false,
        jpeg_color: None,
        adobe: false,
    };
    let mut icc_chunks: Vec<(u8, &[u8])> = Vec::new();
    let mut icc_count = 0u8;
    let mut seen_frame = false;
    let mut components = 0u8;
    let mut component_ids = [0u8; 4];
    loop {
        // Markers may be padded with any number of 0xFF bytes.
        while bytes.get(at) == Some(&0xFF) && bytes.get(at + 1) == Some(&0xFF) {
            at += 1;
        }
        if bytes.get(at) != Some(&0xFF) {
            return Err(if at >= bytes.len() {
                truncated()
            } else {
                RenderError::Corrupt("a JPEG marker was expected".into())
            });
        }
        let marker = *bytes.get(at + 1).ok_or_else(truncated)?;
        at += 2;
        match marker {
            // Standalone markers without a length.
            0x01 | 0xD0..=0xD7 => continue,
            0xD9 => return Err(RenderError::Corrupt("the JPEG has no image data".into())),
            _ => {}
        }
        let len = usize::from(be16(bytes, at).ok_or_else(truncated)?);
        if len < 2 {
            return Err(RenderError::Corrupt("a JPEG segment is too short".into()));
        }
        let seg = bytes.get(at + 2..at + len).ok_or_else(truncated)?;
        match marker {
            0xC0..=0xCF if marker != 0xC4 && marker != 0xC8 && marker != 0xCC => {
                if !matches!(marker, 0xC0..=0xC2) {
                    return Err(RenderError::Unsupported {
                        detected: "a JPEG with an unusual coding (lossless, hierarchical or arithmetic)",
                    });
                }
                if seen_frame {
                    return Err(RenderError::Corrupt(
                        "the JPEG has two frame headers".into(),
                    ));
                }
                seen_frame = true;
                let precision = *seg.first().ok_or_else(truncated)?;
                if precision != 8 {
                    return Err(RenderError::Unsupported {
                        detected: "a 12-bit JPEG",
                    });
                }
                probe.height = u32::from(be16(seg, 1).ok_or_else(truncated)?);
                probe.width = u32::from(be16(seg, 3).ok_or_else(truncated)?);
                // Refuse at once: nothing after this header is read.
                if u64::from(probe.width) * u64::from(probe.height) > max_pixels {
                    return Err(RenderError::TooManyPixels {
                        width: probe.width,
                        height: probe.height,
                        limit: max_pixels,
                    });
                }
                components = *seg.get(5).ok_or_else(truncated)?;
                for (i, id) in component_ids
                    .iter_mut()
                    .enumerate()
                    .take(usize::from(components).min(4))
                {
                    *id = *seg.get(6 + 3 * i).ok_or_else(truncated)?;
                }
                probe.progressive = marker == 0xC2;
            }
            0xE1 if seg.starts_with(b"Exif\0\0") => {
                if let Some(o) = exif_orientation(&seg[6..]) {
                    probe.orientation = o;
                }
            }
            0xE2 if seg.starts_with(b"ICC_PROFILE\0") && seg.len() >= 14 => {
                let (seq, count) = (seg[12], seg[13]);
                icc_count = count;
                icc_chunks.push((seq, &seg[14..]));
            }
            0xEE if seg.starts_with(b"Adobe") => probe.adobe = true,
            0xDA => break,
            _ => {}
        }
        at += len;
    }
    if !seen_frame {
        return Err(RenderError::Corrupt("the JPEG has no frame header".into()));
    }
    probe.jpeg_color = Some(match components {
        1 => JpegColor::Gray,
        3 => JpegColor::Rgb,
        4 => JpegColor::Cmyk,
        n => {
            return Err(RenderError::Corrupt(format!(
                "a JPEG with {n} colour components"
            )));
        }
    });
    // Chunks are numbered 1..=count; a profile with a chunk missing is dropped.
    if !icc_chunks.is_empty() {
        icc_chunks.sort_by_key(|(seq, _)| *seq);
        let complete = icc_chunks.len() == usize::from(icc_count)
            && icc_chunks
                .iter()
                .enumerate()
                .all(|(i, (seq, _))| usize::from(*seq) == i + 1);
        if complete {
            probe.icc = Some(
                icc_chunks
                    .iter()
                    .flat_map(|(_, c)| c.iter().copied())
                    .collect(),
            );
        }
    }
    Ok(probe)
}

/// Reads IHDR (always the first chunk) and, up to the first IDAT, an eXIf
/// chunk. The iCCP profile is inflated by the decoder.
fn png(bytes: &[u8]) -> Result<Probe, RenderError> {
    let mut at = 8;
    let len = be32(bytes, at).ok_or_else(truncated)? as usize;
    if bytes.get(at + 4..at + 8) != Some(b"IHDR") || len != 13 {
        return Err(RenderError::Corrupt(
            "the PNG does not start with IHDR".into(),
        ));
    }
    let ihdr = bytes.get(at + 8..at + 8 + 13).ok_or_else(truncated)?;
    let width = be32(ihdr, 0).ok_or_else(truncated)?;
    let height = be32(ihdr, 4).ok_or_else(truncated)?;
    let mut probe = Probe {
        format: Format::Png,
        width,
        height,
        orientation: Orientation::UPRIGHT,
        icc: None,
        progressive: ihdr[12] == 1,
        jpeg_color: None,
        adobe: false,
    };
    at += 12 + len;
    while let (Some(len), Some(kind)) = (be32(bytes, at), bytes.get(at + 4..at + 8)) {
        let len = len as usize;
        match kind {
            b"IDAT" | b"IEND" => break,
            b"eXIf" => {
                if let Some(o) = bytes.get(at + 8..at + 8 + len).and_then(exif_orientation) {
                    probe.orientation = o;
                }
            }
            _ => {}
        }
        at = at.saturating_add(12).saturating_add(len);
    }
    Ok(probe)
}

/// The orientation tag (0x0112) of IFD0 of a TIFF-structured EXIF block.
pub fn exif_orientation(tiff: &[u8]) -> Option<Orientation> {
    let big = match tiff.get(..4)? {
        b"MM\0*" => true,
        b"II*\0" => false,
        _ => return None,
    };
    let u16_at = |at: usize| -> Option<u16> {
        let b: [u8; 2] = tiff.get(at..at + 2)?.try_into().ok()?;
        Some(if big {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        })
    };
    let u32_at = |at: usize| -> Option<u32> {
        let b: [u8; 4] = tiff.get(at..at + 4)?.try_into().ok()?;
        Some(if big {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        })
    };
    let ifd = u32_at(4)? as usize;
    let entries = usize::from(u16_at(ifd)?);
    (0..entries.min(512)).find_map(|i| {
        let entry = ifd + 2 + 12 * i;
        // Tag 0x0112, type SHORT, count 1: the value sits in the entry.
        (u16_at(entry)? == 0x0112 && u16_at(entry + 2)? == 3)
            .then(|| u16_at(entry + 8))
            .flatten()
            .and_then(|v| u8::try_from(v).ok())
            .filter(|v| (1..=8).contains(v))
            .map(Orientation)
    })
}
