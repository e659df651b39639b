//! Which images an explanation shows, and for which class: `samples: N` with
//! `pick: first | per_class | misclassified | indices([...])` and
//! `target: predicted | true | each`.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pick {
    /// The first N images in data order.
    First,
    /// Classes in turn (0, 1, …, then again), each its next image, until N.
    PerClass,
    /// The first N images the model gets wrong.
    Misclassified,
    /// These positions in the data (0-based), in this order.
    Indices(Vec<usize>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetClass {
    /// The model's predicted class.
    Predicted,
    /// The true label.
    True,
    /// One map per class.
    Each,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SampleChoice {
    pub count: usize,
    pub pick: Pick,
    pub target: TargetClass,
}

/// One map to draw: an image (its position in the data) and the class it explains.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chosen {
    pub position: usize,
    pub truth: u32,
    pub predicted: u32,
    pub target: u32,
}

/// The maps `choice` asks for, given every image's true and predicted class. Fewer than
/// `count` when the data has fewer matching images; an index past the data is an error
/// naming it.
pub fn choose(
    choice: &SampleChoice,
    truth: &[u32],
    predicted: &[u32],
    classes: usize,
) -> Result<Vec<Chosen>, String> {
    let n = truth.len();
    let positions: Vec<usize> = match &choice.pick {
        Pick::First => (0..n.min(choice.count)).collect(),
        Pick::Misclassified => (0..n)
            .filter(|&i| truth[i] != predicted[i])
            .take(choice.count)
            .collect(),
        Pick::PerClass => {
            let mut queues: Vec<std::collections::VecDeque<usize>> =
                vec![Default::default(); classes];
            for (i, &t) in truth.iter().enumerate() {
                if let Some(q) = queues.get_mut(t as usize) {
                    q.push_back(i);
                }
            }
            let mut out = Vec::new();
            while out.len() < choice.count && queues.iter().any(|q| !q.is_empty()) {
                for q in queues.iter_mut() {
                    if out.len() < choice.count {
                        out.extend(q.pop_front());
                    }
                }
            }
            out
        }
        Pick::Indices(list) => {
            if let Some(bad) = list.iter().find(|&&i| i >= n) {
                return Err(format!(
                    "index {bad} is past the data: it has {n} images (indices 0..{})",
                    n.saturating_sub(1)
                ));
            }
            list.clone()
        }
    };
    Ok(positions
        .into_iter()
        .flat_map(|position| {
            let (t, p) = (truth[position], predicted[position]);
            let targets: Vec<u32> = match choice.target {
                TargetClass::Predicted => vec![p],
                TargetClass::True => vec![t],
                TargetClass::Each => (0..classes as u32).collect(),
            };
            targets.into_iter().map(move |target| Chosen {
                position,
                truth: t,
                predicted: p,
                target,
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn choice(count: usize, pick: Pick, target: TargetClass) -> SampleChoice {
        SampleChoice {
            count,
            pick,
            target,
        }
    }

    #[test]
    fn picks_follow_their_rules() {
        let truth = [0, 0, 1, 2, 1, 2];
        let pred = [0, 1, 1, 0, 1, 2];
        let pos = |c: &SampleChoice| -> Vec<usize> {
            choose(c, &truth, &pred, 3)
                .unwrap()
                .iter()
                .map(|c| c.position)
                .collect()
        };
        assert_eq!(pos(&choice(2, Pick::First, TargetClass::Predicted)), [0, 1]);
        assert_eq!(
            pos(&choice(4, Pick::PerClass, TargetClass::Predicted)),
            [0, 2, 3, 1]
        );
        assert_eq!(
            pos(&choice(5, Pick::Misclassified, TargetClass::True)),
            [1, 3]
        );
        assert_eq!(
            pos(&choice(1, Pick::Indices(vec![5, 0]), TargetClass::True)),
            [5, 0]
        );
        assert!(choose(
            &choice(1, Pick::Indices(vec![6]), TargetClass::True),
            &truth,
            &pred,
            3
        )
        .unwrap_err()
        .contains("index 6"));
        let each = choose(&choice(1, Pick::First, TargetClass::Each), &truth, &pred, 3).unwrap();
        assert_eq!(each.iter().map(|c| c.target).collect::<Vec<_>>(), [0, 1, 2]);
        let truth_target =
            choose(&choice(2, Pick::First, TargetClass::True), &truth, &pred, 3).unwrap();
        assert_eq!(truth_target[1].target, 0);
        assert_eq!(truth_target[1].predicted, 1);
    }
}
