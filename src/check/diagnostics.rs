//! Every diagnostic gpl reports before running: one error enum with stable codes, labelled
//! spans and help lines, plus the source map that renders them with miette.
//!
//! Errors carry [`Span`]s (file + byte range); rendering attaches the file's text only at the
//! edge ([`Diagnostics::render`]), so the checker never copies source text into errors.

use crate::lang::{FileId, Span};
use miette::{Diagnostic, GraphicalReportHandler, GraphicalTheme, NamedSource};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Clone, Debug, thiserror::Error, Diagnostic)]
pub enum Error {
    #[error("syntax error: {message}")]
    #[diagnostic(code(gpl::syntax))]
    Syntax {
        message: String,
        #[label("{label}")]
        span: Span,
        label: String,
        #[help]
        help: Option<String>,
    },

    #[error("cannot read {path}: {reason}")]
    #[diagnostic(code(gpl::io::read), help("check the path and its permissions"))]
    Io { path: String, reason: String },

    #[error("{path} is not a .gpl file")]
    #[diagnostic(
        code(gpl::io::not_pipeline),
        help("gpl reads pipelines only from files ending in `.gpl`, so it never quotes another file in a diagnostic")
    )]
    NotPipeline { path: String },

    #[error("import {path:?} not found")]
    #[diagnostic(code(gpl::import::not_found))]
    ImportNotFound {
        path: String,
        #[label("no such file")]
        span: Span,
        #[help]
        help: Option<String>,
    },

    #[error("import {path:?} resolves to {resolved}, outside the project folder {project}/")]
    #[diagnostic(
        code(gpl::import::outside),
        help("imports stay inside the project folder or the built-in stdlib (`import \"stdlib/cnn.gpl\"`); copy the file into the project to use it")
    )]
    ImportOutside {
        path: String,
        resolved: String,
        project: String,
        #[label("outside the project")]
        span: Span,
    },

    #[error("import {path:?} is not a .gpl file")]
    #[diagnostic(
        code(gpl::import::not_gpl),
        help("imports name pipeline files ending in `.gpl`; gpl does not read other files as pipelines")
    )]
    ImportNotGpl {
        path: String,
        #[label("not a .gpl file")]
        span: Span,
    },

    #[error("import cycle: {chain}")]
    #[diagnostic(
        code(gpl::import::cycle),
        help("imports must form a tree; move the shared definitions into a file both can import")
    )]
    ImportCycle {
        chain: String,
        #[label("this import closes the cycle")]
        span: Span,
    },

    #[error("unknown {what} `{name}`")]
    #[diagnostic(code(gpl::name::unknown))]
    UnknownName {
        what: String,
        name: String,
        #[label("not defined")]
        span: Span,
        #[help]
        help: Option<String>,
    },

    #[error("{what} `{name}` is defined twice")]
    #[diagnostic(code(gpl::name::duplicate))]
    Duplicate {
        what: String,
        name: String,
        #[label("second definition")]
        span: Span,
        #[label("first defined here")]
        first: Option<Span>,
        #[help]
        help: Option<String>,
    },

    #[error("`{name}` is not a statement of a {block} block")]
    #[diagnostic(code(gpl::statement::unknown))]
    UnknownStatement {
        block: String,
        name: String,
        #[label("unknown here")]
        span: Span,
        #[help]
        help: Option<String>,
    },

    #[error("{block} `{name}` needs a `{statement}` statement")]
    #[diagnostic(code(gpl::statement::missing))]
    MissingStatement {
        block: String,
        name: String,
        statement: String,
        #[label("in this block")]
        span: Span,
        #[help]
        help: Option<String>,
    },

    #[error("`{statement}` is given twice")]
    #[diagnostic(code(gpl::statement::repeated), help("keep one of them"))]
    Repeated {
        statement: String,
        #[label("again here")]
        span: Span,
        #[label("first here")]
        first: Span,
    },

    #[error("unknown argument `{name}` for {what}")]
    #[diagnostic(code(gpl::arg::unknown))]
    UnknownArg {
        what: String,
        name: String,
        #[label("not an argument of {what}")]
        span: Span,
        #[help]
        help: Option<String>,
    },

    #[error("{what} needs {needed}")]
    #[diagnostic(code(gpl::arg::missing))]
    MissingArg {
        what: String,
        needed: String,
        #[label("here")]
        span: Span,
        #[help]
        help: Option<String>,
    },

    #[error("expected {expected}, found {found}")]
    #[diagnostic(code("gpl::type::mismatch"))]
    WrongType {
        expected: String,
        found: String,
        #[label("expected {expected}")]
        span: Span,
        #[help]
        help: Option<String>,
    },

    #[error("{what} is {value}; allowed: {range}")]
    #[diagnostic(code(gpl::arg::range))]
    OutOfRange {
        what: String,
        value: String,
        range: String,
        #[label("out of range")]
        span: Span,
        #[help]
        help: Option<String>,
    },

    #[error("split fractions add up to {sum}, not 1")]
    #[diagnostic(
        code(gpl::data::split_sum),
        help("make train + val + test equal 1 (e.g. 0.7, 0.15, 0.15)")
    )]
    SplitSum {
        sum: String,
        #[label("these fractions")]
        span: Span,
    },

    #[error("class {class} {problem}")]
    #[diagnostic(code(gpl::data::class))]
    BadClass {
        class: String,
        problem: String,
        #[label("this class")]
        span: Span,
        #[help]
        help: Option<String>,
    },

    #[error("model `{model}`, layer {layer}: {message}")]
    #[diagnostic(code(gpl::shape::mismatch))]
    Shape {
        model: String,
        layer: String,
        message: String,
        #[label("this layer")]
        span: Span,
        /// The join's input whose shape disagrees with the first.
        #[label("the other input")]
        other: Option<Span>,
        #[label("instantiated here")]
        site: Option<Span>,
        #[help]
        help: Option<String>,
    },

    #[error("model `{model}`: layers read each other in a cycle: {chain}")]
    #[diagnostic(
        code(gpl::model::cycle),
        help(
            "a layer can only read layers that do not read it back; break the loop in one `from:`"
        )
    )]
    ModelCycle {
        model: String,
        chain: String,
        #[label("this layer is on the cycle")]
        span: Span,
    },

    #[error("model `{model}`: layer `{layer}` reaches no output")]
    #[diagnostic(
        code(gpl::model::unused),
        help("read it with `from:` in a later layer, declare it an `output`, or delete it")
    )]
    UnusedLayer {
        model: String,
        layer: String,
        #[label("its result is never used")]
        span: Span,
    },

    #[error("model `{model}`: layer `{layer}` cannot share the weights of `{owner}`: {message}")]
    #[diagnostic(code(gpl::model::share))]
    SharedWeights {
        model: String,
        layer: String,
        owner: String,
        message: String,
        #[label("shares `{owner}`")]
        span: Span,
        #[label("the shared layer")]
        owner_span: Option<Span>,
        #[help]
        help: Option<String>,
    },

    #[error("`{layer}` does not lie on every path to an output, so `{statement}` cannot split the model there")]
    #[diagnostic(code(gpl::model::freeze))]
    FreezeOffPath {
        layer: String,
        statement: String,
        #[label("{path} avoids it")]
        span: Span,
        path: String,
        #[help]
        help: Option<String>,
    },

    #[error("layer `{layer}` {problem}")]
    #[diagnostic(code(gpl::explain::layer))]
    LayerKind {
        layer: String,
        problem: String,
        #[label("here")]
        span: Span,
        #[help]
        help: Option<String>,
    },

    #[error("the anchors do not fit the detector's feature maps: {why}")]
    #[diagnostic(code(gpl::detector::anchors))]
    AnchorsMisfit {
        #[label("these anchors")]
        span: Span,
        why: String,
        #[help]
        help: Option<String>,
    },

    #[error("{what} is not supported yet")]
    #[diagnostic(code(gpl::unsupported))]
    Unsupported {
        what: String,
        #[label("here")]
        span: Span,
        #[help]
        help: Option<String>,
    },

    #[error("no point of search `{search}`'s space meets `subject to {bounds}`")]
    #[diagnostic(code(gpl::search::infeasible))]
    Infeasible {
        search: String,
        bounds: String,
        #[label("no model in the space is this small")]
        span: Span,
        #[help]
        help: Option<String>,
    },

    #[error("model `{model}` ends in {units} outputs but `{dataset}` has {classes} classes")]
    #[diagnostic(code(gpl::shape::classes))]
    ClassCount {
        model: String,
        units: usize,
        dataset: String,
        classes: usize,
        #[label("{units} outputs")]
        span: Span,
        #[help]
        help: Option<String>,
    },

    #[error("model `{model}` takes {expected} but the data is {found}")]
    #[diagnostic(code(gpl::shape::input))]
    InputShape {
        model: String,
        expected: String,
        found: String,
        #[label("here")]
        span: Span,
        #[help]
        help: Option<String>,
    },

    #[error("{message}")]
    #[diagnostic(code(gpl::data::file))]
    DataFile {
        message: String,
        #[label("this file")]
        span: Span,
        #[help]
        help: Option<String>,
    },

    #[error("{message}")]
    #[diagnostic(code(gpl::model::arguments))]
    ModelArgs {
        message: String,
        #[label("here")]
        span: Span,
        #[help]
        help: Option<String>,
    },

    #[error("model `{name}` uses itself: {chain}")]
    #[diagnostic(
        code(gpl::model::recursion),
        help("a `use` chain must end in a model that uses no other")
    )]
    ModelRecursion {
        name: String,
        chain: String,
        #[label("recursive use")]
        span: Span,
    },

    #[error("unknown profile `{name}`")]
    #[diagnostic(code(gpl::profile::unknown))]
    UnknownProfile {
        name: String,
        #[help]
        help: Option<String>,
    },

    #[error("profile override matches nothing: {message}")]
    #[diagnostic(code(gpl::profile::no_match))]
    ProfileNoMatch {
        message: String,
        #[label("this override")]
        span: Span,
        #[help]
        help: Option<String>,
    },

    #[error("{kind} `{name}` cannot run yet")]
    #[diagnostic(
        code(gpl::run::not_runnable),
        help("gpl checks this block but has no executor for `{kind}` stages yet; remove it from the pipeline (or move it to another file) to run the rest")
    )]
    NotRunnable {
        kind: String,
        name: String,
        #[label("this {kind} block")]
        span: Span,
    },

    #[error("internal error: {message}")]
    #[diagnostic(
        code(gpl::bug),
        help("this is a bug in gpl; please report it with the file that caused it")
    )]
    Bug { message: String },
}

impl Error {
    pub fn bug(message: impl Into<String>) -> Error {
        Error::Bug {
            message: message.into(),
        }
    }

    /// The primary span, which decides the file the diagnostic is rendered against.
    pub fn span(&self) -> Option<Span> {
        use Error::*;
        match self {
            Syntax { span, .. }
            | ImportNotFound { span, .. }
            | ImportOutside { span, .. }
            | ImportNotGpl { span, .. }
            | ImportCycle { span, .. }
            | UnknownName { span, .. }
            | Duplicate { span, .. }
            | UnknownStatement { span, .. }
            | MissingStatement { span, .. }
            | Repeated { span, .. }
            | UnknownArg { span, .. }
            | MissingArg { span, .. }
            | WrongType { span, .. }
            | OutOfRange { span, .. }
            | SplitSum { span, .. }
            | BadClass { span, .. }
            | Shape { span, .. }
            | ClassCount { span, .. }
            | InputShape { span, .. }
            | DataFile { span, .. }
            | NotRunnable { span, .. }
            | Unsupported { span, .. }
            | AnchorsMisfit { span, .. }
            | Infeasible { span, .. }
            | LayerKind { span, .. }
            | ModelArgs { span, .. }
            | ModelRecursion { span, .. }
            | ModelCycle { span, .. }
            | UnusedLayer { span, .. }
            | SharedWeights { span, .. }
            | FreezeOffPath { span, .. }
            | ProfileNoMatch { span, .. } => Some(*span),
            Io { .. } | NotPipeline { .. } | UnknownProfile { .. } | Bug { .. } => None,
        }
    }
}

/// One source file the program read.
#[derive(Clone, Debug)]
pub struct SourceFile {
    /// Where it was read from (`<stdlib>/cnn.gpl` for the copy built into the binary).
    pub path: PathBuf,
    pub text: Arc<String>,
}

/// Every file read while loading a program, indexed by [`FileId`].
#[derive(Clone, Debug, Default)]
pub struct Sources {
    files: Vec<SourceFile>,
}

impl Sources {
    pub fn add(&mut self, path: PathBuf, text: String) -> FileId {
        self.files.push(SourceFile {
            path,
            text: Arc::new(text),
        });
        FileId((self.files.len() - 1) as u32)
    }

    pub fn get(&self, id: FileId) -> Option<&SourceFile> {
        self.files.get(id.0 as usize)
    }

    pub fn files(&self) -> &[SourceFile] {
        &self.files
    }

    /// 1-based line of a span's start.
    pub fn line_of(&self, span: Span) -> usize {
        self.get(span.file)
            .map(|f| f.text[..span.start.min(f.text.len())].matches('\n').count() + 1)
            .unwrap_or(0)
    }

    pub fn display_path(&self, id: FileId) -> String {
        self.get(id).map(|f| display(&f.path)).unwrap_or_default()
    }
}

/// A folder relative to the working directory when inside it (`.` for the directory itself).
pub(crate) fn display_folder(path: &Path) -> String {
    match display(path) {
        shown if shown.is_empty() => ".".into(),
        shown => shown,
    }
}

fn display(path: &Path) -> String {
    let cwd = std::env::current_dir().ok();
    let shown = cwd
        .as_deref()
        .and_then(|c| path.strip_prefix(c).ok())
        .unwrap_or(path);
    shown.display().to_string()
}

/// The errors of a failed check, with the sources needed to render them.
#[derive(Clone, Debug)]
pub struct Diagnostics {
    pub errors: Vec<Error>,
    pub sources: Sources,
}

impl Diagnostics {
    /// Renders every error with miette's graphical handler. The source is quoted only when
    /// it is a `.gpl` file (or the built-in stdlib), and lines too long for the renderer are
    /// cut to a window around the label (see [`Windowed`]).
    pub fn render_with(&self, handler: &GraphicalReportHandler) -> String {
        let mut out = String::new();
        for err in &self.errors {
            let located = err
                .span()
                .and_then(|s| self.sources.get(s.file).map(|f| (s, f)));
            let shown = match located {
                Some((span, file)) if is_pipeline(&file.path) => {
                    let windowed = Windowed::new(&file.text, err);
                    Shown {
                        error: err,
                        source: Some(NamedSource::new(
                            self.sources.display_path(span.file),
                            windowed.text.clone(),
                        )),
                        windowed: Some(windowed),
                    }
                }
                _ => Shown {
                    error: err,
                    source: None,
                    windowed: None,
                },
            };
            // Writing into a String cannot fail.
            let _ = handler.render_report(&mut out, &shown);
            if let Some((span, file)) = located.filter(|(_, f)| !is_pipeline(&f.path)) {
                let (line, column) = line_column(&file.text, span.start);
                out.push_str(&format!(
                    "  at {}:{line}:{column} (not a .gpl file, so its text is not shown)\n",
                    self.sources.display_path(span.file)
                ));
            }
        }
        out
    }

    /// Plain unicode, no colour, fixed width: what tests snapshot.
    pub fn render_plain(&self) -> String {
        let handler =
            GraphicalReportHandler::new_themed(GraphicalTheme::unicode_nocolor()).with_width(100);
        self.render_with(&handler)
    }

    /// For a terminal: colour when miette's defaults allow it.
    pub fn render(&self) -> String {
        self.render_with(&GraphicalReportHandler::new())
    }
}

impl std::fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.render_plain())
    }
}

impl std::error::Error for Diagnostics {}

/// A file whose text a diagnostic may quote: a `.gpl` file or a built-in stdlib file.
fn is_pipeline(path: &Path) -> bool {
    path.starts_with("<stdlib>") || path.extension().is_some_and(|x| x == "gpl")
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut at = offset.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    let before = &text[..at];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (
        before.matches('\n').count() + 1,
        before[line_start..].chars().count() + 1,
    )
}

/// Lines longer than this many bytes are cut before rendering: miette pads with `{:width$}`,
/// which panics past 65,535 columns, and nobody reads such a line in a terminal anyway.
const LONG_LINE: usize = 1000;
/// Bytes kept on each side of a label on a cut line.
const WINDOW: usize = 120;

/// The source as rendered: long lines cut to a window around the first label on them (`…`
/// marks a cut), with a map from original byte offsets to offsets in the cut text.
struct Windowed {
    text: Arc<String>,
    /// Per line: (original line start, original kept start, original kept end, original line
    /// end, kept start in the new text). Untouched lines keep everything.
    lines: Vec<(usize, usize, usize, usize, usize)>,
}

impl Windowed {
    fn new(original: &Arc<String>, err: &Error) -> Windowed {
        let mut lines = Vec::new();
        if original.split('\n').all(|l| l.len() <= LONG_LINE) {
            return Windowed {
                text: original.clone(),
                lines,
            };
        }
        let anchors: Vec<usize> = err
            .labels()
            .map(|ls| ls.map(|l| l.offset()).collect())
            .unwrap_or_default();
        let mut text = String::with_capacity(original.len().min(1 << 20));
        let mut start = 0;
        for line in original.split_inclusive('\n') {
            let end = start + line.len();
            let body = line.trim_end_matches('\n');
            let (keep_start, keep_end) = if body.len() > LONG_LINE {
                let anchor = anchors
                    .iter()
                    .copied()
                    .find(|a| (start..=start + body.len()).contains(a))
                    .unwrap_or(start)
                    - start;
                let mut from = anchor.saturating_sub(WINDOW);
                let mut to = (anchor + WINDOW).min(body.len());
                while !body.is_char_boundary(from) {
                    from -= 1;
                }
                while !body.is_char_boundary(to) {
                    to += 1;
                }
                (start + from, start + to)
            } else {
                (start, end)
            };
            if keep_start > start {
                text.push_str("… ");
            }
            let new_start = text.len();
            text.push_str(&original[keep_start..keep_end]);
            if keep_end < start + body.len() {
                text.push_str(" …");
                if line.ends_with('\n') {
                    text.push('\n');
                }
            }
            lines.push((start, keep_start, keep_end, end, new_start));
            start = end;
        }
        Windowed {
            text: Arc::new(text),
            lines,
        }
    }

    /// Where an original byte offset lands in the cut text.
    fn map(&self, offset: usize) -> usize {
        if self.lines.is_empty() {
            return offset;
        }
        let Some(&(_, keep_start, keep_end, _, new_start)) = self
            .lines
            .iter()
            .find(|(start, _, _, end, _)| offset >= *start && offset < *end)
            .or(self.lines.last())
        else {
            return offset;
        };
        new_start + offset.clamp(keep_start, keep_end) - keep_start
    }
}

/// An error as rendered: the error's own message, code and help, its labels moved onto the
/// (possibly cut) source, which is attached only when it may be quoted.
struct Shown<'a> {
    error: &'a Error,
    source: Option<NamedSource<Arc<String>>>,
    windowed: Option<Windowed>,
}

impl std::fmt::Debug for Shown<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.error, f)
    }
}

impl std::fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self.error, f)
    }
}

impl std::error::Error for Shown<'_> {}

impl Diagnostic for Shown<'_> {
    fn code<'b>(&'b self) -> Option<Box<dyn std::fmt::Display + 'b>> {
        self.error.code()
    }

    fn severity(&self) -> Option<miette::Severity> {
        self.error.severity()
    }

    fn help<'b>(&'b self) -> Option<Box<dyn std::fmt::Display + 'b>> {
        self.error.help()
    }

    fn url<'b>(&'b self) -> Option<Box<dyn std::fmt::Display + 'b>> {
        self.error.url()
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        self.source.as_ref().map(|s| s as &dyn miette::SourceCode)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = miette::LabeledSpan> + '_>> {
        let windowed = self.windowed.as_ref()?;
        let labels = self.error.labels()?;
        Some(Box::new(labels.map(move |l| {
            let start = windowed.map(l.offset());
            let end = windowed.map(l.offset() + l.len()).max(start);
            let span = miette::SourceSpan::new(start.into(), end - start);
            let label = l.label().map(str::to_string);
            if l.primary() {
                miette::LabeledSpan::new_primary_with_span(label, span)
            } else {
                miette::LabeledSpan::new_with_span(label, span)
            }
        })))
    }
}

/// The closest candidate to `word` by edit distance, if close enough to be a likely typo.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    let limit = (word.chars().count() / 3).max(1) + usize::from(word.len() > 8);
    candidates
        .into_iter()
        .filter(|c| *c != word)
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, c)| (*d, *c))
        .map(|(_, c)| c.to_string())
}

/// `did you mean ...?` help text, or a list of what exists when nothing is close.
pub fn suggest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str> + Clone,
) -> Option<String> {
    if let Some(s) = did_you_mean(word, candidates.clone()) {
        return Some(format!("did you mean `{s}`?"));
    }
    let all: Vec<&str> = candidates.into_iter().collect();
    if all.is_empty() {
        None
    } else if all.len() <= 12 {
        Some(format!("expected one of: {}", all.join(", ")))
    } else {
        Some(format!("expected one of: {}, ...", all[..12].join(", ")))
    }
}

/// Levenshtein distance over chars.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_and_suggestions() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(
            did_you_mean("scrach", ["scratch", "vgg_ft"]).as_deref(),
            Some("scratch")
        );
        assert_eq!(did_you_mean("zzz", ["scratch"]), None);
    }
}
