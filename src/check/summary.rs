//! Keras-like model summaries for `gpl check`: layer, output shape, parameters, MFLOPs, and
//! for a model that is not a plain chain Keras's functional-model "Connected to" column
//! (what each layer reads, and whose weights a layer shares), with the outputs listed
//! under the table. Shared weights count once, at the layer that owns them.

use crate::nn::ir::{fmt_shape, ModelIr};

pub fn summary(title: &str, ir: &ModelIr) -> String {
    let graph = !ir.is_chain() || ir.layers.iter().any(|l| l.shares.is_some());
    let mut rows: Vec<Vec<String>> = vec![vec![
        "Layer (type)".into(),
        "Output shape".into(),
        "Params".into(),
        "MFLOPs".into(),
    ]];
    rows.push(vec![
        "input".into(),
        fmt_shape(&ir.input),
        "0".into(),
        "0.00".into(),
    ]);
    for l in &ir.layers {
        let frozen = if l.trainable { "" } else { " *" };
        rows.push(vec![
            format!("{} ({}){frozen}", l.name, l.op.kind()),
            fmt_shape(&l.output),
            group_digits(l.params),
            format!("{:.2}", l.flops as f64 / 1e6),
        ]);
    }
    if graph {
        rows[0].push("Connected to".into());
        rows[1].push(String::new());
        for (row, l) in rows[2..].iter_mut().zip(&ir.layers) {
            let sources: Vec<&str> = l.inputs.iter().map(|s| ir.source_name(*s)).collect();
            let mut connected = sources.join(", ");
            if let Some(o) = l.shares {
                connected.push_str(&format!(" (shares {})", ir.layers[o].name));
            }
            row.push(connected);
        }
    }
    let columns = rows[0].len();
    let widths: Vec<usize> = (0..columns)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let total_width = widths.iter().sum::<usize>() + 2 * (columns - 1);
    let mut out = format!("{title}\n{}\n", "=".repeat(total_width));
    for (n, r) in rows.iter().enumerate() {
        // Padded by hand: `{:<w$}` panics when a width passes 65,535 (a very long layer name).
        let mut line = pad(&r[0], widths[0], false);
        line.push_str("  ");
        line.push_str(&pad(&r[1], widths[1], false));
        line.push_str("  ");
        line.push_str(&pad(&r[2], widths[2], true));
        line.push_str("  ");
        line.push_str(&pad(&r[3], widths[3], true));
        if graph {
            line.push_str(&format!("  {}", r[4]));
        }
        out.push_str(line.trim_end());
        out.push('\n');
        if n == 0 {
            out.push_str(&format!("{}\n", "-".repeat(total_width)));
        }
    }
    out.push_str(&format!("{}\n", "=".repeat(total_width)));
    if graph {
        let outputs: Vec<&str> = ir
            .outputs
            .iter()
            .map(|&o| ir.layers[o].name.as_str())
            .collect();
        out.push_str(&format!("Outputs: {}\n", outputs.join(", ")));
    }
    let total = ir.total_params();
    let trainable = ir.trainable_params();
    out.push_str(&format!("Total params: {}\n", group_digits(total)));
    out.push_str(&format!("Trainable params: {}\n", group_digits(trainable)));
    out.push_str(&format!(
        "Non-trainable params: {}\n",
        group_digits(total - trainable)
    ));
    out.push_str(&format!(
        "Forward MFLOPs per image: {:.2}\n",
        ir.total_flops() as f64 / 1e6
    ));
    if trainable != total {
        out.push_str("(* frozen)\n");
    }
    out
}

/// `text` padded with spaces to `width` characters, on the left when `right` aligned.
fn pad(text: &str, width: usize, right: bool) -> String {
    let fill = " ".repeat(width.saturating_sub(text.chars().count()));
    if right {
        fill + text
    } else {
        format!("{text}{fill}")
    }
}

fn group_digits(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
