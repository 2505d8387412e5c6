//! Codecs: JPEG through libjpeg-turbo's TurboJPEG 3 API (built statically by
//! `turbojpeg-sys`), PNG through the `png` crate. Decoding always yields
//! packed 8-bit RGB; colour management happens in `color`.

use super::RenderError;
use super::probe::{JpegColor, Probe};
use std::ffi::CStr;
use turbojpeg_sys as tj;

/// Packed 8-bit RGB (or CMYK, `channels == 4`, straight from a CMYK JPEG).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Raster {
    pub width: u32,
    pub height: u32,
    pub channels: u8,
    pub data: Vec<u8>,
}

impl Raster {
    pub fn filled(width: u32, height: u32, rgb: [u8; 3]) -> Raster {
        let mut data = Vec::with_capacity(width as usize * height as usize * 3);
        for _ in 0..width as usize * height as usize {
            data.extend_from_slice(&rgb);
        }
        Raster {
            width,
            height,
            channels: 3,
            data,
        }
    }

    pub fn stride(&self) -> usize {
        self.width as usize * usize::from(self.channels)
    }
}

/// A TurboJPEG instance, destroyed on drop.
struct Handle(tj::tjhandle);

impl Handle {
    fn new(kind: tj::TJINIT) -> Result<Handle, RenderError> {
        // SAFETY: tj3Init has no preconditions; a null result is checked.
        let h = unsafe { tj::tj3Init(kind as _) };
        if h.is_null() {
            return Err(RenderError::Internal(
                "libjpeg-turbo did not initialise".into(),
            ));
        }
        Ok(Handle(h))
    }

    fn set(&self, param: tj::TJPARAM, value: i32) -> Result<(), RenderError> {
        // SAFETY: the handle is live for self's lifetime.
        if unsafe { tj::tj3Set(self.0, param as _, value) } != 0 {
            return Err(RenderError::Internal(self.error()));
        }
        Ok(())
    }

    fn get(&self, param: tj::TJPARAM) -> i32 {
        // SAFETY: as above.
        unsafe { tj::tj3Get(self.0, param as _) }
    }

    fn error(&self) -> String {
        // SAFETY: tj3GetErrorStr returns a NUL-terminated static or per-handle buffer.
        unsafe { CStr::from_ptr(tj::tj3GetErrorStr(self.0)) }
            .to_string_lossy()
            .into_owned()
    }

    fn error_is_warning(&self) -> bool {
        // SAFETY: as above.
        unsafe { tj::tj3GetErrorCode(self.0) == tj::TJERR_TJERR_WARNING as i32 }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: created by tj3Init, destroyed once.
        unsafe { tj::tj3Destroy(self.0) }
    }
}

fn imcu_width(subsamp: i32) -> Option<u32> {
    match subsamp {
        0 => Some(8),         // 4:4:4
        1 | 2 => Some(16),    // 4:2:2, 4:2:0
        3 | 4 | 6 => Some(8), // gray, 4:4:0, 4:4:1
        5 => Some(32),        // 4:1:1
        _ => None,
    }
}

/// The part of a decoded image the caller asked for: `raster` holds at
/// least columns `x0..x1` of rows `y0..y1` of the stored image, starting at
/// stored column `raster_x`.
pub struct Decoded {
    pub raster: Raster,
    /// Stored column and row of the raster's first pixel.
    pub origin: (u32, u32),
    pub warnings: Vec<String>,
}

/// Decodes columns `cols` and rows `rows` of a JPEG (plus what the
/// decoder's block alignment adds on the left), refusing more than
/// `max_pixels`. Truncated data is an error, not a grey band.
pub fn decode_jpeg(
    bytes: &[u8],
    probe: &Probe,
    cols: (u32, u32),
    rows: (u32, u32),
    max_pixels: u64,
) -> Result<Decoded, RenderError> {
    let h = Handle::new(tj::TJINIT_TJINIT_DECOMPRESS)?;
    h.set(
        tj::TJPARAM_TJPARAM_MAXPIXELS,
        i32::try_from(max_pixels).unwrap_or(i32::MAX),
    )?;
    // A progressive JPEG with thousands of scans is a known decoder DoS.
    h.set(tj::TJPARAM_TJPARAM_SCANLIMIT, 500)?;
    // SAFETY: the buffer outlives the call; TurboJPEG only reads it.
    if unsafe { tj::tj3DecompressHeader(h.0, bytes.as_ptr(), bytes.len() as _) } != 0 {
        return Err(RenderError::Corrupt(h.error()));
    }
    let (w, hgt) = (
        h.get(tj::TJPARAM_TJPARAM_JPEGWIDTH) as u32,
        h.get(tj::TJPARAM_TJPARAM_JPEGHEIGHT) as u32,
    );
    if (w, hgt) != (probe.width, probe.height) {
        return Err(RenderError::Corrupt(
            "the JPEG header is inconsistent".into(),
        ));
    }
    let cmyk = probe.jpeg_color == Some(JpegColor::Cmyk);
    let (pf, channels) = if cmyk {
        (tj::TJPF_TJPF_CMYK, 4u8)
    } else {
        (tj::TJPF_TJPF_RGB, 3u8)
    };
    let (mut x0, x1) = (cols.0.min(w), cols.1.min(w));
    let (y0, y1) = (rows.0.min(hgt), rows.1.min(hgt));
    match imcu_width(h.get(tj::TJPARAM_TJPARAM_SUBSAMP)) {
        Some(m) => x0 -= x0 % m,
        None => x0 = 0,
    }
    if x1 <= x0 || y1 <= y0 {
        return Err(RenderError::Internal("empty decode region".into()));
    }
    let region = tj::tjregion {
        x: x0 as _,
        y: y0 as _,
        w: (x1 - x0) as _,
        h: (y1 - y0) as _,
    };
    if (x0, y0, x1, y1) != (0, 0, w, hgt) {
        // SAFETY: the header was read; the region is inside the image.
        if unsafe { tj::tj3SetCroppingRegion(h.0, region) } != 0 {
            return Err(RenderError::Internal(h.error()));
        }
    }
    let (rw, rh) = (x1 - x0, y1 - y0);
    let mut data = vec![0u8; rw as usize * rh as usize * usize::from(channels)];
    let pitch = rw as usize * usize::from(channels);
    // SAFETY: `data` holds exactly pitch * rh bytes, the cropped size.
    let rc = unsafe {
        tj::tj3Decompress8(
            h.0,
            bytes.as_ptr(),
            bytes.len() as _,
            data.as_mut_ptr(),
            pitch as _,
            pf as _,
        )
    };
    let mut warnings = Vec::new();
    if rc != 0 {
        let msg = h.error();
        // libjpeg reports a truncated file as a warning and fills the rest
        // with grey: for a print that is a corrupt file.
        if !h.error_is_warning() || msg.contains("Premature end") {
            return Err(RenderError::Corrupt(msg));
        }
        warnings.push(format!("the JPEG decoder warned: {msg}"));
    }
    Ok(Decoded {
        raster: Raster {
            width: rw,
            height: rh,
            channels,
            data,
        },
        origin: (x0, y0),
        warnings,
    })
}

/// Decodes a PNG to 8-bit RGB: palettes and low bit depths expanded, 16-bit
/// reduced with rounding, alpha flattened on white. Returns the profile
/// from iCCP, if any.
pub fn decode_png(bytes: &[u8], max_pixels: u64) -> Result<(Raster, Option<Vec<u8>>), RenderError> {
    let corrupt = |e: png::DecodingError| match e {
        png::DecodingError::LimitsExceeded => RenderError::TooManyPixels {
            width: 0,
            height: 0,
            limit: max_pixels,
        },
        other => RenderError::Corrupt(other.to_string()),
    };
    let limits = png::Limits {
        // The decoder's own buffers: the 16-bit RGBA frame at the pixel limit.
        bytes: usize::try_from(max_pixels.saturating_mul(8)).unwrap_or(usize::MAX),
    };
    let mut decoder = png::Decoder::new_with_limits(std::io::Cursor::new(bytes), limits);
    decoder.set_transformations(png::Transformations::EXPAND);
    let mut reader = decoder.read_info().map_err(corrupt)?;
    let icc = reader.info().icc_profile.as_ref().map(|p| p.to_vec());
    let srgb_chunk = reader.info().srgb.is_some();
    let size = reader
        .output_buffer_size()
        .ok_or(RenderError::TooManyPixels {
            width: 0,
            height: 0,
            limit: max_pixels,
        })?;
    let mut buf = vec![0u8; size];
    let frame = reader.next_frame(&mut buf).map_err(corrupt)?;
    let (w, h) = (frame.width, frame.height);
    let channels = frame.color_type.samples();
    let sixteen = frame.bit_depth == png::BitDepth::Sixteen;
    let n = w as usize * h as usize;
    let mut out = Vec::with_capacity(n * 3);
    // One sample as 16 bits, whatever the depth.
    let sample = |px: usize, c: usize| -> u32 {
        if sixteen {
            let at = (px * channels + c) * 2;
            u32::from(u16::from_be_bytes([buf[at], buf[at + 1]]))
        } else {
            u32::from(buf[px * channels + c]) * 257
        }
    };
    let to8 = |v: u32| ((v * 255 + 32767) / 65535) as u8;
    for px in 0..n {
        let (rgb, alpha) = match channels {
            1 => ([sample(px, 0); 3], 65535),
            2 => ([sample(px, 0); 3], sample(px, 1)),
            3 => ([sample(px, 0), sample(px, 1), sample(px, 2)], 65535),
            _ => ([sample(px, 0), sample(px, 1), sample(px, 2)], sample(px, 3)),
        };
        for v in rgb {
            // Over white: v * a + 65535 * (1 - a), in 16 bits.
            let flat = (v * alpha + 65535 * (65535 - alpha) + 32767) / 65535;
            out.push(to8(flat));
        }
    }
    let icc = if srgb_chunk { None } else { icc };
    Ok((
        Raster {
            width: w,
            height: h,
            channels: 3,
            data: out,
        },
        icc,
    ))
}

/// JPEG encoder settings.
#[derive(Debug, Clone, Copy)]
pub struct JpegOut {
    pub quality: u8,
    /// 4:4:4 when true, else 4:2:0.
    pub full_chroma: bool,
    pub dpi: u32,
}

/// Encodes packed RGB as a baseline JPEG with JFIF density in DPI and the
/// given ICC profile; nothing else (no EXIF, no comments) is written.
pub fn encode_jpeg(raster: &Raster, out: JpegOut, icc: &[u8]) -> Result<Vec<u8>, RenderError> {
    encode_jpeg_with(raster, out, icc, false)
}

/// As [`encode_jpeg`], optionally progressive (for tests that need one).
pub fn encode_jpeg_with(
    raster: &Raster,
    out: JpegOut,
    icc: &[u8],
    progressive: bool,
) -> Result<Vec<u8>, RenderError> {
    let h = Handle::new(tj::TJINIT_TJINIT_COMPRESS)?;
    h.set(tj::TJPARAM_TJPARAM_QUALITY, i32::from(out.quality))?;
    let subsamp = match (raster.channels, out.full_chroma) {
        (1, _) => tj::TJSAMP_TJSAMP_GRAY,
        (4, _) | (_, true) => tj::TJSAMP_TJSAMP_444,
        _ => tj::TJSAMP_TJSAMP_420,
    };
    h.set(tj::TJPARAM_TJPARAM_SUBSAMP, subsamp)?;
    h.set(tj::TJPARAM_TJPARAM_PROGRESSIVE, i32::from(progressive))?;
    h.set(tj::TJPARAM_TJPARAM_DENSITYUNITS, 1)?;
    h.set(tj::TJPARAM_TJPARAM_XDENSITY, out.dpi as i32)?;
    h.set(tj::TJPARAM_TJPARAM_YDENSITY, out.dpi as i32)?;
    if !icc.is_empty() {
        // SAFETY: TurboJPEG copies the profile; it does not write through the pointer.
        if unsafe { tj::tj3SetICCProfile(h.0, icc.as_ptr().cast_mut(), icc.len() as _) } != 0 {
            return Err(RenderError::Internal(h.error()));
        }
    }
    let pf = match raster.channels {
        1 => tj::TJPF_TJPF_GRAY,
        4 => tj::TJPF_TJPF_CMYK,
        _ => tj::TJPF_TJPF_RGB,
    };
    // Encode into one buffer of the worst-case size, which TurboJPEG must
    // not grow (NOREALLOC): untouched capacity costs no memory, while a
    // growing buffer would be copied at every doubling.
    // SAFETY: a pure function of its arguments.
    let worst = unsafe { tj::tj3JPEGBufSize(raster.width as _, raster.height as _, subsamp as _) };
    if worst == 0 {
        return Err(RenderError::Internal(h.error()));
    }
    h.set(tj::TJPARAM_TJPARAM_NOREALLOC, 1)?;
    let mut out: Vec<u8> = Vec::with_capacity(worst as usize);
    let mut buf = out.as_mut_ptr();
    // The room in `buf`; TurboJPEG fails rather than write past it.
    let mut size: tj::size_t = worst;
    // SAFETY: the source holds stride * height bytes; `buf` has `size`
    // bytes of room and TurboJPEG may not reallocate it.
    let rc = unsafe {
        tj::tj3Compress8(
            h.0,
            raster.data.as_ptr(),
            raster.width as _,
            raster.stride() as _,
            raster.height as _,
            pf as _,
            &mut buf,
            &mut size,
        )
    };
    if rc != 0 || buf != out.as_mut_ptr() || size as usize > out.capacity() {
        return Err(RenderError::Internal(h.error()));
    }
    // SAFETY: TurboJPEG initialised the first `size` bytes of `out`.
    unsafe { out.set_len(size as usize) };
    out.shrink_to_fit();
    Ok(out)
}
