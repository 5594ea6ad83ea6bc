//! Progress reporting: `indicatif` bars on a terminal, plain lines otherwise.

use indicatif::{HumanBytes, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;

#[derive(Clone)]
pub struct Progress {
    multi: Option<MultiProgress>,
    quiet: bool,
}

impl Progress {
    /// Bars when stderr is a terminal; plain lines otherwise; nothing when `quiet`.
    pub fn new(quiet: bool) -> Self {
        let multi = (!quiet && std::io::stderr().is_terminal())
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Progress { multi, quiet }
    }

    pub fn hidden() -> Self {
        Progress {
            multi: None,
            quiet: true,
        }
    }

    /// A bar for one transfer or job of `total` bytes (if known).
    pub fn bar(&self, label: &str, total: Option<u64>) -> Bar {
        let pb = self.multi.as_ref().map(|m| {
            let pb = m.add(ProgressBar::new(total.unwrap_or(0)));
            let style = ProgressStyle::with_template(
                "{spinner} {wide_msg} {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12} {eta:>4}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            pb.set_style(style);
            pb.set_message(label.to_string());
            pb
        });
        Bar {
            pb,
            label: label.to_string(),
            quiet: self.quiet,
        }
    }

    /// A line that does not disturb the bars.
    pub fn line(&self, msg: &str) {
        if self.quiet {
            return;
        }
        match &self.multi {
            Some(m) => {
                let _ = m.println(msg);
            }
            None => eprintln!("{msg}"),
        }
    }

    /// A warning is printed even when quiet.
    pub fn warn(&self, msg: &str) {
        match &self.multi {
            Some(m) => {
                let _ = m.println(format!("warning: {msg}"));
            }
            None => eprintln!("warning: {msg}"),
        }
    }
}

pub struct Bar {
    pb: Option<ProgressBar>,
    label: String,
    quiet: bool,
}

impl Bar {
    pub fn set_total(&self, total: u64) {
        if let Some(pb) = &self.pb {
            pb.set_length(total);
        }
    }
    pub fn set_position(&self, pos: u64) {
        if let Some(pb) = &self.pb {
            pb.set_position(pos);
        }
    }
    pub fn inc(&self, n: u64) {
        if let Some(pb) = &self.pb {
            pb.inc(n);
        }
    }
    /// Ends the bar with a summary line, e.g. `fetched kubeadm (80.2 MiB)`.
    pub fn finish(&self, verb: &str, bytes: u64) {
        let line = format!("{verb} {} ({})", self.label, HumanBytes(bytes));
        match &self.pb {
            Some(pb) => pb.finish_and_clear(),
            None if !self.quiet => eprintln!("{line}"),
            None => {}
        }
        if let Some(pb) = &self.pb {
            pb.println(line);
        }
    }
    pub fn abandon(&self) {
        if let Some(pb) = &self.pb {
            pb.finish_and_clear();
        }
    }
}
