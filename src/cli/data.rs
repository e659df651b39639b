//! `gpl data inspect | synth | preview | extract` and `gpl bench data` (owner: data).

use clap::{Args, Subcommand, ValueEnum};
use miette::IntoDiagnostic;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use crate::data::hdf5::{inspect, load_galaxy10, write_galaxy10_h5};
use crate::data::synth::{synthesize, SynthConfig, SynthKind};
use crate::data::synth_fields::{render_fields, FieldsConfig};
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
    /// Detect the objects of one FITS, PNG or JPEG image (SExtractor's algorithm, as SEP) and
    /// write their catalogue as CSV.
    Extract(ExtractArgs),
}

#[derive(Args, Debug)]
pub struct ExtractArgs {
    /// A FITS, PNG or JPEG image (colour images are read as luminance).
    pub image: PathBuf,
    #[arg(long)]
    pub out: PathBuf,
    /// The FITS HDU holding the image (default: the first that holds a 2-D image).
    #[arg(long)]
    pub hdu: Option<usize>,
    /// Detection threshold in units of the global background RMS.
    #[arg(long, default_value_t = 1.5)]
    pub thresh: f32,
    /// Minimum pixels above the threshold.
    #[arg(long, default_value_t = 5)]
    pub minarea: usize,
    #[arg(long, default_value_t = 32)]
    pub deblend_nthresh: usize,
    #[arg(long, default_value_t = 0.005)]
    pub deblend_cont: f64,
    /// Detect on the image itself instead of filtering it with SEP's 3x3 kernel.
    #[arg(long)]
    pub no_filter: bool,
    /// Keep spurious detections in the wings of bright objects.
    #[arg(long)]
    pub no_clean: bool,
    #[arg(long, default_value_t = 1.0)]
    pub clean_param: f64,
    /// Background box width and height in pixels.
    #[arg(long, default_value_t = 64)]
    pub bw: usize,
    #[arg(long, default_value_t = 64)]
    pub bh: usize,
    /// Background median filter width and height in boxes.
    #[arg(long, default_value_t = 3)]
    pub fw: usize,
    #[arg(long, default_value_t = 3)]
    pub fh: usize,
    /// Extract in tiles of this many pixels a side, each with its own background, and merge
    /// the tiles' objects; a FITS image is then read one band of tiles at a time.
    #[arg(long)]
    pub tile: Option<usize>,
    /// Pixels neighbouring tiles share (with --tile); larger than the largest object.
    #[arg(long, default_value_t = 128)]
    pub overlap: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, ValueEnum)]
pub enum KindArg {
    Galaxy10,
    Galaxy10Decals,
    /// Detection fields: several Galaxy10 galaxies, stars and cosmic rays, with boxes.
    Fields,
}

#[derive(Args, Debug)]
pub struct SynthArgs {
    #[arg(long, value_enum, default_value = "galaxy10")]
    pub kind: KindArg,
    /// Images to make (default: 21,785 for the Galaxy10 kinds, 2,000 fields).
    #[arg(long)]
    pub count: Option<usize>,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Image side in pixels (default: 69 for galaxy10, 256 for galaxy10-decals, 424 for
    /// fields).
    #[arg(long)]
    pub size: Option<usize>,
    /// Fields only: at most this many galaxies per field (default 4).
    #[arg(long)]
    pub max_galaxies: Option<usize>,
    /// Noise multiplier (1 = calibrated default).
    #[arg(long, default_value_t = 1.0)]
    pub noise: f32,
    /// Class-boundary overlap (0 = disjoint parameter ranges, 1 = calibrated default).
    #[arg(long, default_value_t = 1.0)]
    pub ambiguity: f32,
    /// Equal class proportions instead of the real file's.
    #[arg(long)]
    pub equal_classes: bool,
    /// The Galaxy10 HDF5 file to write.
    #[arg(long, required_unless_present = "voc", conflicts_with = "voc")]
    pub out: Option<PathBuf>,
    /// Fields only: the Pascal VOC folder to write (a PNG and a labelImg XML per field).
    #[arg(long)]
    pub voc: Option<PathBuf>,
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
        DataCommand::Extract(a) => extract_cmd(a),
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

fn extract_cmd(a: ExtractArgs) -> miette::Result<ExitCode> {
    use crate::detect::catalog::{detect_image, is_fits, load_image, write_csv, write_objects_csv};
    use crate::detect::extract::{BackgroundParams, ExtractParams, Kernel};
    let ExtractArgs {
        image,
        out,
        hdu,
        thresh,
        minarea,
        deblend_nthresh,
        deblend_cont,
        no_filter,
        no_clean,
        clean_param,
        bw,
        bh,
        fw,
        fh,
        tile,
        overlap,
    } = a;
    let params = ExtractParams {
        thresh,
        minarea,
        kernel: (!no_filter).then(Kernel::sep_default),
        deblend_nthresh,
        deblend_cont,
        clean: !no_clean,
        clean_param,
    };
    let back = BackgroundParams {
        bw,
        bh,
        fw,
        fh,
        fthresh: 0.0,
    };
    if let Some(tile) = tile {
        use crate::detect::tile::{detect_tiled, detect_tiled_fits, TileParams};
        let tiling = TileParams {
            tile,
            overlap,
            min_ios: 0.5,
        };
        let catalog = if is_fits(&image) {
            detect_tiled_fits(&image, hdu, &back, &params, &tiling)?
        } else {
            let mut img = load_image(&image, hdu)?;
            detect_tiled(&mut img, None, &back, &params, &tiling)?
        };
        write_objects_csv(&catalog.objects, catalog.wcs.as_ref(), &out)?;
        println!(
            "{}: {} tiles of {tile} px (overlap {overlap}); {} objects{} -> {}",
            image.display(),
            catalog.tiles,
            catalog.objects.len(),
            if catalog.wcs.is_some() {
                " (with RA, Dec)"
            } else {
                ""
            },
            out.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let img = load_image(&image, hdu)?;
    let catalog = detect_image(&img, &back, &params)?;
    write_csv(&catalog, &out)?;
    println!(
        "{}: {}x{}, background {:.4} ± {:.4}; {} objects{} -> {}",
        image.display(),
        img.width,
        img.height,
        catalog.background.global,
        catalog.background.global_rms,
        catalog.objects.len(),
        if catalog.wcs.is_some() {
            " (with RA, Dec)"
        } else {
            ""
        },
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn synth_cmd(a: SynthArgs) -> miette::Result<ExitCode> {
    let kind = match a.kind {
        KindArg::Galaxy10 => SynthKind::Galaxy10,
        KindArg::Galaxy10Decals => SynthKind::Galaxy10Decals,
        KindArg::Fields => return fields_cmd(a),
    };
    let unsupported = |what: &str| {
        miette::miette!(
            code = "gpl::unsupported",
            help = "use --kind fields for detection fields",
            "{what} is only for --kind fields"
        )
    };
    if a.voc.is_some() {
        return Err(unsupported("--voc"));
    }
    if a.max_galaxies.is_some() {
        return Err(unsupported("--max-galaxies"));
    }
    let Some(out) = a.out else {
        return Err(miette::miette!(
            "--out FILE is required for --kind {:?}",
            a.kind
        ));
    };
    let config = SynthConfig {
        kind,
        count: a.count.unwrap_or(21_785),
        seed: a.seed,
        size: a.size,
        proportions: a.equal_classes.then(|| vec![1.0; 10]),
        noise: a.noise,
        ambiguity: a.ambiguity,
    };
    let start = Instant::now();
    let set = synthesize(&config)?;
    let made = start.elapsed();
    write_galaxy10_h5(&set, &out)?;
    println!(
        "wrote {} synthetic {:?} images ({}x{}x3) to {} in {:.1} s (synthesis {:.1} s)",
        set.len(),
        kind,
        set.height,
        set.width,
        out.display(),
        start.elapsed().as_secs_f64(),
        made.as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

/// `gpl data synth --kind fields --voc DIR`: synthetic detection fields as a VOC folder.
fn fields_cmd(a: SynthArgs) -> miette::Result<ExitCode> {
    let refuse = |what: &str, help: &str| {
        miette::miette!(
            code = "gpl::unsupported",
            help = help.to_string(),
            "{what} is not supported for --kind fields"
        )
    };
    if a.ambiguity != 1.0 {
        return Err(refuse(
            "--ambiguity",
            "fields draw their galaxies at the calibrated ambiguity (1)",
        ));
    }
    if a.equal_classes {
        return Err(refuse(
            "--equal-classes",
            "fields draw their galaxies' classes in the real Galaxy10 proportions",
        ));
    }
    let Some(dir) = a.voc else {
        return Err(refuse(
            "--out (a Galaxy10 HDF5 file)",
            "fields are written as a Pascal VOC folder: give --voc DIR",
        ));
    };
    let mut config = FieldsConfig::new(a.count.unwrap_or(2_000), a.seed);
    config.noise = a.noise;
    if let Some(size) = a.size {
        config.size = size;
    }
    if let Some(m) = a.max_galaxies {
        config.max_galaxies = m;
    }
    let start = Instant::now();
    let set = render_fields(&config)?;
    let made = start.elapsed();
    set.write_voc(&dir)?;
    let galaxies: usize = set.objects.iter().map(Vec::len).sum();
    println!(
        "wrote {} synthetic fields ({}x{}x3, {} galaxies) to {} in {:.1} s (rendering {:.1} s)",
        set.len(),
        set.images.height,
        set.images.width,
        galaxies,
        dir.display(),
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
    let sheet = crate::report::contact_sheet::contact_sheet(&set, a.per_class.max(1));
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

/// `gpl bench data`: synthesis, warm load and augmentation against the targets.
pub fn bench(a: BenchDataArgs) -> miette::Result<ExitCode> {
    crate::bench::data::run(a.count, a.augment, a.dir.as_deref())?;
    Ok(ExitCode::SUCCESS)
}
