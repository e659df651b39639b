//! The syntax tree. Every node is `{ kind, span }` (or a struct with a `span`); names are
//! [`Name`]s. Spans are skipped when serialising, so two trees that differ only in layout
//! serialise identically (the `gpl fmt` round-trip test compares them that way).

use super::span::{Name, Span};
use serde::Serialize;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct File {
    pub items: Vec<Item>,
}

/// A top-level entry. `blank_before` records a blank line before it, so `gpl fmt` keeps
/// paragraph breaks.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Item {
    pub kind: ItemKind,
    pub blank_before: bool,
    #[serde(skip)]
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum ItemKind {
    Comment(String),
    Import(Import),
    Block(Block),
    Profile(Profile),
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Import {
    pub path: String,
    #[serde(skip)]
    pub path_span: Span,
    pub trailing: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockKind {
    Dataset,
    Augment,
    Balance,
    Model,
    Train,
    Evaluate,
    Crossval,
    Ensemble,
    Explain,
    Search,
    Chain,
    Detect,
    Callbacks,
}

impl BlockKind {
    pub const ALL: [BlockKind; 13] = [
        BlockKind::Dataset,
        BlockKind::Augment,
        BlockKind::Balance,
        BlockKind::Model,
        BlockKind::Train,
        BlockKind::Evaluate,
        BlockKind::Crossval,
        BlockKind::Ensemble,
        BlockKind::Explain,
        BlockKind::Search,
        BlockKind::Chain,
        BlockKind::Detect,
        BlockKind::Callbacks,
    ];

    pub fn keyword(self) -> &'static str {
        match self {
            BlockKind::Dataset => "dataset",
            BlockKind::Augment => "augment",
            BlockKind::Balance => "balance",
            BlockKind::Model => "model",
            BlockKind::Train => "train",
            BlockKind::Evaluate => "evaluate",
            BlockKind::Crossval => "crossval",
            BlockKind::Ensemble => "ensemble",
            BlockKind::Explain => "explain",
            BlockKind::Search => "search",
            BlockKind::Chain => "chain",
            BlockKind::Detect => "detect",
            BlockKind::Callbacks => "callbacks",
        }
    }

    pub fn from_keyword(word: &str) -> Option<BlockKind> {
        BlockKind::ALL.into_iter().find(|k| k.keyword() == word)
    }
}

impl std::fmt::Display for BlockKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.keyword())
    }
}

/// `kind name(params) from|on ref { body }`
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Block {
    pub kind: BlockKind,
    #[serde(skip)]
    pub kind_span: Span,
    pub name: Name,
    pub params: Vec<Param>,
    pub header: Option<HeaderRef>,
    pub body: Body,
    pub trailing: Option<String>,
}

/// A model parameter, optionally with a default: `classes`, `size: 69`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Param {
    pub name: Name,
    pub default: Option<Value>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HeaderWord {
    From,
    On,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HeaderRef {
    pub word: HeaderWord,
    pub value: Value,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Body {
    /// A comment right after the opening brace.
    pub open_trailing: Option<String>,
    pub entries: Vec<Entry>,
    #[serde(skip)]
    pub span: Span,
}

impl Body {
    pub fn statements(&self) -> impl Iterator<Item = &Statement> {
        self.entries.iter().filter_map(|e| match &e.kind {
            EntryKind::Statement(s) => Some(s),
            EntryKind::Comment(_) => None,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Entry {
    pub kind: EntryKind,
    pub blank_before: bool,
    #[serde(skip)]
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum EntryKind {
    Comment(String),
    Statement(Statement),
}

/// `head(call args) group group ... { body }  # trailing`
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Statement {
    pub head: Name,
    pub call: Option<Vec<Arg>>,
    pub groups: Vec<Group>,
    pub body: Option<Body>,
    pub trailing: Option<String>,
    #[serde(skip)]
    pub span: Span,
}

impl Statement {
    /// All arguments after the head, in order, ignoring comma grouping.
    pub fn args(&self) -> impl Iterator<Item = &Arg> {
        self.groups.iter().flat_map(|g| g.items.iter())
    }
}

/// Comma-joined arguments: `1, 2, 3` or `scratch: 0.6, vgg_ft: 0.4`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Group {
    pub items: Vec<Arg>,
    #[serde(skip)]
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Arg {
    pub kind: ArgKind,
    #[serde(skip)]
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum ArgKind {
    Positional(Value),
    Named(Name, Value),
}

impl Arg {
    pub fn value(&self) -> &Value {
        match &self.kind {
            ArgKind::Positional(v) | ArgKind::Named(_, v) => v,
        }
    }

    pub fn name(&self) -> Option<&Name> {
        match &self.kind {
            ArgKind::Positional(_) => None,
            ArgKind::Named(n, _) => Some(n),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Value {
    pub kind: ValueKind,
    #[serde(skip)]
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum ValueKind {
    /// As written (`1e-3` stays `1e-3` under `gpl fmt`), and its value.
    Number {
        text: String,
        value: f64,
    },
    Str(String),
    /// `a` or `galaxy10.train`.
    Path(Vec<Name>),
    Call {
        name: Name,
        args: Vec<Arg>,
    },
    List(Vec<Value>),
    Range(Box<Value>, Box<Value>),
    /// `3x3`, `69 x 69 x 3`, `k x k`: each part a number or a name.
    Dims(Vec<Value>),
    /// `params <= 100k`: a named quantity and its bound.
    Compare {
        quantity: Name,
        op: CmpOp,
        bound: Box<Value>,
    },
}

/// The comparison of a bound (`<=`, `<`, `>=`, `>`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub enum CmpOp {
    Le,
    Lt,
    Ge,
    Gt,
}

impl CmpOp {
    pub fn symbol(self) -> &'static str {
        match self {
            CmpOp::Le => "<=",
            CmpOp::Lt => "<",
            CmpOp::Ge => ">=",
            CmpOp::Gt => ">",
        }
    }

    /// Whether `x op bound` holds.
    pub fn holds(self, x: f64, bound: f64) -> bool {
        match self {
            CmpOp::Le => x <= bound,
            CmpOp::Lt => x < bound,
            CmpOp::Ge => x >= bound,
            CmpOp::Gt => x > bound,
        }
    }
}

impl Value {
    /// The single identifier this value is, if it is one (`relu`, not `a.b`).
    pub fn as_word(&self) -> Option<&Name> {
        match &self.kind {
            ValueKind::Path(parts) if parts.len() == 1 => parts.first(),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Profile {
    pub name: Name,
    pub open_trailing: Option<String>,
    pub entries: Vec<ProfileEntry>,
    pub trailing: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ProfileEntry {
    pub kind: ProfileEntryKind,
    pub blank_before: bool,
    #[serde(skip)]
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum ProfileEntryKind {
    Comment(String),
    Override(Override),
}

/// `[kind] target.statement[.argument] = value`, e.g. `train *.epochs = 3`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Override {
    pub kind_filter: Option<BlockKind>,
    pub target: Target,
    pub path: Vec<Name>,
    /// The new arguments: one or more groups, like a statement's.
    pub value: Vec<Group>,
    pub trailing: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum Target {
    All(#[serde(skip)] Span),
    Block(Name),
}
