//! Journaled steps: `<dir>/<step>.done` on the node records a step as finished, so a re-run
//! after a crash skips it and a finished run re-run changes nothing. Used by `install` and
//! `upgrade apply` alike.

use super::{Host, HostError};

/// A journal directory (a node path).
#[derive(Debug, Clone)]
pub struct Journal {
    dir: String,
}

impl Journal {
    pub fn new(dir: impl Into<String>) -> Journal {
        Journal { dir: dir.into() }
    }

    fn done(&self, step: &str) -> String {
        format!("{}/{step}.done", self.dir)
    }

    pub fn is_done(&self, host: &Host, step: &str) -> bool {
        host.exists(&self.done(step))
    }

    /// Records `step` as finished (nothing in dry-run mode).
    pub fn record(&self, host: &Host, step: &str) -> Result<(), HostError> {
        if host.dry_run() {
            return Ok(());
        }
        host.write(&self.done(step), b"done\n", 0o644).map(|_| ())
    }
}

/// Something that runs journaled steps on a host.
pub trait Journaled: Sized {
    /// The error a step returns.
    type Error: From<HostError>;

    fn host(&self) -> &Host;
    fn journal(&self) -> &Journal;

    /// Runs `f` unless the journal says `name` finished; records it when `f` succeeds.
    fn step(&mut self, name: &str, f: impl FnOnce(&mut Self) -> Result<(), Self::Error>) -> Result<(), Self::Error> {
        if self.journal().is_done(self.host(), name) {
            println!("  {name}: done earlier, skipped");
            return Ok(());
        }
        println!("  {name} ...");
        f(self)?;
        self.journal().record(self.host(), name)?;
        Ok(())
    }
}
