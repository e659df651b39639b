//! report.html: one self-contained page (inline CSS, PNG figures as base64 data URIs, the DAG
//! as inline SVG, no scripts, no external resources) with a section per stage and a comparison
//! of every evaluated model. `write_report` also writes metrics.yaml and the figures as files.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;

use super::files::write_atomic;
use super::metrics_yaml::write_metrics_yaml;
use super::model::{
    ComparisonRow, DagNode, EnsembleReport, ExplainReport, FigureValue, ModelEvaluation,
    ReportModel, ReportTable, SearchReport, StageReport,
};
use super::plots;
use super::ReportError;
use crate::eval::crossval::{CrossvalSummary, TestResult};
use crate::eval::stats::{fmt_p, MethodUsed};

/// A rendered figure: its file name under figures/ and the PNG bytes.
#[derive(Debug, Clone)]
pub struct Figure {
    pub file_name: String,
    pub png: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct RenderedReport {
    pub html: String,
    pub figures: Vec<Figure>,
}

/// The files `write_report` wrote.
#[derive(Debug, Clone)]
pub struct ReportFiles {
    pub html: PathBuf,
    pub metrics_yaml: PathBuf,
    pub figures: Vec<PathBuf>,
}

const STYLE: &str = r#"
body { font-family: "DejaVu Sans", Verdana, Arial, sans-serif; margin: 0; color: #1d2330; background: #f6f7f9; line-height: 1.45; }
header { background: #1d3557; color: #fff; padding: 1.2rem 2rem; }
header h1 { margin: 0 0 .2rem 0; font-size: 1.6rem; }
header p { margin: 0; opacity: .85; }
main { max-width: 1200px; margin: 0 auto; padding: 1rem 2rem 3rem 2rem; }
nav ul { columns: 3; padding-left: 1.2rem; }
section { background: #fff; border: 1px solid #d9dde3; border-radius: 6px; padding: .8rem 1.4rem 1.2rem 1.4rem; margin: 1.2rem 0; }
h2 { font-size: 1.3rem; border-bottom: 1px solid #e3e6ea; padding-bottom: .3rem; }
h2 .kind { font-weight: normal; color: #5b6575; font-size: 1rem; }
h3 { font-size: 1.1rem; margin-top: 1.4rem; }
table { border-collapse: collapse; margin: .6rem 0; font-size: .92rem; }
th, td { border: 1px solid #d9dde3; padding: .25rem .6rem; text-align: right; }
th:first-child, td:first-child, td.text { text-align: left; }
thead th { background: #eef1f5; }
tr.summary td { font-weight: bold; background: #f7f8fa; }
td.best { background: #e3f4e8; font-weight: bold; }
pre { background: #f3f4f6; padding: .6rem .8rem; overflow-x: auto; font-size: .85rem; border-radius: 4px; }
img { max-width: 100%; height: auto; border: 1px solid #e3e6ea; margin: .4rem 0; }
.figures { display: flex; flex-wrap: wrap; gap: 1rem; align-items: flex-start; }
.warning { background: #fff4e0; border-left: 4px solid #e69f00; padding: .5rem .8rem; margin: .6rem 0; }
.verdict { background: #eef4fb; border-left: 4px solid #0072b2; padding: .5rem .8rem; margin: .6rem 0; }
dl.figures-list { display: grid; grid-template-columns: max-content auto; gap: .2rem 1rem; }
dl.figures-list dt { color: #5b6575; }
dl.figures-list dd { margin: 0; font-weight: bold; }
svg text { font-family: "DejaVu Sans", Verdana, Arial, sans-serif; }
.muted { color: #5b6575; }
"#;

/// Escapes text for HTML element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(ch),
        }
    }
    out
}

/// A fragment safe for ids and file names: letters, digits, '-' and '_'.
fn slug(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

fn fmt_num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        return format!("{v:.0}");
    }
    if v == 0.0 || (v.abs() >= 1e-3 && v.abs() < 1e6) {
        let s = format!("{v:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        format!("{v:.3e}")
    }
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.4}"))
        .unwrap_or_else(|| "—".to_string())
}

struct Page {
    html: String,
    figures: Vec<Figure>,
}

impl Page {
    fn image(&mut self, file_name: String, png: Vec<u8>, alt: &str) {
        let data = base64::engine::general_purpose::STANDARD.encode(&png);
        let _ = write!(
            self.html,
            r#"<img alt="{}" src="data:image/png;base64,{data}">"#,
            escape(alt)
        );
        self.figures.push(Figure { file_name, png });
    }
}

/// Renders the page and its figures.
pub fn render_report(model: &ReportModel) -> Result<RenderedReport, ReportError> {
    let mut page = Page {
        html: String::new(),
        figures: Vec::new(),
    };
    let title = format!("gpl report — {}", model.pipeline);
    let _ = write!(
        page.html,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n\
         <header><h1>{}</h1><p>gpl {} · {} stages</p></header>\n<main>\n",
        escape(&title),
        escape(&model.pipeline),
        env!("CARGO_PKG_VERSION"),
        model.stages.len()
    );
    contents(&mut page.html, model);
    dag_section(&mut page.html, &model.dag);
    comparison_section(&mut page, model)?;
    for stage in &model.stages {
        stage_section(&mut page, stage)?;
    }
    page.html.push_str("</main>\n</body>\n</html>\n");
    Ok(RenderedReport {
        html: page.html,
        figures: page.figures,
    })
}

fn contents(html: &mut String, model: &ReportModel) {
    html.push_str("<nav><h2>Contents</h2><ul>\n<li><a href=\"#pipeline\">Pipeline</a></li>\n");
    html.push_str("<li><a href=\"#comparison\">Model comparison</a></li>\n");
    for stage in &model.stages {
        let _ = writeln!(
            html,
            "<li><a href=\"#stage-{}\">{}</a> <span class=\"muted\">({})</span></li>",
            slug(&stage.name),
            escape(&stage.name),
            escape(&stage.kind)
        );
    }
    html.push_str("</ul></nav>\n");
}

/// Column of each node: the length of the longest input chain leading to it.
fn dag_layers(dag: &[DagNode]) -> Vec<usize> {
    let index: HashMap<&str, usize> = dag
        .iter()
        .enumerate()
        .map(|(i, n)| (n.name.as_str(), i))
        .collect();
    let mut layer = vec![0usize; dag.len()];
    // Relax edges |V| times: terminates on cycles too (which a plan never has).
    for _ in 0..dag.len() {
        let mut changed = false;
        for (i, node) in dag.iter().enumerate() {
            for input in &node.inputs {
                if let Some(&j) = index.get(input.as_str()) {
                    if layer[j] + 1 > layer[i] && layer[j] < dag.len() {
                        layer[i] = layer[j] + 1;
                        changed = true;
                    }
                }
            }
        }
        if !changed {
            break;
        }
    }
    layer
}

fn dag_section(html: &mut String, dag: &[DagNode]) {
    html.push_str("<section id=\"pipeline\"><h2>Pipeline</h2>\n");
    if dag.is_empty() {
        html.push_str("<p class=\"muted\">No stages.</p></section>\n");
        return;
    }
    let layers = dag_layers(dag);
    let (box_w, box_h, gap_x, gap_y) = (170.0, 44.0, 60.0, 18.0);
    let mut row_in_layer = HashMap::new();
    let mut pos = Vec::with_capacity(dag.len());
    for &l in &layers {
        let row = row_in_layer.entry(l).or_insert(0usize);
        pos.push((
            10.0 + l as f64 * (box_w + gap_x),
            10.0 + *row as f64 * (box_h + gap_y),
        ));
        *row += 1;
    }
    let width =
        20.0 + (layers.iter().max().copied().unwrap_or(0) + 1) as f64 * (box_w + gap_x) - gap_x;
    let rows = row_in_layer.values().max().copied().unwrap_or(1);
    let height = 20.0 + rows as f64 * (box_h + gap_y) - gap_y;
    let _ = write!(
        html,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{height:.0}\" \
         viewBox=\"0 0 {width:.0} {height:.0}\" role=\"img\" aria-label=\"stage graph\">\n\
         <defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"7\" \
         markerHeight=\"7\" orient=\"auto-start-reverse\"><path d=\"M 0 0 L 10 5 L 0 10 z\" fill=\"#5b6575\"/></marker></defs>\n"
    );
    let index: HashMap<&str, usize> = dag
        .iter()
        .enumerate()
        .map(|(i, n)| (n.name.as_str(), i))
        .collect();
    for (i, node) in dag.iter().enumerate() {
        for input in &node.inputs {
            if let Some(&j) = index.get(input.as_str()) {
                let (x1, y1) = (pos[j].0 + box_w, pos[j].1 + box_h / 2.0);
                let (x2, y2) = (pos[i].0, pos[i].1 + box_h / 2.0);
                let _ = writeln!(
                    html,
                    "<line x1=\"{x1:.1}\" y1=\"{y1:.1}\" x2=\"{x2:.1}\" y2=\"{y2:.1}\" stroke=\"#5b6575\" stroke-width=\"1.4\" marker-end=\"url(#arrow)\"/>"
                );
            }
        }
    }
    for (node, (x, y)) in dag.iter().zip(&pos) {
        let fill = if node.cached { "#eef1f5" } else { "#e3eefa" };
        let _ = writeln!(
            html,
            "<g><rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{box_w}\" height=\"{box_h}\" rx=\"6\" fill=\"{fill}\" stroke=\"#1d3557\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"13\" text-anchor=\"middle\" font-weight=\"bold\">{}</text>\
             <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"middle\" fill=\"#5b6575\">{}{}</text></g>",
            x + box_w / 2.0,
            y + 18.0,
            escape(&truncate(&node.name, 22)),
            x + box_w / 2.0,
            y + 34.0,
            escape(&node.kind),
            if node.cached { " · cached" } else { "" }
        );
    }
    html.push_str("</svg>\n<ul>\n");
    for node in dag {
        let inputs = if node.inputs.is_empty() {
            String::new()
        } else {
            format!(" ← {}", escape(&node.inputs.join(", ")))
        };
        let _ = writeln!(
            html,
            "<li><b>{}</b> <span class=\"muted\">{}{}</span>{inputs}</li>",
            escape(&node.name),
            escape(&node.kind),
            if node.cached { ", cached" } else { "" }
        );
    }
    html.push_str("</ul></section>\n");
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        format!("{}…", text.chars().take(max - 1).collect::<String>())
    }
}

fn comparison_section(page: &mut Page, model: &ReportModel) -> Result<(), ReportError> {
    let rows = model.comparison_rows();
    page.html
        .push_str("<section id=\"comparison\"><h2>Model comparison</h2>\n");
    if rows.is_empty() {
        page.html
            .push_str("<p class=\"muted\">No model was evaluated.</p></section>\n");
        return Ok(());
    }
    page.html.push_str(
        "<p>Macro averages weigh every class equally; AUC is the macro one-vs-rest AUC. \
         The best value of each score is highlighted. MFLOPs count one image's forward pass \
         (a multiply-add is two); images/s is inference on this machine, timed on up to 128 \
         of the evaluated images when the evaluate stage ran.</p>\n<table><thead><tr><th>model</th><th>evaluated on</th>\
         <th>stage</th><th>accuracy</th><th>macro precision</th><th>macro recall</th><th>macro F1</th><th>AUC</th>\
         <th>params</th><th>MFLOPs</th><th>images/s</th></tr></thead><tbody>\n",
    );
    let columns: [fn(&ComparisonRow) -> Option<f64>; 5] = [
        |r| Some(r.scores.accuracy),
        |r| Some(r.scores.precision),
        |r| Some(r.scores.recall),
        |r| Some(r.scores.f1),
        |r| r.scores.auc,
    ];
    let best: Vec<Option<f64>> = columns
        .iter()
        .map(|f| {
            rows.iter()
                .filter_map(f)
                .fold(None, |b: Option<f64>, v| Some(b.map_or(v, |b| b.max(v))))
        })
        .collect();
    for row in &rows {
        let _ = write!(
            page.html,
            "<tr><td>{}</td><td class=\"text\">{}</td><td class=\"text\">{}</td>",
            escape(&row.model),
            escape(&row.dataset),
            escape(&row.stage)
        );
        for (f, b) in columns.iter().zip(&best) {
            let v = f(row);
            let class = if v.is_some() && v == *b && rows.len() > 1 {
                " class=\"best\""
            } else {
                ""
            };
            let _ = write!(page.html, "<td{class}>{}</td>", fmt_opt(v));
        }
        match &row.size {
            Some(size) => {
                let _ = write!(
                    page.html,
                    // `timing`: the one cell a re-run does not reproduce.
                    "<td>{}</td><td>{:.1}</td><td class=\"timing\">{:.0}</td>",
                    size.params, size.mflops, size.images_per_second
                );
            }
            None => page.html.push_str("<td>–</td><td>–</td><td>–</td>"),
        }
        page.html.push_str("</tr>\n");
    }
    page.html.push_str("</tbody></table>\n");
    let png = plots::model_comparison(&rows, "Evaluated models")?;
    page.image(
        "comparison.png".to_string(),
        png,
        "bar chart comparing the evaluated models",
    );
    page.html.push_str("</section>\n");
    Ok(())
}

fn stage_section(page: &mut Page, stage: &StageReport) -> Result<(), ReportError> {
    let id = slug(&stage.name);
    let _ = writeln!(
        page.html,
        "<section id=\"stage-{id}\"><h2>{} <span class=\"kind\">{}</span></h2>",
        escape(&stage.name),
        escape(&stage.kind)
    );
    if !stage.key_figures.is_empty() {
        page.html.push_str("<dl class=\"figures-list\">\n");
        for f in &stage.key_figures {
            let value = match &f.value {
                FigureValue::Number(v) => fmt_num(*v),
                FigureValue::Text(t) => t.clone(),
            };
            let _ = writeln!(
                page.html,
                "<dt>{}</dt><dd>{}</dd>",
                escape(&f.label),
                escape(&value)
            );
        }
        page.html.push_str("</dl>\n");
    }
    if !stage.history.is_empty() {
        history_block(page, stage, &id)?;
    }
    if let Some(ensemble) = &stage.ensemble {
        ensemble_block(&mut page.html, ensemble);
    }
    for evaluation in &stage.evaluations {
        evaluation_block(page, evaluation, &id)?;
    }
    if let Some(cv) = &stage.crossval {
        crossval_block(&mut page.html, cv);
    }
    if let Some(explain) = &stage.explain {
        explain_block(page, explain, &id);
    }
    if let Some(search) = &stage.search {
        search_block(page, search, &id);
    }
    for table in &stage.tables {
        table_block(&mut page.html, table);
    }
    for f in &stage.figures {
        let _ = writeln!(page.html, "<h3>{}</h3>", escape(&f.title));
        page.image(format!("{id}-{}", f.file), f.png.clone(), &f.title);
    }
    page.html.push_str("</section>\n");
    Ok(())
}

fn history_block(page: &mut Page, stage: &StageReport, id: &str) -> Result<(), ReportError> {
    page.html.push_str("<h3>Training curves</h3>\n");
    let png = plots::training_curves(&stage.history, &format!("{} training history", stage.name))?;
    page.image(
        format!("{id}-training.png"),
        png,
        &format!("training curves of {}", stage.name),
    );
    page.html.push_str(
        "<details><summary>History table</summary><table><thead><tr><th>epoch</th><th>loss</th><th>accuracy</th>\
         <th>val_loss</th><th>val_accuracy</th><th>lr</th></tr></thead><tbody>\n",
    );
    for r in &stage.history {
        let _ = writeln!(
            page.html,
            "<tr><td>{}</td><td>{:.4}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            r.epoch,
            r.loss,
            fmt_opt(r.accuracy),
            fmt_opt(r.val_loss),
            fmt_opt(r.val_accuracy),
            r.lr.map(|v| format!("{v:.2e}"))
                .unwrap_or_else(|| "—".into())
        );
    }
    page.html.push_str("</tbody></table></details>\n");
    Ok(())
}

fn ensemble_block(html: &mut String, ensemble: &EnsembleReport) {
    html.push_str("<h3>Ensemble weights</h3>\n<table><thead><tr><th>member</th><th>weight</th></tr></thead><tbody>\n");
    for (member, weight) in ensemble.members.iter().zip(&ensemble.weights) {
        let _ = writeln!(
            html,
            "<tr><td>{}</td><td>{weight:.4}</td></tr>",
            escape(member)
        );
    }
    html.push_str("</tbody></table>\n");
    match &ensemble.search {
        Some(s) => {
            let objective = match s.objective {
                crate::eval::ensemble::SearchObjective::AccuracyThenLogLoss => {
                    "validation accuracy (log-loss breaks ties)"
                }
                crate::eval::ensemble::SearchObjective::LogLoss => "validation log-loss",
            };
            let _ = writeln!(
                html,
                "<p>Weights searched on the validation predictions: simplex grid with step {}, then local refinement; \
                 objective {objective}; {} weightings tried. Validation accuracy {:.4}, log-loss {:.4}.</p>",
                fmt_num(s.grid_step),
                s.candidates_evaluated,
                s.accuracy,
                s.log_loss
            );
        }
        None => html.push_str(
            "<p>Fixed weights, as written in the pipeline (normalised to sum to 1).</p>\n",
        ),
    }
}

fn evaluation_block(page: &mut Page, e: &ModelEvaluation, id: &str) -> Result<(), ReportError> {
    let ev = &e.evaluation;
    let _ = writeln!(
        page.html,
        "<h3>{} on {}</h3>\n<p>{} samples · accuracy <b>{:.4}</b> · macro F1 <b>{:.4}</b> · macro AUC <b>{}</b> · micro AUC {} · log-loss {:.4}</p>",
        escape(&e.model),
        escape(&e.dataset),
        ev.samples,
        ev.accuracy,
        ev.macro_avg.f1,
        fmt_opt(ev.roc.macro_auc),
        fmt_opt(ev.roc.micro_auc),
        ev.log_loss
    );
    if !ev.top_k.is_empty() {
        let list: Vec<String> = ev
            .top_k
            .iter()
            .map(|t| format!("top-{} {:.4}", t.k, t.accuracy))
            .collect();
        let _ = writeln!(page.html, "<p>{}</p>", list.join(" · "));
    }
    if !ev.roc.undefined_classes.is_empty() {
        let names: Vec<&str> = ev
            .roc
            .undefined_classes
            .iter()
            .map(|&k| ev.class_names.get(k).map_or("?", String::as_str))
            .collect();
        let _ = writeln!(
            page.html,
            "<p class=\"warning\">No true samples of {}: their one-vs-rest AUC is undefined and the macro AUC \
             averages the other classes.</p>",
            escape(&names.join(", "))
        );
    }
    let _ = writeln!(page.html, "<pre>{}</pre>", escape(&ev.report_text(2)));
    page.html.push_str("<div class=\"figures\">");
    let base = format!("{id}-{}-{}", slug(&e.model), slug(&e.dataset));
    let title = format!("{} on {}", e.model, e.dataset);
    let png = plots::confusion_heatmap(
        &ev.confusion,
        &ev.class_names,
        &format!("Confusion matrix: {title}"),
    )?;
    page.image(
        format!("{base}-confusion.png"),
        png,
        &format!("confusion matrix of {title}"),
    );
    let png = plots::roc_curves(&ev.roc, &ev.class_names, &format!("ROC curves: {title}"))?;
    page.image(
        format!("{base}-roc.png"),
        png,
        &format!("ROC curves of {title}"),
    );
    page.html.push_str("</div>\n");
    Ok(())
}

fn table_block(html: &mut String, t: &ReportTable) {
    let _ = writeln!(html, "<h3>{}</h3>", escape(&t.title));
    html.push_str("<table><thead><tr>");
    for h in &t.header {
        let _ = write!(html, "<th>{}</th>", escape(h));
    }
    html.push_str("</tr></thead><tbody>\n");
    for row in &t.rows {
        html.push_str("<tr>");
        for cell in row {
            let _ = write!(html, "<td>{}</td>", escape(cell));
        }
        html.push_str("</tr>\n");
    }
    html.push_str("</tbody></table>\n");
    if let Some(note) = &t.note {
        let _ = writeln!(html, "<p class=\"note\">{}</p>", escape(note));
    }
}

fn explain_block(page: &mut Page, e: &ExplainReport, id: &str) {
    let _ = writeln!(
        page.html,
        "<p>Model <code>{}</code> on <code>{}</code>. Maps, inputs and <code>samples.csv</code> are in this stage's folder as <code>.npy</code> files.</p>",
        escape(&e.model),
        escape(&e.data)
    );
    for row in e.sanity.iter().filter_map(|r| r.warning.as_ref()) {
        let _ = writeln!(page.html, "<p class=\"warning\">⚠ {}</p>", escape(row));
    }
    for f in &e.figures {
        let _ = writeln!(page.html, "<h3>{}</h3>", escape(&f.title));
        page.image(format!("{id}-{}", f.file), f.png.clone(), &f.title);
    }
    if !e.deletion.is_empty() {
        page.html.push_str(
            "<h3>Faithfulness and sanity</h3>\n<table><thead><tr><th>method</th><th>deletion AUC (lower is better)</th>\
             <th>Spearman ρ after randomising every layer</th></tr></thead><tbody>\n",
        );
        for d in &e.deletion {
            let rho = e
                .sanity
                .iter()
                .find(|s| s.method == d.method)
                .and_then(|s| s.spearman.last().copied().flatten());
            let _ = writeln!(
                page.html,
                "<tr><td>{}</td><td>{:.3}</td><td>{}</td></tr>",
                escape(&d.method),
                d.auc,
                fmt_opt(rho)
            );
        }
        page.html.push_str("</tbody></table>\n");
    }
}

fn search_block(page: &mut Page, s: &SearchReport, id: &str) {
    for f in &s.figures {
        page.image(format!("{id}-{}", f.file), f.png.clone(), &f.title);
    }
    page.html.push_str("<table><thead><tr><th>trial</th>");
    for d in &s.dims {
        let _ = write!(page.html, "<th>{}</th>", escape(d));
    }
    let _ = writeln!(
        page.html,
        "<th>{}</th><th>params</th><th>MFLOPs</th><th>status</th></tr></thead><tbody>",
        escape(&s.metric)
    );
    for (trial, values, objective, params, mflops, status) in &s.trials {
        let mark = if s.best == Some(*trial) { " ★" } else { "" };
        let _ = write!(page.html, "<tr><td>{trial}{mark}</td>");
        for v in values {
            let _ = write!(page.html, "<td>{}</td>", fmt_num(*v));
        }
        let _ = writeln!(
            page.html,
            "<td>{}</td><td>{params}</td><td>{mflops:.2}</td><td>{}</td></tr>",
            fmt_opt(*objective),
            escape(status)
        );
    }
    page.html.push_str("</tbody></table>\n");
}

fn crossval_block(html: &mut String, cv: &CrossvalSummary) {
    let _ = writeln!(html, "<h3>Cross-validation: {} folds</h3>", cv.folds);
    html.push_str("<table><thead><tr><th>fold</th>");
    for m in &cv.models {
        for metric in &cv.metrics {
            let _ = write!(html, "<th>{}<br>{}</th>", escape(&m.model), metric.label());
        }
    }
    html.push_str("</tr></thead><tbody>\n");
    for fold in 0..cv.folds {
        let _ = write!(html, "<tr><td>{}</td>", fold + 1);
        for m in &cv.models {
            for metric in &cv.metrics {
                let _ = write!(
                    html,
                    "<td>{}</td>",
                    fmt_opt(m.folds.get(fold).and_then(|s| metric.of(s)))
                );
            }
        }
        html.push_str("</tr>\n");
    }
    html.push_str("<tr class=\"summary\"><td>mean ± std</td>");
    for summaries in &cv.summaries {
        for s in summaries {
            let cell = match s.summary {
                Some(s) => format!(
                    "{:.4} ± {}",
                    s.mean,
                    s.std
                        .map(|v| format!("{v:.4}"))
                        .unwrap_or_else(|| "—".into())
                ),
                None => "—".to_string(),
            };
            let _ = write!(html, "<td>{cell}</td>");
        }
    }
    html.push_str("</tr>\n</tbody></table>\n<p class=\"muted\">std is the sample standard deviation (ddof = 1).</p>\n");
    for c in &cv.comparisons {
        let _ = writeln!(
            html,
            "<h3>{} vs {} ({})</h3>",
            escape(&c.a),
            escape(&c.b),
            c.metric.label()
        );
        if let Some(t) = &c.test {
            let method = match t {
                TestResult::Wilcoxon(w) => match w.method {
                    MethodUsed::Exact => "Wilcoxon signed-rank, exact null distribution".to_string(),
                    MethodUsed::Permutation => "Wilcoxon signed-rank, exhaustive sign-flip permutation (ties or zero differences present)".to_string(),
                    MethodUsed::Asymptotic => "Wilcoxon signed-rank, normal approximation".to_string(),
                },
                TestResult::PairedT(_) => t.method(),
            };
            let _ = writeln!(
                html,
                "<table><tbody><tr><td>differences ({} − {})</td><td>{}</td></tr>\
                 <tr><td>statistic</td><td>{}</td></tr><tr><td>p-value (two-sided)</td><td>{}</td></tr>\
                 <tr><td>method</td><td>{method}</td></tr><tr><td>α</td><td>{}</td></tr></tbody></table>",
                escape(&c.a),
                escape(&c.b),
                c.differences.iter().map(|d| format!("{d:+.4}")).collect::<Vec<_>>().join(", "),
                fmt_num(t.statistic()),
                fmt_p(t.pvalue()),
                c.alpha
            );
        }
        let _ = writeln!(html, "<p class=\"verdict\">{}</p>", escape(&c.verdict));
        if let Some(warning) = &c.warning {
            let _ = writeln!(html, "<p class=\"warning\">{}</p>", escape(warning));
        }
    }
}

/// Writes report.html, metrics.yaml and figures/*.png into `dir`, each atomically.
pub fn write_report(dir: &Path, model: &ReportModel) -> Result<ReportFiles, ReportError> {
    let rendered = render_report(model)?;
    let mut figures = Vec::with_capacity(rendered.figures.len());
    for figure in &rendered.figures {
        let path = dir.join("figures").join(&figure.file_name);
        write_atomic(&path, &figure.png)?;
        figures.push(path);
    }
    let metrics_yaml = dir.join("metrics.yaml");
    write_metrics_yaml(&metrics_yaml, model)?;
    let html = dir.join("report.html");
    write_atomic(&html, rendered.html.as_bytes())?;
    Ok(ReportFiles {
        html,
        metrics_yaml,
        figures,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(slug("galaxy10.test/a b"), "galaxy10-test-a-b");
    }

    #[test]
    fn dag_columns_follow_the_longest_input_chain() {
        let node = |name: &str, inputs: &[&str]| DagNode {
            name: name.into(),
            kind: "k".into(),
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            cached: false,
        };
        let dag = vec![
            node("d", &[]),
            node("t", &["d"]),
            node("e", &["t", "d"]),
            node("x", &["missing"]),
        ];
        assert_eq!(dag_layers(&dag), vec![0, 1, 2, 0]);
        // A cycle (never produced by a plan) still terminates.
        let cyclic = vec![node("a", &["b"]), node("b", &["a"])];
        assert_eq!(dag_layers(&cyclic).len(), 2);
    }

    #[test]
    fn an_empty_report_still_renders() {
        let model = ReportModel {
            pipeline: "empty".into(),
            dag: vec![],
            stages: vec![],
        };
        let page = render_report(&model).unwrap();
        assert!(page.html.contains("No model was evaluated."));
        assert!(page.figures.is_empty());
    }

    #[test]
    fn numbers_read_naturally() {
        assert_eq!(fmt_num(1_234_567.0), "1234567");
        assert_eq!(fmt_num(0.81), "0.81");
        assert_eq!(fmt_num(1e-5), "1.000e-5");
    }
}
