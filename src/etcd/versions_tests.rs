use super::*;
use crate::etcd::restore::{restore, RestoreOptions, DEFAULT_BUMP_REVISION};
use std::os::unix::fs::PermissionsExt;

/// A strict stand-in etcdutl of version `v`: answers `version` and `snapshot restore
/// [--help]`, refuses any other command or flag, and appends its argv to `log`.
fn etcdutl(path: &Path, v: &str, log: &Path) {
    let script = format!(
        r#"#!/bin/sh
echo "$*" >> '{log}'
case "$1" in
version) echo "etcdutl version: {v}"; echo "API version: {v}"; exit 0;;
snapshot) ;;
*) echo "Error: unknown command $1" >&2; exit 2;;
esac
[ "$2" = restore ] || {{ echo "Error: unknown command $2" >&2; exit 2; }}
shift 2
if [ "$1" = --help ]; then
  printf 'Flags:\n      --bump-revision uint   How much to increase\n      --data-dir string\n      --mark-compacted       Mark\n'
  exit 0
fi
file=$1; shift; dir=
for a in "$@"; do
  case "$a" in
  --data-dir=*) dir=${{a#--data-dir=}};;
  --name=*|--initial-cluster=*|--initial-advertise-peer-urls=*|--bump-revision=*|--mark-compacted) ;;
  *) echo "Error: unknown flag: $a" >&2; exit 1;;
  esac
done
mkdir -p "$dir/member/snap" && cp "$file" "$dir/member/snap/db"
"#,
        log = log.display()
    );
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, script).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn v(s: &str) -> Version {
    s.parse().unwrap()
}

fn server(s: &str) -> Server {
    Server {
        version: v(s),
        what: "the test server".into(),
    }
}

#[test]
fn reads_tool_and_image_versions() {
    let out = "etcdctl version: 3.4.23\nAPI version: 3.4\n";
    assert_eq!(parse_tool_version(Kind::Etcdctl, out), Some(v("3.4.23")));
    assert_eq!(parse_tool_version(Kind::Etcdutl, out), None);
    assert_eq!(
        parse_tool_version(Kind::Etcdutl, "etcdutl version: 3.6.5\nAPI version: 3.6\n"),
        Some(v("3.6.5"))
    );
    let t = tempfile::tempdir().unwrap();
    let host = Host::new(t.path(), false);
    assert!(manifest_server(&host).is_none());
    let m = t.path().join("etc/kubernetes/manifests");
    std::fs::create_dir_all(&m).unwrap();
    let yaml = include_str!("../../tests/fixtures/kubeadm-v1.34-etcd.yaml");
    std::fs::write(m.join("etcd.yaml"), yaml).unwrap();
    let s = manifest_server(&host).unwrap();
    assert_eq!(s.version, v("3.6.5"));
    assert!(s.what.contains("3.6.5-0") && s.what.contains("etcd.yaml"), "{}", s.what);
}

#[test]
fn picks_the_tool_of_the_servers_minor_and_refuses_others() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    let log = t.path().join("log");
    let bin = root.join("usr/local/bin/etcdutl");
    let old = root.join("opt/kbundle/versions/etcd-3.5.25/etcdutl");
    etcdutl(&bin, "3.6.5", &log);
    etcdutl(&old, "3.5.25", &log);
    etcdutl(&root.join("opt/kbundle/versions/etcd-3.6.5/etcdutl"), "3.6.5", &log);
    let host = Host::new(&root, false);
    let mut quiet = |_: Level, _: &str| {};
    let mut pick =
        |explicit: Option<&Path>, s: &str| pick_in(&host, Kind::Etcdutl, explicit, Some(&server(s)), None, &mut quiet);
    // The current link serves a 3.6 server; the older release's directory a 3.5 one.
    assert_eq!(pick(None, "3.6.5").unwrap().unwrap(), (tool(&bin), v("3.6.5")));
    assert_eq!(pick(None, "3.5.24").unwrap().unwrap(), (tool(&old), v("3.5.25")));
    // No tool of the server's minor: refused, naming every version seen and the server.
    let e = pick(None, "3.4.23").unwrap_err().to_string();
    for s in [
        "is etcdutl 3.6.5",
        "is etcdutl 3.5.25",
        "the test server is etcd 3.4.23",
        "etcdutl 3.4.x",
        "--etcdutl",
    ] {
        assert!(e.contains(s), "{s}: {e}");
    }
    // An explicit tool is checked too.
    let e = pick(Some(&bin), "3.5.24").unwrap_err().to_string();
    assert!(e.contains(&format!("{} is etcdutl 3.6.5", bin.display())), "{e}");
    assert!(e.contains("the one given is of another minor"), "{e}");
    let (t2, _) = pick(Some(&old), "3.5.1").unwrap().unwrap();
    assert_eq!(t2.found_by, FoundBy::Flag);
}

fn tool(p: &Path) -> Tool {
    Tool {
        kind: Kind::Etcdutl,
        path: p.to_path_buf(),
        found_by: FoundBy::Root,
    }
}

fn restore_opts(t: &Path, bump: u64) -> RestoreOptions {
    RestoreOptions {
        file: t.join("snap.db"),
        data_dir: PathBuf::from("/var/lib/etcd-new"),
        name: Some("cp1".into()),
        initial_cluster: None,
        initial_advertise_peer_urls: None,
        etcdctl: None,
        etcdutl: None,
        update_manifest: false,
        bump_revision: bump,
        apiserver_stop_timeout: Duration::ZERO,
        timeout: Duration::from_secs(30),
    }
}

#[test]
fn restore_bumps_the_revision_with_a_tool_that_can() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    let log = t.path().join("log");
    etcdutl(&root.join("opt/kbundle/versions/etcd-3.6.5/etcdutl"), "3.6.5", &log);
    std::fs::write(t.path().join("snap.db"), "snapshot bytes").unwrap();
    std::fs::write(t.path().join("snap.db.etcd-version"), "3.6.5\n").unwrap();
    let host = Host::new(&root, false);
    let mut notes = Vec::new();
    let opts = restore_opts(t.path(), DEFAULT_BUMP_REVISION);
    let rep = restore(&host, &opts, &mut |_, m: &str| notes.push(m.to_string())).unwrap();
    assert_eq!(rep.tool.path, root.join("opt/kbundle/versions/etcd-3.6.5/etcdutl"));
    let db = root.join("var/lib/etcd-new/member/snap/db");
    assert_eq!(std::fs::read_to_string(db).unwrap(), "snapshot bytes");
    let argv = std::fs::read_to_string(&log).unwrap();
    let run = argv.lines().find(|l| l.starts_with("snapshot restore /")).unwrap();
    assert!(
        run.ends_with("--name=cp1 --bump-revision=1000000000 --mark-compacted"),
        "{argv}"
    );
    assert!(
        notes.iter().any(|n| n.contains("restoring with etcdutl 3.6.5")),
        "{notes:?}"
    );

    // --bump-revision 0: neither flag.
    std::fs::remove_file(&log).unwrap();
    let mut opts = restore_opts(t.path(), 0);
    opts.data_dir = PathBuf::from("/var/lib/etcd-zero");
    restore(&host, &opts, &mut |_, _: &str| {}).unwrap();
    let argv = std::fs::read_to_string(&log).unwrap();
    assert!(!argv.contains("bump") && !argv.contains("--mark-compacted"), "{argv}");
}

#[test]
fn restore_refuses_a_tool_of_another_minor_than_the_snapshot() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    let log = t.path().join("log");
    let utl = root.join("usr/local/bin/etcdutl");
    etcdutl(&utl, "3.6.5", &log);
    std::fs::write(t.path().join("snap.db"), "snapshot bytes").unwrap();
    std::fs::write(t.path().join("snap.db.etcd-version"), "3.5.24\n").unwrap();
    let host = Host::new(&root, false);
    let e = restore(&host, &restore_opts(t.path(), 1), &mut |_, _: &str| {})
        .unwrap_err()
        .to_string();
    for s in [
        "is etcdutl 3.6.5",
        "snap.db.etcd-version",
        "is etcd 3.5.24",
        "etcdutl 3.5.x",
    ] {
        assert!(e.contains(s), "{s}: {e}");
    }
    assert!(!root.join("var/lib/etcd-new").exists());
    let argv = std::fs::read_to_string(&log).unwrap();
    assert!(!argv.contains("snapshot restore /"), "{argv}");
}

#[test]
fn a_3_6_snapshot_needs_etcdutl_even_with_a_matching_etcdctl() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    let ctl = root.join("usr/local/bin/etcdctl");
    std::fs::create_dir_all(ctl.parent().unwrap()).unwrap();
    std::fs::write(&ctl, "#!/bin/sh\necho 'etcdctl version: 3.6.5'\n").unwrap();
    std::fs::set_permissions(&ctl, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(t.path().join("snap.db"), "snapshot bytes").unwrap();
    std::fs::write(t.path().join("snap.db.etcd-version"), "3.6.5\n").unwrap();
    let host = Host::new(&root, false);
    let mut opts = restore_opts(t.path(), 1);
    opts.etcdctl = Some(ctl);
    let e = restore(&host, &opts, &mut |_, _: &str| {}).unwrap_err().to_string();
    assert!(
        e.contains("is etcd 3.6.5") && e.contains("etcdutl 3.6.x") && e.contains("--etcdutl"),
        "{e}"
    );
}
