//! `gpl eval detections`: COCO box metrics of any tool's detections against a VOC folder
//! (owner: eval).

use clap::{Args, Subcommand};
use miette::IntoDiagnostic;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::data::voc::read_voc_dir;
use crate::eval::detection::{evaluate_boxes, BBox, CocoParams, TruthBox};
use crate::eval::detection_csv::parse_detections_csv;

#[derive(Subcommand, Debug)]
pub enum EvalCommand {
    /// COCO box metrics (pycocotools' twelve numbers) of detections against VOC ground truth.
    Detections(DetectionsArgs),
}

#[derive(Args, Debug)]
pub struct DetectionsArgs {
    /// A Pascal VOC folder: one XML per image (labelImg's layout), images beside them.
    #[arg(long)]
    pub truth: PathBuf,
    /// CSV with the header image,class,score,xmin,ymin,xmax,ymax; image is a VOC file name or
    /// its stem.
    #[arg(long)]
    pub detections: PathBuf,
}

pub fn run(command: EvalCommand) -> miette::Result<ExitCode> {
    match command {
        EvalCommand::Detections(a) => detections_cmd(a),
    }
}

fn detections_cmd(a: DetectionsArgs) -> miette::Result<ExitCode> {
    let voc = read_voc_dir(&a.truth)?;
    let text = std::fs::read_to_string(&a.detections)
        .into_diagnostic()
        .map_err(|e| e.wrap_err(format!("cannot read {}", a.detections.display())))?;
    let detections = parse_detections_csv(
        &a.detections,
        &text,
        |name| voc.image_index(name),
        &voc.classes,
    )?;
    let truth: Vec<TruthBox> = voc
        .annotations
        .iter()
        .enumerate()
        .flat_map(|(image, ann)| {
            let classes = &voc.classes;
            ann.objects.iter().map(move |o| TruthBox {
                image,
                // Every object name is in `classes`, which was built from them.
                class: classes.binary_search(&o.name).unwrap_or_default(),
                bbox: BBox {
                    xmin: o.xmin,
                    ymin: o.ymin,
                    xmax: o.xmax,
                    ymax: o.ymax,
                },
                ignore: o.difficult,
            })
        })
        .collect();
    let params = CocoParams::default();
    let eval = evaluate_boxes(
        voc.annotations.len(),
        voc.classes.len(),
        &truth,
        &detections,
        &params,
    )?;
    println!(
        "{} images, {} boxes ({} difficult, ignored as COCO's crowd), {} detections, {} classes",
        voc.annotations.len(),
        truth.len(),
        truth.iter().filter(|t| t.ignore).count(),
        detections.len(),
        voc.classes.len()
    );
    for line in eval.summary(None).lines(&params) {
        println!("{line}");
    }
    println!();
    println!(
        "{:<24} {:>7} {:>7} {:>7} {:>7}",
        "class", "AP", "AP50", "AP75", "AR100"
    );
    for (k, name) in voc.classes.iter().enumerate() {
        let s = eval.summary(Some(k)).stats();
        println!(
            "{name:<24} {:>7.3} {:>7.3} {:>7.3} {:>7.3}",
            s[0], s[1], s[2], s[8]
        );
    }
    Ok(ExitCode::SUCCESS)
}
