//! Progress display: one indicatif bar per running stage plus optional nested bars (one per
//! epoch, say). Everything is hidden when stderr is not a terminal (tests, CI, pipes);
//! messages still reach stderr then.

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::time::Duration;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ProgressMode {
    /// Bars when stderr is a terminal.
    #[default]
    Auto,
    /// No bars; messages still go to stderr.
    Hidden,
    /// No bars and no messages (library use where the caller reads the summary).
    Silent,
}

#[derive(Clone)]
pub struct Progress {
    multi: Option<MultiProgress>,
    silent: bool,
}

fn style(template: &str) -> ProgressStyle {
    // The templates are constants of this file; a bad one falls back to the default style.
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar())
}

impl Progress {
    pub fn new(mode: ProgressMode) -> Progress {
        let bars = mode == ProgressMode::Auto && std::io::stderr().is_terminal();
        let multi = bars.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Progress {
            multi,
            silent: mode == ProgressMode::Silent,
        }
    }

    /// A bar for one stage, spinning until the executor sets a length.
    pub fn stage(&self, label: &str) -> StageProgress {
        let bar = match &self.multi {
            Some(multi) => {
                let bar = multi.add(ProgressBar::new_spinner());
                bar.set_style(style("{spinner} {prefix:.bold} {wide_msg} {elapsed}"));
                bar.enable_steady_tick(Duration::from_millis(120));
                bar
            }
            None => ProgressBar::hidden(),
        };
        bar.set_prefix(label.to_string());
        StageProgress {
            bar,
            multi: self.multi.clone(),
        }
    }

    /// A line above the bars (or on stderr when there are none).
    pub fn println(&self, line: &str) {
        if self.silent {
            return;
        }
        match &self.multi {
            Some(multi) => {
                let _ = multi.println(line);
            }
            None => eprintln!("{line}"),
        }
    }
}

/// The handle a stage executor gets: set a length and advance, or open nested bars.
#[derive(Clone)]
pub struct StageProgress {
    bar: ProgressBar,
    multi: Option<MultiProgress>,
}

impl StageProgress {
    /// A handle that draws nothing (for executors called outside a run).
    pub fn hidden() -> StageProgress {
        StageProgress {
            bar: ProgressBar::hidden(),
            multi: None,
        }
    }

    pub fn set_length(&self, len: u64) {
        self.bar.set_style(style(
            "  {prefix:.bold} [{bar:30}] {pos}/{len} {wide_msg} {elapsed}",
        ));
        self.bar.set_length(len);
    }

    pub fn set_position(&self, pos: u64) {
        self.bar.set_position(pos);
    }

    pub fn inc(&self, delta: u64) {
        self.bar.inc(delta);
    }

    pub fn set_message(&self, message: impl Into<String>) {
        self.bar.set_message(message.into());
    }

    pub fn position(&self) -> u64 {
        self.bar.position()
    }

    /// A nested bar below this stage's (e.g. the batches of one epoch); it disappears when
    /// dropped.
    pub fn sub_bar(&self, len: u64, message: impl Into<String>) -> SubProgress {
        let bar = match &self.multi {
            Some(multi) => {
                let bar = multi.insert_after(&self.bar, ProgressBar::new(len));
                bar.set_style(style("      [{bar:24}] {pos}/{len} {wide_msg} {per_sec}"));
                bar
            }
            None => ProgressBar::hidden(),
        };
        bar.set_length(len);
        bar.set_message(message.into());
        SubProgress { bar }
    }

    pub(crate) fn finish(&self) {
        self.bar.finish_and_clear();
        if let Some(multi) = &self.multi {
            multi.remove(&self.bar);
        }
    }
}

pub struct SubProgress {
    bar: ProgressBar,
}

impl SubProgress {
    pub fn inc(&self, delta: u64) {
        self.bar.inc(delta);
    }

    pub fn set_position(&self, pos: u64) {
        self.bar.set_position(pos);
    }

    pub fn set_message(&self, message: impl Into<String>) {
        self.bar.set_message(message.into());
    }
}

impl Drop for SubProgress {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}
