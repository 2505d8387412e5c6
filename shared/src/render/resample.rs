//! Resampling with orientation folded in, at low peak memory.
//!
//! Lanczos3 is separable, and a 90-degree turn or a mirror commutes with
//! it, so the work is done as two passes of fast_image_resize (SIMD), with
//! one transpose between them when the output is turned:
//!
//! 1. vertical: the stored columns of the region (plus the kernel's margin)
//!    are resampled to the output's length along the stored y axis;
//! 2. turned: that result is transposed (and mirrored as the orientation
//!    says) into the memory of the decoded source, and resampled vertically
//!    again, so each stored column becomes a row of the print;
//!    not turned: a horizontal pass, then mirrors in place.
//!
//! Vertical passes are fir's fastest for 8-bit pixels. Only two whole-image
//! buffers are ever alive, and each is reused once; no separate rotated copy
//! of the print is made.

use super::RenderError;
use super::codec::Raster;
use super::geometry::{Dihedral, Rect};
use fast_image_resize::{self as fr, FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};

fn lanczos() -> ResizeOptions {
    ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Lanczos3))
}

fn internal(e: impl std::fmt::Display) -> RenderError {
    RenderError::Internal(format!("resize: {e}"))
}

/// Rows (or columns) beyond the region that the Lanczos3 kernel reads when
/// scaling `from` to `to` pixels.
pub fn margin(from: u32, to: u32) -> u32 {
    let scale = (f64::from(from) / f64::from(to.max(1))).max(1.0);
    (3.0 * scale).ceil() as u32 + 1
}

/// Resamples `region` of `src` (coordinates relative to `src`) to an
/// `out_w` x `out_h` image whose pixels map to the source through `orient`.
/// Consumes `src` so its memory goes as soon as the first pass is done.
pub fn resample(
    src: Raster,
    region: Rect,
    orient: Dihedral,
    out_w: u32,
    out_h: u32,
) -> Result<Raster, RenderError> {
    // The output size measured along the stored axes.
    let (rw, rh) = if orient.swap {
        (out_h, out_w)
    } else {
        (out_w, out_h)
    };
    // Pass 1 keeps the columns the horizontal resampling will read.
    let m = margin(region.w, rw);
    let x_lo = region.x.saturating_sub(m);
    let x_hi = (region.x + region.w + m).min(src.width);
    let n = x_hi - x_lo;
    let left = region.x - x_lo;
    let mut resizer = Resizer::new();
    let out_len = out_w as usize * out_h as usize * 3;

    // Pass 1, vertical: stored columns x_lo..x_hi, resampled to rh rows.
    let mut b = vec![0u8; n as usize * rh as usize * 3];
    {
        let src_view = fr::images::ImageRef::new(src.width, src.height, &src.data, PixelType::U8x3)
            .map_err(internal)?;
        let mut dst =
            fr::images::Image::from_slice_u8(n, rh, &mut b, PixelType::U8x3).map_err(internal)?;
        let opts = lanczos().crop(
            f64::from(x_lo),
            f64::from(region.y),
            f64::from(n),
            f64::from(region.h),
        );
        resizer
            .resize(&src_view, &mut dst, &opts)
            .map_err(internal)?;
    }
    // The source's memory is reused for the next buffer (fresh pages cost
    // a fault and a zeroing each).
    let spare = src.data;

    let out = if orient.swap {
        // T: a stored column per row (n rows, maybe from the bottom), rh =
        // out_w pixels each (maybe from the right).
        let mut t = reuse(spare, b.len());
        transpose_into(&b, n as usize, rh as usize, &mut t, orient);
        let mut out = reuse(b, out_len);
        let t_view = fr::images::ImageRef::new(rh, n, &t, PixelType::U8x3).map_err(internal)?;
        let top = if orient.fy { n - left - region.w } else { left };
        let mut dst = fr::images::Image::from_slice_u8(out_w, out_h, &mut out, PixelType::U8x3)
            .map_err(internal)?;
        let opts = lanczos().crop(0.0, f64::from(top), f64::from(rh), f64::from(region.w));
        // Pass 2, vertical again: the stored columns to out_h rows.
        resizer.resize(&t_view, &mut dst, &opts).map_err(internal)?;
        out
    } else {
        let mut out = reuse(spare, out_len);
        let b_view = fr::images::ImageRef::new(n, rh, &b, PixelType::U8x3).map_err(internal)?;
        let mut dst = fr::images::Image::from_slice_u8(out_w, out_h, &mut out, PixelType::U8x3)
            .map_err(internal)?;
        let opts = lanczos().crop(f64::from(left), 0.0, f64::from(region.w), f64::from(rh));
        // Pass 2, horizontal.
        resizer.resize(&b_view, &mut dst, &opts).map_err(internal)?;
        mirror_in_place(
            &mut out,
            out_w as usize,
            out_h as usize,
            orient.fx,
            orient.fy,
        );
        out
    };
    Ok(Raster {
        width: out_w,
        height: out_h,
        channels: 3,
        data: out,
    })
}

/// `buf` resized to `len` bytes, keeping its allocation when it is big enough.
fn reuse(mut buf: Vec<u8>, len: usize) -> Vec<u8> {
    if buf.capacity() >= len {
        buf.truncate(len);
        buf.resize(len, 0);
        buf
    } else {
        drop(buf);
        vec![0u8; len]
    }
}

/// Writes `a` (`h` rows of `w` pixels) into `t` (`w` rows of `h` pixels)
/// transposed: column j of `a` becomes row j of `t` (row w-1-j when `fy`),
/// row i of `a` column i (h-1-i when `fx`). Tiles of 64 x 64 pixels keep
/// both sides in the L1 cache.
fn transpose_into(a: &[u8], w: usize, h: usize, t: &mut [u8], orient: Dihedral) {
    const TILE: usize = 32;
    assert!(
        a.len() >= w * h * 3 && t.len() >= w * h * 3,
        "transpose buffers too small"
    );
    let (src, dst) = (a.as_ptr(), t.as_mut_ptr());
    // Steps through t in the direction the orientation needs.
    let (row_of, col_step): (fn(usize, usize) -> usize, isize) = (
        if orient.fy {
            |j, w| w - 1 - j
        } else {
            |j, _| j
        },
        if orient.fx { -3 } else { 3 },
    );
    for i0 in (0..h).step_by(TILE) {
        let i1 = (i0 + TILE).min(h);
        let c0 = if orient.fx { h - 1 - i0 } else { i0 };
        for j0 in (0..w).step_by(TILE) {
            let j1 = (j0 + TILE).min(w);
            for j in j0..j1 {
                // SAFETY: i < h and j < w, so every index below is inside
                // a (i * w + j < w * h) and t (row * h + c < w * h), whose
                // lengths were checked above.
                unsafe {
                    let mut d = dst.add((row_of(j, w) * h + c0) * 3);
                    let mut s = src.add((i0 * w + j) * 3);
                    for _ in i0..i1 {
                        std::ptr::copy_nonoverlapping(s, d, 3);
                        s = s.add(w * 3);
                        d = d.offset(col_step);
                    }
                }
            }
        }
    }
}

fn mirror_in_place(buf: &mut [u8], w: usize, h: usize, fx: bool, fy: bool) {
    if fx {
        for row in buf.chunks_exact_mut(w * 3) {
            for x in 0..w / 2 {
                let (a, b) = (x * 3, (w - 1 - x) * 3);
                for k in 0..3 {
                    row.swap(a + k, b + k);
                }
            }
        }
    }
    if fy {
        for y in 0..h / 2 {
            let (top, bottom) = buf.split_at_mut((h - 1 - y) * w * 3);
            top[y * w * 3..(y + 1) * w * 3].swap_with_slice(&mut bottom[..w * 3]);
        }
    }
}

/// A plain Lanczos3 resize of a whole RGB image (the preview).
pub fn resize(src: &Raster, w: u32, h: u32) -> Result<Raster, RenderError> {
    let view = fr::images::ImageRef::new(src.width, src.height, &src.data, PixelType::U8x3)
        .map_err(internal)?;
    let mut dst = fr::images::Image::new(w, h, PixelType::U8x3);
    Resizer::new()
        .resize(&view, &mut dst, &lanczos())
        .map_err(internal)?;
    Ok(Raster {
        width: w,
        height: h,
        channels: 3,
        data: dst.into_vec(),
    })
}
