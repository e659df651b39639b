//! `gpl fmt`: prints an AST in the canonical layout. Two-space indents, one statement per
//! line, arguments separated by one space (commas inside groups), blank lines kept but
//! collapsed to one, comments kept. A nested body (`for ... { }`, `space { }`) stays on one
//! line when it is short and plain. Printing is a pure function of the AST, so formatting a
//! formatted file changes nothing.

use super::ast::*;

const INDENT: &str = "  ";
const INLINE_BODY_MAX: usize = 64;

pub fn format_file(file: &File) -> String {
    let mut out = String::new();
    for item in &file.items {
        if item.blank_before {
            out.push('\n');
        }
        match &item.kind {
            ItemKind::Comment(c) => out.push_str(c),
            ItemKind::Import(i) => {
                out.push_str("import ");
                out.push_str(&quote(&i.path));
                push_trailing(&mut out, &i.trailing);
            }
            ItemKind::Block(b) => block(&mut out, b),
            ItemKind::Profile(p) => profile(&mut out, p),
        }
        out.push('\n');
    }
    out
}

fn push_trailing(out: &mut String, trailing: &Option<String>) {
    if let Some(c) = trailing {
        out.push_str("  ");
        out.push_str(c);
    }
}

fn block(out: &mut String, b: &Block) {
    out.push_str(b.kind.keyword());
    out.push(' ');
    out.push_str(&b.name.text);
    if !b.params.is_empty() {
        let params: Vec<String> = b
            .params
            .iter()
            .map(|p| match &p.default {
                Some(v) => format!("{}: {}", p.name.text, value(v)),
                None => p.name.text.clone(),
            })
            .collect();
        out.push('(');
        out.push_str(&params.join(", "));
        out.push(')');
    }
    if let Some(h) = &b.header {
        out.push_str(match h.word {
            HeaderWord::From => " from ",
            HeaderWord::On => " on ",
        });
        out.push_str(&value(&h.value));
    }
    out.push(' ');
    body_block(out, &b.body, 0);
    push_trailing(out, &b.trailing);
}

/// A body printed over several lines, `{` already preceded by the header.
fn body_block(out: &mut String, body: &Body, depth: usize) {
    if body.entries.is_empty() && body.open_trailing.is_none() {
        out.push_str("{}");
        return;
    }
    out.push('{');
    push_trailing(out, &body.open_trailing);
    out.push('\n');
    for e in &body.entries {
        if e.blank_before {
            out.push('\n');
        }
        push_indent(out, depth + 1);
        match &e.kind {
            EntryKind::Comment(c) => out.push_str(c),
            EntryKind::Statement(s) => statement(out, s, depth + 1),
        }
        out.push('\n');
    }
    push_indent(out, depth);
    out.push('}');
}

fn push_indent(out: &mut String, depth: usize) {
    for _ in 0..depth {
        out.push_str(INDENT);
    }
}

fn statement(out: &mut String, s: &Statement, depth: usize) {
    out.push_str(&statement_line(s));
    if let Some(body) = &s.body {
        out.push(' ');
        match inline_body(body) {
            Some(text) => out.push_str(&text),
            None => body_block(out, body, depth),
        }
    }
    push_trailing(out, &s.trailing);
}

/// The head, call arguments and groups of a statement, without its body.
fn statement_line(s: &Statement) -> String {
    let mut line = s.head.text.clone();
    if let Some(args) = &s.call {
        line.push('(');
        line.push_str(&args_list(args));
        line.push(')');
    }
    for g in &s.groups {
        line.push(' ');
        line.push_str(&group(g));
    }
    line
}

/// `{ a; b; c }` when the body is short and has no comments, blank lines or nested bodies.
fn inline_body(body: &Body) -> Option<String> {
    if body.open_trailing.is_some() || body.entries.is_empty() {
        return None;
    }
    let mut parts = Vec::new();
    for e in &body.entries {
        match &e.kind {
            EntryKind::Statement(s)
                if !e.blank_before && s.body.is_none() && s.trailing.is_none() =>
            {
                parts.push(statement_line(s))
            }
            _ => return None,
        }
    }
    let text = format!("{{ {} }}", parts.join("; "));
    (text.len() <= INLINE_BODY_MAX).then_some(text)
}

fn group(g: &Group) -> String {
    args_list(&g.items)
}

fn args_list(args: &[Arg]) -> String {
    args.iter().map(arg).collect::<Vec<_>>().join(", ")
}

fn arg(a: &Arg) -> String {
    match &a.kind {
        ArgKind::Positional(v) => value(v),
        ArgKind::Named(n, v) => format!("{}: {}", n.text, value(v)),
    }
}

pub fn value(v: &Value) -> String {
    match &v.kind {
        ValueKind::Number { text, .. } => text.clone(),
        ValueKind::Str(s) => quote(s),
        ValueKind::Path(parts) => parts
            .iter()
            .map(|p| p.text.as_str())
            .collect::<Vec<_>>()
            .join("."),
        ValueKind::Call { name, args } => format!("{}({})", name.text, args_list(args)),
        ValueKind::List(items) => format!(
            "[{}]",
            items.iter().map(value).collect::<Vec<_>>().join(", ")
        ),
        ValueKind::Range(lo, hi) => format!("{}..{}", value(lo), value(hi)),
        ValueKind::Compare {
            quantity,
            op,
            bound,
        } => format!("{} {} {}", quantity.text, op.symbol(), value(bound)),
        ValueKind::Dims(parts) => {
            let all_numbers = parts
                .iter()
                .all(|p| matches!(p.kind, ValueKind::Number { .. }));
            let sep = if all_numbers && parts.len() == 2 {
                "x"
            } else {
                " x "
            };
            parts.iter().map(value).collect::<Vec<_>>().join(sep)
        }
    }
}

fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn profile(out: &mut String, p: &Profile) {
    out.push_str("profile ");
    out.push_str(&p.name.text);
    if p.entries.is_empty() && p.open_trailing.is_none() {
        out.push_str(" {}");
        push_trailing(out, &p.trailing);
        return;
    }
    out.push_str(" {");
    push_trailing(out, &p.open_trailing);
    out.push('\n');
    for e in &p.entries {
        if e.blank_before {
            out.push('\n');
        }
        out.push_str(INDENT);
        match &e.kind {
            ProfileEntryKind::Comment(c) => out.push_str(c),
            ProfileEntryKind::Override(o) => {
                if let Some(k) = o.kind_filter {
                    out.push_str(k.keyword());
                    out.push(' ');
                }
                match &o.target {
                    Target::All(_) => out.push('*'),
                    Target::Block(n) => out.push_str(&n.text),
                }
                for part in &o.path {
                    out.push('.');
                    out.push_str(&part.text);
                }
                out.push_str(" = ");
                out.push_str(&o.value.iter().map(group).collect::<Vec<_>>().join(" "));
                push_trailing(out, &o.trailing);
            }
        }
        out.push('\n');
    }
    out.push('}');
    push_trailing(out, &p.trailing);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lang::parse::parse_file;
    use crate::lang::FileId;

    fn fmt(text: &str) -> String {
        format_file(&parse_file(text, FileId(0)).unwrap_or_else(|e| panic!("{e:?}")))
    }

    #[test]
    fn canonical_layout() {
        let messy = "import   \"a.gpl\"   # presets\n\n\n\nmodel m(c, w: [8,16]) {   # net\n  input 8 x 8 x 3\n  for f in w {conv f 3 x 3 relu,l2:1e-4;maxpool 2}\n\n\n  # head\n  flatten ; dense c softmax\n}\nprofile p { train *.epochs = 3 ;  g.source.count = 10 }\n";
        let expected = "import \"a.gpl\"  # presets\n\nmodel m(c, w: [8, 16]) {  # net\n  input 8 x 8 x 3\n  for f in w { conv f 3x3 relu, l2: 1e-4; maxpool 2 }\n\n  # head\n  flatten\n  dense c softmax\n}\nprofile p {\n  train *.epochs = 3\n  g.source.count = 10\n}\n";
        assert_eq!(fmt(messy), expected);
        assert_eq!(fmt(expected), expected);
    }

    #[test]
    fn long_or_commented_nested_bodies_break_into_lines() {
        let text = "search s {\n  space { a in 1..2; b in [3, 5, 7]; c in 0.0..0.5; d in 16..256; e in 8..64 }\n}\n";
        let out = fmt(text);
        assert!(out.contains("  space {\n    a in 1..2\n"), "{out}");
    }
}
