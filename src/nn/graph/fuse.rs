//! The fusion compiler pass: a convolution and the layers after it that only it feeds become
//! one operator (`nn::fusion` has the arithmetic). Inference: `ConvChainForward`, the
//! activation and a batchnorm's normalisation in the convolution's epilogue (batchnorm alone
//! was 12% of a forward batch when it ran apart), and a max-pool after them pooling each
//! sample while it is in cache (the first layer's pool read a 37 MB tensor the convolution
//! had just written). Training, before the autograd pass: `ConvBnTrain`, the batch moments in
//! the epilogue, and a backward that computes the batchnorm's input gradient, the
//! activation's backward and the bias sum in one pass (`ConvBnTrainBackward`); a max-pool
//! after the batchnorm joins them and applies the normalisation as it reads; an activation
//! layer after the batchnorm joins them in both modes. A training max-pool right after a
//! convolution becomes `ConvPoolTrain`, whose backward routes the pool's gradient inside the
//! convolution's.

use super::ops::{ConvBnTrain, ConvChainForward, ConvPoolTrain, LayerForward};
use super::Buffer;
use crate::nn::fusion::InferChain;
use crate::nn::model::Kernel;
use luminal::op::Operator;
use luminal::prelude::{
    move_incoming_edge, move_outgoing_edge, Compiler, Graph, NodeIndex, ToIdsMut,
};

pub(crate) struct FuseConvBatchnorm;

/// The layer node at `node`.
fn layer_at(graph: &Graph, node: NodeIndex) -> Option<&LayerForward> {
    graph
        .graph
        .node_weight(node)
        .and_then(|op| op.as_ref().as_any().downcast_ref::<LayerForward>())
}

/// The node of layer `layer + 1` and its buffer, when it is the only node that reads `node`.
fn next_layer(graph: &Graph, node: NodeIndex, layer: usize) -> Option<(NodeIndex, Buffer)> {
    match graph.get_dests(node).as_slice() {
        [(next, op)] => op
            .as_ref()
            .as_any()
            .downcast_ref::<LayerForward>()
            .filter(|l| l.layer == layer + 1)
            .map(|l| (*next, l.out.clone())),
        _ => None,
    }
}

impl Compiler for FuseConvBatchnorm {
    fn compile<T: ToIdsMut>(&self, graph: &mut Graph, _: T) {
        let nodes: Vec<_> = graph.graph.node_indices().collect();
        for conv_node in nodes {
            let Some(conv) = layer_at(graph, conv_node) else {
                continue;
            };
            let (ctx, layer, train) = (conv.ctx.clone(), conv.layer, conv.train);
            let model = ctx.model.borrow();
            if !matches!(model.layers[layer].kernel, Kernel::Conv { .. }) {
                continue;
            }
            // The fused layers' nodes and buffers, in order, the convolution's first.
            let mut chain = vec![(conv_node, conv.out.clone())];
            let extend = |chain: &mut Vec<(NodeIndex, Buffer)>, fuses: bool| {
                let (last, _) = *chain.last().expect("the convolution");
                let next = fuses
                    .then(|| next_layer(graph, last, layer + chain.len() - 1))
                    .flatten();
                next.map(|node| chain.push(node)).is_some()
            };
            let norm = extend(&mut chain, model.fusible_conv_bn(layer, train));
            // Training: a max-pool joins when it can take the normalisation on its reads;
            // otherwise an activation layer joins, in both modes.
            let train_pool = norm && extend(&mut chain, train && model.fusible_bn_pool(layer + 1));
            let act = norm && !train_pool && extend(&mut chain, model.fusible_bn_act(layer + 1));
            // Inference: a max-pool after any of them pools each sample in cache. Training
            // without a batchnorm: a max-pool routes its gradient in the convolution's
            // backward.
            let last = layer + chain.len() - 1;
            let pool = if train {
                !norm && extend(&mut chain, model.fusible_conv_pool_train(layer))
            } else {
                extend(&mut chain, model.fusible_conv_pool(layer, last))
            };
            drop(model);
            if chain.len() == 1 {
                continue;
            }
            let out = chain.last().expect("the chain").1.clone();
            // The buffers nobody writes any more: all but the last one's, except that
            // training keeps the convolution's output for the backward.
            let first_unwritten = usize::from(train);
            for (_, buffer) in &chain[first_unwritten..chain.len() - 1] {
                *buffer.borrow_mut() = Vec::new();
            }
            let fused: Box<dyn Operator> = if train && !norm {
                Box::new(ConvPoolTrain {
                    ctx,
                    conv: layer,
                    conv_out: chain[0].1.clone(),
                    out,
                })
            } else if train {
                Box::new(ConvBnTrain {
                    ctx,
                    conv: layer,
                    pool: train_pool,
                    act,
                    conv_out: chain[0].1.clone(),
                    out,
                })
            } else {
                Box::new(ConvChainForward {
                    ctx,
                    conv: layer,
                    chain: InferChain { norm, act, pool },
                    out,
                })
            };
            let node = graph.graph.add_node(fused);
            let (first, last) = (chain[0].0, chain[chain.len() - 1].0);
            move_incoming_edge(first, node, &mut graph.graph);
            move_outgoing_edge(last, node, &mut graph.graph);
            for (old, _) in chain {
                graph.graph.remove_node(old);
            }
        }
    }
}
