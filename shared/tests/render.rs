//! The render pipeline against images these tests generate: orientation,
//! colour, bit depth, alpha, hostile headers, every product's exact size,
//! canvas wrap. Outputs are decoded and their pixels checked.

use printworks::domain::catalog::Catalog;
use printworks::render::probe::{Format, probe};
use printworks::render::{
    self, Fit, JpegOut, Limits, Raster, Rect, RenderError, Request, Rgb, Sheet, encode_jpeg_with,
};
use std::cell::Cell;
use std::collections::BTreeMap;

// ---- a per-thread allocation meter, to show a refusal allocates nothing big

struct Meter;
thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}
// SAFETY: forwards to the system allocator; only counts.
unsafe impl std::alloc::GlobalAlloc for Meter {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        let _ = LIVE.try_with(|l| {
            l.set(l.get() + layout.size() as isize);
            let _ = PEAK.try_with(|p| p.set(p.get().max(l.get())));
        });
        // SAFETY: same layout contract as the caller's.
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        let _ = LIVE.try_with(|l| l.set(l.get() - layout.size() as isize));
        // SAFETY: allocated by System.alloc with this layout.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
}
#[global_allocator]
static METER: Meter = Meter;

/// Bytes allocated at peak by this thread while `f` ran, above the start.
fn peak_allocation<T>(f: impl FnOnce() -> T) -> (T, isize) {
    let start = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(start));
    let out = f();
    (out, PEAK.with(Cell::get) - start)
}

// ---- image makers

fn raster(w: u32, h: u32, f: impl Fn(u32, u32) -> [u8; 3]) -> Raster {
    let mut data = Vec::with_capacity((w * h * 3) as usize);
    for y in 0..h {
        for x in 0..w {
            data.extend_from_slice(&f(x, y));
        }
    }
    Raster {
        width: w,
        height: h,
        channels: 3,
        data,
    }
}

fn jpeg(r: &Raster) -> Vec<u8> {
    jpeg_with(r, &[], false)
}

fn jpeg_with(r: &Raster, icc: &[u8], progressive: bool) -> Vec<u8> {
    let out = JpegOut {
        quality: 95,
        full_chroma: true,
        dpi: 72,
    };
    encode_jpeg_with(r, out, icc, progressive).unwrap()
}

/// Inserts an APP1 Exif segment (little-endian TIFF) with the orientation
/// and, to check it is not copied, a GPS IFD pointer and a camera model.
fn with_exif(jpeg: &[u8], orientation: u16) -> Vec<u8> {
    let mut tiff = b"II*\0".to_vec();
    tiff.extend_from_slice(&8u32.to_le_bytes());
    tiff.extend_from_slice(&3u16.to_le_bytes()); // entries
    // Model (0x0110), ASCII, 8 bytes at offset 50.
    for v in [0x0110u16, 2] {
        tiff.extend_from_slice(&v.to_le_bytes());
    }
    tiff.extend_from_slice(&8u32.to_le_bytes());
    tiff.extend_from_slice(&50u32.to_le_bytes());
    // Orientation (0x0112), SHORT, 1.
    for v in [0x0112u16, 3] {
        tiff.extend_from_slice(&v.to_le_bytes());
    }
    tiff.extend_from_slice(&1u32.to_le_bytes());
    tiff.extend_from_slice(&orientation.to_le_bytes());
    tiff.extend_from_slice(&[0, 0]);
    // GPS IFD pointer (0x8825), LONG, 1, offset 58.
    for v in [0x8825u16, 4] {
        tiff.extend_from_slice(&v.to_le_bytes());
    }
    tiff.extend_from_slice(&1u32.to_le_bytes());
    tiff.extend_from_slice(&58u32.to_le_bytes());
    tiff.extend_from_slice(&0u32.to_le_bytes()); // no next IFD
    tiff.extend_from_slice(b"SECRET1\0"); // model at 50
    tiff.extend_from_slice(&0u16.to_le_bytes()); // empty GPS IFD at 58
    let mut seg = b"Exif\0\0".to_vec();
    seg.extend_from_slice(&tiff);
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&((seg.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(&seg);
    out.extend_from_slice(&jpeg[2..]);
    out
}

fn png_bytes(w: u32, h: u32, color: png::ColorType, depth: png::BitDepth, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, w, h);
    enc.set_color(color);
    enc.set_depth(depth);
    let mut writer = enc.write_header().unwrap();
    writer.write_image_data(data).unwrap();
    writer.finish().unwrap();
    out
}

fn sheet(w: u32, h: u32) -> Sheet {
    Sheet {
        width: w,
        height: h,
        dpi: 300,
        area: Rect { x: 0, y: 0, w, h },
        background: Rgb::WHITE,
        wrap: None,
        min_dpi: 0,
        reject_dpi: 0,
    }
}

fn request(sheet: Sheet) -> Request {
    Request {
        sheet,
        fit: Fit::Fill,
        crop: None,
        background: Rgb::WHITE,
        limits: Limits::default(),
    }
}

fn product_request(sku: &str) -> Request {
    let p = Catalog::builtin().product(sku).unwrap();
    request(Sheet::for_product(p, &BTreeMap::new()))
}

fn decode(bytes: &[u8]) -> Raster {
    render::decode_rgb(bytes, Limits::default()).unwrap()
}

fn px(r: &Raster, x: u32, y: u32) -> [u8; 3] {
    let i = ((y * r.width + x) * 3) as usize;
    [r.data[i], r.data[i + 1], r.data[i + 2]]
}

fn close(a: [u8; 3], b: [u8; 3], tol: i32) -> bool {
    a.iter()
        .zip(b)
        .all(|(&x, y)| (i32::from(x) - i32::from(y)).abs() <= tol)
}

const RED: [u8; 3] = [220, 30, 30];
const GREY: [u8; 3] = [128, 128, 128];

// ---- orientation

/// The stored pixels for which applying EXIF orientation `o` shows `shown`,
/// written out per the EXIF specification (independently of the pipeline).
fn stored_for(shown: &Raster, o: u16) -> Raster {
    let (w, h) = (shown.width, shown.height);
    let get = |x: u32, y: u32| px(shown, x, y);
    match o {
        1 => raster(w, h, get),
        2 => raster(w, h, |x, y| get(w - 1 - x, y)),
        3 => raster(w, h, |x, y| get(w - 1 - x, h - 1 - y)),
        4 => raster(w, h, |x, y| get(x, h - 1 - y)),
        // Transposed: stored (x, y) is shown at (y, x).
        5 => raster(h, w, |x, y| get(y, x)),
        // Shown = stored turned 90 degrees clockwise.
        6 => raster(h, w, |x, y| get(w - 1 - y, x)),
        7 => raster(h, w, |x, y| get(w - 1 - y, h - 1 - x)),
        // Shown = stored turned 90 degrees counter-clockwise.
        8 => raster(h, w, |x, y| get(y, h - 1 - x)),
        _ => unreachable!(),
    }
}

#[test]
fn all_eight_exif_orientations_keep_the_marker_where_the_customer_saw_it() {
    // What the customer saw: 600x400, a red block in the top-left corner.
    let shown = raster(600, 400, |x, y| if x < 120 && y < 80 { RED } else { GREY });
    for o in 1..=8u16 {
        let file = with_exif(&jpeg(&stored_for(&shown, o)), o);
        let out = render::render(&file, &request(sheet(300, 200))).unwrap();
        assert_eq!(out.print_size, (300, 200), "orientation {o}");
        let print = decode(&out.print);
        assert!(
            close(px(&print, 10, 10), RED, 12),
            "orientation {o}: top-left is {:?}",
            px(&print, 10, 10)
        );
        for (x, y) in [(289, 10), (10, 189), (289, 189)] {
            assert!(
                close(px(&print, x, y), GREY, 12),
                "orientation {o}: ({x},{y}) is {:?}",
                px(&print, x, y)
            );
        }
    }
}

#[test]
fn outputs_carry_dpi_and_srgb_but_no_exif_or_gps() {
    let photo = raster(900, 600, |x, y| [(x % 256) as u8, (y % 256) as u8, 90]);
    let file = with_exif(&jpeg(&photo), 1);
    assert!(file.windows(7).any(|w| w == b"SECRET1"));
    let out = render::render(&file, &request(sheet(300, 200))).unwrap();
    for bytes in [&out.print, &out.preview] {
        assert!(
            !bytes.windows(6).any(|w| w == b"Exif\0\0"),
            "no EXIF in outputs"
        );
        assert!(!bytes.windows(7).any(|w| w == b"SECRET1"));
        let head = probe(bytes, 1 << 30).unwrap();
        assert!(head.icc.is_some(), "an ICC profile is embedded");
    }
    // JFIF density: units 1 (inch), 300 x 300.
    let app0 = out.print.windows(5).position(|w| w == b"JFIF\0").unwrap();
    assert_eq!(out.print[app0 + 7], 1);
    assert_eq!(&out.print[app0 + 8..app0 + 12], &[1, 44, 1, 44]);
    assert_eq!(out.preview_size, (800, 533));
}

// ---- colour

#[test]
fn cmyk_jpeg_becomes_srgb() {
    // Inverted CMYK as Photoshop writes it (with an Adobe marker): left
    // half cyan, right half magenta + yellow (red).
    let (w, h) = (400u32, 300u32);
    let mut data = Vec::new();
    for _y in 0..h {
        for x in 0..w {
            let ink: [u8; 4] = if x < w / 2 {
                [255, 0, 0, 0]
            } else {
                [0, 255, 255, 0]
            };
            data.extend(ink.map(|v| 255 - v));
        }
    }
    let cmyk = Raster {
        width: w,
        height: h,
        channels: 4,
        data,
    };
    let file = jpeg(&cmyk);
    assert!(probe(&file, 1 << 30).unwrap().adobe);
    let print = decode(
        &render::render(&file, &request(sheet(400, 300)))
            .unwrap()
            .print,
    );
    assert!(
        close(px(&print, 50, 150), [0, 255, 255], 10),
        "cyan: {:?}",
        px(&print, 50, 150)
    );
    assert!(
        close(px(&print, 350, 150), [255, 0, 0], 10),
        "red: {:?}",
        px(&print, 350, 150)
    );
}

fn adobe_rgb_profile() -> Vec<u8> {
    use lcms2::{CIExyY, CIExyYTRIPLE, Profile, ToneCurve};
    let d65 = CIExyY {
        x: 0.3127,
        y: 0.3290,
        Y: 1.0,
    };
    let primaries = CIExyYTRIPLE {
        Red: CIExyY {
            x: 0.64,
            y: 0.33,
            Y: 1.0,
        },
        Green: CIExyY {
            x: 0.21,
            y: 0.71,
            Y: 1.0,
        },
        Blue: CIExyY {
            x: 0.15,
            y: 0.06,
            Y: 1.0,
        },
    };
    let gamma = ToneCurve::new(563.0 / 256.0);
    let p = Profile::new_rgb(&d65, &primaries, &[&gamma, &gamma, &gamma]).unwrap();
    p.icc().unwrap()
}

#[test]
fn adobe_rgb_profile_converts_a_known_colour() {
    // Adobe RGB (1998) (200, 120, 60) is sRGB (224, 121, 53) by the
    // published matrices (Adobe RGB -> XYZ D65 -> linear sRGB, sRGB curve).
    let file = jpeg_with(
        &raster(300, 200, |_, _| [200, 120, 60]),
        &adobe_rgb_profile(),
        false,
    );
    let print = decode(
        &render::render(&file, &request(sheet(300, 200)))
            .unwrap()
            .print,
    );
    let got = px(&print, 150, 100);
    assert!(close(got, [224, 121, 53], 4), "got {got:?}");
    // Unconverted it would be far off: the check can fail.
    assert!(!close([200, 120, 60], [224, 121, 53], 4));
}

#[test]
fn sixteen_bit_png_with_alpha_is_flattened_on_white() {
    let (w, h) = (300u32, 200u32);
    let mut data = Vec::new();
    for _y in 0..h {
        for x in 0..w {
            // Opaque blue | transparent | half-transparent black.
            let rgba: [u16; 4] = match x * 3 / w {
                0 => [0, 0, 65535, 65535],
                1 => [0, 65535, 0, 0],
                _ => [0, 0, 0, 32768],
            };
            for v in rgba {
                data.extend_from_slice(&v.to_be_bytes());
            }
        }
    }
    let file = png_bytes(w, h, png::ColorType::Rgba, png::BitDepth::Sixteen, &data);
    assert_eq!(probe(&file, 1 << 30).unwrap().format, Format::Png);
    let print = decode(
        &render::render(&file, &request(sheet(300, 200)))
            .unwrap()
            .print,
    );
    assert!(
        close(px(&print, 50, 100), [0, 0, 255], 6),
        "{:?}",
        px(&print, 50, 100)
    );
    assert!(
        close(px(&print, 150, 100), [255, 255, 255], 4),
        "{:?}",
        px(&print, 150, 100)
    );
    assert!(
        close(px(&print, 250, 100), [127, 127, 127], 4),
        "{:?}",
        px(&print, 250, 100)
    );
}

#[test]
fn grayscale_jpeg_and_png_render_grey() {
    let grey = Raster {
        width: 300,
        height: 200,
        channels: 1,
        data: vec![77; 300 * 200],
    };
    let gray_png = png_bytes(
        300,
        200,
        png::ColorType::Grayscale,
        png::BitDepth::Eight,
        &grey.data,
    );
    for file in [jpeg(&grey), gray_png] {
        let print = decode(
            &render::render(&file, &request(sheet(300, 200)))
                .unwrap()
                .print,
        );
        assert!(
            close(px(&print, 150, 100), [77, 77, 77], 3),
            "{:?}",
            px(&print, 150, 100)
        );
    }
}

#[test]
fn progressive_jpeg_renders() {
    let photo = raster(600, 400, |x, y| [(x / 3) as u8, (y / 2) as u8, 60]);
    let file = jpeg_with(&photo, &[], true);
    assert!(probe(&file, 1 << 30).unwrap().progressive);
    let out = render::render(&file, &request(sheet(300, 200))).unwrap();
    let print = decode(&out.print);
    assert!(close(px(&print, 150, 100), px(&photo, 300, 200), 6));
}

// ---- hostile and unusable files

#[test]
fn a_truncated_jpeg_is_corrupt() {
    let file = jpeg(&raster(600, 400, |x, y| {
        [(x % 251) as u8, (y % 241) as u8, ((x * y) % 239) as u8]
    }));
    for cut in [file.len() * 6 / 10, 300, 20] {
        let err = render::render(&file[..cut], &request(sheet(300, 200))).unwrap_err();
        assert!(
            matches!(err, RenderError::Corrupt(_)),
            "cut at {cut}: {err:?}"
        );
        assert!(err.is_permanent());
    }
}

fn png_claiming(w: u32, h: u32) -> Vec<u8> {
    let mut chunk = b"IHDR".to_vec();
    chunk.extend_from_slice(&w.to_be_bytes());
    chunk.extend_from_slice(&h.to_be_bytes());
    chunk.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut file = b"\x89PNG\r\n\x1a\n".to_vec();
    file.extend_from_slice(&13u32.to_be_bytes());
    file.extend_from_slice(&chunk);
    file.extend_from_slice(&crc32(&chunk).to_be_bytes());
    file
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn a_png_claiming_65535_squared_pixels_is_refused_without_allocating() {
    let file = png_claiming(65535, 65535);
    let (result, peak) =
        peak_allocation(|| render::render(&file, &product_request("poster-30x40")));
    match result {
        Err(RenderError::TooManyPixels { width, height, .. }) => {
            assert_eq!((width, height), (65535, 65535))
        }
        other => panic!("expected TooManyPixels, got {other:?}"),
    }
    assert!(peak < 64 * 1024, "the refusal allocated {peak} bytes");
    // The same for a JPEG frame header.
    let mut jpeg_header = vec![0xFF, 0xD8, 0xFF, 0xC0, 0, 17, 8, 0xFF, 0xFF, 0xFF, 0xFF, 3];
    jpeg_header.extend_from_slice(&[1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1]);
    let (result, peak) =
        peak_allocation(|| render::render(&jpeg_header, &product_request("poster-30x40")));
    assert!(
        matches!(result, Err(RenderError::TooManyPixels { .. })),
        "{result:?}"
    );
    assert!(peak < 64 * 1024, "the refusal allocated {peak} bytes");
}

#[test]
fn svg_or_postscript_named_jpg_is_refused() {
    let svg =
        br#"<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>"#;
    let ps = b"%!PS-Adobe-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n";
    for (bytes, what) in [(&svg[..], "an SVG image"), (&ps[..], "a PostScript file")] {
        let err = render::render(bytes, &product_request("poster-30x40")).unwrap_err();
        assert_eq!(err, RenderError::Unsupported { detected: what });
        assert_eq!(err.code(), "unsupported_format");
    }
}

#[test]
fn a_photo_too_small_for_the_product_is_refused_and_a_small_one_warned() {
    // A 60x90 cm poster needs at least 75 dpi: 1772 x 2657 px.
    let tiny = jpeg(&raster(400, 600, |_, _| GREY));
    match render::render(&tiny, &product_request("poster-60x90")) {
        Err(RenderError::TooSmall {
            effective_dpi,
            required,
        }) => {
            assert_eq!(required, 75);
            assert!(effective_dpi < 75);
        }
        other => panic!("expected TooSmall, got {other:?}"),
    }
    // 1200 x 1800 on a 20x30 poster is about 150 dpi: printed; 1000 x 1500 warned.
    let ok = render::render(
        &jpeg(&raster(1000, 1500, |_, _| GREY)),
        &product_request("poster-20x30"),
    )
    .unwrap();
    assert!(
        ok.effective_dpi < 150 && ok.effective_dpi >= 75,
        "{}",
        ok.effective_dpi
    );
    assert!(
        ok.warnings.iter().any(|w| w.contains("low resolution")),
        "{:?}",
        ok.warnings
    );
}

// ---- geometry

#[test]
fn every_product_renders_to_its_exact_size() {
    let photo = jpeg(&raster(2400, 3600, |x, y| {
        [(x / 10) as u8, (y / 15) as u8, 128]
    }));
    let mm = |v: u32, dpi: u32| (f64::from(v) * f64::from(dpi) / 25.4).round() as u32;
    for product in Catalog::builtin().products() {
        let out = render::render(&photo, &product_request(product.sku.as_str())).unwrap();
        let (tw, th) = (product.trim_mm.width, product.trim_mm.height);
        let dpi = product.output_dpi;
        let expected = match product.wrap_mm {
            Some(wrap) => {
                let edge = mm(wrap + product.bleed_mm, dpi);
                (mm(tw, dpi) + 2 * edge, mm(th, dpi) + 2 * edge)
            }
            None => (
                mm(tw + 2 * product.bleed_mm, dpi),
                mm(th + 2 * product.bleed_mm, dpi),
            ),
        };
        assert_eq!(out.print_size, expected, "{}", product.sku.as_str());
        let head = probe(&out.print, u64::MAX).unwrap();
        assert_eq!(
            (head.width, head.height),
            expected,
            "{}: the file itself",
            product.sku.as_str()
        );
        assert_eq!(out.preview_size.0.max(out.preview_size.1), 800);
    }
    // R1's poster: 3614 x 4795.
    let p = Catalog::builtin().product("poster-30x40").unwrap();
    let s = Sheet::for_product(p, &BTreeMap::new());
    assert_eq!((s.width, s.height), (3614, 4795));
}

#[test]
fn canvas_edges_mirror_the_front() {
    // A smooth photo so that JPEG keeps mirrored pixels comparable.
    let photo = jpeg(&raster(1200, 1600, |x, y| {
        [(x / 5) as u8, (y / 7) as u8, ((x + y) / 11) as u8]
    }));
    let out = render::render(&photo, &product_request("canvas-30x40")).unwrap();
    let print = decode(&out.print);
    // 40 mm of wrap (no bleed) at 150 dpi around a 30 x 40 cm front.
    let edge = 236;
    assert_eq!(
        (print.width, print.height),
        (1772 + 2 * edge, 2362 + 2 * edge)
    );
    let y = print.height / 2;
    for k in [0, 5, 50, edge - 1] {
        let outside = px(&print, edge - 1 - k, y);
        let inside = px(&print, edge + k, y);
        assert!(
            close(outside, inside, 8),
            "left k={k}: {outside:?} vs {inside:?}"
        );
        let x = print.width / 2;
        let above = px(&print, x, edge - 1 - k);
        let below = px(&print, x, edge + k);
        assert!(close(above, below, 8), "top k={k}: {above:?} vs {below:?}");
    }
    // And not just a flat colour: the edge carries the picture's gradient.
    assert!(!close(px(&print, 0, y), px(&print, print.width - 1, y), 8));
}

#[test]
fn fit_keeps_the_whole_photo_on_the_background_and_crop_picks_the_part() {
    // A square photo fitted on a portrait poster: bands of background above and below.
    let square = jpeg(&raster(2000, 2000, |x, y| {
        if x < 100 && y < 100 { RED } else { GREY }
    }));
    let mut req = product_request("poster-20x30");
    req.fit = Fit::Fit;
    req.background = Rgb([10, 20, 200]);
    let print = decode(&render::render(&square, &req).unwrap().print);
    assert!(close(px(&print, print.width / 2, 5), [10, 20, 200], 8));
    assert!(close(
        px(&print, print.width / 2, print.height / 2),
        GREY,
        8
    ));
    // Crop the red corner only (a 2:3 rectangle): the print is red.
    let mut req = request(sheet(200, 300));
    req.crop = Some(Rect {
        x: 0,
        y: 0,
        w: 60,
        h: 90,
    });
    let out = render::render(&square, &req).unwrap();
    let print = decode(&out.print);
    assert!(close(
        px(&print, print.width / 2, print.height / 2),
        RED,
        12
    ));
    assert_eq!(out.effective_dpi, 90, "60 px over 200 px at 300 dpi");
    // A crop outside the photo is the customer's error, with a reason.
    req.crop = Some(Rect {
        x: 1990,
        y: 0,
        w: 60,
        h: 90,
    });
    assert!(matches!(
        render::render(&square, &req),
        Err(RenderError::BadCrop(_))
    ));
}
