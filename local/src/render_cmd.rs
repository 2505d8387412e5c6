//! `printworks render`: the render pipeline on one file, with its figures.

use anyhow::{Context, bail};
use printworks::domain::catalog::Catalog;
use printworks::render::{self, Fit, Limits, Rect, Request, Rgb, Sheet};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

pub struct Args<'a> {
    pub catalog: &'a Catalog,
    pub sku: &'a str,
    pub fit: Fit,
    pub crop: Option<&'a str>,
    pub background: &'a str,
    pub options: &'a [String],
    pub input: &'a Path,
    pub out_dir: &'a Path,
}

/// `x,y,w,h` in pixels of the photo as it is shown.
pub fn parse_crop(s: &str) -> anyhow::Result<Rect> {
    let parts: Vec<u32> = s
        .split(',')
        .map(|p| p.trim().parse::<u32>())
        .collect::<Result<_, _>>()
        .with_context(|| format!("--crop {s:?}: expected x,y,w,h in pixels"))?;
    let [x, y, w, h] = parts[..] else {
        bail!("--crop {s:?}: expected four numbers x,y,w,h");
    };
    Ok(Rect { x, y, w, h })
}

pub fn run(args: Args<'_>) -> anyhow::Result<()> {
    let started = Instant::now();
    let product = args
        .catalog
        .product(args.sku)
        .with_context(|| format!("no product {:?} in the catalog", args.sku))?;
    let mut options: BTreeMap<String, String> = product
        .options
        .iter()
        .map(|(k, spec)| (k.clone(), spec.default.clone()))
        .collect();
    for kv in args.options {
        let Some((k, v)) = kv.split_once('=') else {
            bail!("--option {kv:?}: expected name=value");
        };
        options.insert(k.to_string(), v.to_string());
    }
    let background = Rgb::parse(args.background)
        .with_context(|| format!("--background {:?}: expected #rrggbb", args.background))?;
    let request = Request {
        sheet: Sheet::for_product(product, &options),
        fit: args.fit,
        crop: args.crop.map(parse_crop).transpose()?,
        background,
        limits: Limits::default(),
    };
    let read_at = Instant::now();
    let bytes =
        std::fs::read(args.input).with_context(|| format!("reading {}", args.input.display()))?;
    let read = read_at.elapsed();
    let out = render::render(&bytes, &request)
        .with_context(|| format!("{} cannot be printed", args.input.display()))?;
    let write_at = Instant::now();
    std::fs::create_dir_all(args.out_dir)?;
    std::fs::write(args.out_dir.join("print.jpg"), &out.print)?;
    std::fs::write(args.out_dir.join("preview.jpg"), &out.preview)?;
    let write = write_at.elapsed();

    println!(
        "input      {} ({} bytes)",
        args.input.display(),
        bytes.len()
    );
    println!("product    {} ({})", product.sku.as_str(), product.name);
    println!(
        "print      {}x{} px at {} dpi, {} bytes -> {}",
        out.print_size.0,
        out.print_size.1,
        request.sheet.dpi,
        out.print.len(),
        args.out_dir.join("print.jpg").display()
    );
    println!(
        "preview    {}x{} px, {} bytes -> {}",
        out.preview_size.0,
        out.preview_size.1,
        out.preview.len(),
        args.out_dir.join("preview.jpg").display()
    );
    println!(
        "effective  {} dpi (minimum {})",
        out.effective_dpi, request.sheet.min_dpi
    );
    if out.warnings.is_empty() {
        println!("warnings   none");
    }
    for w in &out.warnings {
        println!("warning    {w}");
    }
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
    print!("timings    read {:.1} ms", ms(read));
    for (stage, d) in &out.timings {
        print!(", {stage} {:.1} ms", ms(*d));
    }
    println!(
        ", write {:.1} ms, total {:.1} ms",
        ms(write),
        ms(started.elapsed())
    );
    Ok(())
}
