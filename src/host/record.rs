//! A recording node for tests: files really go to a scratch directory (so later steps read
//! what earlier ones wrote), every side effect is logged in order, commands are answered
//! from a script instead of run, `/proc` and `/sys` come from the script too, and time is
//! virtual (sleeping advances it at once).

use super::sys::{exit_status, Held, Meta, Proc, Ran, Real, Stdin, Sys};
use std::collections::BTreeMap;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::Mutex;
use std::time::Duration;

/// One side effect, in the order it happened. Paths are as the machine sees them (under the
/// scratch root); commands are shell-quoted argv.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Write { path: PathBuf, mode: u32 },
    Symlink { link: PathBuf, target: PathBuf },
    Mkdir { path: PathBuf },
    Append { path: PathBuf },
    Rename { from: PathBuf, to: PathBuf },
    Remove { path: PathBuf },
    Lock { path: PathBuf },
    Run { argv: String },
    Spawn { argv: String },
    Kernel { path: String },
    Sleep { ms: u128 },
}

/// A scripted answer for commands whose argv contains `needle`.
#[derive(Debug, Clone)]
struct Answer {
    needle: String,
    code: i32,
    stdout: String,
    stderr: String,
    /// How many more times it applies (`None`: always).
    times: Option<usize>,
}

#[derive(Debug, Default)]
struct State {
    events: Vec<Event>,
    answers: Vec<Answer>,
    /// Files a command creates when it runs: (argv needle, path, content); an empty path
    /// means the command's last argument (`etcdctl snapshot save FILE`).
    effects: Vec<(String, PathBuf, String)>,
    kernel: BTreeMap<String, String>,
    clock: Duration,
    next_pid: u32,
}

/// The recording [`Sys`].
#[derive(Debug, Default)]
pub struct Recorder {
    state: Mutex<State>,
}

fn argv(cmd: &Command) -> String {
    super::argv_string(cmd)
}

#[derive(Debug)]
struct NoLock;
impl Held for NoLock {}

struct FakeProc {
    pid: u32,
    exited: bool,
}

impl Proc for FakeProc {
    fn id(&self) -> u32 {
        self.pid
    }
    fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        Ok(self.exited.then(|| exit_status(0)))
    }
    fn kill(&mut self) -> io::Result<()> {
        self.exited = true;
        Ok(())
    }
    fn wait(&mut self) -> io::Result<ExitStatus> {
        self.exited = true;
        Ok(exit_status(0))
    }
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder::default()
    }

    fn log(&self, e: Event) {
        self.lock().events.push(e);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Commands whose argv contains `needle` exit with `code` and print `stdout`.
    pub fn answer(&self, needle: &str, code: i32, stdout: &str) -> &Self {
        self.lock().answers.push(Answer {
            needle: needle.to_string(),
            code,
            stdout: stdout.to_string(),
            stderr: if code == 0 {
                String::new()
            } else {
                format!("scripted failure of {needle}")
            },
            times: None,
        });
        self
    }

    /// Commands whose argv contains `needle` exit with `code` and print `stderr` there
    /// (as `kubectl drain` reports the pods it refuses to delete).
    pub fn answer_stderr(&self, needle: &str, code: i32, stderr: &str) -> &Self {
        self.answer(needle, code, "");
        if let Some(a) = self.lock().answers.last_mut() {
            a.stderr = stderr.to_string();
        }
        self
    }

    /// Like [`Recorder::answer`], for the next `times` matching commands only.
    pub fn answer_times(&self, needle: &str, code: i32, stdout: &str, times: usize) -> &Self {
        self.answer(needle, code, stdout);
        if let Some(a) = self.lock().answers.last_mut() {
            a.times = Some(times);
        }
        self
    }

    /// When a command whose argv contains `needle` runs, `path` is written with `text` (what
    /// the real program would leave behind, such as kubeadm's admin.conf).
    pub fn creates(&self, needle: &str, path: &Path, text: &str) -> &Self {
        self.lock()
            .effects
            .push((needle.to_string(), path.to_path_buf(), text.to_string()));
        self
    }

    /// When a command whose argv contains `needle` runs, its last argument (a path) is
    /// written with `text`.
    pub fn creates_last_arg(&self, needle: &str, text: &str) -> &Self {
        self.creates(needle, Path::new(""), text)
    }

    /// The content of a `/proc` or `/sys` file.
    pub fn kernel_file(&self, path: &str, text: &str) -> &Self {
        self.lock().kernel.insert(path.to_string(), text.to_string());
        self
    }

    /// Everything recorded so far.
    pub fn events(&self) -> Vec<Event> {
        self.lock().events.clone()
    }

    /// The commands run or spawned, in order.
    pub fn commands(&self) -> Vec<String> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Event::Run { argv } | Event::Spawn { argv } => Some(argv),
                _ => None,
            })
            .collect()
    }

    /// The files written (paths below `root`, as `/etc/...`), in order.
    pub fn writes_under(&self, root: &Path) -> Vec<String> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Event::Write { path, .. } | Event::Symlink { link: path, .. } => {
                    path.strip_prefix(root).ok().map(|r| format!("/{}", r.display()))
                }
                _ => None,
            })
            .collect()
    }

    fn scripted(&self, argv: &str) -> (i32, String, String) {
        let mut st = self.lock();
        let pos = st
            .answers
            .iter()
            .rposition(|a| argv.contains(&a.needle) && a.times != Some(0));
        let Some(i) = pos else {
            return (0, String::new(), String::new());
        };
        let a = &mut st.answers[i];
        if let Some(t) = a.times.as_mut() {
            *t -= 1;
        }
        (a.code, a.stdout.clone(), a.stderr.clone())
    }
}

impl Sys for Recorder {
    fn read(&self, p: &Path) -> io::Result<Vec<u8>> {
        Real.read(p)
    }
    fn open(&self, p: &Path) -> io::Result<Box<dyn Read + Send>> {
        Real.open(p)
    }
    fn sync(&self, p: &Path) -> io::Result<()> {
        Real.sync(p)
    }
    fn meta(&self, p: &Path) -> io::Result<Meta> {
        Real.meta(p)
    }
    fn stat(&self, p: &Path) -> io::Result<Meta> {
        Real.stat(p)
    }
    fn read_link(&self, p: &Path) -> io::Result<PathBuf> {
        Real.read_link(p)
    }
    fn list(&self, p: &Path) -> io::Result<Vec<std::ffi::OsString>> {
        Real.list(p)
    }
    fn create_dir_all(&self, p: &Path) -> io::Result<()> {
        if !p.is_dir() {
            self.log(Event::Mkdir { path: p.to_path_buf() });
        }
        Real.create_dir_all(p)
    }
    fn temp_dir(&self, parent: &Path, prefix: &str) -> io::Result<PathBuf> {
        let d = Real.temp_dir(parent, prefix)?;
        self.log(Event::Mkdir { path: d.clone() });
        Ok(d)
    }
    fn set_mode(&self, p: &Path, mode: u32) -> io::Result<()> {
        Real.set_mode(p, mode)
    }
    fn write_atomic(&self, p: &Path, prefix: &str, r: &mut dyn Read, mode: u32) -> io::Result<()> {
        self.log(Event::Write {
            path: p.to_path_buf(),
            mode,
        });
        Real.write_atomic(p, prefix, r, mode)
    }
    fn symlink_atomic(&self, target: &Path, link: &Path, temp: &Path) -> io::Result<()> {
        self.log(Event::Symlink {
            link: link.to_path_buf(),
            target: target.to_path_buf(),
        });
        Real.symlink_atomic(target, link, temp)
    }
    fn append(&self, p: &Path, data: &[u8]) -> io::Result<()> {
        self.log(Event::Append { path: p.to_path_buf() });
        Real.append(p, data)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.log(Event::Rename {
            from: from.to_path_buf(),
            to: to.to_path_buf(),
        });
        Real.rename(from, to)
    }
    fn remove_file(&self, p: &Path) -> io::Result<()> {
        self.log(Event::Remove { path: p.to_path_buf() });
        Real.remove_file(p)
    }
    fn remove_dir_all(&self, p: &Path) -> io::Result<()> {
        self.log(Event::Remove { path: p.to_path_buf() });
        Real.remove_dir_all(p)
    }
    fn try_lock(&self, p: &Path) -> io::Result<Option<Box<dyn Held>>> {
        self.log(Event::Lock { path: p.to_path_buf() });
        Ok(Some(Box::new(NoLock)))
    }
    fn run(&self, cmd: &mut Command, stdin: Stdin<'_>, _timeout: Option<Duration>) -> io::Result<Ran> {
        let argv = argv(cmd);
        self.log(Event::Run { argv: argv.clone() });
        if let Stdin::Stream(f) = stdin {
            f(&mut io::sink())?;
        }
        let (code, stdout, stderr) = self.scripted(&argv);
        let last = cmd.get_args().last().map(PathBuf::from).unwrap_or_default();
        let effects: Vec<(PathBuf, String)> = self
            .lock()
            .effects
            .iter()
            .filter(|(n, _, _)| argv.contains(n.as_str()))
            .map(|(_, p, t)| {
                (
                    if p.as_os_str().is_empty() {
                        last.clone()
                    } else {
                        p.clone()
                    },
                    t.clone(),
                )
            })
            .collect();
        for (p, text) in effects {
            if let Some(d) = p.parent() {
                std::fs::create_dir_all(d)?;
            }
            std::fs::write(&p, text)?;
        }
        Ok(Ran {
            status: exit_status(code),
            stdout: stdout.into_bytes(),
            stderr: stderr.into_bytes(),
            timed_out: false,
        })
    }
    fn spawn(&self, cmd: &mut Command, _log: &Path) -> io::Result<Box<dyn Proc>> {
        self.log(Event::Spawn { argv: argv(cmd) });
        let mut st = self.lock();
        st.next_pid += 1;
        Ok(Box::new(FakeProc {
            pid: 900_000 + st.next_pid,
            exited: false,
        }))
    }
    fn kernel(&self, path: &str) -> io::Result<String> {
        self.log(Event::Kernel { path: path.to_string() });
        self.lock()
            .kernel
            .get(path)
            .cloned()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{path} is not scripted")))
    }
    fn sleep(&self, d: Duration) {
        let mut st = self.lock();
        st.clock += d;
        st.events.push(Event::Sleep { ms: d.as_millis() });
    }
    fn now(&self) -> Duration {
        self.lock().clock
    }
}
