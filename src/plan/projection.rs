//! Projecting a plan's wall time on a cluster (`gpl plan --nodes N`): given each stage's
//! duration, the critical path (the longest chain of dependent stages, a lower bound on any
//! schedule) and the wall time of list scheduling on N nodes, one stage per node at a time,
//! ready stages taken longest-remaining-chain first. This is how `--executor slurm` behaves
//! when the cluster gives the run N nodes and every job starts as soon as it is submitted.

use super::{Plan, StageId};
use std::collections::{BTreeMap, HashMap};

/// Seconds per stage; a stage missing from the map counts as taking no time.
pub type Durations = BTreeMap<StageId, f64>;

fn duration(durations: &Durations, id: &StageId) -> f64 {
    durations.get(id).copied().unwrap_or(0.0)
}

/// Each stage's longest chain to the end of the plan, itself included ("bottom level").
fn bottom_levels(plan: &Plan, durations: &Durations) -> HashMap<StageId, f64> {
    let order: Vec<&StageId> = plan.stages().map(|s| &s.id).collect();
    let mut levels: HashMap<StageId, f64> = HashMap::new();
    for id in order.into_iter().rev() {
        let after = plan
            .dependents(id)
            .into_iter()
            .filter_map(|d| levels.get(d).copied())
            .fold(0.0, f64::max);
        levels.insert(id.clone(), duration(durations, id) + after);
    }
    levels
}

/// The longest chain of dependent stages and its total seconds.
pub fn critical_path(plan: &Plan, durations: &Durations) -> (Vec<StageId>, f64) {
    let levels = bottom_levels(plan, durations);
    let level = |id: &StageId| levels.get(id).copied().unwrap_or(0.0);
    // Start at the root with the longest chain, then follow the dependent whose chain is the
    // rest of it; ties go to the earlier stage in plan order.
    let mut path = Vec::new();
    let mut next = plan
        .roots()
        .into_iter()
        .map(|s| &s.id)
        .fold(None::<&StageId>, |best, id| match best {
            Some(b) if level(b) >= level(id) => Some(b),
            _ => Some(id),
        });
    while let Some(id) = next {
        path.push(id.clone());
        let mut dependents = plan.dependents(id);
        dependents.sort_by_key(|d| plan.position(d).unwrap_or(usize::MAX));
        next = dependents
            .into_iter()
            .fold(None::<&StageId>, |best, d| match best {
                Some(b) if level(b) >= level(d) => Some(b),
                _ => Some(d),
            });
    }
    let total = path.first().map_or(0.0, level);
    (path, total)
}

/// Wall time of running `plan` on `nodes` nodes by list scheduling (see the module header).
pub fn list_schedule(plan: &Plan, durations: &Durations, nodes: usize) -> f64 {
    let nodes = nodes.max(1);
    let levels = bottom_levels(plan, durations);
    let mut waiting: HashMap<&StageId, usize> = plan
        .stages()
        .map(|s| {
            let mut inputs = s.inputs.clone();
            inputs.sort();
            inputs.dedup();
            (&s.id, inputs.len())
        })
        .collect();
    let mut ready: Vec<&StageId> = plan
        .stages()
        .filter(|s| s.inputs.is_empty())
        .map(|s| &s.id)
        .collect();
    // (end time, stage) of the stages running now.
    let mut running: Vec<(f64, &StageId)> = Vec::new();
    let mut now = 0.0_f64;
    loop {
        // Longest remaining chain first, then plan order.
        ready.sort_by(|a, b| {
            let (la, lb) = (levels[*a], levels[*b]);
            lb.total_cmp(&la)
                .then_with(|| plan.position(a).cmp(&plan.position(b)))
        });
        while running.len() < nodes && !ready.is_empty() {
            let id = ready.remove(0);
            running.push((now + duration(durations, id), id));
        }
        let Some(first) = running
            .iter()
            .enumerate()
            .min_by(|(_, a), (_, b)| a.0.total_cmp(&b.0))
            .map(|(i, _)| i)
        else {
            return now;
        };
        let (end, id) = running.swap_remove(first);
        now = now.max(end);
        for dependent in plan.dependents(id) {
            if let Some(count) = waiting.get_mut(dependent) {
                *count -= 1;
                if *count == 0 {
                    ready.push(dependent);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::StageSpec;
    use serde_json::json;

    /// data → (t1, t2, t3) → eval, as the study is shaped: one data chain, parallel trainings.
    fn study() -> (Plan, Durations) {
        let plan = Plan::new(vec![
            StageSpec::new("data", "k", json!({})),
            StageSpec::new("t1", "k", json!({})).with_inputs(&["data"]),
            StageSpec::new("t2", "k", json!({})).with_inputs(&["data"]),
            StageSpec::new("t3", "k", json!({})).with_inputs(&["data"]),
            StageSpec::new("eval", "k", json!({})).with_inputs(&["t1", "t2", "t3"]),
        ])
        .unwrap();
        let durations = [
            ("data", 10.0),
            ("t1", 100.0),
            ("t2", 60.0),
            ("t3", 50.0),
            ("eval", 5.0),
        ]
        .into_iter()
        .map(|(id, s)| (StageId::from(id), s))
        .collect();
        (plan, durations)
    }

    #[test]
    fn the_critical_path_is_the_longest_chain() {
        let (plan, durations) = study();
        let (path, seconds) = critical_path(&plan, &durations);
        let names: Vec<&str> = path.iter().map(|s| s.as_str()).collect();
        assert_eq!(names, ["data", "t1", "eval"]);
        assert_eq!(seconds, 115.0);
    }

    #[test]
    fn list_scheduling_runs_the_sum_on_one_node_and_the_critical_path_on_enough() {
        let (plan, durations) = study();
        assert_eq!(list_schedule(&plan, &durations, 1), 225.0);
        // Two nodes: t1 on one, t2 then t3 on the other (110 s), eval after t3.
        assert_eq!(list_schedule(&plan, &durations, 2), 10.0 + 110.0 + 5.0);
        assert_eq!(list_schedule(&plan, &durations, 3), 115.0);
        assert_eq!(list_schedule(&plan, &durations, 21), 115.0);
    }
}
