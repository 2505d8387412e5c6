//! Geometry: product sizes in pixels, orientation as a dihedral transform,
//! crop and fit, and where the photo lands on the print.

use super::probe::Orientation;
use super::{Fit, RenderError};
use crate::domain::catalog::Product;

/// Millimetres at `dpi` to whole pixels (nearest).
pub fn mm_to_px(mm: u32, dpi: u32) -> u32 {
    ((f64::from(mm) * f64::from(dpi) / 25.4).round()) as u32
}

/// One of the eight rotations/mirrors of a rectangle, as the map from output
/// coordinates to source coordinates: first the output coordinates are
/// mirrored (`fx`, `fy`), then, if `swap`, x and y trade places.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dihedral {
    pub swap: bool,
    pub fx: bool,
    pub fy: bool,
}

impl Dihedral {
    pub const IDENTITY: Dihedral = Dihedral {
        swap: false,
        fx: false,
        fy: false,
    };
    /// The output is the source turned 90 degrees clockwise.
    pub const CW90: Dihedral = Dihedral {
        swap: true,
        fx: true,
        fy: false,
    };

    /// The map from displayed to stored pixels for an EXIF orientation.
    pub fn from_exif(o: Orientation) -> Dihedral {
        let (swap, fx, fy) = match o.0 {
            2 => (false, true, false),
            3 => (false, true, true),
            4 => (false, false, true),
            5 => (true, false, false),
            6 => (true, true, false),
            7 => (true, true, true),
            8 => (true, false, true),
            _ => (false, false, false),
        };
        Dihedral { swap, fx, fy }
    }

    /// As a signed permutation matrix on centred coordinates: source = M * output.
    fn matrix(self) -> [[i8; 2]; 2] {
        let sx = if self.fx { -1 } else { 1 };
        let sy = if self.fy { -1 } else { 1 };
        if self.swap {
            [[0, sy], [sx, 0]]
        } else {
            [[sx, 0], [0, sy]]
        }
    }

    fn from_matrix(m: [[i8; 2]; 2]) -> Dihedral {
        if m[0][0] != 0 {
            Dihedral {
                swap: false,
                fx: m[0][0] < 0,
                fy: m[1][1] < 0,
            }
        } else {
            Dihedral {
                swap: true,
                fy: m[0][1] < 0,
                fx: m[1][0] < 0,
            }
        }
    }

    /// `self` maps output to an intermediate, `inner` maps the intermediate
    /// to the source; the result maps output straight to the source.
    pub fn then(self, inner: Dihedral) -> Dihedral {
        let (a, b) = (inner.matrix(), self.matrix());
        let mut m = [[0i8; 2]; 2];
        for (i, row) in m.iter_mut().enumerate() {
            for (j, cell) in row.iter_mut().enumerate() {
                *cell = a[i][0] * b[0][j] + a[i][1] * b[1][j];
            }
        }
        Dihedral::from_matrix(m)
    }

    /// Maps a rectangle given in output coordinates (of an output of size
    /// `out_w` x `out_h`) to source coordinates.
    pub fn rect_to_source(self, r: Rect, out_w: u32, out_h: u32) -> Rect {
        let x = if self.fx { out_w - r.x - r.w } else { r.x };
        let y = if self.fy { out_h - r.y - r.h } else { r.y };
        if self.swap {
            Rect {
                x: y,
                y: x,
                w: r.h,
                h: r.w,
            }
        } else {
            Rect {
                x,
                y,
                w: r.w,
                h: r.h,
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rect {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rgb(pub [u8; 3]);

impl Rgb {
    pub const WHITE: Rgb = Rgb([255, 255, 255]);
    pub const BLACK: Rgb = Rgb([0, 0, 0]);

    /// `#rrggbb`.
    pub fn parse(s: &str) -> Option<Rgb> {
        let hex = s.strip_prefix('#')?;
        if hex.len() != 6 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let v = u32::from_str_radix(hex, 16).ok()?;
        Some(Rgb([(v >> 16) as u8, (v >> 8) as u8, v as u8]))
    }
}

/// What the side panels of a wrapped canvas show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wrap {
    Mirror,
    Colour(Rgb),
}

/// The print file of one image of one product, in pixels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sheet {
    pub width: u32,
    pub height: u32,
    pub dpi: u32,
    /// Where the photo goes (the whole sheet, a canvas front, a card's front
    /// panel); the rest of the sheet is `background` or the wrap.
    pub area: Rect,
    pub background: Rgb,
    /// Canvas: the width of the wrap (plus bleed) around `area`.
    pub wrap: Option<(u32, Wrap)>,
    pub min_dpi: u32,
    pub reject_dpi: u32,
}

impl Sheet {
    /// The sheet of `product` with its options (`wrap` for canvases).
    pub fn for_product(
        product: &Product,
        options: &std::collections::BTreeMap<String, String>,
    ) -> Sheet {
        let dpi = product.output_dpi;
        let bleed = product.bleed_mm;
        let (trim_w, trim_h) = (product.trim_mm.width, product.trim_mm.height);
        let mut sheet = Sheet {
            width: mm_to_px(trim_w + 2 * bleed, dpi),
            height: mm_to_px(trim_h + 2 * bleed, dpi),
            dpi,
            area: Rect {
                x: 0,
                y: 0,
                w: 0,
                h: 0,
            },
            background: Rgb::WHITE,
            wrap: None,
            min_dpi: product.min_dpi,
            reject_dpi: product.reject_dpi,
        };
        sheet.area = Rect {
            x: 0,
            y: 0,
            w: sheet.width,
            h: sheet.height,
        };
        if let Some(wrap_mm) = product.wrap_mm {
            // The front is the trim; the sides (and bleed) wrap around the frame.
            let edge = mm_to_px(wrap_mm + bleed, dpi);
            let front_w = mm_to_px(trim_w, dpi);
            let front_h = mm_to_px(trim_h, dpi);
            sheet.width = front_w + 2 * edge;
            sheet.height = front_h + 2 * edge;
            sheet.area = Rect {
                x: edge,
                y: edge,
                w: front_w,
                h: front_h,
            };
            let wrap = match options.get("wrap").map(String::as_str) {
                Some("white") => Wrap::Colour(Rgb::WHITE),
                Some("black") => Wrap::Colour(Rgb::BLACK),
                _ => Wrap::Mirror,
            };
            sheet.wrap = Some((edge, wrap));
        } else if product.fold.as_deref() == Some("vertical") {
            // A card folded down the middle: the photo is the front panel
            // (the right half of the outside, with its bleed), the back stays white.
            let half = mm_to_px(trim_w / 2 + bleed, dpi);
            sheet.area = Rect {
                x: sheet.width - half,
                y: 0,
                w: half,
                h: sheet.height,
            };
        }
        sheet
    }
}

/// Where the pixels come from and where they go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The region of the stored image to use.
    pub source: Rect,
    /// Output-to-stored orientation (EXIF, then the turn to the product).
    pub orient: Dihedral,
    /// Size the source region is resampled to, in output orientation.
    pub out_w: u32,
    pub out_h: u32,
    /// Where that lands on the sheet.
    pub at: (u32, u32),
    pub effective_dpi: u32,
    /// The photo was turned 90 degrees to match the product.
    pub rotated: bool,
}

/// Plans one render: orientation, crop or fit, the turn to the product's
/// orientation, and the effective resolution.
pub fn plan(
    stored_w: u32,
    stored_h: u32,
    orientation: Orientation,
    sheet: &Sheet,
    fit: Fit,
    crop: Option<Rect>,
) -> Result<Plan, RenderError> {
    let exif = Dihedral::from_exif(orientation);
    let (disp_w, disp_h) = if exif.swap {
        (stored_h, stored_w)
    } else {
        (stored_w, stored_h)
    };
    let region = match crop {
        Some(c) => {
            let inside = c.w > 0
                && c.h > 0
                && c.x.checked_add(c.w).is_some_and(|r| r <= disp_w)
                && c.y.checked_add(c.h).is_some_and(|b| b <= disp_h);
            if !inside {
                return Err(RenderError::BadCrop(format!(
                    "the crop {}x{} at {},{} is not inside the {disp_w}x{disp_h} photo",
                    c.w, c.h, c.x, c.y
                )));
            }
            c
        }
        None => Rect {
            x: 0,
            y: 0,
            w: disp_w,
            h: disp_h,
        },
    };
    let (area_w, area_h) = (sheet.area.w, sheet.area.h);
    // Turn the photo when its orientation and the product's disagree.
    let rotated =
        (region.w > region.h && area_w < area_h) || (region.w < region.h && area_w > area_h);
    // The area as seen in the photo's (displayed) axes.
    let (tw, th) = if rotated {
        (area_h, area_w)
    } else {
        (area_w, area_h)
    };
    let (region, out_w, out_h) = match fit {
        Fit::Fill => {
            // Cover the area; cut what sticks out, evenly on both sides.
            let r = if u64::from(region.w) * u64::from(th) > u64::from(region.h) * u64::from(tw) {
                let w = ((f64::from(region.h) * f64::from(tw) / f64::from(th)).round() as u32)
                    .clamp(1, region.w);
                Rect {
                    x: region.x + (region.w - w) / 2,
                    w,
                    ..region
                }
            } else {
                let h = ((f64::from(region.w) * f64::from(th) / f64::from(tw)).round() as u32)
                    .clamp(1, region.h);
                Rect {
                    y: region.y + (region.h - h) / 2,
                    h,
                    ..region
                }
            };
            (r, tw, th)
        }
        Fit::Fit => {
            let scale =
                (f64::from(tw) / f64::from(region.w)).min(f64::from(th) / f64::from(region.h));
            let w = ((f64::from(region.w) * scale).round() as u32).clamp(1, tw);
            let h = ((f64::from(region.h) * scale).round() as u32).clamp(1, th);
            (region, w, h)
        }
    };
    // Source pixels per output pixel, times the output DPI.
    let effective_dpi = (f64::from(sheet.dpi)
        * (f64::from(region.w) / f64::from(out_w)).min(f64::from(region.h) / f64::from(out_h)))
    .floor() as u32;
    if effective_dpi < sheet.reject_dpi {
        return Err(RenderError::TooSmall {
            effective_dpi,
            required: sheet.reject_dpi,
        });
    }
    let turn = if rotated {
        Dihedral::CW90
    } else {
        Dihedral::IDENTITY
    };
    let (final_w, final_h) = if rotated {
        (out_h, out_w)
    } else {
        (out_w, out_h)
    };
    Ok(Plan {
        source: exif.rect_to_source(region, disp_w, disp_h),
        orient: turn.then(exif),
        out_w: final_w,
        out_h: final_h,
        at: (
            sheet.area.x + (area_w - final_w) / 2,
            sheet.area.y + (area_h - final_h) / 2,
        ),
        effective_dpi,
        rotated,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Applies `d` (output -> source) to a point of an output of size w x h.
    fn map(d: Dihedral, x: u32, y: u32, out_w: u32, out_h: u32) -> (u32, u32) {
        let x = if d.fx { out_w - 1 - x } else { x };
        let y = if d.fy { out_h - 1 - y } else { y };
        if d.swap { (y, x) } else { (x, y) }
    }

    #[test]
    fn composition_matches_applying_one_after_the_other() {
        let all: Vec<Dihedral> = (1..=8)
            .map(|o| Dihedral::from_exif(Orientation(o)))
            .collect();
        for &outer in &all {
            for &inner in &all {
                // A 5x3 source; the intermediate has inner's output size.
                let (sw, sh) = (5, 3);
                let (iw, ih) = if inner.swap { (sh, sw) } else { (sw, sh) };
                let (ow, oh) = if outer.swap { (ih, iw) } else { (iw, ih) };
                let both = outer.then(inner);
                for y in 0..oh {
                    for x in 0..ow {
                        let (mx, my) = map(outer, x, y, ow, oh);
                        assert_eq!(map(inner, mx, my, iw, ih), map(both, x, y, ow, oh));
                    }
                }
            }
        }
    }

    #[test]
    fn r1_geometry() {
        let product = crate::domain::catalog::Catalog::builtin()
            .product("poster-30x40")
            .unwrap();
        let sheet = Sheet::for_product(product, &Default::default());
        assert_eq!((sheet.width, sheet.height), (3614, 4795));
        let plan = plan(6000, 4000, Orientation::UPRIGHT, &sheet, Fit::Fill, None).unwrap();
        assert_eq!(
            plan.source,
            Rect {
                x: 346,
                y: 0,
                w: 5307,
                h: 4000
            }
        );
        assert!(plan.rotated);
        assert_eq!((plan.out_w, plan.out_h), (3614, 4795));
        assert_eq!(plan.orient, Dihedral::CW90);
    }
}
