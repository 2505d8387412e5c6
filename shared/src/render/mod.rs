//! The render pipeline: a customer's photo in, a print-ready JPEG and an
//! 800 px preview out. No I/O and no AWS: bytes in, bytes out.
//!
//! probe (magic bytes, header, pixel limit) -> plan (orientation, crop or
//! fit, turn to the product, effective DPI) -> decode (only the rows and
//! columns needed) -> colour (ICC/CMYK to sRGB) -> resample (Lanczos3, turn
//! folded in) -> compose (background, canvas wrap) -> encode (JPEG, DPI,
//! sRGB profile, no other metadata) -> preview.

mod codec;
mod color;
pub mod geometry;
pub mod probe;
mod resample;

pub use codec::{JpegOut, Raster, encode_jpeg, encode_jpeg_with};
pub use color::srgb_icc;
pub use geometry::{Rect, Rgb, Sheet, Wrap};

use geometry::Plan;
use std::time::{Duration, Instant};

/// How the photo meets the print's shape: the order's own `Fit`.
pub use crate::domain::order::Fit;

/// Why a photo cannot be printed. Every variant but `Internal` is final:
/// retrying will not help, the customer must be told.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("the file is {detected}, not a JPEG or PNG photo")]
    Unsupported { detected: &'static str },
    #[error("the photo is {width}x{height} pixels, more than the {limit} pixels we can print from")]
    TooManyPixels { width: u32, height: u32, limit: u64 },
    #[error("the file is {bytes} bytes, more than the {limit} bytes we accept")]
    TooLarge { bytes: u64, limit: u64 },
    #[error("the photo file is damaged or incomplete ({0})")]
    Corrupt(String),
    #[error(
        "the photo's resolution is too low for this product ({effective_dpi} dpi; at least {required} dpi are needed)"
    )]
    TooSmall { effective_dpi: u32, required: u32 },
    #[error("{0}")]
    BadCrop(String),
    #[error("internal rendering error: {0}")]
    Internal(String),
}

impl RenderError {
    /// A stable code for the order's hold reason and the API.
    pub fn code(&self) -> &'static str {
        match self {
            RenderError::Unsupported { .. } => "unsupported_format",
            RenderError::TooManyPixels { .. } => "too_many_pixels",
            RenderError::TooLarge { .. } => "file_too_large",
            RenderError::Corrupt(_) => "corrupt_image",
            RenderError::TooSmall { .. } => "resolution_too_low",
            RenderError::BadCrop(_) => "bad_crop",
            RenderError::Internal(_) => "internal",
        }
    }

    pub fn is_permanent(&self) -> bool {
        !matches!(self, RenderError::Internal(_))
    }
}

/// Explicit ceilings for what a source may cost.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_pixels: u64,
    pub max_bytes: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        // 100 MP covers every camera we know; at 3 bytes a pixel the decode
        // stays under 300 MiB.
        Limits {
            max_pixels: 100_000_000,
            max_bytes: 64 * 1024 * 1024,
        }
    }
}

/// What to make of one photo.
#[derive(Debug, Clone)]
pub struct Request {
    pub sheet: Sheet,
    pub fit: Fit,
    /// In the photo as the customer sees it (EXIF orientation applied).
    pub crop: Option<Rect>,
    pub background: Rgb,
    pub limits: Limits,
}

pub const PREVIEW_LONG_SIDE: u32 = 800;
const PRINT_QUALITY: u8 = 95;
const PREVIEW_QUALITY: u8 = 80;

/// A rendered photo.
#[derive(Debug, Clone)]
pub struct Output {
    pub print: Vec<u8>,
    pub print_size: (u32, u32),
    pub preview: Vec<u8>,
    pub preview_size: (u32, u32),
    pub effective_dpi: u32,
    pub warnings: Vec<String>,
    /// Wall time per stage, in order.
    pub timings: Vec<(&'static str, Duration)>,
}

struct Stopwatch {
    last: Instant,
    laps: Vec<(&'static str, Duration)>,
}

impl Stopwatch {
    fn lap(&mut self, stage: &'static str) {
        let now = Instant::now();
        self.laps.push((stage, now - self.last));
        self.last = now;
    }
}

/// Renders one photo for one sheet.
pub fn render(bytes: &[u8], req: &Request) -> Result<Output, RenderError> {
    let mut clock = Stopwatch {
        last: Instant::now(),
        laps: Vec::new(),
    };
    if bytes.len() as u64 > req.limits.max_bytes {
        return Err(RenderError::TooLarge {
            bytes: bytes.len() as u64,
            limit: req.limits.max_bytes,
        });
    }
    let head = probe::probe(bytes, req.limits.max_pixels)?;
    let plan = geometry::plan(
        head.width,
        head.height,
        head.orientation,
        &req.sheet,
        req.fit,
        req.crop,
    )?;
    let mut warnings = Vec::new();
    if plan.effective_dpi < req.sheet.min_dpi {
        warnings.push(format!(
            "low resolution: {} dpi, below the {} dpi recommended for this product",
            plan.effective_dpi, req.sheet.min_dpi
        ));
    }
    clock.lap("probe");

    let (raster, origin, icc) = decode(bytes, &head, &plan, req.limits.max_pixels, &mut warnings)?;
    clock.lap("decode");
    let (raster, colour_warning) = color::to_srgb(raster, icc.as_deref(), head.adobe)?;
    warnings.extend(colour_warning);
    clock.lap("colour");

    let region = Rect {
        x: plan.source.x - origin.0,
        y: plan.source.y - origin.1,
        ..plan.source
    };
    let photo = resample::resample(raster, region, plan.orient, plan.out_w, plan.out_h)?;
    clock.lap("resample");
    let sheet = compose(photo, &plan, req);
    clock.lap("compose");

    let print = codec::encode_jpeg(
        &sheet,
        JpegOut {
            quality: PRINT_QUALITY,
            full_chroma: true,
            dpi: req.sheet.dpi,
        },
        srgb_icc(),
    )?;
    clock.lap("encode");
    let preview_size = preview_size(sheet.width, sheet.height);
    let small = resample::resize(&sheet, preview_size.0, preview_size.1)?;
    let preview = codec::encode_jpeg(
        &small,
        JpegOut {
            quality: PREVIEW_QUALITY,
            full_chroma: false,
            dpi: 72,
        },
        srgb_icc(),
    )?;
    clock.lap("preview");
    Ok(Output {
        print,
        print_size: (sheet.width, sheet.height),
        preview,
        preview_size,
        effective_dpi: plan.effective_dpi,
        warnings,
        timings: clock.laps,
    })
}

/// Decodes a whole JPEG or PNG to sRGB pixels as stored (no orientation):
/// for checking outputs, and for tools.
pub fn decode_rgb(bytes: &[u8], limits: Limits) -> Result<Raster, RenderError> {
    let head = probe::probe(bytes, limits.max_pixels)?;
    let (raster, icc) = match head.format {
        probe::Format::Jpeg => {
            let d = codec::decode_jpeg(
                bytes,
                &head,
                (0, head.width),
                (0, head.height),
                limits.max_pixels,
            )?;
            (d.raster, head.icc.clone())
        }
        probe::Format::Png => codec::decode_png(bytes, limits.max_pixels)?,
    };
    Ok(color::to_srgb(raster, icc.as_deref(), head.adobe)?.0)
}

/// 800 px on the long side, the aspect kept.
pub fn preview_size(w: u32, h: u32) -> (u32, u32) {
    let long = w.max(h);
    let scale = |v: u32| {
        ((f64::from(v) * f64::from(PREVIEW_LONG_SIDE) / f64::from(long)).round() as u32).max(1)
    };
    (scale(w), scale(h))
}

type Decoded = (Raster, (u32, u32), Option<Vec<u8>>);

fn decode(
    bytes: &[u8],
    head: &probe::Probe,
    plan: &Plan,
    max_pixels: u64,
    warnings: &mut Vec<String>,
) -> Result<Decoded, RenderError> {
    match head.format {
        probe::Format::Jpeg => {
            // Only the rows and columns the resampler reads.
            let (rw, rh) = if plan.orient.swap {
                (plan.out_h, plan.out_w)
            } else {
                (plan.out_w, plan.out_h)
            };
            let s = plan.source;
            let mx = resample::margin(s.w, rw);
            let my = resample::margin(s.h, rh);
            let decoded = codec::decode_jpeg(
                bytes,
                head,
                (s.x.saturating_sub(mx), s.x + s.w + mx),
                (s.y.saturating_sub(my), s.y + s.h + my),
                max_pixels,
            )?;
            warnings.extend(decoded.warnings);
            Ok((decoded.raster, decoded.origin, head.icc.clone()))
        }
        probe::Format::Png => {
            // The decoder's own limit names no size: give it the header's.
            let (raster, icc) = codec::decode_png(bytes, max_pixels).map_err(|e| match e {
                RenderError::TooManyPixels { limit, .. } => RenderError::TooManyPixels {
                    width: head.width,
                    height: head.height,
                    limit,
                },
                other => other,
            })?;
            if (raster.width, raster.height) != (head.width, head.height) {
                return Err(RenderError::Corrupt(
                    "the PNG header is inconsistent".into(),
                ));
            }
            Ok((raster, (0, 0), icc))
        }
    }
}

/// Puts the resampled photo on its sheet: background, position, canvas wrap.
fn compose(photo: Raster, plan: &Plan, req: &Request) -> Raster {
    let sheet = &req.sheet;
    if plan.at == (0, 0) && (photo.width, photo.height) == (sheet.width, sheet.height) {
        return photo;
    }
    let mut out = Raster::filled(sheet.width, sheet.height, req.background.0);
    let (w, stride) = (photo.width as usize * 3, sheet.width as usize * 3);
    for (y, row) in photo.data.chunks_exact(w).enumerate() {
        let at = (plan.at.1 as usize + y) * stride + plan.at.0 as usize * 3;
        out.data[at..at + w].copy_from_slice(row);
    }
    if let Some((edge, wrap)) = sheet.wrap {
        wrap_edges(&mut out, edge as usize, wrap);
    }
    out
}

/// Fills the `edge` pixels around the front: mirrored from the front's own
/// edge (so the picture does not lose its border to the frame's sides), or
/// a plain colour.
fn wrap_edges(img: &mut Raster, edge: usize, wrap: Wrap) {
    let (w, h) = (img.width as usize, img.height as usize);
    let stride = w * 3;
    let data = &mut img.data;
    // Left and right, on the front's rows.
    for y in edge..h - edge {
        let row = &mut data[y * stride..(y + 1) * stride];
        for k in 0..edge {
            let (l, r) = (edge - 1 - k, w - edge + k);
            match wrap {
                Wrap::Mirror => {
                    row.copy_within((edge + k) * 3..(edge + k + 1) * 3, l * 3);
                    row.copy_within((w - edge - 1 - k) * 3..(w - edge - k) * 3, r * 3);
                }
                Wrap::Colour(rgb) => {
                    row[l * 3..l * 3 + 3].copy_from_slice(&rgb.0);
                    row[r * 3..r * 3 + 3].copy_from_slice(&rgb.0);
                }
            }
        }
    }
    // Top and bottom, whole rows (the corners mirror the mirrored sides).
    for k in 0..edge {
        let (top, from_top) = (edge - 1 - k, edge + k);
        let (bottom, from_bottom) = (h - edge + k, h - edge - 1 - k);
        for (dst, src) in [(top, from_top), (bottom, from_bottom)] {
            match wrap {
                Wrap::Mirror => data.copy_within(src * stride..(src + 1) * stride, dst * stride),
                Wrap::Colour(rgb) => {
                    for px in data[dst * stride..(dst + 1) * stride].chunks_exact_mut(3) {
                        px.copy_from_slice(&rgb.0);
                    }
                }
            }
        }
    }
}
