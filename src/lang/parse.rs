//! The wall around pest: one typed function per grammar rule, each building an AST node with
//! its span. No `Pair` leaves this module; syntax errors become [`Error::Syntax`] with a phrase
//! for every rule the parser expected (the table in [`phrase`]).

use super::ast::*;
use super::span::{FileId, Name, Span};
use crate::check::diagnostics::{did_you_mean, Error};
use pest::iterators::{Pair, Pairs};
use pest::Parser;

#[derive(pest_derive::Parser)]
#[grammar = "../grammar/gpl.pest"]
struct GplParser;

/// Parses one source file. `file` is stamped on every span.
pub fn parse_file(text: &str, file: FileId) -> Result<File, Box<Error>> {
    let mut pairs =
        GplParser::parse(Rule::file, text).map_err(|e| Box::new(syntax_error(text, file, e)))?;
    let Some(root) = pairs.next() else {
        return Err(Box::new(Error::bug("the parser returned no file node")));
    };
    let cx = Cx { file };
    Ok(cx.file(root))
}

struct Cx {
    file: FileId,
}

/// The next child of a node the grammar guarantees to exist.
fn child<'i>(pairs: &mut Pairs<'i, Rule>, what: &str) -> Pair<'i, Rule> {
    // The grammar makes this child mandatory, so a missing one is a bug in this file.
    pairs
        .next()
        .unwrap_or_else(|| panic!("grammar guarantees {what}"))
}

impl Cx {
    fn span(&self, pair: &Pair<Rule>) -> Span {
        let s = pair.as_span();
        Span::new(self.file, s.start(), s.end())
    }

    fn file(&self, pair: Pair<Rule>) -> File {
        let mut items = Vec::new();
        let mut blank = false;
        for p in pair.into_inner() {
            let span = self.span(&p);
            let kind = match p.as_rule() {
                Rule::blank => {
                    blank = true;
                    continue;
                }
                Rule::comment => ItemKind::Comment(p.as_str().to_string()),
                Rule::import => ItemKind::Import(self.import(p)),
                Rule::block => ItemKind::Block(self.block(p)),
                Rule::profile => ItemKind::Profile(self.profile(p)),
                _ => continue, // EOI
            };
            items.push(Item {
                kind,
                blank_before: blank && !items.is_empty(),
                span,
            });
            blank = false;
        }
        File { items }
    }

    fn trailing(&self, pair: Pair<Rule>) -> String {
        pair.as_str().to_string()
    }

    fn import(&self, pair: Pair<Rule>) -> Import {
        let mut inner = pair.into_inner();
        let path = child(&mut inner, "import path");
        let path_span = self.span(&path);
        let trailing = inner.next().map(|t| self.trailing(t));
        Import {
            path: self.string(path),
            path_span,
            trailing,
        }
    }

    fn block(&self, pair: Pair<Rule>) -> Block {
        let mut inner = pair.into_inner();
        let kind_pair = child(&mut inner, "block kind");
        let kind_span = self.span(&kind_pair);
        // The grammar only accepts the keywords BlockKind lists.
        let kind = BlockKind::from_keyword(kind_pair.as_str())
            .unwrap_or_else(|| panic!("grammar block kind"));
        let name = self.name(child(&mut inner, "block name"));
        let mut block = Block {
            kind,
            kind_span,
            name,
            params: Vec::new(),
            header: None,
            body: Body {
                open_trailing: None,
                entries: Vec::new(),
                span: kind_span,
            },
            trailing: None,
        };
        for p in inner {
            match p.as_rule() {
                Rule::params => block.params = p.into_inner().map(|q| self.param(q)).collect(),
                Rule::header_ref => block.header = Some(self.header_ref(p)),
                Rule::body => {
                    let (body, trailing) = self.body(p);
                    block.body = body;
                    block.trailing = trailing;
                }
                _ => {}
            }
        }
        block
    }

    fn param(&self, pair: Pair<Rule>) -> Param {
        let mut inner = pair.into_inner();
        let name = self.name(child(&mut inner, "parameter name"));
        Param {
            name,
            default: inner.next().map(|v| self.value(v)),
        }
    }

    fn header_ref(&self, pair: Pair<Rule>) -> HeaderRef {
        let mut inner = pair.into_inner();
        let word = match child(&mut inner, "header word").as_str() {
            "from" => HeaderWord::From,
            _ => HeaderWord::On,
        };
        HeaderRef {
            word,
            value: self.value(child(&mut inner, "header value")),
        }
    }

    /// A body and the comment after its closing brace.
    fn body(&self, pair: Pair<Rule>) -> (Body, Option<String>) {
        let span = self.span(&pair);
        let mut body = Body {
            open_trailing: None,
            entries: Vec::new(),
            span,
        };
        let mut after = None;
        let mut blank = false;
        for p in pair.into_inner() {
            let entry_span = self.span(&p);
            let kind = match p.as_rule() {
                Rule::blank => {
                    blank = true;
                    continue;
                }
                Rule::open_trailing => {
                    body.open_trailing = Some(self.trailing(p));
                    continue;
                }
                Rule::trailing => {
                    after = Some(self.trailing(p));
                    continue;
                }
                Rule::comment => EntryKind::Comment(p.as_str().to_string()),
                Rule::statement => EntryKind::Statement(self.statement(p)),
                _ => continue,
            };
            body.entries.push(Entry {
                kind,
                blank_before: blank && !body.entries.is_empty(),
                span: entry_span,
            });
            blank = false;
        }
        (body, after)
    }

    fn statement(&self, pair: Pair<Rule>) -> Statement {
        let span = self.span(&pair);
        let mut inner = pair.into_inner();
        let head = self.name(child(&mut inner, "statement head"));
        let mut st = Statement {
            head,
            call: None,
            groups: Vec::new(),
            body: None,
            trailing: None,
            span,
        };
        for p in inner {
            match p.as_rule() {
                Rule::call_args => st.call = Some(self.call_args(p)),
                Rule::group => st.groups.push(self.group(p)),
                Rule::body => {
                    let (body, trailing) = self.body(p);
                    st.body = Some(body);
                    st.trailing = trailing;
                }
                Rule::trailing => st.trailing = Some(self.trailing(p)),
                _ => {}
            }
        }
        st
    }

    fn group(&self, pair: Pair<Rule>) -> Group {
        let span = self.span(&pair);
        Group {
            items: pair.into_inner().map(|p| self.item(p)).collect(),
            span,
        }
    }

    fn item(&self, pair: Pair<Rule>) -> Arg {
        let span = self.span(&pair);
        let inner = child(&mut pair.into_inner(), "argument");
        let kind = match inner.as_rule() {
            Rule::named => self.named(inner),
            _ => ArgKind::Positional(self.value(inner)),
        };
        Arg { kind, span }
    }

    fn named(&self, pair: Pair<Rule>) -> ArgKind {
        let mut inner = pair.into_inner();
        let name = self.name(child(&mut inner, "argument name"));
        ArgKind::Named(name, self.value(child(&mut inner, "argument value")))
    }

    fn call_args(&self, pair: Pair<Rule>) -> Vec<Arg> {
        pair.into_inner()
            .filter(|p| p.as_rule() == Rule::item)
            .map(|p| self.item(p))
            .collect()
    }

    fn profile(&self, pair: Pair<Rule>) -> Profile {
        let mut inner = pair.into_inner();
        let name = self.name(child(&mut inner, "profile name"));
        let mut profile = Profile {
            name,
            open_trailing: None,
            entries: Vec::new(),
            trailing: None,
        };
        let mut blank = false;
        for p in inner {
            let span = self.span(&p);
            let kind = match p.as_rule() {
                Rule::blank => {
                    blank = true;
                    continue;
                }
                Rule::open_trailing => {
                    profile.open_trailing = Some(self.trailing(p));
                    continue;
                }
                Rule::trailing => {
                    profile.trailing = Some(self.trailing(p));
                    continue;
                }
                Rule::comment => ProfileEntryKind::Comment(p.as_str().to_string()),
                Rule::override_ => ProfileEntryKind::Override(self.override_(p)),
                _ => continue,
            };
            profile.entries.push(ProfileEntry {
                kind,
                blank_before: blank && !profile.entries.is_empty(),
                span,
            });
            blank = false;
        }
        profile
    }

    fn override_(&self, pair: Pair<Rule>) -> Override {
        let mut ov = Override {
            kind_filter: None,
            target: Target::All(self.span(&pair)),
            path: Vec::new(),
            value: Vec::new(),
            trailing: None,
        };
        for p in pair.into_inner() {
            match p.as_rule() {
                Rule::block_kind => ov.kind_filter = BlockKind::from_keyword(p.as_str()),
                Rule::target => {
                    let t = child(&mut p.into_inner(), "override target");
                    ov.target = match t.as_rule() {
                        Rule::star => Target::All(self.span(&t)),
                        _ => Target::Block(self.name(t)),
                    };
                }
                Rule::name => ov.path.push(self.name(p)),
                Rule::group => ov.value.push(self.group(p)),
                Rule::trailing => ov.trailing = Some(self.trailing(p)),
                _ => {}
            }
        }
        ov
    }

    fn value(&self, pair: Pair<Rule>) -> Value {
        let span = self.span(&pair);
        let inner = if pair.as_rule() == Rule::value {
            child(&mut pair.into_inner(), "value")
        } else {
            pair
        };
        let kind = match inner.as_rule() {
            Rule::dims => ValueKind::Dims(inner.into_inner().map(|p| self.dim(p)).collect()),
            Rule::range => {
                let mut parts = inner.into_inner();
                let lo = self.number(child(&mut parts, "range start"));
                let hi = self.number(child(&mut parts, "range end"));
                ValueKind::Range(Box::new(lo), Box::new(hi))
            }
            Rule::call => {
                let mut parts = inner.into_inner();
                let name = self.name(child(&mut parts, "call name"));
                let args = self.call_args(child(&mut parts, "call arguments"));
                ValueKind::Call { name, args }
            }
            Rule::compare => {
                let mut parts = inner.into_inner();
                let quantity = self.name(child(&mut parts, "compared quantity"));
                let op = match child(&mut parts, "comparison").as_str() {
                    "<=" => CmpOp::Le,
                    "<" => CmpOp::Lt,
                    ">=" => CmpOp::Ge,
                    _ => CmpOp::Gt,
                };
                let bound = self.value(child(&mut parts, "bound"));
                ValueKind::Compare {
                    quantity,
                    op,
                    bound: Box::new(bound),
                }
            }
            Rule::list => ValueKind::List(inner.into_inner().map(|p| self.value(p)).collect()),
            Rule::string => ValueKind::Str(self.string(inner)),
            Rule::number => return self.number(inner),
            Rule::path => ValueKind::Path(inner.into_inner().map(|p| self.name(p)).collect()),
            _ => ValueKind::Str(inner.as_str().to_string()),
        };
        Value { kind, span }
    }

    fn dim(&self, pair: Pair<Rule>) -> Value {
        match pair.as_rule() {
            Rule::name => {
                let name = self.name(pair);
                Value {
                    span: name.span,
                    kind: ValueKind::Path(vec![name]),
                }
            }
            _ => self.number(pair),
        }
    }

    fn number(&self, pair: Pair<Rule>) -> Value {
        let text = pair.as_str().to_string();
        // The grammar only admits decimal literals, which f64 parses, with an optional
        // `k` or `M` at the end.
        let (digits, scale) = match text.strip_suffix('k') {
            Some(d) => (d, 1e3),
            None => match text.strip_suffix('M') {
                Some(d) => (d, 1e6),
                None => (text.as_str(), 1.0),
            },
        };
        let value = digits.parse::<f64>().map_or(f64::NAN, |v| v * scale);
        Value {
            kind: ValueKind::Number { text, value },
            span: self.span(&pair),
        }
    }

    fn string(&self, pair: Pair<Rule>) -> String {
        let raw = pair.into_inner().next().map(|p| p.as_str()).unwrap_or("");
        let mut out = String::with_capacity(raw.len());
        let mut chars = raw.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                match chars.next() {
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    Some(other) => out.push(other),
                    None => {}
                }
            } else {
                out.push(c);
            }
        }
        out
    }

    fn name(&self, pair: Pair<Rule>) -> Name {
        Name {
            text: pair.as_str().to_string(),
            span: self.span(&pair),
        }
    }
}

/// What a person calls each grammar rule, for "expected ..." messages. Exhaustive on purpose:
/// a new rule does not compile until it has a phrase.
fn phrase(rule: Rule) -> &'static str {
    match rule {
        Rule::EOI => "end of file",
        Rule::WHITESPACE => "a space",
        Rule::file => "a pipeline file",
        Rule::entry => "an import, a block or a profile",
        Rule::sep => "a new line or `;`",
        Rule::blank => "a blank line",
        Rule::comment | Rule::trailing | Rule::open_trailing => "a comment",
        Rule::nl => "a new line",
        Rule::import => "`import`",
        Rule::block => "a block (`dataset`, `model`, `train`, ...)",
        Rule::block_kind => {
            "a block kind (dataset, augment, balance, model, train, evaluate, crossval, ensemble, explain, search, chain, detect, callbacks)"
        }
        Rule::params => "a parameter list `(a, b: 1)`",
        Rule::param => "a parameter name",
        Rule::header_ref => "`from` or `on` and a reference",
        Rule::header_word => "`from` or `on`",
        Rule::body => "`{`",
        Rule::body_entry => "a statement",
        Rule::statement => "a statement",
        Rule::group | Rule::item => "an argument",
        Rule::named => "a named argument `name: value`",
        Rule::profile => "`profile`",
        Rule::profile_entry | Rule::override_ => "an override like `train *.epochs = 3`",
        Rule::target => "a block name or `*`",
        Rule::star => "`*`",
        Rule::value => "a value (number, string, name, list, range or call)",
        Rule::call => "a call `name(args)`",
        Rule::call_args => "`(`",
        Rule::list => "a list `[a, b]`",
        Rule::range => "a range `lo..hi`",
        Rule::compare => "a bound `name <= number`",
        Rule::cmp_op => "a comparison (`<=`, `<`, `>=`, `>`)",
        Rule::dims => "sizes like `3x3` or `69 x 69 x 3`",
        Rule::dim => "a size",
        Rule::path => "a name or a dotted reference",
        Rule::name | Rule::keyword_x | Rule::ident_char => "a name",
        Rule::int => "a whole number",
        Rule::number => "a number",
        Rule::string | Rule::string_inner => "a string",
    }
}

fn syntax_error(text: &str, file: FileId, err: pest::error::Error<Rule>) -> Error {
    use pest::error::{ErrorVariant, InputLocation};
    let pos = match err.location {
        InputLocation::Pos(p) => p,
        InputLocation::Span((s, _)) => s,
    };
    let (found, len) = found_at(text, pos);
    let span = Span::new(file, pos, pos + len);
    let (expected, help) = match &err.variant {
        ErrorVariant::ParsingError { positives, .. } => {
            // Blank lines, comments and end of file are possible almost everywhere, and a
            // comparison after any name; naming them only buries what was really expected.
            let noise = [
                Rule::cmp_op,
                Rule::blank,
                Rule::comment,
                Rule::trailing,
                Rule::open_trailing,
                Rule::EOI,
            ];
            // A failure at the very start is reported against the whole file: say what a
            // file may start with instead.
            let expanded: Vec<Rule> = positives
                .iter()
                .flat_map(|r| match r {
                    Rule::file => vec![Rule::import, Rule::block_kind, Rule::profile],
                    other => vec![*other],
                })
                .collect();
            let useful: Vec<Rule> = expanded
                .iter()
                .copied()
                .filter(|r| !noise.contains(r))
                .collect();
            let shown = if useful.is_empty() {
                expanded.clone()
            } else {
                useful
            };
            let mut phrases: Vec<&str> = shown.iter().map(|r| phrase(*r)).collect();
            phrases.dedup();
            let mut seen = std::collections::BTreeSet::new();
            phrases.retain(|p| seen.insert(*p));
            let help = if shown.contains(&Rule::block_kind) {
                did_you_mean(
                    found.trim_matches('`'),
                    BlockKind::ALL
                        .iter()
                        .map(|k| k.keyword())
                        .chain(["import", "profile"]),
                )
            } else {
                None
            };
            (join_or(&phrases), help)
        }
        ErrorVariant::CustomError { message } => (message.clone(), None),
    };
    if found == "`\"`" {
        return Error::Syntax {
            message: "unterminated string".into(),
            span,
            label: "this string has no closing `\"` on its line".into(),
            help: Some(
                "a string ends with `\"` on the same line; write `\\\"` for a quote inside it"
                    .into(),
            ),
        };
    }
    if found == "end of file" {
        return Error::Syntax {
            message: "unexpected end of file".into(),
            span,
            label: "the file ends here".into(),
            help: Some(syntax_help(&found)),
        };
    }
    Error::Syntax {
        message: format!("expected {expected}, found {found}"),
        span,
        label: format!("expected {}", short_expected(&expected)),
        help: help
            .map(|s| format!("did you mean `{s}`?"))
            .or_else(|| Some(syntax_help(&found))),
    }
}

fn short_expected(expected: &str) -> String {
    if expected.len() > 60 {
        expected.split(" (").next().unwrap_or(expected).to_string()
    } else {
        expected.to_string()
    }
}

fn syntax_help(found: &str) -> String {
    if found == "end of file" {
        "a block or a list is not closed: check that every `{`, `(` and `[` has its partner".into()
    } else {
        "statements end at a new line or `;`; arguments are separated by spaces or commas".into()
    }
}

/// A short description of the text at `pos` and how many bytes to underline.
fn found_at(text: &str, pos: usize) -> (String, usize) {
    let rest = &text[pos.min(text.len())..];
    match rest.chars().next() {
        None => ("end of file".into(), 0),
        Some('\n') | Some('\r') => ("end of line".into(), 1),
        Some(c) if c.is_alphanumeric() || c == '_' => {
            let word: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '.')
                .collect();
            let len = word.len();
            (format!("`{word}`"), len)
        }
        Some(c) => (format!("`{c}`"), c.len_utf8()),
    }
}

fn join_or(items: &[&str]) -> String {
    match items {
        [] => "something else".into(),
        [one] => one.to_string(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> File {
        parse_file(text, FileId(0)).unwrap_or_else(|e| panic!("{e:?}"))
    }

    #[test]
    fn statements_groups_and_values() {
        let f = parse("model m(classes, size: 69) {\n  input size x size x 3\n  for f in [32, 64] { conv f 3x3 relu; maxpool 2 }\n  dense classes softmax  # head\n}\n");
        let ItemKind::Block(b) = &f.items[0].kind else {
            panic!()
        };
        assert_eq!(b.kind, BlockKind::Model);
        assert_eq!(b.params.len(), 2);
        let sts: Vec<_> = b.body.statements().collect();
        assert_eq!(sts.len(), 3);
        assert!(
            matches!(sts[0].groups[0].items[0].value().kind, ValueKind::Dims(ref d) if d.len() == 3)
        );
        assert_eq!(
            sts[1].body.as_ref().map(|b| b.statements().count()),
            Some(2)
        );
        assert_eq!(sts[2].trailing.as_deref(), Some("# head"));
    }

    #[test]
    fn numbers_ranges_calls_and_profiles() {
        let f = parse("search s {\n space { lr in 1e-4..1e-2; k in [3, 5] }\n strategy bayes(trials: 30, init: 8)\n}\nprofile quick {\n  train *.epochs = 3\n  galaxy10.fallback.count = 3000\n}\n");
        let ItemKind::Profile(p) = &f.items[1].kind else {
            panic!()
        };
        let ProfileEntryKind::Override(o) = &p.entries[0].kind else {
            panic!()
        };
        assert_eq!(o.kind_filter, Some(BlockKind::Train));
        assert!(matches!(o.target, Target::All(_)));
        let ProfileEntryKind::Override(o) = &p.entries[1].kind else {
            panic!()
        };
        assert_eq!(o.path.len(), 2);
    }

    #[test]
    fn bounds_and_suffixed_numbers() {
        let text = "search s {\n  subject to params <= 100k, mflops < 2.5M\n}\n";
        let f = parse(text);
        let ItemKind::Block(b) = &f.items[0].kind else {
            panic!()
        };
        let st = b.body.statements().next().unwrap();
        let values: Vec<&Value> = st.args().map(|a| a.value()).collect();
        let ValueKind::Compare {
            quantity,
            op,
            bound,
        } = &values[1].kind
        else {
            panic!("{:?}", values[1])
        };
        assert_eq!((quantity.text.as_str(), *op), ("params", CmpOp::Le));
        assert!(matches!(bound.kind, ValueKind::Number { value, .. } if value == 100_000.0));
        let ValueKind::Compare { op, bound, .. } = &values[2].kind else {
            panic!()
        };
        assert_eq!(*op, CmpOp::Lt);
        assert!(matches!(bound.kind, ValueKind::Number { value, .. } if value == 2_500_000.0));
        // `gpl fmt` keeps the bounds as written.
        assert_eq!(crate::lang::fmt::format_file(&f), text);
    }

    #[test]
    fn syntax_error_names_what_was_expected() {
        let err = parse_file("datset g {\n}\n", FileId(0)).unwrap_err();
        let text = format!("{err:?}");
        assert!(text.contains("dataset"), "{text}");
    }
}
