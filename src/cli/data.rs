//! `gpl data inspect | synth | preview` and `gpl bench data` (owner: data).

use clap::{Args, Subcommand, ValueEnum};
use miette::IntoDiagnostic;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use crate::data::augment::{augment_batch, sample_seed, AugmentSpec};
use crate::data::hdf5::{inspect, load_galaxy10, write_galaxy10_h5};
use crate::data::synth::{synthesize, SynthConfig, SynthKind};
use crate::data::{artifact, ImageSet};

#[derive(Subcommand, Debug)]
pub enum DataCommand {
    /// Print an HDF5 file's layout, datasets (shape, dtype, chunks, compression) and class counts.
    Inspect {
        file: PathBuf,
        /// The images dataset, as a pipeline's `hdf5(..., images: ...)` names it.
        #[arg(long, default_value = "images")]
        images: String,
        /// The labels dataset.
        #[arg(long, default_value = "ans")]
        labels: String,
    },
    /// Write a synthetic Galaxy10 in the real file layout.
    Synth(SynthArgs),
    /// Draw a contact sheet: one row of examples per class.
    Preview(PreviewArgs),
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum KindArg {
    Galaxy10,
    Galaxy10Decals,
}

#[derive(Args, Debug)]
pub struct SynthArgs {
    #[arg(long, value_enum, default_value = "galaxy10")]
    pub kind: KindArg,
    #[arg(long, default_value_t = 21_785)]
    pub count: usize,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Image side in pixels (default: 69 for galaxy10, 256 for galaxy10-decals).
    #[arg(long)]
    pub size: Option<usize>,
    /// Noise multiplier (1 = calibrated default).
    #[arg(long, default_value_t = 1.0)]
    pub noise: f32,
    /// Class-boundary overlap (0 = disjoint parameter ranges, 1 = calibrated default).
    #[arg(long, default_value_t = 1.0)]
    pub ambiguity: f32,
    /// Equal class proportions instead of the real file's.
    #[arg(long)]
    pub equal_classes: bool,
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Args, Debug)]
pub struct PreviewArgs {
    /// An HDF5 file (Galaxy10 layout) or a gpl image-set artifact.
    pub file: PathBuf,
    #[arg(long)]
    pub out: PathBuf,
    /// Examples per class.
    #[arg(long, default_value_t = 8)]
    pub per_class: usize,
    #[arg(long, default_value = "images")]
    pub images: String,
    #[arg(long, default_value = "ans")]
    pub labels: String,
}

#[derive(Args, Debug)]
pub struct BenchDataArgs {
    /// Images to synthesize and load (the real Galaxy10 has 21,785).
    #[arg(long, default_value_t = 21_785)]
    pub count: usize,
    /// Images to augment.
    #[arg(long, default_value_t = 10_000)]
    pub augment: usize,
    /// Where the synthetic file goes (default: a temp directory).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

pub fn run(command: DataCommand) -> miette::Result<ExitCode> {
    match command {
        DataCommand::Inspect {
            file,
            images,
            labels,
        } => inspect_cmd(&file, &images, &labels),
        DataCommand::Synth(a) => synth_cmd(a),
        DataCommand::Preview(a) => preview_cmd(a),
    }
}

/// Prints the summary, then checks the file as a run would load it: every problem is listed
/// and the exit code is 2 when there is one.
fn inspect_cmd(file: &Path, images: &str, labels: &str) -> miette::Result<ExitCode> {
    let s = inspect(file)?;
    println!("{}: layout {:?}", s.path.display(), s.layout);
    for d in &s.datasets {
        let chunks = d
            .chunks
            .as_ref()
            .map(|c| format!(" chunks {c:?}"))
            .unwrap_or_else(|| " contiguous".into());
        println!(
            "  {:<10} {:<8} {:?}{}{}",
            d.name,
            d.dtype,
            d.shape,
            chunks,
            if d.compressed { " compressed" } else { "" }
        );
    }
    if let Some(counts) = &s.class_counts {
        let names = match s.layout {
            crate::data::hdf5::Layout::Decals => crate::data::synth::DECALS_CLASSES,
            _ => crate::data::synth::SDSS_CLASSES,
        };
        println!("  class counts (ans):");
        for (label, n) in counts {
            let name = usize::try_from(*label)
                .ok()
                .and_then(|l| names.get(l))
                .copied()
                .unwrap_or("?");
            println!("    {label:>3} {n:>6}  {name}");
        }
    }
    let problems = crate::data::hdf5::validate_galaxy10(file, images, labels);
    if problems.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    for problem in &problems {
        eprintln!("error: {problem}");
    }
    eprintln!(
        "{} problem(s): a run would fail to load {}",
        problems.len(),
        file.display()
    );
    Ok(ExitCode::from(2))
}

fn synth_cmd(a: SynthArgs) -> miette::Result<ExitCode> {
    let kind = match a.kind {
        KindArg::Galaxy10 => SynthKind::Galaxy10,
        KindArg::Galaxy10Decals => SynthKind::Galaxy10Decals,
    };
    let config = SynthConfig {
        kind,
        count: a.count,
        seed: a.seed,
        size: a.size,
        proportions: a.equal_classes.then(|| vec![1.0; 10]),
        noise: a.noise,
        ambiguity: a.ambiguity,
    };
    let start = Instant::now();
    let set = synthesize(&config)?;
    let made = start.elapsed();
    write_galaxy10_h5(&set, &a.out)?;
    println!(
        "wrote {} synthetic {:?} images ({}x{}x3) to {} in {:.1} s (synthesis {:.1} s)",
        set.len(),
        kind,
        set.height,
        set.width,
        a.out.display(),
        start.elapsed().as_secs_f64(),
        made.as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

fn load_any(file: &Path, images: &str, labels: &str) -> miette::Result<ImageSet> {
    let mut magic = [0u8; 8];
    let is_artifact = std::fs::File::open(file)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
        .is_ok()
        && &magic == b"GPLIMG01";
    Ok(if is_artifact {
        artifact::load_image_set(file)?
    } else {
        load_galaxy10(file, images, labels)?
    })
}

fn preview_cmd(a: PreviewArgs) -> miette::Result<ExitCode> {
    let set = load_any(&a.file, &a.images, &a.labels)?;
    let sheet = contact_sheet(&set, a.per_class.max(1));
    let tmp = a.out.with_file_name(format!(
        ".{}.tmp.png",
        a.out
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    ));
    save_png(&sheet, &tmp)?;
    std::fs::rename(&tmp, &a.out).into_diagnostic()?;
    println!(
        "wrote {} ({} classes, up to {} examples each); rows:",
        a.out.display(),
        set.class_names.len(),
        a.per_class
    );
    let counts = set.class_counts();
    for (c, name) in set.class_names.iter().enumerate() {
        println!("  {c}: {name} ({} images)", counts[c]);
    }
    Ok(ExitCode::SUCCESS)
}

/// PNG at the best compression: contact sheets of noisy sky compress poorly otherwise.
fn save_png(img: &image::RgbImage, path: &Path) -> miette::Result<()> {
    use image::codecs::png::{CompressionType, FilterType, PngEncoder};
    use image::ImageEncoder;
    let file = std::io::BufWriter::new(std::fs::File::create(path).into_diagnostic()?);
    PngEncoder::new_with_quality(file, CompressionType::Best, FilterType::Adaptive)
        .write_image(
            img.as_raw(),
            img.width(),
            img.height(),
            image::ExtendedColorType::Rgb8,
        )
        .into_diagnostic()
}

/// One row per class: the class id drawn in a left margin, then the first `per_class`
/// examples of that class.
pub fn contact_sheet(set: &ImageSet, per_class: usize) -> image::RgbImage {
    let (h, w, gap, margin) = (set.height as u32, set.width as u32, 2u32, 16u32);
    let rows = set.class_names.len() as u32;
    let mut sheet = image::RgbImage::from_pixel(
        margin + per_class as u32 * (w + gap),
        rows * (h + gap),
        image::Rgb([40, 40, 40]),
    );
    let mut filled = vec![0usize; set.class_names.len()];
    for i in 0..set.len() {
        let c = set.labels[i] as usize;
        if filled[c] >= per_class {
            continue;
        }
        let (x0, y0) = (margin + filled[c] as u32 * (w + gap), c as u32 * (h + gap));
        let img = set.image(i);
        for y in 0..h {
            for x in 0..w {
                let p = ((y * w + x) as usize) * set.channels;
                let rgb = if set.channels >= 3 {
                    [img[p], img[p + 1], img[p + 2]]
                } else {
                    [img[p]; 3]
                };
                sheet.put_pixel(x0 + x, y0 + y, image::Rgb(rgb));
            }
        }
        filled[c] += 1;
    }
    for c in 0..rows {
        draw_number(&mut sheet, c as usize, 2, c * (h + gap) + h / 2 - 5);
    }
    sheet
}

/// Draws a small number with a 3×5 bitmap font at twice the size.
fn draw_number(img: &mut image::RgbImage, n: usize, x0: u32, y0: u32) {
    const DIGITS: [[u8; 5]; 10] = [
        [7, 5, 5, 5, 7],
        [2, 6, 2, 2, 7],
        [7, 1, 7, 4, 7],
        [7, 1, 7, 1, 7],
        [5, 5, 7, 1, 1],
        [7, 4, 7, 1, 7],
        [7, 4, 7, 5, 7],
        [7, 1, 1, 1, 1],
        [7, 5, 7, 5, 7],
        [7, 5, 7, 1, 7],
    ];
    for (k, ch) in n.to_string().bytes().enumerate() {
        let glyph = DIGITS[(ch - b'0') as usize];
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..3 {
                if bits & (4 >> col) != 0 {
                    for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                        let (x, y) = (x0 + k as u32 * 8 + col * 2 + dx, y0 + row as u32 * 2 + dy);
                        if x < img.width() && y < img.height() {
                            img.put_pixel(x, y, image::Rgb([230, 230, 230]));
                        }
                    }
                }
            }
        }
    }
}

fn report(what: &str, seconds: f64, target: f64) {
    let verdict = if seconds <= target {
        "ok"
    } else {
        "OVER TARGET"
    };
    println!("{what:<44} {seconds:>8.3} s   target < {target} s   {verdict}");
}

/// `gpl bench data`: synthesis, warm load and augmentation against the targets.
pub fn bench(a: BenchDataArgs) -> miette::Result<ExitCode> {
    let threads = rayon::current_num_threads();
    println!("gpl bench data ({threads} threads)");
    let tempdir;
    let dir = match &a.dir {
        Some(d) => d.clone(),
        None => {
            tempdir = std::env::temp_dir().join(format!("gpl-bench-data-{}", std::process::id()));
            std::fs::create_dir_all(&tempdir).into_diagnostic()?;
            tempdir.clone()
        }
    };
    let path = dir.join("galaxy10_synth.h5");

    let start = Instant::now();
    let set = synthesize(&SynthConfig::galaxy10(a.count, 1))?;
    report(
        &format!("synthesize {} images 69x69x3", a.count),
        start.elapsed().as_secs_f64(),
        60.0,
    );

    let start = Instant::now();
    write_galaxy10_h5(&set, &path)?;
    println!(
        "{:<44} {:>8.3} s",
        format!("write {} MB HDF5", set.images.len() / 1_000_000),
        start.elapsed().as_secs_f64()
    );
    drop(set);

    // Cold-ish first read, then the warm read the target is about.
    let _ = load_galaxy10(&path, "images", "ans")?;
    let start = Instant::now();
    let loaded = load_galaxy10(&path, "images", "ans")?;
    report(
        &format!("load {} images (warm)", loaded.len()),
        start.elapsed().as_secs_f64(),
        2.0,
    );

    let spec = AugmentSpec {
        rotation_range: 45.0,
        width_shift_range: 0.1,
        height_shift_range: 0.1,
        shear_range: 0.2,
        zoom_range: AugmentSpec::zoom(0.2),
        horizontal_flip: true,
        vertical_flip: true,
        ..Default::default()
    };
    let batch = 512;
    let mut buffer = vec![0f32; batch * loaded.image_len()];
    let start = Instant::now();
    let mut done = 0;
    while done < a.augment {
        let n = batch.min(a.augment - done);
        let indices: Vec<usize> = (done..done + n).map(|i| i % loaded.len()).collect();
        let seeds: Vec<u64> = (done..done + n)
            .map(|i| sample_seed(7, 0, i as u64))
            .collect();
        augment_batch(
            &spec,
            &loaded,
            &indices,
            &seeds,
            &mut buffer[..n * loaded.image_len()],
        );
        done += n;
    }
    report(
        &format!("augment {} images (Keras affine + flips)", a.augment),
        start.elapsed().as_secs_f64(),
        1.0,
    );

    let start = Instant::now();
    let art = dir.join("set.gplimg");
    artifact::save_image_set(&loaded, &art)?;
    let saved = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let _ = artifact::load_image_set(&art)?;
    println!(
        "{:<44} {:>8.3} s save, {:.3} s load",
        "image-set artifact",
        saved,
        start.elapsed().as_secs_f64()
    );
    if a.dir.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(ExitCode::SUCCESS)
}
