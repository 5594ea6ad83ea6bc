//! Commands, processes, the running kernel and time, through the node seam.

use super::sys::{exit_status, Proc, Ran, Stdin};
use super::{argv_string, io, Host, HostError};
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

/// At most this much of a failed command's stderr goes into an error.
const MAX_STDERR: usize = 4000;

/// The end of a command's stderr (or stdout, when stderr says nothing), trimmed.
pub fn tail(ran: &Ran) -> String {
    let text = if ran.stderr.iter().all(|b| b.is_ascii_whitespace()) {
        &ran.stdout
    } else {
        &ran.stderr
    };
    let s = String::from_utf8_lossy(text);
    let s = s.trim();
    let start = s.len().saturating_sub(MAX_STDERR);
    let start = (start..=s.len()).find(|i| s.is_char_boundary(*i)).unwrap_or(s.len());
    s[start..].to_string()
}

impl Host {
    /// Runs a command that changes the node (printed, not run, in dry-run mode); fails
    /// with argv and stderr on a non-zero exit.
    pub fn run(&self, cmd: &mut Command) -> Result<Output, HostError> {
        if self.dry_run {
            self.say(&format!("run: {}", argv_string(cmd)));
            return Ok(Output {
                status: exit_status(0),
                stdout: Vec::new(),
                stderr: Vec::new(),
            });
        }
        self.query(cmd)
    }

    /// Runs a command that only reads (also in dry-run mode).
    pub fn query(&self, cmd: &mut Command) -> Result<Output, HostError> {
        let ran = self.exec(cmd, Stdin::Null, None)?;
        checked(cmd, ran)
    }

    /// Runs a command with `stdin` and an optional timeout, and returns how it ended
    /// without judging it (the caller decides what a failure means).
    pub fn exec(&self, cmd: &mut Command, stdin: Stdin<'_>, timeout: Option<Duration>) -> Result<Ran, HostError> {
        self.sys.run(cmd, stdin, timeout).map_err(|source| HostError::Spawn {
            argv: argv_string(cmd),
            source,
        })
    }

    /// Like [`Host::query`], feeding the command's stdin from `stdin`.
    pub fn query_with(&self, cmd: &mut Command, stdin: Stdin<'_>) -> Result<Output, HostError> {
        let ran = self.exec(cmd, stdin, None)?;
        checked(cmd, ran)
    }

    /// Starts a long-running process, its stderr going to `log`.
    pub fn spawn(&self, cmd: &mut Command, log: &Path) -> Result<Box<dyn Proc>, HostError> {
        self.sys.spawn(cmd, log).map_err(|source| HostError::Spawn {
            argv: argv_string(cmd),
            source,
        })
    }

    /// A file of the running kernel (`/proc/…`, `/sys/…`), or `None`.
    pub fn kernel(&self, path: &str) -> Option<String> {
        self.sys.kernel(path).ok()
    }

    pub fn sleep(&self, d: Duration) {
        self.sys.sleep(d)
    }

    /// Monotonic time, for deadlines.
    pub fn now(&self) -> Duration {
        self.sys.now()
    }

    /// Polls `f` every `every` until it returns `Some` or `limit` has passed.
    pub fn poll<T>(&self, limit: Duration, every: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
        let deadline = self.now() + limit;
        loop {
            if let Some(v) = f() {
                return Some(v);
            }
            if self.now() >= deadline {
                return None;
            }
            self.sleep(every);
        }
    }

    /// Removes a file this run created outside the root (a socket in the temp dir).
    pub fn remove_outside(&self, p: &Path) -> Result<(), HostError> {
        match self.sys.remove_file(p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io("removing", p)(e)),
            _ => Ok(()),
        }
    }
}

fn checked(cmd: &Command, ran: Ran) -> Result<Output, HostError> {
    if ran.timed_out || !ran.status.success() {
        return Err(HostError::Command {
            argv: argv_string(cmd),
            status: if ran.timed_out {
                "timed out and was killed".to_string()
            } else {
                ran.status.to_string()
            },
            stderr: tail(&ran),
        });
    }
    Ok(Output {
        status: ran.status,
        stdout: ran.stdout,
        stderr: ran.stderr,
    })
}
