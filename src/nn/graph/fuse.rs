//! The fusion compiler pass: a convolution whose only reader is the batchnorm after it
//! becomes one operator (`nn::fusion` has the arithmetic). Inference: `ConvBnForward`, the
//! activation and normalisation in the convolution's epilogue (batchnorm alone was 12% of a
//! forward batch when it ran apart). Training, before the autograd pass: `ConvBnTrain`, the
//! batch moments in the epilogue, and a backward that computes the batchnorm's input gradient,
//! the activation's backward and the bias sum in one pass (`ConvBnTrainBackward`); a
//! max-pool after the batchnorm joins them and applies the normalisation as it reads; an
//! activation layer after the batchnorm joins them in both modes.

use super::ops::{ConvBnForward, ConvBnTrain, LayerForward};
use luminal::op::Operator;
use luminal::prelude::{move_incoming_edge, move_outgoing_edge, Compiler, Graph, ToIdsMut};

pub(crate) struct FuseConvBatchnorm;

impl Compiler for FuseConvBatchnorm {
    fn compile<T: ToIdsMut>(&self, graph: &mut Graph, _: T) {
        let nodes: Vec<_> = graph.graph.node_indices().collect();
        for conv_node in nodes {
            let Some(conv) = graph
                .graph
                .node_weight(conv_node)
                .and_then(|op| op.as_ref().as_any().downcast_ref::<LayerForward>())
            else {
                continue;
            };
            if !conv
                .ctx
                .model
                .borrow()
                .fusible_conv_bn(conv.layer, conv.train)
            {
                continue;
            }
            let dests = graph.get_dests(conv_node);
            let [(norm_node, norm)] = dests.as_slice() else {
                continue;
            };
            let Some(norm) = norm.as_ref().as_any().downcast_ref::<LayerForward>() else {
                continue;
            };
            if norm.layer != conv.layer + 1 {
                continue;
            }
            // The layer after the batchnorm, when it is the batchnorm's only reader.
            let norm_node = *norm_node;
            let next = match graph.get_dests(norm_node).as_slice() {
                [(node, op)] => op
                    .as_ref()
                    .as_any()
                    .downcast_ref::<LayerForward>()
                    .filter(|l| l.layer == norm.layer + 1)
                    .map(|_| *node),
                _ => None,
            };
            // Training: a max-pool joins when it can take the normalisation on its reads;
            // otherwise an activation layer joins, in both modes.
            let model = conv.ctx.model.borrow();
            let pool = next.is_some() && conv.train && model.fusible_bn_pool(norm.layer);
            let act = next.is_some() && !pool && model.fusible_bn_act(norm.layer);
            drop(model);
            let third = next.filter(|_| pool || act);
            let last = third.unwrap_or(norm_node);
            let last_out = graph
                .graph
                .node_weight(last)
                .and_then(|op| op.as_ref().as_any().downcast_ref::<LayerForward>())
                .map(|l| l.out.clone())
                .expect("a layer node");
            // The buffers nobody writes any more: inference never writes the convolution's
            // output; the batchnorm's goes unwritten when a pool or activation layer joins.
            let mut unwritten = Vec::new();
            if !conv.train {
                unwritten.push(conv.out.clone());
            }
            if third.is_some() {
                unwritten.push(norm.out.clone());
            }
            let fused: Box<dyn Operator> = if conv.train {
                Box::new(ConvBnTrain {
                    ctx: conv.ctx.clone(),
                    conv: conv.layer,
                    pool,
                    act,
                    conv_out: conv.out.clone(),
                    out: last_out,
                })
            } else {
                Box::new(ConvBnForward {
                    ctx: conv.ctx.clone(),
                    conv: conv.layer,
                    act,
                    out: last_out,
                })
            };
            for buffer in unwritten {
                *buffer.borrow_mut() = Vec::new();
            }
            let node = graph.graph.add_node(fused);
            move_incoming_edge(conv_node, node, &mut graph.graph);
            move_outgoing_edge(last, node, &mut graph.graph);
            graph.graph.remove_node(conv_node);
            graph.graph.remove_node(norm_node);
            if let Some(third) = third {
                graph.graph.remove_node(third);
            }
        }
    }
}
