//! Checking: imports, names, argument types, model shapes; every diagnostic in `diagnostics.rs`.
//!
//! `load_program` chains the steps: load the root file and its imports (`loader`), apply the
//! selected profile's overrides to the syntax trees (`profile`), collect every block into its
//! namespace (duplicates are errors), then check each block kind in dependency order
//! (`blocks/`, one file per kind, each with its statement table read through `schema`;
//! `model`), producing a [`Program`].

mod blocks;
mod checker;
pub mod diagnostics;
mod loader;
mod model;
mod profile;
pub mod program;
mod schema;
pub mod summary;

pub use blocks::search::{dimension_value, named_point, search_space};
pub use diagnostics::{Diagnostics, Error, SourceFile, Sources};
pub use program::*;

use crate::lang::ast::{BlockKind, File, ItemKind};
use checker::{Checker, Resolved};
use std::collections::BTreeMap;
use std::path::Path;

/// The model of search block `search` at each of `points` (each dimension's value by name).
/// See [`with_search_models`].
pub fn instantiate_search_models(
    path: &Path,
    profile: Option<&str>,
    search: &str,
    points: &[Vec<(String, f64)>],
) -> Result<Vec<crate::nn::ir::ModelIr>, String> {
    with_search_models(path, profile, search, |build| {
        points.iter().map(|p| build(p)).collect()
    })?
}

/// Builds a search's model at a point (each dimension's value by name), or says why not.
pub type ModelBuilder<'a> =
    dyn FnMut(&[(String, f64)]) -> Result<crate::nn::ir::ModelIr, String> + 'a;

/// Calls `f` with a builder of search block `search`'s model at a point (each dimension's
/// value by name). The pipeline's model definitions are loaded and checked once, and each call
/// instantiates the block's model call with the point's values as extra named arguments,
/// exactly as the checker instantiates the space's corners; a point whose model does not
/// build gives the diagnostics as text. The search stage builds each trial's model, and tests
/// thousands of candidate points against `subject to` bounds, through one builder.
pub fn with_search_models<R>(
    path: &Path,
    profile: Option<&str>,
    search: &str,
    f: impl FnOnce(&mut dyn FnMut(&[(String, f64)]) -> Result<crate::nn::ir::ModelIr, String>) -> R,
) -> Result<R, String> {
    let fail = |errors: Vec<Error>, sources: &Sources| {
        Diagnostics {
            errors,
            sources: sources.clone(),
        }
        .to_string()
    };
    let loaded = loader::load(path).map_err(|(errors, sources)| fail(errors, &sources))?;
    let mut files = loaded.files;
    let mut errors = Vec::new();
    if let Some(name) = profile {
        profile::apply(&mut files, name, &mut errors);
    }
    let mut checker = Checker::new(loaded.project_root.clone(), errors);
    collect(&mut checker, &files, loaded.root);
    let all: Vec<&crate::lang::ast::Block> = checker.blocks.iter().map(|(b, _)| *b).collect();
    for b in all.iter().filter(|b| b.kind == BlockKind::Model) {
        checker.model_def_summary(b);
    }
    if !checker.errors.is_empty() {
        return Err(fail(std::mem::take(&mut checker.errors), &loaded.sources));
    }
    let block = all
        .iter()
        .find(|b| b.kind == BlockKind::Search && b.name.text == search)
        .ok_or_else(|| format!("{} has no search block `{search}`", path.display()))?;
    let model = block
        .body
        .statements()
        .find(|st| st.head.text == "model")
        .and_then(|st| st.call.iter().flatten().chain(st.args()).next())
        .map(|a| a.value().clone())
        .ok_or_else(|| format!("search `{search}` has no model"))?;
    let sources = &loaded.sources;
    let mut build = |point: &[(String, f64)]| match checker.instantiate_at(&model, point) {
        Some(ir) if checker.errors.is_empty() => Ok(ir),
        _ => Err(fail(std::mem::take(&mut checker.errors), sources)),
    };
    Ok(f(&mut build))
}

/// Loads, resolves and checks a pipeline. `profile` selects a `profile NAME { ... }` block.
pub fn load_program(path: &Path, profile: Option<&str>) -> Result<Program, Diagnostics> {
    let loaded = loader::load(path).map_err(|(errors, sources)| Diagnostics { errors, sources })?;
    let mut files = loaded.files;
    let mut errors = Vec::new();
    if let Some(name) = profile {
        profile::apply(&mut files, name, &mut errors);
        if !errors.is_empty() {
            return Err(Diagnostics {
                errors,
                sources: loaded.sources,
            });
        }
    }
    let mut checker = Checker::new(loaded.project_root.clone(), errors);
    collect(&mut checker, &files, loaded.root);
    let all: Vec<&crate::lang::ast::Block> = checker.blocks.iter().map(|(b, _)| *b).collect();
    let mut order = BlockKind::ALL;
    order.sort_by_key(|&k| check_rank(k));
    for kind in order {
        for b in all.iter().copied().filter(|b| b.kind == kind) {
            match kind {
                BlockKind::Model => checker.model_def_summary(b),
                BlockKind::Augment => checker.augment(b),
                BlockKind::Callbacks => checker.callbacks_def(b),
                BlockKind::Dataset => checker.dataset(b),
                BlockKind::Balance => checker.balance(b),
                BlockKind::Train => checker.train(b),
                BlockKind::Ensemble => checker.ensemble(b),
                BlockKind::Evaluate => checker.evaluate(b),
                BlockKind::Crossval => checker.crossval(b),
                BlockKind::Explain => checker.explain(b),
                BlockKind::Search => checker.search(b),
                BlockKind::Detect => checker.detect(b),
                BlockKind::Chain => checker.chain(b),
            }
        }
    }
    // Errors in file order, so the first one shown is the first in the file.
    checker
        .errors
        .sort_by_key(|e| e.span().map(|s| (s.file, s.start)));
    checker
        .errors
        .dedup_by(|a, b| a.to_string() == b.to_string() && a.span() == b.span());
    if !checker.errors.is_empty() {
        return Err(Diagnostics {
            errors: checker.errors,
            sources: loaded.sources,
        });
    }
    let blocks = checker
        .blocks
        .iter()
        .map(|(b, in_root)| BlockRef {
            kind: b.kind,
            name: b.name.text.clone(),
            in_root: *in_root,
            stage: b.kind.is_stage() && !(b.kind == BlockKind::Balance && b.header.is_none()),
            span: b.name.span,
        })
        .collect();
    // A setting noted twice (a preset's callback replaced by the block's own) keeps the last.
    let mut defaults: Vec<DefaultNote> = Vec::new();
    for note in checker.defaults.into_iter().rev() {
        if !defaults
            .iter()
            .any(|d| d.block == note.block && d.setting == note.setting)
        {
            defaults.push(note);
        }
    }
    defaults.reverse();
    let out = checker.out;
    Ok(Program {
        root: path.to_path_buf(),
        project_root: loaded.project_root,
        profile: profile.map(str::to_string),
        blocks,
        checked: out.checked,
        augments: out.augments,
        models: out.models,
        defaults,
        sources: loaded.sources,
    })
}

/// Puts every block in its namespace, reporting duplicates.
impl Checker<'_> {
    fn new(project_root: std::path::PathBuf, errors: Vec<Error>) -> Self {
        Checker {
            errors,
            defaults: Vec::new(),
            project_root,
            blocks: Vec::new(),
            stages: BTreeMap::new(),
            models: BTreeMap::new(),
            augment_defs: BTreeMap::new(),
            callback_defs: BTreeMap::new(),
            instances: BTreeMap::new(),
            cycles: Default::default(),
            out: Resolved::default(),
        }
    }
}

fn collect<'a>(
    checker: &mut Checker<'a>,
    files: &'a [(crate::lang::FileId, File)],
    root: crate::lang::FileId,
) {
    for (id, file) in files {
        for item in &file.items {
            let ItemKind::Block(b) = &item.kind else {
                continue;
            };
            checker.blocks.push((b, *id == root));
            let (table, what) = match b.kind {
                BlockKind::Model => (&mut checker.models, "model"),
                BlockKind::Augment => (&mut checker.augment_defs, "augment preset"),
                BlockKind::Callbacks => (&mut checker.callback_defs, "callbacks preset"),
                _ => (&mut checker.stages, "block"),
            };
            if let Some(first) = table.get(b.name.text.as_str()) {
                let same_file = first.name.span.file == b.name.span.file;
                let help = (!same_file).then(|| {
                    "the first definition is in another file; rename one of them".to_string()
                });
                let first_span = same_file.then_some(first.name.span);
                checker.errors.push(Error::Duplicate {
                    what: what.into(),
                    name: b.name.text.clone(),
                    span: b.name.span,
                    first: first_span,
                    help,
                });
                continue;
            }
            table.insert(b.name.text.as_str(), b);
        }
    }
}

/// Parses one file for `gpl fmt`: the syntax tree, or its syntax error rendered.
pub fn parse_for_fmt(path: &Path) -> Result<(String, File), Diagnostics> {
    let mut sources = Sources::default();
    if !loader::is_gpl(path) {
        return Err(Diagnostics {
            errors: vec![Error::NotPipeline {
                path: path.display().to_string(),
            }],
            sources,
        });
    }
    let text = std::fs::read_to_string(path).map_err(|e| Diagnostics {
        errors: vec![Error::Io {
            path: path.display().to_string(),
            reason: e.to_string(),
        }],
        sources: Sources::default(),
    })?;
    let id = sources.add(path.to_path_buf(), text.clone());
    match crate::lang::parse::parse_file(&text, id) {
        Ok(file) => Ok((text, file)),
        Err(e) => Err(Diagnostics {
            errors: vec![*e],
            sources,
        }),
    }
}

/// The order block kinds are checked in: definitions first, then each kind after the kinds it
/// refers to. An exhaustive match, so a new kind cannot be left out (and never checked).
fn check_rank(kind: BlockKind) -> u8 {
    match kind {
        BlockKind::Model => 0,
        BlockKind::Augment => 1,
        BlockKind::Callbacks => 2,
        BlockKind::Dataset => 3,
        BlockKind::Balance => 4,
        BlockKind::Train => 5,
        BlockKind::Ensemble => 6,
        BlockKind::Evaluate => 7,
        BlockKind::Crossval => 8,
        // Search before explain: an explain block of `SEARCH.best` reads the search's layers.
        BlockKind::Search => 9,
        BlockKind::Explain => 10,
        BlockKind::Detect => 11,
        BlockKind::Chain => 12,
    }
}
