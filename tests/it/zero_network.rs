//! Zero network, proven: `kbundle install --phase prepare` (the real containerd imports and
//! pins the images) and `--phase bootstrap` (stand-ins for systemd and the cluster) succeed
//! in a network namespace of their own with no interface up and no route, where even
//! 127.0.0.1 is unreachable. The control runs the same harness with a kubectl stand-in
//! that first opens a TCP connection: in the namespace the bootstrap fails, outside it the
//! identical command connects and succeeds, so the test would catch a connection attempt
//! and would notice if the namespace stopped isolating.

use crate::install::{fixture, install_cmd, node_root, text};
use crate::support::node::{bootstrap_stand_ins, in_new_netns, own_netns, stand_in, unpinned_in_root, NetnsReport};

use std::io::ErrorKind;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// The command ran in another network namespace, whose only interface is `lo`, down, and
/// which has no route.
fn assert_isolated(r: &NetnsReport) {
    assert_ne!(r.netns(), own_netns(), "ran in the test's own network namespace");
    assert_eq!(r.routes(), Vec::<String>::new(), "routes in the namespace");
    let links = r.interfaces();
    // `ip -o link` lines are `N: NAME: <FLAGS> ...`; `/proc/net/dev` lines `NAME: counters`.
    let names: Vec<&str> = links
        .lines()
        .filter_map(|l| {
            let mut p = l.split(':');
            let (a, b) = (p.next()?.trim(), p.next()?.trim());
            Some(if a.bytes().all(|c| c.is_ascii_digit()) { b } else { a })
        })
        .collect();
    assert_eq!(names, ["lo"], "interfaces in the namespace:\n{links}");
    assert!(!links.contains(",UP") && !links.contains("<UP"), "lo is up:\n{links}");
}

#[test]
fn prepare_and_bootstrap_succeed_without_any_network() {
    let f = fixture(false);
    let root = node_root(&f, "cp1");
    let (mut prepare, report) = in_new_netns(&install_cmd(&f, &root, &["--node", "cp1", "--phase", "prepare"]));
    let o = prepare.output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert_isolated(&report);
    // The real containerd imported (over its unix socket) and pinned every image.
    let names: Vec<String> = f.images.iter().map(|(n, _)| n.clone()).collect();
    assert_eq!(unpinned_in_root(&root, &names), Vec::<String>::new());

    let s = bootstrap_stand_ins(&root, f.tmp.path(), &stand_in("kubectl-cluster"));
    let mut bootstrap = install_cmd(&f, &root, &["--node", "cp1", "--phase", "bootstrap"]);
    s.env(&mut bootstrap);
    let (mut bootstrap, report) = in_new_netns(&bootstrap);
    let o = bootstrap.output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert_isolated(&report);
    let calls = s.calls();
    for needle in ["kubeadm init --config", "kubectl", "apply -f", "get node cp1"] {
        assert!(calls.iter().any(|c| c.contains(needle)), "no {needle:?} in {calls:#?}");
    }
    assert!(root.join("var/lib/kbundle/bootstrap.done").exists());
}

/// Connections queued on `l` since the last call.
fn accepted(l: &TcpListener) -> usize {
    let mut n = 0;
    loop {
        match l.accept() {
            Ok(_) => n += 1,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return n,
            Err(e) => panic!("accept: {e}"),
        }
    }
}

/// The cluster kubectl stand-in, preceded by a TCP connection to 127.0.0.1:`port`; exits 7
/// when that connection fails.
fn connecting_kubectl(dir: &Path, port: u16) -> std::path::PathBuf {
    let p = dir.join("kubectl-connecting");
    let script = format!(
        "#!/bin/bash\n# TEST STAND-IN: kubectl-cluster after a TCP connection to 127.0.0.1:{port}.\n\
         if ! (exec 3<>/dev/tcp/127.0.0.1/{port}) 2>/dev/null; then\n\
         \techo \"connecting stand-in: no connection to 127.0.0.1:{port}\" >&2\n\
         \techo 'kubectl connect-failed' >>\"$KBUNDLE_STANDIN_LOG\"\n\texit 7\nfi\n\
         echo 'kubectl connected' >>\"$KBUNDLE_STANDIN_LOG\"\nexec {} \"$@\"\n",
        stand_in("kubectl-cluster").display()
    );
    std::fs::write(&p, script).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

#[test]
fn a_connection_attempt_fails_the_bootstrap_in_the_namespace_and_only_there() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let f = fixture(false);
    let root = node_root(&f, "cp1");
    let o = install_cmd(&f, &root, &["--node", "cp1", "--phase", "prepare"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let s = bootstrap_stand_ins(&root, f.tmp.path(), &connecting_kubectl(f.tmp.path(), port));
    let mut bootstrap = install_cmd(&f, &root, &["--node", "cp1", "--phase", "bootstrap"]);
    s.env(&mut bootstrap);

    // In the namespace: kubeadm init runs, then the first kubectl call cannot connect and
    // the bootstrap fails; nothing reached the listener.
    let (mut isolated, report) = in_new_netns(&bootstrap);
    let o = isolated.output().unwrap();
    assert!(
        !o.status.success(),
        "a connection attempt went unnoticed:\n{}",
        text(&o)
    );
    assert_isolated(&report);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains(&format!("no connection to 127.0.0.1:{port}")),
        "{}",
        text(&o)
    );
    let calls = s.calls();
    assert!(calls.iter().any(|c| c.contains("kubeadm init --config")), "{calls:#?}");
    assert!(calls.contains(&"kubectl connect-failed".to_string()), "{calls:#?}");
    assert_eq!(accepted(&listener), 0);
    assert!(!root.join("var/lib/kbundle/bootstrap.done").exists());

    // The identical command outside the namespace connects, and the bootstrap completes.
    let o = bootstrap.output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(accepted(&listener) >= 1);
    assert!(s.calls().contains(&"kubectl connected".to_string()));
    assert!(root.join("var/lib/kbundle/bootstrap.done").exists());
}
