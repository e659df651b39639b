//! Benchmarks behind `gpl bench`: each runs our code and, where there is one, the reference
//! (PyTorch) side by side in one run and prints the ratio. No test asserts a timing.
//!
//! - `engine`: GEMM backends, the first layer by im2col and by direct convolution, a depthwise
//!   layer by grouped im2col and by its kernel, forward and training images/s per net, per-layer time, the share of a step outside the products,
//!   then PyTorch alternating with gpl round by round.
//! - `epoch`: one epoch through the training loop against the raw training step.
//! - `data`: synthesis, HDF5 load, augmentation and artifacts against the data targets.
//! - `explain`: Grad-CAM and filter ascent against PyTorch (pytorch-grad-cam), alternating
//!   round by round.
//! - `detect`: the classical detector against SEP on the same images, alternating rounds
//!   (`scripts/bench_extract_sep.py`); then stdlib's SSD-lite against the same network in
//!   PyTorch (`detector`, `scripts/bench_detect_torch.py`), inference at batch 1 and 16.
//! - `search`: the search optimiser's median regret on Branin and Hartmann-6, bayes and
//!   random (`scripts/bench_search_reference.py` runs a Python GP library the same way).
//!
//! The benches with a reference in another process share `Warm` (the reference kept warm,
//! one command per round) and `Pairs` (ratios taken pair by pair, printed as the median with
//! the range), so the machine's drift lands in the range rather than in the ratio.

pub mod data;
pub mod detect;
pub mod detector;
pub mod engine;
pub mod epoch;
pub mod explain;
pub mod search;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Instant;

/// Images/s of `f` (one batch per call) over at least `seconds` and three calls, and the
/// seconds timed; two untimed calls first when `warm_up`.
pub fn rate(seconds: f64, batch: usize, warm_up: bool, mut f: impl FnMut()) -> (f64, f64) {
    if warm_up {
        f();
        f();
    }
    let start = Instant::now();
    let mut count = 0;
    loop {
        f();
        count += 1;
        let elapsed = start.elapsed().as_secs_f64();
        if elapsed >= seconds && count >= 3 {
            return ((count * batch) as f64 / elapsed, elapsed);
        }
    }
}

/// A reference implementation kept warm in one process (a script under `scripts/`), so ours
/// and theirs can alternate round by round: each command is one line on its stdin, each
/// answer one JSON line on its stdout. Dropping it sends `quit` and waits for the process.
pub struct Warm {
    child: Child,
    lines: std::io::Lines<BufReader<ChildStdout>>,
    /// Said when the process ends early (what to install).
    hint: &'static str,
}

impl Warm {
    pub fn start(
        python: &str,
        script: &str,
        args: &[String],
        hint: &'static str,
    ) -> Result<Warm, String> {
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("scripts")
            .join(script);
        let mut child = Command::new(python)
            .arg(&script)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run `{python}`: {e}"))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        Ok(Warm {
            child,
            lines: BufReader::new(stdout).lines(),
            hint,
        })
    }

    /// Sends `command` and returns its answer.
    pub fn ask(&mut self, command: &str) -> Result<serde_json::Value, String> {
        let stdin = self.child.stdin.as_mut().ok_or("no stdin")?;
        writeln!(stdin, "{command}").map_err(|e| format!("{e} ({})", self.hint))?;
        let line = self
            .lines
            .next()
            .ok_or_else(|| format!("the reference process ended ({})", self.hint))?
            .map_err(|e| e.to_string())?;
        serde_json::from_str(&line).map_err(|e| format!("bad line `{line}`: {e}"))
    }

    /// Sends `command` and returns the `seconds` of its answer.
    pub fn seconds(&mut self, command: &str) -> Result<f64, String> {
        let v = self.ask(command)?;
        v["seconds"]
            .as_f64()
            .ok_or_else(|| format!("no seconds in `{v}`"))
    }
}

impl Drop for Warm {
    fn drop(&mut self) {
        if let Some(stdin) = self.child.stdin.as_mut() {
            let _ = writeln!(stdin, "quit");
        }
        let _ = self.child.wait();
    }
}

/// Ratios taken pair by pair (ours against theirs in the same round): the median, and the
/// range in which the machine's drift shows.
pub struct Pairs(Vec<f64>);

impl Pairs {
    pub fn new() -> Pairs {
        Pairs(Vec::new())
    }

    pub fn push(&mut self, ratio: f64) {
        self.0.push(ratio);
    }

    /// (median, lowest, highest); NaN for no pairs.
    pub fn summary(&self) -> (f64, f64, f64) {
        let mut v = self.0.clone();
        if v.is_empty() {
            return (f64::NAN, f64::NAN, f64::NAN);
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        (median, v[0], v[n - 1])
    }

    /// `{what} ratio vs {theirs}: X (pairs: lo–hi)`, the line every paired bench prints.
    pub fn line(&self, what: &str, theirs: &str) -> String {
        let (m, lo, hi) = self.summary();
        format!("{what} ratio vs {theirs}: {m:.2} (pairs: {lo:.2}–{hi:.2})")
    }
}

impl Default for Pairs {
    fn default() -> Self {
        Pairs::new()
    }
}

#[cfg(test)]
mod tests {
    use super::Pairs;

    #[test]
    fn pairs_give_the_median_and_range() {
        let mut p = Pairs::new();
        for r in [1.5, 0.9, 2.2, 1.1] {
            p.push(r);
        }
        assert_eq!(p.summary(), (1.3, 0.9, 2.2));
        p.push(3.0);
        assert_eq!(
            p.line("train", "pytorch"),
            "train ratio vs pytorch: 1.50 (pairs: 0.90–3.00)"
        );
    }
}
