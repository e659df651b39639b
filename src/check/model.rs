//! Model instantiation: binds a model's parameters, unrolls `for` loops, splices `use`d
//! models, turns each layer statement into an `nn::ir::LayerSpec` (its op, `name:`,
//! `from:` and `share:`), collects `output`s, and builds the graph (`ModelIr::build_graph`:
//! names, cycles, layers reaching no output, shape inference, shared weights), pointing
//! each error at its line. Layer names form one namespace per model, `use`d models
//! included, and `from:` and `share:` name layers as written; `input` is the model's input.

use super::checker::{describe, statement_span, Args, Checker, Env};
use super::diagnostics::{suggest, Error};
use crate::lang::ast::*;
use crate::lang::{Name, Span};
use crate::nn::ir::{
    layer_names, Activation, GraphError, LayerOp, LayerSpec, ModelIr, Padding, Regularizer, INPUT,
};

pub(super) const LAYERS: &[&str] = &[
    "input",
    "output",
    "conv",
    "dense",
    "maxpool",
    "avgpool",
    "globalavgpool",
    "batchnorm",
    "dropout",
    "flatten",
    "activation",
    "upsample",
    "add",
    "concat",
    "multiply",
    "weighted_sum",
    "relu6",
    "hard_swish",
    "swish",
    "for",
    "use",
];
const ACTIVATIONS: &[&str] = &[
    "linear",
    "relu",
    "relu6",
    "leaky_relu",
    "elu",
    "sigmoid",
    "tanh",
    "softmax",
    "hard_swish",
    "swish",
];

/// One layer statement as written.
struct Written {
    spec: LayerSpec,
    /// The whole statement.
    span: Span,
    /// Each `from:` name's span.
    from_spans: Vec<Span>,
    /// The `share:` name's span.
    share_span: Option<Span>,
}

/// Layers collected while walking a body.
struct Collect {
    input: Option<(Vec<usize>, Span)>,
    ops: Vec<Written>,
    /// `output NAME` statements of the model itself, in order.
    outputs: Vec<(String, Span)>,
    /// Models being expanded, for `use` recursion.
    stack: Vec<String>,
    /// Set when an error was found but deliberately not reported again.
    failed: bool,
}

impl<'a> Checker<'a> {
    /// Instantiates `model` written as `name` or `name(args)` at `site`. `extra` binds further
    /// parameters (search dimensions). Returns the IR and the bound arguments as text.
    pub fn instantiate(
        &mut self,
        v: &Value,
        extra: &Env,
    ) -> Option<(ModelIr, Vec<(String, String)>)> {
        let (name, args): (&Name, Vec<&Arg>) = match &v.kind {
            ValueKind::Call { name, args } => (name, args.iter().collect()),
            ValueKind::Path(p) if p.len() == 1 => (&p[0], Vec::new()),
            _ => {
                self.wrong_type(v, "a model like `scratch_big(9)`", None);
                return None;
            }
        };
        let def = self.model_def(name)?;
        let env = self.bind(def, Args::new(args, v.span), extra, v.span)?;
        let key = format!(
            "{}({})",
            def.name.text,
            env.iter()
                .map(|(k, v)| format!("{k}={}", crate::lang::fmt::value(v)))
                .collect::<Vec<_>>()
                .join(",")
        );
        let bound: Vec<(String, String)> = def
            .params
            .iter()
            .filter_map(|p| {
                env.get(&p.name.text)
                    .map(|v| (p.name.text.clone(), crate::lang::fmt::value(v)))
            })
            .collect();
        if let Some(cached) = self.instances.get(&key) {
            return cached.clone().map(|ir| (ir, bound));
        }
        let ir = self.build_model(def, &env, Some(v.span));
        self.instances.insert(key, ir.clone());
        ir.map(|ir| (ir, bound))
    }

    fn model_def(&mut self, name: &Name) -> Option<&'a Block> {
        match self.models.get(name.text.as_str()) {
            Some(b) => Some(*b),
            None => {
                let help = suggest(&name.text, self.models.keys().copied());
                self.err(Error::UnknownName {
                    what: "model".into(),
                    name: name.text.clone(),
                    span: name.span,
                    help,
                });
                None
            }
        }
    }

    /// Binds call arguments to a model's parameters, filling defaults.
    fn bind(&mut self, def: &Block, args: Args, extra: &Env, site: Span) -> Option<Env> {
        let mut env = Env::new();
        let mut ok = true;
        if args.positional.len() > def.params.len() {
            self.err(Error::ModelArgs {
                message: format!(
                    "model `{}` takes {} parameters but gets {}",
                    def.name.text,
                    def.params.len(),
                    args.positional.len()
                ),
                span: site,
                help: Some(format!(
                    "its parameters: ({})",
                    def.params
                        .iter()
                        .map(|p| p.name.text.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            });
            return None;
        }
        for (p, v) in def.params.iter().zip(&args.positional) {
            env.insert(p.name.text.clone(), (*v).clone());
        }
        for (n, v) in &args.named {
            if !def.params.iter().any(|p| p.name.text == n.text) {
                let help = suggest(&n.text, def.params.iter().map(|p| p.name.text.as_str()));
                self.err(Error::UnknownArg {
                    what: format!("model `{}`", def.name.text),
                    name: n.text.clone(),
                    span: n.span,
                    help,
                });
                ok = false;
            } else {
                env.insert(n.text.clone(), (*v).clone());
            }
        }
        for (k, v) in extra {
            env.insert(k.clone(), v.clone());
        }
        for p in &def.params {
            if env.contains_key(&p.name.text) {
                continue;
            }
            match &p.default {
                Some(d) => {
                    env.insert(p.name.text.clone(), d.clone());
                }
                None => {
                    self.err(Error::ModelArgs {
                        message: format!(
                            "model `{}` needs a value for `{}`",
                            def.name.text, p.name.text
                        ),
                        span: site,
                        help: Some(format!("write `{}({}: ...)`", def.name.text, p.name.text)),
                    });
                    ok = false;
                }
            }
        }
        ok.then_some(env)
    }

    /// Builds a model's IR with its parameters bound; `site` is where it was instantiated.
    pub fn build_model(&mut self, def: &Block, env: &Env, site: Option<Span>) -> Option<ModelIr> {
        let mut c = Collect {
            input: None,
            ops: Vec::new(),
            outputs: Vec::new(),
            stack: vec![def.name.text.clone()],
            failed: false,
        };
        let errors_before = self.errors.len();
        self.walk(&def.body, env, &mut c);
        if self.errors.len() > errors_before || c.failed {
            return None;
        }
        let Some((input, _)) = c.input.clone() else {
            self.err(Error::MissingStatement {
                block: "model".into(),
                name: def.name.text.clone(),
                statement: "input".into(),
                span: def.name.span,
                help: Some("add e.g. `input 69 x 69 x 3` before the first layer".into()),
            });
            return None;
        };
        // Layer names must be unique: weights are matched by name.
        let mut seen: Vec<(&str, Span)> = Vec::new();
        for w in &c.ops {
            if let Some(n) = &w.spec.name {
                if let Some((_, first)) = seen.iter().find(|(s, _)| *s == n.as_str()) {
                    self.err(Error::Duplicate {
                        what: "layer".into(),
                        name: n.clone(),
                        span: w.span,
                        first: Some(*first),
                        help: None,
                    });
                    return None;
                }
                seen.push((n, w.span));
            }
        }
        let specs = c.ops.iter().map(|w| w.spec.clone()).collect();
        let outputs = c.outputs.iter().map(|(n, _)| n.clone()).collect();
        let model = def.name.text.clone();
        let err = match ModelIr::build_graph(&model, input, specs, outputs) {
            Ok(ir) => return Some(ir),
            Err(e) => e,
        };
        let layer_span = |i: usize| c.ops.get(i).map(|w| w.span).unwrap_or(def.name.span);
        // The names `from:` can use: every layer's (automatic ones too) and `input`.
        let names = || -> Vec<String> {
            let specs: Vec<LayerSpec> = c.ops.iter().map(|w| w.spec.clone()).collect();
            let mut names = layer_names(&specs);
            names.push(INPUT.to_string());
            names
        };
        let error = match err {
            GraphError::Shape {
                layer,
                message,
                other,
            } => {
                let span = layer_span(layer);
                let help = if message.contains("flatten") {
                    Some(
                        "insert `flatten` (or `globalavgpool`) before the first dense layer"
                            .to_string(),
                    )
                } else if message.contains("window does not fit") {
                    Some("use `padding: same`, a smaller kernel, or fewer pooling layers before this one".to_string())
                } else {
                    None
                };
                Error::Shape {
                    model,
                    layer: format!("{}", layer + 1),
                    message,
                    span,
                    other: other.map(layer_span).filter(|s| s.file == span.file),
                    site: site.filter(|s| s.file == span.file),
                    help,
                }
            }
            GraphError::UnknownSource { layer, name } => {
                let w = &c.ops[layer];
                let span = w
                    .spec
                    .from
                    .iter()
                    .position(|n| *n == name)
                    .and_then(|k| w.from_spans.get(k).copied())
                    .unwrap_or(w.span);
                let known = names();
                Error::UnknownName {
                    what: "layer".into(),
                    help: suggest(&name, known.iter().map(String::as_str)),
                    name,
                    span,
                }
            }
            GraphError::UnknownOutput { name } => {
                let span = c
                    .outputs
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, s)| *s)
                    .unwrap_or(def.name.span);
                let known = names();
                Error::UnknownName {
                    what: "layer".into(),
                    help: suggest(&name, known.iter().map(String::as_str)),
                    name,
                    span,
                }
            }
            GraphError::Cycle { layers } => {
                let known = names();
                let mut chain: Vec<&str> = layers.iter().map(|&l| known[l].as_str()).collect();
                chain.push(chain[0]);
                Error::ModelCycle {
                    model,
                    chain: chain.join(" → "),
                    span: layer_span(layers[0]),
                }
            }
            GraphError::UnknownShare { layer, name } => {
                let known = names();
                Error::UnknownName {
                    what: "layer".into(),
                    help: suggest(&name, known.iter().map(String::as_str)),
                    name,
                    span: c.ops[layer].share_span.unwrap_or(c.ops[layer].span),
                }
            }
            GraphError::Share {
                layer,
                owner,
                owner_name,
                message,
            } => {
                let w = &c.ops[layer];
                let span = w.share_span.unwrap_or(w.span);
                Error::SharedWeights {
                    model,
                    layer: names()[layer].clone(),
                    owner: owner_name,
                    message,
                    span,
                    owner_span: Some(layer_span(owner))
                        .filter(|s| s.file == span.file && owner != layer),
                    help: None,
                }
            }
            GraphError::Unused { layer } => Error::UnusedLayer {
                model,
                layer: names()[layer].clone(),
                span: layer_span(layer),
            },
            GraphError::Empty => Error::MissingStatement {
                block: "model".into(),
                name: model,
                statement: "layer".into(),
                span: def.name.span,
                help: Some("add layers after the input, e.g. `conv 32 3x3 relu`".into()),
            },
        };
        self.err(error);
        None
    }

    fn walk(&mut self, body: &Body, env: &Env, c: &mut Collect) {
        for st in body.statements() {
            let head = st.head.text.as_str();
            if !LAYERS.contains(&head) {
                self.err(Error::UnknownStatement {
                    block: "model".into(),
                    name: head.to_string(),
                    span: st.head.span,
                    help: suggest(head, LAYERS.iter().copied()),
                });
                continue;
            }
            match head {
                "for" => self.for_loop(st, env, c),
                "use" => self.use_model(st, env, c),
                "input" => self.input(st, env, c),
                "output" => self.output(st, env, c),
                _ => {
                    if st.body.is_some() {
                        self.err(Error::WrongType {
                            expected: "a layer".into(),
                            found: "a body `{ ... }`".into(),
                            span: st.head.span,
                            help: None,
                        });
                        continue;
                    }
                    if c.input.is_none() && c.ops.is_empty() {
                        self.err(Error::MissingStatement {
                            block: "model".into(),
                            name: c.stack[0].clone(),
                            statement: "input".into(),
                            span: st.head.span,
                            help: Some("the first statement of a model is its input, e.g. `input 69 x 69 x 3`".into()),
                        });
                        c.input = Some((vec![], st.head.span));
                    }
                    let args: Vec<Arg> = st
                        .call
                        .iter()
                        .flatten()
                        .chain(st.args())
                        .map(|a| subst_arg(a, env))
                        .collect();
                    let args = Args::new(args.iter(), statement_span(st));
                    let from = match args.get("from") {
                        Some(v) => self.layer_names(v, "`from:` (a layer name or a list `[a, b]`)"),
                        None => Some(Vec::new()),
                    };
                    let share = match args.get("share") {
                        Some(v) => match self.share(head, v, &args, &c.stack[0]) {
                            Some(share) => Some(Some(share)),
                            None => continue,
                        },
                        None => Some(None),
                    };
                    if let (Some((name, op)), Some(from), Some(share)) =
                        (self.layer(head, &args), from, share)
                    {
                        let (from, from_spans) = from.into_iter().unzip();
                        let (share, share_span) = share.unzip();
                        c.ops.push(Written {
                            spec: LayerSpec {
                                name,
                                op,
                                from,
                                share,
                            },
                            span: statement_span(st),
                            from_spans,
                            share_span,
                        });
                    }
                }
            }
        }
    }

    fn for_loop(&mut self, st: &Statement, env: &Env, c: &mut Collect) {
        let args: Vec<&Arg> = st.args().collect();
        let var = args.first().and_then(|a| a.value().as_word());
        let is_in = args
            .get(1)
            .and_then(|a| a.value().as_word())
            .is_some_and(|n| n.text == "in");
        let (Some(var), true, Some(list), Some(body)) = (var, is_in, args.get(2), &st.body) else {
            self.err(Error::WrongType {
                expected: "`for NAME in [values] { layers }`".into(),
                found: "something else".into(),
                span: statement_span(st),
                help: None,
            });
            return;
        };
        let list = subst(list.value(), env);
        let ValueKind::List(items) = &list.kind else {
            self.wrong_type(
                &list,
                "a list `[32, 64]`",
                Some("`for` loops over a list of values".into()),
            );
            return;
        };
        for item in items {
            let mut inner = env.clone();
            inner.insert(var.text.clone(), item.clone());
            self.walk(body, &inner, c);
        }
    }

    fn use_model(&mut self, st: &Statement, env: &Env, c: &mut Collect) {
        let Some(arg) = st.args().next() else {
            self.err(Error::MissingArg {
                what: "use".into(),
                needed: "a model name".into(),
                span: st.head.span,
                help: None,
            });
            return;
        };
        let v = subst(arg.value(), env);
        let (name, args): (&Name, Vec<&Arg>) = match &v.kind {
            ValueKind::Call { name, args } => (name, args.iter().collect()),
            ValueKind::Path(p) if p.len() == 1 => (&p[0], Vec::new()),
            _ => {
                self.wrong_type(&v, "a model name", None);
                return;
            }
        };
        let Some(def) = self.model_def(name) else {
            return;
        };
        if c.stack.contains(&def.name.text) {
            let mut chain = c.stack.clone();
            chain.push(def.name.text.clone());
            let mut key = chain.clone();
            key.sort();
            key.dedup();
            if self.cycles.insert(key) {
                self.err(Error::ModelRecursion {
                    name: def.name.text.clone(),
                    chain: chain.join(" → "),
                    span: name.span,
                });
            }
            c.failed = true;
            return;
        }
        let Some(inner_env) = self.bind(def, Args::new(args, v.span), &Env::new(), v.span) else {
            return;
        };
        c.stack.push(def.name.text.clone());
        self.walk(&def.body, &inner_env, c);
        c.stack.pop();
    }

    /// `output NAME`, `output a, b` or `output [a, b]`: the model returns these layers
    /// (instead of its last). A used model's outputs are its user's business: ignored.
    fn output(&mut self, st: &Statement, env: &Env, c: &mut Collect) {
        if c.stack.len() > 1 {
            return;
        }
        let values: Vec<Value> = st.args().map(|a| subst(a.value(), env)).collect();
        if values.is_empty() {
            self.err(Error::MissingArg {
                what: "output".into(),
                needed: "a layer name (`output head`)".into(),
                span: st.head.span,
                help: None,
            });
        }
        for v in &values {
            if let Some(names) = self.layer_names(v, "a layer name") {
                c.outputs.extend(names);
            }
        }
    }

    /// `share: LAYER` on a `kind` layer: the name and its span. Only conv and dense layers
    /// share weights; whether the shapes agree is the graph's check.
    fn share(&mut self, kind: &str, v: &Value, a: &Args, model: &str) -> Option<(String, Span)> {
        let owner = match &v.kind {
            ValueKind::Str(s) => s.clone(),
            _ => self.word(v, "one layer name")?.text.clone(),
        };
        if !matches!(kind, "conv" | "dense") {
            let layer = a
                .get("name")
                .and_then(|n| match &n.kind {
                    ValueKind::Str(s) => Some(s.clone()),
                    _ => n.as_word().map(|w| w.text.clone()),
                })
                .unwrap_or_else(|| kind.to_string());
            let help = if kind == "batchnorm" {
                "EfficientDet shares a head's convolutions across pyramid levels but keeps a batchnorm per level: leave `share:` off the batchnorm"
            } else {
                "only layers with weights share them: conv and dense"
            };
            self.err(Error::SharedWeights {
                model: model.to_string(),
                layer,
                owner,
                message: format!("only conv and dense layers share weights, not {kind}"),
                span: v.span,
                owner_span: None,
                help: Some(help.into()),
            });
            return None;
        }
        Some((owner, v.span))
    }

    /// A layer name, or a list of them, with their spans.
    fn layer_names(&mut self, v: &Value, expected: &str) -> Option<Vec<(String, Span)>> {
        let items: Vec<&Value> = match &v.kind {
            ValueKind::List(items) => items.iter().collect(),
            _ => vec![v],
        };
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            let name = match &item.kind {
                ValueKind::Str(s) => s.clone(),
                _ => self.word(item, expected)?.text.clone(),
            };
            out.push((name, item.span));
        }
        Some(out)
    }

    fn input(&mut self, st: &Statement, env: &Env, c: &mut Collect) {
        if c.input.is_some() || !c.ops.is_empty() {
            // A used model's input is ignored when the outer model already has one.
            if c.stack.len() > 1 {
                return;
            }
            let first = c.input.as_ref().map(|(_, s)| *s).unwrap_or(st.head.span);
            self.err(Error::Repeated {
                statement: "input".into(),
                span: st.head.span,
                first,
            });
            return;
        }
        let Some(arg) = st.args().next() else {
            self.err(Error::MissingArg {
                what: "input".into(),
                needed: "a shape like `69 x 69 x 3`".into(),
                span: st.head.span,
                help: None,
            });
            return;
        };
        let v = subst(arg.value(), env);
        let dims: Vec<&Value> = match &v.kind {
            ValueKind::Dims(d) => d.iter().collect(),
            ValueKind::Number { .. } => vec![&v],
            _ => {
                self.wrong_type(&v, "a shape like `69 x 69 x 3`", None);
                return;
            }
        };
        let mut shape = Vec::new();
        for d in dims {
            shape.push(self.count(d, "an input size", 1).unwrap_or(1));
        }
        c.input = Some((shape, st.head.span));
    }

    /// One layer statement (arguments already substituted) into an op and optional name.
    fn layer(&mut self, kind: &str, a: &Args) -> Option<(Option<String>, LayerOp)> {
        let name = a.get("name").and_then(|v| match &v.kind {
            ValueKind::Str(s) => Some(s.clone()),
            _ => v.as_word().map(|n| n.text.clone()),
        });
        let pos = &a.positional;
        let op = match kind {
            "conv" => {
                self.only_named(
                    a,
                    "conv",
                    &[
                        "name",
                        "from",
                        "share",
                        "stride",
                        "padding",
                        "dilation",
                        "groups",
                        "activation",
                        "l1",
                        "l2",
                    ],
                );
                let filters = self.need(
                    pos.first(),
                    a,
                    "conv",
                    "a filter count (`conv 32 3x3 relu`)",
                )?;
                let filters = self.count(filters, "filters", 1)?;
                let kernel = self.need(pos.get(1), a, "conv", "a kernel size (`3x3`)")?;
                let kernel = self.pair(kernel, "kernel size")?;
                let (activation, padding, regularizer) = self.layer_words(&pos[2..], a)?;
                let stride = match a.get("stride") {
                    Some(v) => self.pair(v, "stride")?,
                    None => [1, 1],
                };
                let dilation = match a.get("dilation") {
                    Some(v) => self.pair(v, "dilation")?,
                    None => [1, 1],
                };
                let groups = match a.get("groups") {
                    Some(v) => self.count(v, "groups", 1)?,
                    None => 1,
                };
                LayerOp::Conv2d {
                    filters,
                    kernel,
                    stride,
                    padding,
                    dilation,
                    groups,
                    activation,
                    regularizer,
                }
            }
            "dense" => {
                self.only_named(
                    a,
                    "dense",
                    &["name", "from", "share", "activation", "l1", "l2"],
                );
                let units =
                    self.need(pos.first(), a, "dense", "a unit count (`dense 512 relu`)")?;
                let units = self.count(units, "units", 1)?;
                let (activation, _, regularizer) = self.layer_words(&pos[1..], a)?;
                LayerOp::Dense {
                    units,
                    activation,
                    regularizer,
                }
            }
            "maxpool" | "avgpool" => {
                self.only_named(a, kind, &["name", "from", "stride", "padding"]);
                let size = match pos.first() {
                    Some(v) => self.pair(v, "pool size")?,
                    None => [2, 2],
                };
                let stride = match a.get("stride") {
                    Some(v) => self.pair(v, "stride")?,
                    None => size,
                };
                let (_, padding, _) = self.layer_words(pos.get(1..).unwrap_or(&[]), a)?;
                if kind == "maxpool" {
                    LayerOp::MaxPool {
                        size,
                        stride,
                        padding,
                    }
                } else {
                    LayerOp::AvgPool {
                        size,
                        stride,
                        padding,
                    }
                }
            }
            "globalavgpool" => {
                self.no_positional(a, kind);
                LayerOp::GlobalAvgPool
            }
            "flatten" => {
                self.no_positional(a, kind);
                LayerOp::Flatten
            }
            "batchnorm" => {
                self.only_named(a, kind, &["name", "from", "momentum", "epsilon"]);
                self.no_positional(a, kind);
                let momentum = match a.get("momentum") {
                    Some(v) => self.ranged(v, "batchnorm momentum", 0.0, 1.0, false)? as f32,
                    None => 0.99,
                };
                let epsilon = match a.get("epsilon") {
                    Some(v) => self.positive(v, "batchnorm epsilon")? as f32,
                    None => 1e-3,
                };
                LayerOp::BatchNorm { momentum, epsilon }
            }
            "dropout" => {
                self.only_named(a, kind, &["name", "from"]);
                let rate = self.need(pos.first(), a, "dropout", "a rate (`dropout 0.5`)")?;
                let rate = self.ranged(rate, "dropout rate", 0.0, 1.0, true)? as f32;
                LayerOp::Dropout { rate }
            }
            "activation" => {
                self.only_named(a, kind, &["name", "from", "alpha"]);
                let act = self.need(
                    pos.first(),
                    a,
                    "activation",
                    "a function (`activation relu`)",
                )?;
                let (activation, _, _) = self.layer_words(&[act], a)?;
                LayerOp::Activation(activation)
            }
            "upsample" => {
                self.only_named(a, kind, &["name", "from"]);
                let factor = match pos.first() {
                    Some(v) => self.count(v, "upsampling factor", 1)?,
                    None => 2,
                };
                LayerOp::Upsample { factor }
            }
            "add" | "concat" | "multiply" => {
                self.only_named(a, kind, &["name", "from"]);
                self.no_positional(a, kind);
                match kind {
                    "add" => LayerOp::Add,
                    "concat" => LayerOp::Concat,
                    _ => LayerOp::Multiply,
                }
            }
            "weighted_sum" => {
                self.only_named(a, kind, &["name", "from", "epsilon"]);
                self.no_positional(a, kind);
                let epsilon = match a.get("epsilon") {
                    Some(v) => self.positive(v, "weighted_sum epsilon")? as f32,
                    // BiFPN's ε.
                    None => 1e-4,
                };
                LayerOp::WeightedSum { epsilon }
            }
            "relu6" | "hard_swish" | "swish" => {
                self.only_named(a, kind, &["name", "from"]);
                self.no_positional(a, kind);
                LayerOp::Activation(match kind {
                    "relu6" => Activation::Relu6,
                    "hard_swish" => Activation::HardSwish,
                    _ => Activation::Swish,
                })
            }
            _ => return None,
        };
        Some((name, op))
    }

    fn need<'v>(
        &mut self,
        v: Option<&&'v Value>,
        a: &Args,
        what: &str,
        needed: &str,
    ) -> Option<&'v Value> {
        if v.is_none() {
            self.err(Error::MissingArg {
                what: what.to_string(),
                needed: needed.to_string(),
                span: a.span,
                help: None,
            });
        }
        v.copied()
    }

    fn no_positional(&mut self, a: &Args, what: &str) {
        if let Some(v) = a.positional.first() {
            self.err(Error::WrongType {
                expected: format!("no arguments for {what}"),
                found: describe(v),
                span: v.span,
                help: None,
            });
        }
    }

    /// `3`, `3x3` or `3 x 5` as [h, w].
    fn pair(&mut self, v: &Value, what: &str) -> Option<[usize; 2]> {
        match &v.kind {
            ValueKind::Number { .. } => {
                let k = self.count(v, what, 1)?;
                Some([k, k])
            }
            ValueKind::Dims(d) if d.len() == 2 => {
                Some([self.count(&d[0], what, 1)?, self.count(&d[1], what, 1)?])
            }
            _ => {
                self.wrong_type(v, &format!("a {what} like `3` or `3x3`"), None);
                None
            }
        }
    }

    /// Positional words after the sizes (activation, padding, regularizer calls) and the
    /// named `activation`, `padding`, `l1`, `l2`.
    fn layer_words(
        &mut self,
        words: &[&Value],
        a: &Args,
    ) -> Option<(Activation, Padding, Regularizer)> {
        let mut activation = Activation::Linear;
        let mut padding = Padding::Valid;
        let mut reg = Regularizer::default();
        let alpha = a.get("alpha").and_then(|v| self.num(v, "alpha"));
        let mut set_activation = |this: &mut Self, n: &Name| -> Option<()> {
            activation = match n.text.as_str() {
                "linear" => Activation::Linear,
                "relu" => Activation::Relu,
                "relu6" => Activation::Relu6,
                "hard_swish" => Activation::HardSwish,
                "swish" => Activation::Swish,
                "leaky_relu" => Activation::LeakyRelu {
                    alpha: alpha.unwrap_or(0.2) as f32,
                },
                "elu" => Activation::Elu {
                    alpha: alpha.unwrap_or(1.0) as f32,
                },
                "sigmoid" => Activation::Sigmoid,
                "tanh" => Activation::Tanh,
                "softmax" => Activation::Softmax,
                other => {
                    let mut all: Vec<&str> = ACTIVATIONS.to_vec();
                    all.extend(["same", "valid"]);
                    this.err(Error::UnknownName {
                        what: "activation".into(),
                        name: other.into(),
                        span: n.span,
                        help: suggest(other, all),
                    });
                    return None;
                }
            };
            Some(())
        };
        for v in words {
            match &v.kind {
                ValueKind::Path(p)
                    if p.len() == 1 && (p[0].text == "same" || p[0].text == "valid") =>
                {
                    padding = if p[0].text == "same" {
                        Padding::Same
                    } else {
                        Padding::Valid
                    };
                }
                ValueKind::Path(p) if p.len() == 1 => set_activation(self, &p[0])?,
                ValueKind::Call { name, args }
                    if ["l1", "l2", "l1_l2"].contains(&name.text.as_str()) =>
                {
                    let inner = Args::new(args.iter(), v.span);
                    self.only_named(&inner, &name.text, &["l1", "l2"]);
                    let first = inner.positional.first().and_then(|x| {
                        self.ranged(x, "regularization factor", 0.0, f64::INFINITY, false)
                    });
                    match name.text.as_str() {
                        "l1" => reg.l1 = first.unwrap_or(0.01) as f32,
                        "l2" => reg.l2 = first.unwrap_or(0.01) as f32,
                        _ => {
                            reg.l1 = inner
                                .get("l1")
                                .and_then(|x| self.num(x, "l1"))
                                .unwrap_or(0.01) as f32;
                            reg.l2 = inner
                                .get("l2")
                                .and_then(|x| self.num(x, "l2"))
                                .unwrap_or(0.01) as f32;
                        }
                    }
                }
                _ => {
                    self.wrong_type(
                        v,
                        "an activation, `same`/`valid` or a regularizer `l2(1e-4)`",
                        None,
                    );
                    return None;
                }
            }
        }
        if let Some(v) = a.get("activation") {
            let n = self.word(v, "an activation name")?;
            set_activation(self, n)?;
        }
        if let Some(v) = a.get("padding") {
            padding = self.choice(
                v,
                "padding",
                &[("same", Padding::Same), ("valid", Padding::Valid)],
            )?;
        }
        if let Some(v) = a.get("l1") {
            reg.l1 = self.ranged(v, "l1 factor", 0.0, f64::INFINITY, false)? as f32;
        }
        if let Some(v) = a.get("l2") {
            reg.l2 = self.ranged(v, "l2 factor", 0.0, f64::INFINITY, false)? as f32;
        }
        Some((activation, padding, reg))
    }
}

/// Replaces parameter names by their bound values, keeping the use site's span.
pub(super) fn subst(v: &Value, env: &Env) -> Value {
    let kind = match &v.kind {
        ValueKind::Path(p) if p.len() == 1 => match env.get(&p[0].text) {
            Some(bound) => {
                return Value {
                    kind: bound.kind.clone(),
                    span: v.span,
                }
            }
            None => return v.clone(),
        },
        ValueKind::Dims(parts) => ValueKind::Dims(parts.iter().map(|p| subst(p, env)).collect()),
        ValueKind::List(items) => ValueKind::List(items.iter().map(|p| subst(p, env)).collect()),
        ValueKind::Range(lo, hi) => {
            ValueKind::Range(Box::new(subst(lo, env)), Box::new(subst(hi, env)))
        }
        ValueKind::Call { name, args } => ValueKind::Call {
            name: name.clone(),
            args: args.iter().map(|a| subst_arg(a, env)).collect(),
        },
        other => other.clone(),
    };
    Value { kind, span: v.span }
}

fn subst_arg(a: &Arg, env: &Env) -> Arg {
    let kind = match &a.kind {
        ArgKind::Positional(v) => ArgKind::Positional(subst(v, env)),
        ArgKind::Named(n, v) => ArgKind::Named(n.clone(), subst(v, env)),
    };
    Arg { kind, span: a.span }
}
