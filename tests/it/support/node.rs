//! A prepared scratch node root made ready for `kbundle install --phase bootstrap` on this
//! machine (PID 1 is not systemd, and there is no cluster): systemd pretends to run, the
//! node's `kubectl` and the `systemctl` on PATH are the stand-ins under tests/stand-ins, and
//! every stand-in call is logged. Also: the node's own containerd started on its root to
//! list (and label) its images, and running a command in a network namespace of its own,
//! with no interface up and no route (`unshare --net`).

use super::registry::output_text;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Node path `node` of the node root `root`, following its absolute links inside the root
/// (install links `/usr/local/bin/containerd` to `/opt/kbundle/versions/containerd-X/…`).
pub fn in_root(root: &Path, node: &str) -> PathBuf {
    let mut p = root.join(node.trim_start_matches('/'));
    for _ in 0..8 {
        match std::fs::read_link(&p) {
            Ok(t) if t.is_absolute() => p = root.join(t.strip_prefix("/").unwrap_or(&t)),
            Ok(t) => p = p.parent().unwrap_or(root).join(t),
            Err(_) => break,
        }
    }
    p
}

/// A stand-in under tests/stand-ins.
pub fn stand_in(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/stand-ins").join(name)
}

/// What [`bootstrap_stand_ins`] set up.
pub struct StandIns {
    pub root: PathBuf,
    /// Holds the `systemctl` stand-in; first on PATH.
    pub bin: PathBuf,
    /// Every stand-in call, one line each.
    pub log: PathBuf,
    /// The stand-in cluster's state (`images.txt`: what this node's containerd holds).
    pub state: PathBuf,
}

/// Makes the prepared `root` bootstrap with stand-ins: `run/systemd/system` exists, the
/// node's `kubectl` is `kubectl` (a copy, e.g. of `stand_in("kubectl-cluster")`), and
/// `dir/bin/systemctl` is the systemctl stand-in. The stand-in cluster runs only what the
/// node's real containerd imported (`dir/cluster-state/images.txt`).
pub fn bootstrap_stand_ins(root: &Path, dir: &Path, kubectl: &Path) -> StandIns {
    std::fs::create_dir_all(root.join("run/systemd/system")).unwrap();
    let node_kubectl = root.join("usr/local/bin/kubectl");
    std::fs::remove_file(&node_kubectl).unwrap();
    std::fs::copy(kubectl, &node_kubectl).unwrap();
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy(stand_in("systemctl"), bin.join("systemctl")).unwrap();
    let state = dir.join("cluster-state");
    std::fs::create_dir_all(&state).unwrap();
    let names: Vec<String> = images_in_root(root).into_iter().map(|(n, _)| n).collect();
    std::fs::write(state.join("images.txt"), names.join("\n")).unwrap();
    StandIns {
        root: root.to_path_buf(),
        bin,
        log: dir.join("calls.log"),
        state,
    }
}

impl StandIns {
    /// Sets PATH and the stand-ins' environment on `cmd`.
    pub fn env<'c>(&self, cmd: &'c mut Command) -> &'c mut Command {
        let path = format!("{}:{}", self.bin.display(), std::env::var("PATH").unwrap_or_default());
        cmd.env("PATH", path)
            .env("KBUNDLE_STANDIN_LOG", &self.log)
            .env("KBUNDLE_STANDIN_ROOT", &self.root)
            .env("KBUNDLE_STANDIN_STATE", &self.state)
    }

    /// The stand-in calls logged so far.
    pub fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

/// The network namespace `cmd` ran in and what it saw, written by [`in_new_netns`].
pub struct NetnsReport {
    dir: tempfile::TempDir,
}

impl NetnsReport {
    fn read(&self, name: &str) -> String {
        let p = self.dir.path().join(name);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e} (did the command run?)", p.display()))
    }

    /// `readlink /proc/self/ns/net` inside (`net:[INODE]`).
    pub fn netns(&self) -> String {
        self.read("netns").trim().to_string()
    }

    /// The interfaces inside: `ip -o link` (one line each, with its flags), or
    /// `/proc/net/dev` where there is no `ip`.
    pub fn interfaces(&self) -> String {
        self.read("links")
    }

    /// Routes (`/proc/net/route` and `/proc/net/ipv6_route` lines) inside, leaving out the
    /// IPv6 reject entries a fresh namespace has on `lo` (flag RTF_REJECT, 0x200: they lead
    /// nowhere).
    pub fn routes(&self) -> Vec<String> {
        let reject = |l: &&str| {
            l.split_whitespace()
                .nth(8)
                .and_then(|f| u32::from_str_radix(f, 16).ok())
                .is_some_and(|f| f & 0x200 != 0)
        };
        let v6 = self.read("route6");
        self.read("route")
            .lines()
            .skip(1)
            .chain(v6.lines().filter(|l| !reject(l)))
            .filter(|l| !l.trim().is_empty())
            .map(str::to_string)
            .collect()
    }
}

/// `cmd` wrapped as `unshare --net -- sh -c 'record the netns; exec "$@"' sh PROGRAM ARGS`:
/// it runs in a fresh network namespace (only `lo`, down, no routes: even 127.0.0.1 is
/// unreachable), and the report says which namespace that was. Environment and working
/// directory are kept. Panics with a clear message if `unshare --net` does not work here.
pub fn in_new_netns(cmd: &Command) -> (Command, NetnsReport) {
    require_unshare_net();
    let report = NetnsReport {
        dir: tempfile::tempdir().unwrap(),
    };
    let script = "d=\"$1\"; shift; readlink /proc/self/ns/net >\"$d/netns\"; \
                  cat /proc/net/route >\"$d/route\"; cat /proc/net/ipv6_route >\"$d/route6\" 2>/dev/null; \
                  { ip -o link 2>/dev/null || cat /proc/net/dev; } >\"$d/links\"; exec \"$@\"";
    let mut w = Command::new("unshare");
    w.args(["--net", "--", "sh", "-c", script, "sh"])
        .arg(report.dir.path())
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => w.env(k, v),
            None => w.env_remove(k),
        };
    }
    if let Some(d) = cmd.get_current_dir() {
        w.current_dir(d);
    }
    (w, report)
}

/// This process's own network namespace (`net:[INODE]`).
pub fn own_netns() -> String {
    std::fs::read_link("/proc/self/ns/net").unwrap().display().to_string()
}

/// Fails the test, saying why, when `unshare --net` cannot make a namespace here (it needs
/// util-linux's unshare and root or CAP_SYS_ADMIN). Never skips.
pub fn require_unshare_net() {
    let o = Command::new("unshare").args(["--net", "--", "true"]).output();
    match o {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "`unshare --net -- true` failed ({}): {}\nthe zero-network tests need util-linux unshare and root (or CAP_SYS_ADMIN); they do not skip",
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => panic!("cannot run `unshare` ({e}): the zero-network tests need util-linux unshare; they do not skip"),
    }
}

/// Starts the node's own containerd (from the root) on a private socket, runs each ctr
/// command (`-n k8s.io` added) and returns their stdouts, panicking on a failed one.
pub fn ctr_in_root(root: &Path, cmds: &[&[&str]]) -> Vec<String> {
    let state = tempfile::tempdir().unwrap();
    let sock = state.path().join("c.sock");
    let cfg = state.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "version = 2\nroot = \"{}\"\nstate = \"{}\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = \"{}\"\n",
            root.join("var/lib/containerd").display(),
            state.path().join("s").display(),
            sock.display()
        ),
    )
    .unwrap();
    let mut child = Command::new(in_root(root, "/usr/local/bin/containerd"))
        .arg("--config")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let ctr = in_root(root, "/usr/local/bin/ctr");
    let run = |args: &[&str]| Command::new(&ctr).arg("--address").arg(&sock).args(args).output();
    let mut ok = false;
    for _ in 0..100 {
        if run(&["version"]).is_ok_and(|o| o.status.success()) {
            ok = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let outs: Vec<std::io::Result<Output>> = cmds
        .iter()
        .take_while(|_| ok)
        .map(|c| run(&[&["-n", "k8s.io"], *c].concat()))
        .collect();
    let _ = child.kill();
    let _ = child.wait();
    assert!(ok, "node containerd did not start");
    outs.into_iter()
        .zip(cmds)
        .map(|(o, c)| {
            let o = o.unwrap();
            assert!(o.status.success(), "ctr {c:?}: {}", output_text(&o));
            String::from_utf8_lossy(&o.stdout).into_owned()
        })
        .collect()
}

/// `ctr images ls` of the node's containerd, as rows of whitespace-separated fields.
pub fn listing_in_root(root: &Path) -> Vec<Vec<String>> {
    let out = ctr_in_root(root, &[&["images", "ls"]]).concat();
    out.lines()
        .skip(1)
        .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .filter(|f| f.len() >= 3)
        .collect()
}

/// (name, digest) of every image in the node's containerd.
pub fn images_in_root(root: &Path) -> Vec<(String, String)> {
    listing_in_root(root)
        .into_iter()
        .map(|f| (f[0].clone(), f[2].clone()))
        .collect()
}

/// The names among `names` that the node's containerd does not list with the label
/// `io.cri-containerd.pinned=pinned` (the LABELS column is the last one and has no spaces).
pub fn unpinned_in_root(root: &Path, names: &[String]) -> Vec<String> {
    let listing = listing_in_root(root);
    names
        .iter()
        .filter(|n| {
            !listing.iter().any(|f| {
                &f[0] == *n
                    && f.last()
                        .is_some_and(|l| l.split(',').any(|kv| kv == "io.cri-containerd.pinned=pinned"))
            })
        })
        .cloned()
        .collect()
}

/// Removes the pinned label from every image in `names` in the node's containerd, and
/// checks that they are then all unpinned.
pub fn unpin_in_root(root: &Path, names: &[String]) {
    let cmds: Vec<Vec<&str>> = names
        .iter()
        .map(|n| vec!["images", "label", n.as_str(), "io.cri-containerd.pinned="])
        .collect();
    let cmds: Vec<&[&str]> = cmds.iter().map(Vec::as_slice).collect();
    ctr_in_root(root, &cmds);
    assert_eq!(unpinned_in_root(root, names), names, "still pinned");
}
