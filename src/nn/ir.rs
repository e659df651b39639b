//! Model IR: a sequential list of layers with every output shape resolved.
//!
//! The checker builds it from a `model` block (so shape errors are found at check time,
//! pointing at the layer's line); the engine compiles it into a graph. Shapes are
//! per-sample `[height, width, channels]` for images and `[features]` after `flatten`,
//! the same order Keras uses, so imported Keras weights map without transposing axes.

use serde::{Deserialize, Serialize};

/// Per-sample tensor shape (the batch axis is never stored).
pub type Shape = Vec<usize>;

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Activation {
    Linear,
    Relu,
    LeakyRelu { alpha: f32 },
    Elu { alpha: f32 },
    Sigmoid,
    Tanh,
    Softmax,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Padding {
    /// No padding: output = floor((in - effective_kernel) / stride) + 1.
    Valid,
    /// Keras/TensorFlow "same": output = ceil(in / stride), extra padding at the end.
    Same,
}

/// L1/L2 weight penalties of a layer (Keras `kernel_regularizer=l1_l2(l1, l2)`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Regularizer {
    pub l1: f32,
    pub l2: f32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum LayerOp {
    Conv2d {
        filters: usize,
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: Padding,
        dilation: [usize; 2],
        /// 1 for an ordinary convolution; `groups == in_channels == filters` is depthwise.
        groups: usize,
        activation: Activation,
        regularizer: Regularizer,
    },
    Dense {
        units: usize,
        activation: Activation,
        regularizer: Regularizer,
    },
    MaxPool {
        size: [usize; 2],
        stride: [usize; 2],
        padding: Padding,
    },
    AvgPool {
        size: [usize; 2],
        stride: [usize; 2],
        padding: Padding,
    },
    GlobalAvgPool,
    BatchNorm {
        momentum: f32,
        epsilon: f32,
    },
    Dropout {
        rate: f32,
    },
    Flatten,
    Activation(Activation),
    Upsample {
        factor: usize,
    },
}

/// One layer after shape inference.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerIr {
    /// Unique within the model: the user's name, or `<kind>_<n>` like Keras (`conv2d_3`).
    pub name: String,
    pub op: LayerOp,
    pub input: Shape,
    pub output: Shape,
    /// Trainable parameter count (batchnorm counts gamma and beta; its running stats are not trainable).
    pub params: usize,
    /// Multiply-adds times two, per sample, forward only.
    pub flops: u64,
    /// False for layers frozen by `freeze until` / `trainable from`.
    pub trainable: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelIr {
    pub name: String,
    pub input: Shape,
    pub layers: Vec<LayerIr>,
}

/// Why a layer cannot follow the shape before it. `layer` indexes the op list.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("layer {layer}: {message}")]
pub struct ShapeError {
    pub layer: usize,
    pub message: String,
}

impl ModelIr {
    /// Infers every layer's shape, parameter count and FLOPs. Layer names that are
    /// `None` get Keras-style automatic names.
    pub fn build(
        name: &str,
        input: Shape,
        ops: Vec<(Option<String>, LayerOp)>,
    ) -> Result<ModelIr, ShapeError> {
        let mut layers = Vec::with_capacity(ops.len());
        let mut shape = input.clone();
        let mut counters: std::collections::BTreeMap<&'static str, usize> = Default::default();
        for (index, (given_name, op)) in ops.into_iter().enumerate() {
            let (output, params, flops) = infer(&shape, &op).map_err(|message| ShapeError {
                layer: index,
                message,
            })?;
            let kind = op.kind();
            let counter = counters.entry(kind).or_insert(0);
            *counter += 1;
            let name = given_name.unwrap_or_else(|| format!("{kind}_{counter}"));
            layers.push(LayerIr {
                name,
                op,
                input: shape.clone(),
                output: output.clone(),
                params,
                flops,
                trainable: true,
            });
            shape = output;
        }
        Ok(ModelIr {
            name: name.to_string(),
            input,
            layers,
        })
    }

    pub fn output(&self) -> &Shape {
        self.layers.last().map(|l| &l.output).unwrap_or(&self.input)
    }

    pub fn total_params(&self) -> usize {
        self.layers.iter().map(|l| l.params).sum()
    }

    pub fn trainable_params(&self) -> usize {
        self.layers
            .iter()
            .filter(|l| l.trainable)
            .map(|l| l.params)
            .sum()
    }

    pub fn total_flops(&self) -> u64 {
        self.layers.iter().map(|l| l.flops).sum()
    }

    /// Index of a layer by name.
    pub fn layer_index(&self, name: &str) -> Option<usize> {
        self.layers.iter().position(|l| l.name == name)
    }
}

impl LayerOp {
    /// The Keras-like kind used for automatic names and summaries.
    pub fn kind(&self) -> &'static str {
        match self {
            LayerOp::Conv2d { .. } => "conv2d",
            LayerOp::Dense { .. } => "dense",
            LayerOp::MaxPool { .. } => "max_pooling2d",
            LayerOp::AvgPool { .. } => "average_pooling2d",
            LayerOp::GlobalAvgPool => "global_average_pooling2d",
            LayerOp::BatchNorm { .. } => "batch_normalization",
            LayerOp::Dropout { .. } => "dropout",
            LayerOp::Flatten => "flatten",
            LayerOp::Activation(_) => "activation",
            LayerOp::Upsample { .. } => "up_sampling2d",
        }
    }
}

fn spatial_out(
    input: usize,
    window: usize,
    stride: usize,
    padding: Padding,
) -> Result<usize, String> {
    match padding {
        Padding::Same => Ok(input.div_ceil(stride)),
        Padding::Valid if window > input => Err(format!(
            "a {window}-wide window does not fit a feature map {input} wide (use padding same, or a smaller window)"
        )),
        Padding::Valid => Ok((input - window) / stride + 1),
    }
}

fn image_shape(shape: &Shape, what: &str) -> Result<(usize, usize, usize), String> {
    match shape.as_slice() {
        [h, w, c] => Ok((*h, *w, *c)),
        _ => Err(format!(
            "{what} needs an image-shaped input (height x width x channels) but gets {}",
            fmt_shape(shape)
        )),
    }
}

/// `69 x 69 x 3` style, as summaries print it.
pub fn fmt_shape(shape: &Shape) -> String {
    shape
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join(" x ")
}

/// Past this, an element, parameter or FLOP count is refused: no network gpl can train comes
/// near it, and with every count below it the sums over layers cannot overflow.
const MAX_COUNT: usize = 1 << 48;

/// `a * b`, or an error when the product passes [`MAX_COUNT`] (huge sizes in a pipeline).
fn mul(a: usize, b: usize) -> Result<usize, String> {
    a.checked_mul(b).filter(|&p| p <= MAX_COUNT).ok_or_else(|| {
        format!("the sizes multiply past {MAX_COUNT}, more than any network gpl can train")
    })
}

fn infer(input: &Shape, op: &LayerOp) -> Result<(Shape, usize, u64), String> {
    let elements: usize = input.iter().try_fold(1, |acc, &d| mul(acc, d))?;
    match op {
        LayerOp::Conv2d { filters, kernel, stride, padding, dilation, groups, .. } => {
            let (h, w, c) = image_shape(input, "conv")?;
            if *groups == 0 || c % groups != 0 || filters % groups != 0 {
                return Err(format!(
                    "groups {groups} must divide both the input channels ({c}) and the filters ({filters})"
                ));
            }
            if stride.contains(&0) || dilation.contains(&0) || kernel.contains(&0) {
                return Err("kernel, stride and dilation must be at least 1".into());
            }
            let eff = [
                mul(dilation[0], kernel[0] - 1)? + 1,
                mul(dilation[1], kernel[1] - 1)? + 1,
            ];
            let oh = spatial_out(h, eff[0], stride[0], *padding)
                .map_err(|m| format!("{}x{} conv on a {h}x{w} feature map: {m}", kernel[0], kernel[1]))?;
            let ow = spatial_out(w, eff[1], stride[1], *padding)
                .map_err(|m| format!("{}x{} conv on a {h}x{w} feature map: {m}", kernel[0], kernel[1]))?;
            let per_filter = mul(mul(kernel[0], kernel[1])?, c / groups)?;
            let params = mul(per_filter, *filters)? + filters;
            let flops = mul(2, mul(mul(mul(oh, ow)?, *filters)?, per_filter)?)? as u64;
            mul(mul(oh, ow)?, *filters)?;
            Ok((vec![oh, ow, *filters], params, flops))
        }
        LayerOp::Dense { units, .. } => match input.as_slice() {
            [features] => {
                let weights = mul(*features, *units)?;
                Ok((vec![*units], weights + units, mul(2, weights)? as u64))
            }
            _ => Err(format!(
                "dense needs a flat input but gets {} (add `flatten` or `global_avg_pool` before it)",
                fmt_shape(input)
            )),
        },
        LayerOp::MaxPool { size, stride, padding } | LayerOp::AvgPool { size, stride, padding } => {
            let (h, w, c) = image_shape(input, "pooling")?;
            if stride.contains(&0) || size.contains(&0) {
                return Err("pool size and stride must be at least 1".into());
            }
            let oh = spatial_out(h, size[0], stride[0], *padding)
                .map_err(|m| format!("{}x{} pool on a {h}x{w} feature map: {m}", size[0], size[1]))?;
            let ow = spatial_out(w, size[1], stride[1], *padding)
                .map_err(|m| format!("{}x{} pool on a {h}x{w} feature map: {m}", size[0], size[1]))?;
            let flops = mul(mul(mul(mul(oh, ow)?, c)?, size[0])?, size[1])?;
            Ok((vec![oh, ow, c], 0, flops as u64))
        }
        LayerOp::GlobalAvgPool => {
            let (_, _, c) = image_shape(input, "global average pooling")?;
            Ok((vec![c], 0, elements as u64))
        }
        LayerOp::BatchNorm { .. } => {
            let channels = *input.last().ok_or("batchnorm needs a non-empty input")?;
            Ok((input.clone(), mul(2, channels)?, mul(4, elements)? as u64))
        }
        LayerOp::Dropout { rate } => {
            if !(0.0..1.0).contains(rate) {
                return Err(format!("dropout rate {rate} must be in [0, 1)"));
            }
            Ok((input.clone(), 0, elements as u64))
        }
        LayerOp::Flatten => Ok((vec![elements], 0, 0)),
        LayerOp::Activation(_) => Ok((input.clone(), 0, elements as u64)),
        LayerOp::Upsample { factor } => {
            let (h, w, c) = image_shape(input, "upsampling")?;
            if *factor == 0 {
                return Err("upsampling factor must be at least 1".into());
            }
            let (oh, ow) = (mul(h, *factor)?, mul(w, *factor)?);
            mul(mul(oh, ow)?, c)?;
            Ok((vec![oh, ow, c], 0, 0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv(filters: usize, k: usize) -> LayerOp {
        LayerOp::Conv2d {
            filters,
            kernel: [k, k],
            stride: [1, 1],
            padding: Padding::Valid,
            dilation: [1, 1],
            groups: 1,
            activation: Activation::Relu,
            regularizer: Regularizer::default(),
        }
    }

    fn pool() -> LayerOp {
        LayerOp::MaxPool {
            size: [2, 2],
            stride: [2, 2],
            padding: Padding::Valid,
        }
    }

    #[test]
    fn design_net_shapes_params_and_flops() {
        // DESIGN.md's benchmark net: 69.3 MFLOP per image forward.
        let ops = vec![
            conv(32, 3),
            pool(),
            conv(64, 3),
            pool(),
            conv(128, 3),
            pool(),
            LayerOp::Flatten,
            LayerOp::Dense {
                units: 128,
                activation: Activation::Relu,
                regularizer: Regularizer::default(),
            },
            LayerOp::Dense {
                units: 10,
                activation: Activation::Softmax,
                regularizer: Regularizer::default(),
            },
        ];
        let ir = ModelIr::build(
            "net",
            vec![69, 69, 3],
            ops.into_iter().map(|o| (None, o)).collect(),
        )
        .unwrap();
        assert_eq!(ir.layers[6].output, vec![4608]);
        assert_eq!(ir.output(), &vec![10]);
        assert_eq!(ir.layers[0].name, "conv2d_1");
        assert_eq!(ir.layers[4].name, "conv2d_3");
        assert_eq!(ir.layers[0].params, 3 * 3 * 3 * 32 + 32);
        let mflop = ir
            .layers
            .iter()
            .filter(|l| matches!(l.op, LayerOp::Conv2d { .. } | LayerOp::Dense { .. }))
            .map(|l| l.flops)
            .sum::<u64>() as f64
            / 1e6;
        assert!((mflop - 69.3).abs() < 0.1, "{mflop}");
    }

    #[test]
    fn oversized_kernel_and_unflattened_dense_are_errors() {
        let err = ModelIr::build("m", vec![4, 4, 8], vec![(None, conv(8, 7))]).unwrap_err();
        assert_eq!(err.layer, 0);
        assert!(err.message.contains("7x7 conv on a 4x4"), "{}", err.message);
        let dense = LayerOp::Dense {
            units: 3,
            activation: Activation::Linear,
            regularizer: Regularizer::default(),
        };
        let err = ModelIr::build("m", vec![4, 4, 8], vec![(None, dense)]).unwrap_err();
        assert!(err.message.contains("flatten"));
    }

    #[test]
    fn same_padding_rounds_up() {
        let op = LayerOp::MaxPool {
            size: [2, 2],
            stride: [2, 2],
            padding: Padding::Same,
        };
        let ir = ModelIr::build("m", vec![5, 5, 1], vec![(None, op)]).unwrap();
        assert_eq!(ir.output(), &vec![3, 3, 1]);
    }
}
