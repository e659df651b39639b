//! Model definitions: each definition's default instance, for `gpl check`'s summary.

use crate::check::checker::{Checker, Env};
use crate::check::program::*;
use crate::lang::ast::*;

impl<'a> Checker<'a> {
    pub fn model_def_summary(&mut self, b: &'a Block) {
        let all_default = b.params.iter().all(|p| p.default.is_some());
        let default_ir = if all_default {
            let env: Env = b
                .params
                .iter()
                .filter_map(|p| p.default.clone().map(|d| (p.name.text.clone(), d)))
                .collect();
            self.build_model(b, &env, None)
        } else {
            None
        };
        self.out.models.push(ModelDef {
            name: b.name.text.clone(),
            params: b.params.iter().map(|p| p.name.text.clone()).collect(),
            default_ir,
            span: b.name.span,
        });
    }
}
