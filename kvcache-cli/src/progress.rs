//! A spinner on stderr for long walks, shown only to a person watching a terminal.

use std::io::IsTerminal;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use indicatif::{HumanCount, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How long a walk runs before its spinner appears: short ones never show one.
const AFTER: Duration = Duration::from_millis(250);

/// The progress of one walk, shown once it has taken [`AFTER`] (a walk of one statement never
/// counts until it ends: its spinner only says that it runs, and for how long), when both
/// stdout and stderr are terminals and `--json` is off. Cleared when dropped.
#[derive(Debug)]
pub(crate) struct Progress {
    label: String,
    shown: Option<Shown>,
}

#[derive(Debug)]
struct Shown {
    bar: ProgressBar,
    /// Whether the walk is over: the thread that shows the bar late checks it under the lock.
    done: Arc<Mutex<bool>>,
}

impl Progress {
    /// The progress of the walk `label` describes (`summarising container "c"`).
    pub(crate) fn new(label: impl Into<String>, json: bool) -> Self {
        let label = label.into();
        let terminal = std::io::stdout().is_terminal() && std::io::stderr().is_terminal();
        let shown = (!json && terminal).then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden())
                .with_message(label.clone());
            if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} ({elapsed})") {
                bar.set_style(style);
            }
            let done = Arc::new(Mutex::new(false));
            let (late, over) = (bar.clone(), Arc::clone(&done));
            std::thread::spawn(move || {
                std::thread::sleep(AFTER);
                let over = over.lock().unwrap_or_else(PoisonError::into_inner);
                if !*over {
                    late.set_draw_target(ProgressDrawTarget::stderr());
                    late.enable_steady_tick(Duration::from_millis(100));
                }
            });
            Shown { bar, done }
        });
        Progress { label, shown }
    }

    /// The walk has gone through `count` items.
    pub(crate) fn update(&mut self, count: u64) {
        if let Some(shown) = &self.shown {
            shown
                .bar
                .set_message(format!("{}: {} so far", self.label, HumanCount(count)));
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(shown) = self.shown.take() {
            let mut done = shown.done.lock().unwrap_or_else(PoisonError::into_inner);
            *done = true;
            shown.bar.finish_and_clear();
        }
    }
}
