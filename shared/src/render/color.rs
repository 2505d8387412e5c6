//! Colour: everything becomes sRGB. Embedded ICC profiles (Adobe RGB,
//! Display P3, CMYK press profiles, ...) go through Little CMS 2; a CMYK
//! JPEG without a profile uses the naive complement formula.

use super::RenderError;
use super::codec::Raster;
use lcms2::{ColorSpaceSignature, Intent, PixelFormat, Profile, Transform};
use std::sync::OnceLock;

/// The sRGB profile embedded in every output, serialised once.
pub fn srgb_icc() -> &'static [u8] {
    static ICC: OnceLock<Vec<u8>> = OnceLock::new();
    ICC.get_or_init(|| Profile::new_srgb().icc().unwrap_or_default())
}

/// Whether a profile is (a copy of) sRGB, so the transform can be skipped.
fn is_srgb(profile: &Profile) -> bool {
    profile
        .info(lcms2::InfoType::Description, lcms2::Locale::none())
        .is_some_and(|d| d.to_ascii_lowercase().contains("srgb"))
}

/// Converts `raster` to sRGB in place (RGB) or into a new RGB raster
/// (CMYK). `adobe_inverted`: CMYK values are stored inverted (Photoshop).
/// Returns a warning when a profile could not be used.
pub fn to_srgb(
    raster: Raster,
    icc: Option<&[u8]>,
    adobe_inverted: bool,
) -> Result<(Raster, Option<String>), RenderError> {
    let mut warning = None;
    let profile = match icc.map(Profile::new_icc) {
        Some(Ok(p)) => Some(p),
        Some(Err(_)) => {
            warning =
                Some("the embedded colour profile is unreadable; sRGB was assumed".to_string());
            None
        }
        None => None,
    };
    let srgb = Profile::new_srgb();
    match (raster.channels, profile) {
        (4, Some(p)) if p.color_space() == ColorSpaceSignature::CmykData => {
            let format = if adobe_inverted {
                PixelFormat::CMYK_8_REV
            } else {
                PixelFormat::CMYK_8
            };
            let t =
                Transform::<u8, u8>::new(&p, format, &srgb, PixelFormat::RGB_8, Intent::Perceptual)
                    .map_err(|e| RenderError::Internal(format!("colour transform: {e}")))?;
            let mut out = vec![0u8; raster.width as usize * raster.height as usize * 3];
            t.transform_pixels(&raster.data, &mut out);
            Ok((
                Raster {
                    data: out,
                    channels: 3,
                    ..raster
                },
                warning,
            ))
        }
        (4, _) => Ok((naive_cmyk(&raster, adobe_inverted), warning)),
        (_, Some(p)) if p.color_space() == ColorSpaceSignature::RgbData && !is_srgb(&p) => {
            let t = Transform::<u8, u8>::new(
                &p,
                PixelFormat::RGB_8,
                &srgb,
                PixelFormat::RGB_8,
                Intent::Perceptual,
            )
            .map_err(|e| RenderError::Internal(format!("colour transform: {e}")))?;
            let mut raster = raster;
            t.transform_in_place(&mut raster.data);
            Ok((raster, warning))
        }
        // sRGB already; a grey profile on an image decoded to RGB is close
        // enough to sRGB's curve (gamma 2.2) to leave alone.
        (_, _) => Ok((raster, warning)),
    }
}

/// CMYK without a profile: R = (1-C)(1-K), and so on.
fn naive_cmyk(raster: &Raster, inverted: bool) -> Raster {
    let mut out = Vec::with_capacity(raster.width as usize * raster.height as usize * 3);
    for px in raster.data.chunks_exact(4) {
        let [c, m, y, k] = if inverted {
            [px[0], px[1], px[2], px[3]].map(|v| 255 - v)
        } else {
            [px[0], px[1], px[2], px[3]]
        };
        let ink = |v: u8| ((u32::from(255 - v) * u32::from(255 - k) + 127) / 255) as u8;
        out.extend_from_slice(&[ink(c), ink(m), ink(y)]);
    }
    Raster {
        width: raster.width,
        height: raster.height,
        channels: 3,
        data: out,
    }
}
