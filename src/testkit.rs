//! Unit-test fixtures: small bundles made with the library's own packer (valid, so they pass
//! `verify`), cluster configs, and hosts whose side effects a [`Recorder`] records.

use crate::bundle::meta::{BundleJson, Entry, EntryKind, Hop, BUNDLE_SCHEMA};
use crate::bundle::pack::Source;
use crate::bundle::{meta_entry, Contents};
use crate::digest::Sha256;
use crate::host::record::Recorder;
use crate::host::Host;
use crate::images::LockedImage;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// This machine's platform (`linux/amd64`).
pub fn platform() -> String {
    crate::manifest::Arch::host()
        .map(|a| a.platform())
        .unwrap_or_else(|| "linux/amd64".into())
}

fn script(name: &str, version: &str) -> Vec<u8> {
    format!("#!/bin/sh\necho {name} {version}\n").into_bytes()
}

/// A gzip tarball holding `files` (name, content) under `dir/`.
fn tgz(dir: &str, files: &[&str]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut b = tar::Builder::new(gz);
    for f in files {
        let data = script(f, "tarball");
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o755);
        h.set_cksum();
        let path = if dir.is_empty() {
            f.to_string()
        } else {
            format!("{dir}/{f}")
        };
        b.append_data(&mut h, path, data.as_slice()).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap()
}

fn file(c: &mut Contents, component: &str, version: &str, name: &str, platform: bool, exec: bool, data: Vec<u8>) {
    let plat = platform.then(crate::testkit::platform);
    let dir = plat
        .as_ref()
        .map(|p| format!("/{}", p.replace('/', "-")))
        .unwrap_or_default();
    let path = format!("files/{component}/{version}{dir}/{name}");
    let e = Entry {
        executable: exec,
        component: Some(component.into()),
        version: Some(version.into()),
        platform: plat,
        url: Some(format!("https://example.invalid/{component}/{name}")),
        ..meta_entry(&path, EntryKind::File, &data)
    };
    c.push(e, Source::Bytes(data));
}

fn image(reference: &str) -> LockedImage {
    LockedImage {
        reference: reference.into(),
        digest: Sha256::of(reference.as_bytes()),
        media_type: "application/vnd.oci.image.index.v1+json".into(),
        size: 1,
        platforms: Vec::new(),
    }
}

/// The runtime and add-ons every bundle carries with its last hop.
fn runtime(c: &mut Contents) {
    file(c, "runc", "1.3.4", "runc.amd64", true, true, script("runc", "1.3.4"));
    let ctd = tgz("bin", &["containerd", "ctr", "containerd-shim-runc-v2"]);
    file(
        c,
        "containerd",
        "2.1.5",
        "containerd-2.1.5-linux-amd64.tar.gz",
        true,
        false,
        ctd,
    );
    let cni = tgz("", &["bridge", "loopback", "LICENSE"]);
    file(
        c,
        "cni-plugins",
        "1.8.0",
        "cni-plugins-linux-amd64-v1.8.0.tgz",
        true,
        false,
        cni,
    );
    file(
        c,
        "crictl",
        "1.34.0",
        "crictl-v1.34.0-linux-amd64.tar.gz",
        true,
        false,
        tgz("", &["crictl"]),
    );
    let etcd = tgz("etcd-v3.6.5-linux-amd64", &["etcd", "etcdctl", "etcdutl"]);
    file(c, "etcd", "3.6.5", "etcd-v3.6.5-linux-amd64.tar.gz", true, false, etcd);
    // The release manifests, which install patches as parsed objects.
    let flannel = include_bytes!("../tests/fixtures/addons/kube-flannel-v0.27.3.yml").to_vec();
    file(c, "flannel", "0.27.3", "kube-flannel.yml", false, false, flannel);
    let metrics = include_bytes!("../tests/fixtures/addons/metrics-server-v0.8.0-components.yaml").to_vec();
    file(c, "metrics-server", "0.8.0", "components.yaml", false, false, metrics);
}

/// A valid bundle directory under `under` carrying the Kubernetes versions `hops` (the last
/// is the bundle's), with fake binaries and the pause, etcd and coredns images of the last
/// hop. Returns its directory.
pub fn bundle_dir(under: &Path, hops: &[&str]) -> PathBuf {
    let last = hops.last().copied().unwrap_or("v1.34.3");
    let mut c = Contents {
        bundle: BundleJson {
            schema: BUNDLE_SCHEMA,
            name: format!("kubernetes-{last}").parse().unwrap(),
            kbundle_version: "0.1.0".parse().unwrap(),
            kubernetes: last.parse().unwrap(),
            platforms: vec![platform().parse().unwrap()],
            components: BTreeMap::new(),
            hops: Vec::new(),
            upgrade_from: None,
            base: None,
            images: Vec::new(),
            entries: Vec::new(),
        },
        sources: Vec::new(),
    };
    for h in hops {
        let v = h.trim_start_matches('v');
        for bin in ["kubeadm", "kubelet", "kubectl"] {
            file(&mut c, bin, v, bin, true, true, script(bin, h));
        }
        let files = ["kubeadm", "kubelet", "kubectl"]
            .iter()
            .map(|b| format!("files/{b}/{v}/{}/{b}", platform().replace('/', "-")))
            .collect();
        let images: Vec<String> = vec![
            "registry.k8s.io/pause:3.10.1".into(),
            "registry.k8s.io/etcd:3.6.5-0".into(),
            format!("registry.k8s.io/kube-apiserver:{h}"),
        ];
        for i in &images {
            if !c.bundle.images.iter().any(|x| &x.reference == i) {
                c.bundle.images.push(image(i));
            }
        }
        c.bundle.hops.push(Hop {
            kubernetes: h.parse().unwrap(),
            files,
            images,
        });
    }
    runtime(&mut c);
    let inst = b"#!/bin/sh\necho kbundle\n".to_vec();
    c.push(
        Entry {
            executable: true,
            ..meta_entry("kbundle", EntryKind::Installer, &inst)
        },
        Source::Bytes(inst),
    );
    c.push(
        meta_entry("kbundle.lock", EntryKind::Meta, b"# lock\n"),
        Source::Bytes(b"# lock\n".to_vec()),
    );
    write_dir(c, under)
}

fn write_dir(c: Contents, under: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let (bundle, entries) = c.finish().unwrap_or_else(|e| panic!("fixture bundle: {e}"));
    let dir = under.join(bundle.name.as_str());
    for e in entries {
        let p = dir.join(&e.path);
        std::fs::create_dir_all(p.parent().unwrap_or(&dir)).unwrap();
        let Source::Bytes(b) = e.source else { continue };
        let mut f = std::fs::File::create(&p).unwrap();
        f.write_all(&b).unwrap();
        let mode = if e.executable { 0o755 } else { 0o644 };
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    dir
}

/// The example cluster config with join secrets, written to `dir/cluster.toml`.
pub fn cluster_file(dir: &Path, firewall: &str) -> PathBuf {
    let text = crate::cluster::EXAMPLE
        .replace(
            "# [join]\n# token = \"abcdef.0123456789abcdef\"\n# ca-cert-hash = \"sha256:<64 hex>\"",
            &format!(
                "[join]\ntoken = \"abcdef.0123456789abcdef\"\nca-cert-hash = \"sha256:{}\"",
                "b".repeat(64)
            ),
        )
        .replace("firewall = \"open-ports\"", &format!("firewall = \"{firewall}\""));
    let p = dir.join("cluster.toml");
    std::fs::write(&p, text).unwrap();
    p
}

/// A host at `root` whose side effects a recorder sees; `live` makes it the running system.
pub fn recording_host(root: &Path, live: bool) -> (Arc<Recorder>, Host) {
    let rec = Arc::new(Recorder::new());
    let host = Host::with_sys(root, false, rec.clone(), live);
    (rec, host)
}

/// A Rocky 10 node root with the commands preflight looks for.
pub fn node_root(root: &Path) {
    for d in ["etc/selinux", "usr/bin", "usr/sbin"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    let os = "ID=\"rocky\"\nVERSION_ID=\"10.0\"\nPRETTY_NAME=\"Rocky Linux 10.0\"\n";
    std::fs::write(root.join("etc/os-release"), os).unwrap();
    std::fs::write(root.join("etc/selinux/config"), "SELINUX=enforcing\n").unwrap();
    std::fs::write(root.join("etc/fstab"), "/dev/vda2 none swap defaults 0 0\n").unwrap();
    for c in [
        "usr/bin/mount",
        "usr/bin/umount",
        "usr/bin/nsenter",
        "usr/bin/iptables",
        "usr/sbin/modprobe",
    ] {
        std::fs::write(root.join(c), "").unwrap();
    }
}
