//! Import resolution: reads the root file and, depth first, every file it imports.
//!
//! A path is tried relative to the importing file; a `stdlib/...` path is then tried in each
//! ancestor directory and finally in the copy of `stdlib/` built into the binary, so a pipeline
//! outside this repository can still import the presets. A file imported while it is still
//! being loaded is a cycle; a file reached twice by different paths is loaded once.
//!
//! Confinement: an import must resolve (symlinks followed) to a `.gpl` file inside the
//! project folder, or to the built-in stdlib. Anything else is refused before it is read, so
//! a pipeline cannot make gpl read (and quote in a syntax error) a file such as `/etc/passwd`.

use super::diagnostics::{Error, Sources};
use crate::lang::ast::{File, ItemKind};
use crate::lang::parse::parse_file;
use crate::lang::{FileId, Span};
use std::path::{Path, PathBuf};

/// The stdlib as of this build, for imports that find no `stdlib/` directory on disk.
const BUILTIN_STDLIB: &[(&str, &str)] = &[
    ("stdlib/cnn.gpl", include_str!("../../stdlib/cnn.gpl")),
    ("stdlib/vgg16.gpl", include_str!("../../stdlib/vgg16.gpl")),
    ("stdlib/resnet.gpl", include_str!("../../stdlib/resnet.gpl")),
    (
        "stdlib/mobilenet.gpl",
        include_str!("../../stdlib/mobilenet.gpl"),
    ),
    (
        "stdlib/detectors.gpl",
        include_str!("../../stdlib/detectors.gpl"),
    ),
    (
        "stdlib/augment.gpl",
        include_str!("../../stdlib/augment.gpl"),
    ),
    (
        "stdlib/balance.gpl",
        include_str!("../../stdlib/balance.gpl"),
    ),
    (
        "stdlib/callbacks.gpl",
        include_str!("../../stdlib/callbacks.gpl"),
    ),
];

pub struct Loaded {
    pub sources: Sources,
    /// Parsed files in load order: every import before the file that imports it.
    pub files: Vec<(FileId, File)>,
    pub root: FileId,
    pub project_root: PathBuf,
}

struct Loader {
    sources: Sources,
    files: Vec<(FileId, File)>,
    /// Canonical path -> id, for files fully loaded or in progress.
    seen: Vec<(PathBuf, FileId)>,
    /// Files being loaded (the import stack), for cycle detection.
    stack: Vec<PathBuf>,
    errors: Vec<Error>,
    /// Canonical project folder: imports must stay inside it (or be built-in stdlib files).
    project: PathBuf,
}

pub fn load(root: &Path) -> Result<Loaded, (Vec<Error>, Sources)> {
    let mut loader = Loader {
        sources: Sources::default(),
        files: Vec::new(),
        seen: Vec::new(),
        stack: Vec::new(),
        errors: Vec::new(),
        project: PathBuf::new(),
    };
    if !is_gpl(root) {
        return Err((
            vec![Error::NotPipeline {
                path: root.display().to_string(),
            }],
            loader.sources,
        ));
    }
    let text = match std::fs::read_to_string(root) {
        Ok(t) => t,
        Err(e) => {
            return Err((
                vec![Error::Io {
                    path: root.display().to_string(),
                    reason: e.to_string(),
                }],
                loader.sources,
            ));
        }
    };
    let canonical = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
    loader.project = project_root(&canonical);
    let root_id = loader.load_text(canonical.clone(), text);
    if !loader.errors.is_empty() {
        return Err((loader.errors, loader.sources));
    }
    let root_id = root_id.unwrap_or(FileId(0));
    Ok(Loaded {
        sources: loader.sources,
        files: loader.files,
        root: root_id,
        project_root: loader.project,
    })
}

/// The nearest ancestor holding a `stdlib` directory or a `.gpl` cache; else the file's folder.
pub fn project_root(file: &Path) -> PathBuf {
    let dir = file.parent().unwrap_or(Path::new("."));
    for ancestor in dir.ancestors() {
        if ancestor.join("stdlib").is_dir() || ancestor.join(".gpl").is_dir() {
            return ancestor.to_path_buf();
        }
    }
    dir.to_path_buf()
}

impl Loader {
    fn load_text(&mut self, path: PathBuf, text: String) -> Option<FileId> {
        let id = self.sources.add(path.clone(), text);
        self.seen.push((path.clone(), id));
        // The text was just stored; re-borrow it to parse.
        let text = self.sources.get(id).map(|f| f.text.clone())?;
        let file = match parse_file(&text, id) {
            Ok(f) => f,
            Err(e) => {
                self.errors.push(*e);
                return Some(id);
            }
        };
        self.stack.push(path.clone());
        for item in &file.items {
            if let ItemKind::Import(import) = &item.kind {
                self.import(&path, &import.path, import.path_span);
            }
        }
        self.stack.pop();
        self.files.push((id, file));
        Some(id)
    }

    fn import(&mut self, from: &Path, target: &str, span: Span) {
        let Some((path, builtin)) = resolve(from, target, &self.project) else {
            let help = if target.ends_with(".gpl") {
                "imports are looked up next to the importing file and, for `stdlib/...` paths, in each parent folder and the built-in stdlib".to_string()
            } else {
                "imports name a .gpl file, e.g. `import \"stdlib/cnn.gpl\"`".to_string()
            };
            self.errors.push(Error::ImportNotFound {
                path: target.to_string(),
                span,
                help: Some(help),
            });
            return;
        };
        if builtin.is_none() {
            // Checked on the canonical path, so a symlink inside the project that leads out
            // of it is refused too; nothing is read before these checks pass.
            if !path.starts_with(&self.project) {
                self.errors.push(Error::ImportOutside {
                    path: target.to_string(),
                    resolved: path.display().to_string(),
                    project: super::diagnostics::display_folder(&self.project),
                    span,
                });
                return;
            }
            if !is_gpl(&path) {
                self.errors.push(Error::ImportNotGpl {
                    path: target.to_string(),
                    span,
                });
                return;
            }
        }
        if let Some(pos) = self.stack.iter().position(|p| *p == path) {
            let mut chain: Vec<String> = self.stack[pos..].iter().map(|p| file_name(p)).collect();
            chain.push(file_name(&path));
            self.errors.push(Error::ImportCycle {
                chain: chain.join(" → "),
                span,
            });
            return;
        }
        if self.seen.iter().any(|(p, _)| *p == path) {
            return;
        }
        let text = match builtin {
            Some(text) => text.to_string(),
            None => match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) => {
                    self.errors.push(Error::Io {
                        path: path.display().to_string(),
                        reason: e.to_string(),
                    });
                    return;
                }
            },
        };
        self.load_text(path, text);
    }
}

pub(crate) fn is_gpl(path: &Path) -> bool {
    path.extension().is_some_and(|x| x == "gpl")
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default()
}

/// The canonical path of an import, and its text when it is the built-in stdlib copy.
/// `stdlib/...` is looked up in the ancestors inside `project` only.
fn resolve(from: &Path, target: &str, project: &Path) -> Option<(PathBuf, Option<&'static str>)> {
    let dir = from.parent().unwrap_or(Path::new("."));
    let direct = dir.join(target);
    // Only a path that canonicalizes can be confined (no `..` or symlink left in it).
    if direct.is_file() {
        return direct.canonicalize().ok().map(|p| (p, None));
    }
    if target.starts_with("stdlib/") {
        // Built-in files have no directory on disk, so look next to the importer only then.
        if !from.starts_with("<stdlib>") {
            for ancestor in dir
                .ancestors()
                .skip(1)
                .take_while(|a| a.starts_with(project))
            {
                let candidate = ancestor.join(target);
                if candidate.is_file() {
                    return candidate.canonicalize().ok().map(|p| (p, None));
                }
            }
        }
        if let Some((name, text)) = BUILTIN_STDLIB.iter().find(|(n, _)| *n == target) {
            return Some((
                PathBuf::from("<stdlib>").join(&name["stdlib/".len()..]),
                Some(text),
            ));
        }
    }
    if from.starts_with("<stdlib>") {
        let sibling = format!("stdlib/{target}");
        if let Some((name, text)) = BUILTIN_STDLIB.iter().find(|(n, _)| *n == sibling) {
            return Some((
                PathBuf::from("<stdlib>").join(&name["stdlib/".len()..]),
                Some(text),
            ));
        }
    }
    None
}
