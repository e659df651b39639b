//! `gpl bench data`: synthesis, HDF5 write and warm load, augmentation and the image-set
//! artifact, each timed against the data layer's targets.

use crate::data::artifact;
use crate::data::augment::{augment_batch, sample_seed, AugmentSpec};
use crate::data::hdf5::{load_galaxy10, write_galaxy10_h5};
use crate::data::synth::{synthesize, SynthConfig};
use miette::IntoDiagnostic;
use std::path::Path;
use std::time::Instant;

fn report(what: &str, seconds: f64, target: f64) {
    let verdict = if seconds <= target {
        "ok"
    } else {
        "OVER TARGET"
    };
    println!("{what:<44} {seconds:>8.3} s   target < {target} s   {verdict}");
}

/// `gpl bench data`: synthesis, warm load and augmentation against the targets.
pub fn run(count: usize, augment: usize, dir: Option<&Path>) -> miette::Result<()> {
    let threads = rayon::current_num_threads();
    println!("gpl bench data ({threads} threads)");
    let tempdir_used = dir.is_none();
    let tempdir;
    let dir = match dir {
        Some(d) => d.to_path_buf(),
        None => {
            tempdir = std::env::temp_dir().join(format!("gpl-bench-data-{}", std::process::id()));
            std::fs::create_dir_all(&tempdir).into_diagnostic()?;
            tempdir.clone()
        }
    };
    let path = dir.join("galaxy10_synth.h5");

    let start = Instant::now();
    let set = synthesize(&SynthConfig::galaxy10(count, 1))?;
    report(
        &format!("synthesize {} images 69x69x3", count),
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
    while done < augment {
        let n = batch.min(augment - done);
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
        &format!("augment {} images (Keras affine + flips)", augment),
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
    if tempdir_used {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}
