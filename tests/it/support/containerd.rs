#![allow(dead_code)]
//! Debian's containerd 1.6 for integration tests, on a private socket with its
//! own root, state, CNI config dir, registry hosts dir and `opt` dir inside a
//! `TempDir` (never `/var/lib/containerd`, `/run/containerd` or `/opt`).
//!
//! The config is `containerd config default` (a `version = 2` config) with
//! those paths edited in, as shared/reference/testbed/ci-setup.sh does. The CRI
//! plugin stays enabled: without a CNI config it only logs "failed to load cni
//! during init" and containerd serves normally (ready in ~0.1 s here).
//!
//! # What `ctr images import` (containerd 1.6.20) does with an OCI layout tar
//! Measured here, and pinned by `tests/registry_selftest.rs`:
//!
//! * The tar must have `oci-layout` and `index.json` at the archive root
//!   (`./`-prefixed names are fine); without `oci-layout` it fails with
//!   "unrecognized image format". Reading from stdin works (`import -`).
//! * Image names come from each `index.json` entry: `io.containerd.image.name`
//!   if present (used verbatim, also ignoring `--base-name` filtering); else
//!   `org.opencontainers.image.ref.name`: a full reference
//!   (`registry.k8s.io/pause:3.10.1`, anything with `/`, `:` or `@`) is used
//!   as-is, a bare tag (`3.10.1`) becomes `import-YYYY-MM-DD:3.10.1`, or
//!   `<base-name>:3.10.1` with `--base-name`. With `--base-name X`, ref.name
//!   entries that are full references not under `X` are skipped.
//! * An entry without either annotation is **silently skipped** (exit 0,
//!   nothing imported) unless `--digests` is given, which also adds
//!   `import-YYYY-MM-DD@sha256:...` (or `<base-name>@...`) for every entry.
//! * `--index-name NAME` additionally stores the layout's own index.json as an
//!   image (a new digest); by default that index is discarded.
//! * The image's target is the entry's descriptor: an index entry gives an
//!   image whose digest is the *index* digest (what `ctr images ls` shows).
//! * Partial indexes: an entry pointing at a multi-platform index whose arm64
//!   manifest/config/layers are absent imports fine with no platform flag
//!   (default: this host's platform) and with `--platform linux/amd64`; it
//!   FAILS with `--all-platforms` or `--platform linux/arm64` ("content digest
//!   sha256:...: not found"). `ctr images check` then reports it complete.
//! * In the `k8s.io` namespace the CRI plugin adds a second record per
//!   imported image, named by its image ID: `sha256:<config digest>` of this
//!   platform's manifest, with the same target digest. Other namespaces get
//!   only the names above. [`Containerd::images`] lists both kinds.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::registry::{
    command_line, output_text, pids_with_cmdline_containing, run, run_unchecked, send_signal, stop_child, wait_gone,
};

const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A running containerd (see the module docs). Drop stops it and cleans up.
pub struct Containerd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    sock: PathBuf,
    log: PathBuf,
}

impl Containerd {
    /// Starts containerd and waits (≤10 s) until `ctr --address SOCK version` succeeds.
    pub fn start() -> Containerd {
        // Short path: the socket path must stay under 108 bytes.
        let dir = tempfile::Builder::new()
            .prefix("kbundle-ctrd-")
            .tempdir_in(std::env::temp_dir())
            .expect("containerd: create temp dir");
        let d = dir.path();
        for sub in ["root", "state", "cni/net.d", "certs.d", "opt"] {
            fs::create_dir_all(d.join(sub)).unwrap_or_else(|e| panic!("create {}: {e}", d.join(sub).display()));
        }
        let sock = d.join("containerd.sock");
        let default = run(Command::new("containerd").args(["config", "default"])).stdout;
        let config = edit_config(&String::from_utf8_lossy(&default), d, &sock);
        let config_path = d.join("config.toml");
        fs::write(&config_path, config).unwrap_or_else(|e| panic!("write {}: {e}", config_path.display()));
        let log = d.join("containerd.log");
        let logfile = fs::File::create(&log).unwrap_or_else(|e| panic!("create {}: {e}", log.display()));
        let mut cmd = Command::new("containerd");
        cmd.arg("--config").arg(&config_path);
        let child = cmd
            .stdin(Stdio::null())
            .stdout(logfile.try_clone().expect("clone log fd"))
            .stderr(logfile)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", command_line(&cmd)));
        let mut c = Containerd {
            child: Some(child),
            dir,
            sock,
            log,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(Ok(Some(status))) = c.child.as_mut().map(|ch| ch.try_wait()) {
                panic!("{} exited with {status}\nlog:\n{}", command_line(&cmd), c.log_text());
            }
            let out = c.ctr(&["version"]);
            if out.status.success() {
                return c;
            }
            if Instant::now() >= deadline {
                panic!(
                    "{}: `ctr --address {} version` not ready after {START_TIMEOUT:?}\n{}\nlog:\n{}",
                    command_line(&cmd),
                    c.sock.display(),
                    output_text(&out),
                    c.log_text()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The gRPC socket path.
    pub fn address(&self) -> PathBuf {
        self.sock.clone()
    }

    /// containerd's `root` (content store, snapshots, metadata).
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// The registry hosts dir (`config_path` of the CRI registry config); also
    /// usable as `ctr images pull --hosts-dir`.
    pub fn hosts_dir(&self) -> PathBuf {
        self.dir.path().join("certs.d")
    }

    /// PID of the containerd process.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).expect("containerd is running")
    }

    /// containerd's stdout/stderr so far.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Writes `hosts_dir()/<host>/hosts.toml` so pulls of `<host>/...` use plain HTTP.
    pub fn add_http_registry(&self, host: &str) {
        let dir = self.hosts_dir().join(host);
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        let toml =
            format!("server = \"http://{host}\"\n[host.\"http://{host}\"]\n  capabilities = [\"pull\", \"resolve\"]\n");
        fs::write(dir.join("hosts.toml"), toml)
            .unwrap_or_else(|e| panic!("write hosts.toml in {}: {e}", dir.display()));
    }

    fn ctr_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("ctr");
        cmd.arg("--address").arg(&self.sock).args(args);
        cmd
    }

    /// `ctr --address SOCK <args>`; returns the output whatever the exit status.
    pub fn ctr(&self, args: &[&str]) -> Output {
        run_unchecked(&mut self.ctr_command(args))
    }

    /// Like [`Containerd::ctr`] but panics (command line, stderr, containerd log tail) unless it exits 0.
    pub fn ctr_ok(&self, args: &[&str]) -> Output {
        let mut cmd = self.ctr_command(args);
        let out = run_unchecked(&mut cmd);
        if !out.status.success() {
            panic!(
                "command failed: {}\n{}\ncontainerd log (tail):\n{}",
                command_line(&cmd),
                output_text(&out),
                self.log_tail()
            );
        }
        out
    }

    /// `ctr -n NS images import TAR` (no platform flags: imports this host's
    /// platform, which also works for indexes whose other platforms are absent).
    /// Panics unless it exits 0.
    pub fn import(&self, namespace: &str, tar: &Path) -> Output {
        let tar = tar.to_string_lossy();
        self.ctr_ok(&["-n", namespace, "images", "import", &tar])
    }

    /// `ctr -n NS images import FLAGS... TAR`, output returned whatever the exit status.
    pub fn try_import(&self, namespace: &str, tar: &Path, flags: &[&str]) -> Output {
        let tar = tar.to_string_lossy();
        let mut args = vec!["-n", namespace, "images", "import"];
        args.extend_from_slice(flags);
        args.push(&tar);
        self.ctr(&args)
    }

    /// (name, target digest) of every image in `namespace`, sorted by name. In
    /// `k8s.io` this includes the CRI plugin's `sha256:<config digest>` records.
    /// Names come from `images ls -q`, digests from the full listing
    /// (`REF TYPE DIGEST SIZE PLATFORMS LABELS`); both must agree.
    pub fn images(&self, namespace: &str) -> Vec<(String, String)> {
        let names_out = self.ctr_ok(&["-n", namespace, "images", "ls", "-q"]);
        let mut names: Vec<String> = String::from_utf8_lossy(&names_out.stdout)
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        names.sort();
        let full = self.ctr_ok(&["-n", namespace, "images", "ls"]);
        let text = String::from_utf8_lossy(&full.stdout).into_owned();
        let mut lines = text.lines();
        let header = lines.next().unwrap_or("");
        assert!(
            header.split_whitespace().take(3).eq(["REF", "TYPE", "DIGEST"]),
            "unexpected `ctr images ls` header {header:?}\n{text}"
        );
        let mut images: Vec<(String, String)> = lines
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                assert!(
                    cols.len() >= 3 && cols[2].starts_with("sha256:"),
                    "unexpected `ctr images ls` line {l:?}"
                );
                (cols[0].to_string(), cols[2].to_string())
            })
            .collect();
        images.sort();
        let listed: Vec<&String> = images.iter().map(|(n, _)| n).collect();
        assert_eq!(
            listed,
            names.iter().collect::<Vec<_>>(),
            "`images ls -q` and `images ls` disagree\n{text}"
        );
        images
    }

    fn log_tail(&self) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Kills and removes every task and container in every namespace (as testbed/ci-teardown.sh does).
    fn remove_tasks(&self) {
        let list = |args: &[&str]| -> Vec<String> {
            let out = self.ctr(args);
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(|l| l.trim().to_string())
                .filter(|l| !l.is_empty())
                .collect()
        };
        for ns in list(&["namespaces", "ls", "-q"]) {
            let tasks = list(&["-n", &ns, "tasks", "ls", "-q"]);
            for t in &tasks {
                self.ctr(&["-n", &ns, "tasks", "kill", "-s", "SIGKILL", t]);
            }
            for c in list(&["-n", &ns, "containers", "ls", "-q"]) {
                if !tasks.is_empty() {
                    self.ctr(&["-n", &ns, "tasks", "rm", "-f", &c]);
                }
                self.ctr(&["-n", &ns, "containers", "rm", &c]);
            }
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let dir = self.dir.path().to_string_lossy().into_owned();
        if let Some(child) = self.child.as_mut() {
            if matches!(child.try_wait(), Ok(None)) {
                self.remove_tasks();
            }
        }
        if let Some(child) = self.child.as_mut() {
            stop_child(child, "TERM", Duration::from_secs(5));
        }
        // Shims and anything else started with our paths on the command line (by PID only).
        for pid in pids_with_cmdline_containing(&dir) {
            send_signal(pid, "KILL");
            if !wait_gone(pid, Duration::from_secs(5)) {
                eprintln!("warning: process {pid} (under {dir}) survived SIGKILL");
            }
        }
        for mount in mounts_under(self.dir.path()) {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(&mount)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        // TempDir's own Drop removes the directory.
    }
}

/// Mount points at or below `dir` (from `/proc/self/mounts`), deepest first.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let dir = dir.to_string_lossy().into_owned();
    let mut found: Vec<PathBuf> = fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .map(|m| {
            m.replace("\\040", " ")
                .replace("\\011", "\t")
                .replace("\\012", "\n")
                .replace("\\134", "\\")
        })
        .filter(|m| m == &dir || m.starts_with(&format!("{dir}/")))
        .map(PathBuf::from)
        .collect();
    found.sort_by(|a, b| b.cmp(a));
    found
}

/// Replaces the paths in `containerd config default` output; panics if any
/// expected line is missing (a different containerd version).
fn edit_config(default: &str, dir: &Path, sock: &Path) -> String {
    let d = dir.display();
    let edits: [(&str, String); 7] = [
        ("root = \"/var/lib/containerd\"", format!("root = \"{d}/root\"")),
        ("state = \"/run/containerd\"", format!("state = \"{d}/state\"")),
        (
            "address = \"/run/containerd/containerd.sock\"",
            format!("address = \"{}\"", sock.display()),
        ),
        ("bin_dir = \"/opt/cni/bin\"", "bin_dir = \"/usr/lib/cni\"".to_string()),
        ("conf_dir = \"/etc/cni/net.d\"", format!("conf_dir = \"{d}/cni/net.d\"")),
        ("config_path = \"\"", format!("config_path = \"{d}/certs.d\"")),
        ("path = \"/opt/containerd\"", format!("path = \"{d}/opt\"")),
    ];
    let mut done = [false; 7];
    let mut out = String::new();
    for line in default.lines() {
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        let mut replaced = false;
        for (i, (from, to)) in edits.iter().enumerate() {
            if !done[i] && trimmed == *from {
                out.push_str(indent);
                out.push_str(to);
                done[i] = true;
                replaced = true;
                break;
            }
        }
        if !replaced {
            out.push_str(line);
        }
        out.push('\n');
    }
    for (i, (from, _)) in edits.iter().enumerate() {
        assert!(done[i], "`containerd config default` has no line {from:?}:\n{default}");
    }
    out
}

/// Tars an OCI layout directory (`oci-layout`, `index.json`, `blobs/...` at the
/// archive root, nothing else) into `out`, deterministically (sorted, fixed
/// mtime/owner), so `ctr images import` accepts it.
pub fn tar_layout(layout: &Path, out: &Path) {
    let file = fs::File::create(out).unwrap_or_else(|e| panic!("create {}: {e}", out.display()));
    let mut builder = tar::Builder::new(io::BufWriter::new(file));
    builder.mode(tar::HeaderMode::Deterministic);
    builder.follow_symlinks(true);
    for name in ["oci-layout", "index.json"] {
        let p = layout.join(name);
        builder
            .append_path_with_name(&p, name)
            .unwrap_or_else(|e| panic!("tar {} -> {}: {e}", p.display(), out.display()));
    }
    append_tree(&mut builder, &layout.join("blobs"), "blobs", out);
    let w = builder
        .into_inner()
        .unwrap_or_else(|e| panic!("finish tar {}: {e}", out.display()));
    w.into_inner()
        .map_err(|e| e.into_error())
        .and_then(|f| f.sync_all())
        .unwrap_or_else(|e| panic!("write {}: {e}", out.display()));
}

fn append_tree<W: io::Write>(builder: &mut tar::Builder<W>, dir: &Path, name: &str, out: &Path) {
    builder
        .append_dir(name, dir)
        .unwrap_or_else(|e| panic!("tar {} -> {}: {e}", dir.display(), out.display()));
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read dir {}: {e}", dir.display()))
        .map(|e| e.unwrap_or_else(|e| panic!("read dir {}: {e}", dir.display())).path())
        .collect();
    entries.sort();
    for p in entries {
        let child = format!("{name}/{}", p.file_name().expect("file name").to_string_lossy());
        if p.is_dir() {
            append_tree(builder, &p, &child, out);
        } else {
            builder
                .append_path_with_name(&p, &child)
                .unwrap_or_else(|e| panic!("tar {} -> {}: {e}", p.display(), out.display()));
        }
    }
}
