//! Profiles: named sets of overrides applied to the syntax tree before checking, so a
//! profile's values are checked exactly like values written in the blocks.
//!
//! `[kind] target.statement = value` replaces a statement's arguments (adding the statement
//! when a named block lacks it); `[kind] target.statement.arg = value` sets one named argument,
//! looking in the statement's own arguments and then inside a call among them
//! (`galaxy10.fallback.count = 3000` edits `fallback synthetic(galaxy10, count: 21785)`).

use super::diagnostics::{suggest, Error};
use crate::lang::ast::*;
use crate::lang::{Name, Span};

/// Applies profile `name` to the loaded files. Errors when it is not defined or an override
/// matches nothing. Every file may define the profile: an importing file extends an imported
/// profile with overrides of its own blocks (`galaxy10_extras.gpl`'s `quick` shortens its
/// search), applied in load order.
pub fn apply(files: &mut [(crate::lang::FileId, File)], name: &str, errors: &mut Vec<Error>) {
    let mut chosen: Vec<Profile> = Vec::new();
    let mut all = Vec::new();
    for (_, file) in files.iter() {
        for item in &file.items {
            if let ItemKind::Profile(p) = &item.kind {
                all.push(p.name.text.clone());
                if p.name.text == name {
                    chosen.push(p.clone());
                }
            }
        }
    }
    if chosen.is_empty() {
        let help = if all.is_empty() {
            Some(
                "this pipeline defines no profiles; add `profile NAME { train *.epochs = 3 }`"
                    .to_string(),
            )
        } else {
            suggest(name, all.iter().map(|s| s.as_str()))
        };
        errors.push(Error::UnknownProfile {
            name: name.to_string(),
            help,
        });
        return;
    }
    for profile in &chosen {
        for entry in &profile.entries {
            if let ProfileEntryKind::Override(ov) = &entry.kind {
                apply_one(files, ov, entry.span, errors);
            }
        }
    }
}

fn apply_one(
    files: &mut [(crate::lang::FileId, File)],
    ov: &Override,
    span: Span,
    errors: &mut Vec<Error>,
) {
    if ov.path.len() > 2 {
        errors.push(Error::ProfileNoMatch {
            message: "an override path is `block.statement` or `block.statement.argument`".into(),
            span,
            help: None,
        });
        return;
    }
    let statement = &ov.path[0];
    let mut matched_blocks = 0;
    let mut changed = 0;
    let mut names = Vec::new();
    for (_, file) in files.iter_mut() {
        for item in &mut file.items {
            let ItemKind::Block(block) = &mut item.kind else {
                continue;
            };
            names.push(block.name.text.clone());
            if ov.kind_filter.is_some_and(|k| k != block.kind) {
                continue;
            }
            let specific = match &ov.target {
                Target::All(_) => false,
                Target::Block(n) if n.text == block.name.text => true,
                Target::Block(_) => continue,
            };
            matched_blocks += 1;
            if edit_block(block, statement, ov.path.get(1), &ov.value, specific, span) {
                changed += 1;
            }
        }
    }
    if changed == 0 {
        let (message, help) = if matched_blocks == 0 {
            let target = match &ov.target {
                Target::All(_) => "*".to_string(),
                Target::Block(n) => n.text.clone(),
            };
            (
                format!("no block `{target}`"),
                suggest(&target, names.iter().map(|s| s.as_str())),
            )
        } else {
            (
                format!("no matching block has a `{}` statement", statement.text),
                None,
            )
        };
        errors.push(Error::ProfileNoMatch {
            message,
            span,
            help,
        });
    }
}

/// Edits one block; true when something was set.
fn edit_block(
    block: &mut Block,
    statement: &Name,
    arg: Option<&Name>,
    value: &[Group],
    specific: bool,
    span: Span,
) -> bool {
    let mut done = false;
    for entry in &mut block.body.entries {
        let EntryKind::Statement(st) = &mut entry.kind else {
            continue;
        };
        if st.head.text != statement.text {
            continue;
        }
        match arg {
            None => {
                st.groups = value.to_vec();
                st.call = None;
            }
            Some(arg) => set_arg(st, arg, value),
        }
        done = true;
    }
    if !done && specific && arg.is_none() {
        block.body.entries.push(Entry {
            kind: EntryKind::Statement(Statement {
                head: statement.clone(),
                call: None,
                groups: value.to_vec(),
                body: None,
                trailing: None,
                span,
            }),
            blank_before: false,
            span,
        });
        done = true;
    }
    done
}

fn set_arg(st: &mut Statement, arg: &Name, value: &[Group]) {
    let items: Vec<&Arg> = value.iter().flat_map(|g| g.items.iter()).collect();
    let span = value.first().map(|g| g.span).unwrap_or(arg.span);
    let new_value = match items.as_slice() {
        [single] => single.value().clone(),
        _ => Value {
            kind: ValueKind::List(items.iter().map(|a| a.value().clone()).collect()),
            span,
        },
    };
    let new_arg = Arg {
        kind: ArgKind::Named(arg.clone(), new_value),
        span,
    };
    if let Some(call) = &mut st.call {
        set_in(call, arg, new_arg);
        return;
    }
    for group in &mut st.groups {
        for item in &mut group.items {
            if item.name().is_some_and(|n| n.text == arg.text) {
                *item = new_arg;
                return;
            }
        }
    }
    for group in &mut st.groups {
        for item in &mut group.items {
            if let ArgKind::Positional(Value {
                kind: ValueKind::Call { args, .. },
                ..
            }) = &mut item.kind
            {
                set_in(args, arg, new_arg);
                return;
            }
        }
    }
    st.groups.push(Group {
        items: vec![new_arg],
        span,
    });
}

fn set_in(args: &mut Vec<Arg>, arg: &Name, new_arg: Arg) {
    match args
        .iter_mut()
        .find(|a| a.name().is_some_and(|n| n.text == arg.text))
    {
        Some(existing) => *existing = new_arg,
        None => args.push(new_arg),
    }
}
