//! Optimizers with Keras 3 update rules, so a gpl run reads like the report's Keras one:
//! SGD (momentum, Nesterov), Adam (epsilon outside the bias-corrected root, "epsilon hat"),
//! AdamW and RMSprop. Weight decay is decoupled as in Keras 3 (w −= lr·wd·w before the
//! update). The learning rate is an argument of every step, so schedules live in the caller.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Elements per part of the optimizer update.
const UPDATE_PART: usize = 16 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum OptimizerConfig {
    Sgd {
        momentum: f32,
        nesterov: bool,
        weight_decay: f32,
    },
    Adam {
        beta1: f32,
        beta2: f32,
        epsilon: f32,
        weight_decay: f32,
    },
    AdamW {
        beta1: f32,
        beta2: f32,
        epsilon: f32,
        weight_decay: f32,
    },
    RmsProp {
        rho: f32,
        momentum: f32,
        epsilon: f32,
        weight_decay: f32,
    },
}

impl OptimizerConfig {
    /// Keras defaults.
    pub fn adam() -> Self {
        OptimizerConfig::Adam {
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 1e-7,
            weight_decay: 0.0,
        }
    }
    pub fn adamw() -> Self {
        OptimizerConfig::AdamW {
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 1e-7,
            weight_decay: 0.004,
        }
    }
    pub fn sgd(momentum: f32, nesterov: bool) -> Self {
        OptimizerConfig::Sgd {
            momentum,
            nesterov,
            weight_decay: 0.0,
        }
    }
    pub fn rmsprop() -> Self {
        OptimizerConfig::RmsProp {
            rho: 0.9,
            momentum: 0.0,
            epsilon: 1e-7,
            weight_decay: 0.0,
        }
    }

    /// Names of the per-parameter state slots, in the order `update` uses them.
    pub fn slots(&self) -> &'static [&'static str] {
        match self {
            OptimizerConfig::Sgd { momentum, .. } if *momentum == 0.0 => &[],
            OptimizerConfig::Sgd { .. } => &["momentum"],
            OptimizerConfig::Adam { .. } | OptimizerConfig::AdamW { .. } => {
                &["momentum", "velocity"]
            }
            OptimizerConfig::RmsProp { momentum, .. } if *momentum == 0.0 => &["velocity"],
            OptimizerConfig::RmsProp { .. } => &["velocity", "momentum"],
        }
    }

    fn weight_decay(&self) -> f32 {
        match *self {
            OptimizerConfig::Sgd { weight_decay, .. }
            | OptimizerConfig::Adam { weight_decay, .. }
            | OptimizerConfig::AdamW { weight_decay, .. }
            | OptimizerConfig::RmsProp { weight_decay, .. } => weight_decay,
        }
    }

    /// One update of `w` from `g`; `step` counts from 1; `slots` as named by `slots()`.
    /// Element-wise, so it is split over the threads in fixed parts with the same bits on
    /// any thread count.
    pub fn update(&self, step: u64, lr: f32, w: &mut [f32], g: &[f32], slots: &mut [Vec<f32>]) {
        let mut parts: Vec<Vec<&mut [f32]>> = w.chunks(UPDATE_PART).map(|_| Vec::new()).collect();
        for slot in slots.iter_mut() {
            for (part, chunk) in parts.iter_mut().zip(slot.chunks_mut(UPDATE_PART)) {
                part.push(chunk);
            }
        }
        w.par_chunks_mut(UPDATE_PART)
            .zip(g.par_chunks(UPDATE_PART))
            .zip(parts.into_par_iter())
            .for_each(|((w, g), mut slots)| self.update_part(step, lr, w, g, &mut slots));
    }

    fn update_part(&self, step: u64, lr: f32, w: &mut [f32], g: &[f32], slots: &mut [&mut [f32]]) {
        let wd = self.weight_decay();
        if wd != 0.0 {
            let k = lr * wd;
            for v in w.iter_mut() {
                *v -= k * *v;
            }
        }
        match *self {
            OptimizerConfig::Sgd {
                momentum, nesterov, ..
            } => {
                if momentum == 0.0 {
                    for (v, g) in w.iter_mut().zip(g) {
                        *v -= lr * g;
                    }
                } else {
                    let m = &mut slots[0];
                    for ((v, g), m) in w.iter_mut().zip(g).zip(m.iter_mut()) {
                        *m = momentum * *m - lr * g;
                        if nesterov {
                            *v += momentum * *m - lr * g;
                        } else {
                            *v += *m;
                        }
                    }
                }
            }
            OptimizerConfig::Adam {
                beta1,
                beta2,
                epsilon,
                ..
            }
            | OptimizerConfig::AdamW {
                beta1,
                beta2,
                epsilon,
                ..
            } => {
                let t = step as f64;
                let alpha = (lr as f64 * (1.0 - (beta2 as f64).powf(t)).sqrt()
                    / (1.0 - (beta1 as f64).powf(t))) as f32;
                let (ms, vs) = slots.split_at_mut(1);
                for (((w, g), m), v) in w
                    .iter_mut()
                    .zip(g)
                    .zip(ms[0].iter_mut())
                    .zip(vs[0].iter_mut())
                {
                    *m += (g - *m) * (1.0 - beta1);
                    *v += (g * g - *v) * (1.0 - beta2);
                    *w -= alpha * *m / (v.sqrt() + epsilon);
                }
            }
            OptimizerConfig::RmsProp {
                rho,
                momentum,
                epsilon,
                ..
            } => {
                let (vs, ms) = slots.split_at_mut(1);
                for (i, (w, g)) in w.iter_mut().zip(g).enumerate() {
                    let v = &mut vs[0][i];
                    *v = rho * *v + (1.0 - rho) * g * g;
                    let increment = lr * g / (v.sqrt() + epsilon);
                    if momentum == 0.0 {
                        *w -= increment;
                    } else {
                        let m = &mut ms[0][i];
                        *m = momentum * *m + increment;
                        *w -= *m;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(config: OptimizerConfig, steps: u64) -> f32 {
        // Minimise (w - 3)²: every optimizer must get close.
        let mut w = vec![0.0f32];
        let mut slots: Vec<Vec<f32>> = config.slots().iter().map(|_| vec![0.0]).collect();
        for step in 1..=steps {
            let g = vec![2.0 * (w[0] - 3.0)];
            config.update(step, 0.05, &mut w, &g, &mut slots);
        }
        w[0]
    }

    #[test]
    fn every_optimizer_descends() {
        for config in [
            OptimizerConfig::sgd(0.0, false),
            OptimizerConfig::sgd(0.9, false),
            OptimizerConfig::sgd(0.9, true),
            OptimizerConfig::adam(),
            OptimizerConfig::AdamW {
                beta1: 0.9,
                beta2: 0.999,
                epsilon: 1e-7,
                weight_decay: 0.001,
            },
            OptimizerConfig::rmsprop(),
            OptimizerConfig::RmsProp {
                rho: 0.9,
                momentum: 0.5,
                epsilon: 1e-7,
                weight_decay: 0.0,
            },
        ] {
            let w = run(config, 2000);
            assert!((w - 3.0).abs() < 0.1, "{config:?}: {w}");
        }
    }

    #[test]
    fn adam_first_step_is_lr_times_sign() {
        // Keras: alpha = lr·sqrt(1−β2)/(1−β1); m = 0.1g, v = 0.001g² → step = lr·g/|g| (ε aside).
        let mut w = vec![1.0f32];
        let mut slots = vec![vec![0.0], vec![0.0]];
        OptimizerConfig::adam().update(1, 0.01, &mut w, &[-4.0], &mut slots);
        assert!((w[0] - 1.01).abs() < 1e-6, "{}", w[0]);
    }

    #[test]
    fn sgd_momentum_matches_keras_formula() {
        let mut w = vec![1.0f32];
        let mut slots = vec![vec![0.0]];
        let c = OptimizerConfig::sgd(0.9, false);
        c.update(1, 0.1, &mut w, &[1.0], &mut slots);
        c.update(2, 0.1, &mut w, &[1.0], &mut slots);
        // v1 = -0.1, w = 0.9; v2 = -0.09 - 0.1 = -0.19, w = 0.71
        assert!((w[0] - 0.71).abs() < 1e-6);
    }
}
