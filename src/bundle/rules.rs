//! The bundle format's rules for `bundle.json`, checked on every parse: where each kind of
//! entry may live, which entries may be executable, how hops, images and the delta base
//! refer to entries. A violation names the field (`entries[12].path`) and the rule.

use super::fields::{check_name, check_platform, check_token, shown};
use super::meta::{
    check_rel_path, BundleJson, Entry, EntryKind, MetaError, BUNDLE_JSON, INSTALLER, LOCKFILE, SHA256SUMS,
};
use std::collections::BTreeSet;

/// At most this many entries (the archive reader has the same limit).
pub const MAX_ENTRIES: usize = super::archive::MAX_ENTRIES;
/// Largest single entry a bundle may declare (1 TiB).
pub const MAX_ENTRY_SIZE: u64 = 1 << 40;
/// The metadata entries a bundle may carry.
pub const META_PATHS: [&str; 4] = [LOCKFILE, "images/index.json", "images/oci-layout", crate::sbom::SBOM];
/// Manifest media types an image may point at.
pub const IMAGE_MEDIA_TYPES: [&str; 4] = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

fn field(field: impl Into<String>, reason: impl Into<String>) -> MetaError {
    MetaError::Field {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Every rule of the format; the first violation is returned.
pub fn validate(b: &BundleJson) -> Result<(), MetaError> {
    check_entries(b)?;
    check_platforms(b)?;
    check_images(b)?;
    check_hops(b)?;
    check_base(b)
}

fn check_entries(b: &BundleJson) -> Result<(), MetaError> {
    if b.entries.len() > MAX_ENTRIES {
        return Err(field(
            "entries",
            format!("{} entries; at most {MAX_ENTRIES}", b.entries.len()),
        ));
    }
    let mut prev: Option<&str> = None;
    let mut total: u64 = 0;
    for (i, e) in b.entries.iter().enumerate() {
        check_rel_path(&e.path).map_err(|reason| MetaError::UnsafePath {
            path: e.path.clone(),
            reason,
        })?;
        if prev.is_some_and(|p| p >= e.path.as_str()) {
            return Err(MetaError::Unsorted { path: e.path.clone() });
        }
        prev = Some(&e.path);
        check_entry(e).map_err(|(f, reason)| field(format!("entries[{i}].{f}"), reason))?;
        total = total
            .checked_add(e.size)
            .ok_or_else(|| field("entries", "the sizes add up to more than 2^64 bytes"))?;
    }
    Ok(())
}

type EntryFault = (&'static str, String);

/// One entry's own rules: path by kind, mode by kind, metadata well-formed.
fn check_entry(e: &Entry) -> Result<(), EntryFault> {
    if matches!(e.path.as_str(), BUNDLE_JSON | SHA256SUMS) {
        return Err((
            "path",
            "bundle.json and SHA256SUMS cannot be entries of themselves".into(),
        ));
    }
    if e.size > MAX_ENTRY_SIZE {
        return Err(("size", format!("{} bytes; at most {MAX_ENTRY_SIZE}", e.size)));
    }
    check_metadata(e)?;
    check_place(e)?;
    let may_execute = matches!(e.kind, EntryKind::File | EntryKind::Installer);
    if e.executable && !may_execute {
        return Err((
            "executable",
            format!("a {} entry is data and cannot be executable", kind_name(e.kind)),
        ));
    }
    if e.kind == EntryKind::Installer && !e.executable {
        return Err(("executable", "the installer must be executable".into()));
    }
    if e.in_base && !matches!(e.kind, EntryKind::File | EntryKind::Blob) {
        return Err(("in_base", "only files and blobs can be left to a base bundle".into()));
    }
    Ok(())
}

fn kind_name(k: EntryKind) -> &'static str {
    match k {
        EntryKind::File => "file",
        EntryKind::Blob => "blob",
        EntryKind::Meta => "meta",
        EntryKind::Installer => "installer",
        EntryKind::Kickstart => "kickstart",
    }
}

fn check_metadata(e: &Entry) -> Result<(), EntryFault> {
    if let Some(c) = &e.component {
        check_name(c).map_err(|r| ("component", format!("{}: {r}", shown(c))))?;
    }
    if let Some(v) = &e.version {
        check_token(v).map_err(|r| ("version", format!("{}: {r}", shown(v))))?;
    }
    if let Some(p) = &e.platform {
        check_platform(p).map_err(|r| ("platform", format!("{}: {r}", shown(p))))?;
    }
    if let Some(u) = &e.url {
        let ok = u.len() <= 2048
            && url::Url::parse(u).is_ok_and(|p| matches!(p.scheme(), "https" | "http") && p.host().is_some());
        if !ok {
            return Err(("url", format!("{} is not an http(s) URL", shown(u))));
        }
    }
    Ok(())
}

/// Where an entry of each kind may live.
fn check_place(e: &Entry) -> Result<(), EntryFault> {
    let parts: Vec<&str> = e.path.split('/').collect();
    let bad = |rule: &str| Err(("path", format!("{}: {rule}", shown(&e.path))));
    match e.kind {
        EntryKind::File => check_file_place(e, &parts),
        EntryKind::Blob => {
            if e.path == format!("images/blobs/sha256/{}", e.sha256.hex()) {
                Ok(())
            } else {
                bad("a blob lives at images/blobs/sha256/<its own sha256>")
            }
        }
        EntryKind::Meta if META_PATHS.contains(&e.path.as_str()) => Ok(()),
        EntryKind::Meta => bad("metadata is only kbundle.lock, images/index.json, images/oci-layout or sbom.spdx.json"),
        EntryKind::Installer if e.path == INSTALLER => Ok(()),
        EntryKind::Installer => bad("the installer lives at `kbundle`"),
        EntryKind::Kickstart if parts.len() == 2 && parts[0] == "kickstart" && check_name(parts[1]).is_ok() => Ok(()),
        EntryKind::Kickstart => bad("a kickstart lives at kickstart/<name>"),
    }
}

/// `files/<component>/<version>/[<os>-<arch>/]<file>`, agreeing with the entry's fields.
fn check_file_place(e: &Entry, parts: &[&str]) -> Result<(), EntryFault> {
    let bad = |rule: String| Err(("path", format!("{}: {rule}", shown(&e.path))));
    if !(parts.len() == 4 || parts.len() == 5) || parts[0] != "files" {
        return bad("a file lives at files/<component>/<version>/[<os>-<arch>/]<name>".into());
    }
    if e.component.as_deref() != Some(parts[1]) || e.version.as_deref() != Some(parts[2]) {
        return bad("the component and version in the path must match the entry's fields".into());
    }
    let want_dir = e.platform.as_ref().map(|p| p.replace('/', "-"));
    let got_dir = (parts.len() == 5).then(|| parts[3].to_string());
    if want_dir != got_dir {
        return bad(format!(
            "the platform directory must match the entry's platform ({})",
            e.platform.as_deref().unwrap_or("none")
        ));
    }
    let name = parts[parts.len() - 1];
    check_name(name).map_err(|r| ("path", format!("{}: file name: {r}", shown(&e.path))))
}

fn check_platforms(b: &BundleJson) -> Result<(), MetaError> {
    if b.platforms.is_empty() {
        return Err(field("platforms", "at least one platform is required"));
    }
    let set: BTreeSet<&str> = b.platforms.iter().map(|p| p.as_str()).collect();
    if set.len() != b.platforms.len() {
        return Err(field("platforms", "a platform is listed twice"));
    }
    Ok(())
}

fn check_images(b: &BundleJson) -> Result<(), MetaError> {
    let mut seen = BTreeSet::new();
    for (i, img) in b.images.iter().enumerate() {
        let f = |sub: &str, reason: String| field(format!("images[{i}].{sub}"), reason);
        let parsed: crate::image_ref::ImageRef = img.reference.parse().map_err(|e| f("ref", format!("{e}")))?;
        if parsed.to_string() != img.reference {
            return Err(f(
                "ref",
                format!("{} is not in normalised form ({parsed})", shown(&img.reference)),
            ));
        }
        if !seen.insert(img.reference.as_str()) {
            return Err(f("ref", format!("{} is listed twice", shown(&img.reference))));
        }
        if !IMAGE_MEDIA_TYPES.contains(&img.media_type.as_str()) {
            return Err(f(
                "media_type",
                format!("{} is not an image manifest or index type", shown(&img.media_type)),
            ));
        }
        for (j, p) in img.platforms.iter().enumerate() {
            check_platform(&p.platform).map_err(|r| {
                f(
                    &format!("platforms[{j}].platform"),
                    format!("{}: {r}", shown(&p.platform)),
                )
            })?;
            if !IMAGE_MEDIA_TYPES.contains(&p.media_type.as_str()) {
                return Err(f(
                    &format!("platforms[{j}].media_type"),
                    format!("{} is not a manifest type", shown(&p.media_type)),
                ));
            }
        }
    }
    Ok(())
}

fn check_hops(b: &BundleJson) -> Result<(), MetaError> {
    let Some(last) = b.hops.last() else {
        return Err(field(
            "hops",
            "at least one hop (the bundle's Kubernetes version) is required",
        ));
    };
    if last.kubernetes != b.kubernetes {
        return Err(field(
            "hops",
            format!(
                "the last hop is {}, but the bundle's kubernetes is {}",
                last.kubernetes, b.kubernetes
            ),
        ));
    }
    check_hop_order(b)?;
    let images: BTreeSet<&str> = b.images.iter().map(|i| i.reference.as_str()).collect();
    for (i, h) in b.hops.iter().enumerate() {
        for (j, p) in h.files.iter().enumerate() {
            if b.entry(p).is_none_or(|e| e.kind != EntryKind::File) {
                let reason = format!("{} is not a file entry", shown(p));
                return Err(field(format!("hops[{i}].files[{j}]"), reason));
            }
        }
        for (j, r) in h.images.iter().enumerate() {
            if !images.contains(r.as_str()) {
                let reason = format!("{} is not in images", shown(r));
                return Err(field(format!("hops[{i}].images[{j}]"), reason));
            }
        }
    }
    Ok(())
}

/// Hops ascend, and an upgrade starts below the first.
fn check_hop_order(b: &BundleJson) -> Result<(), MetaError> {
    for (i, w) in b.hops.windows(2).enumerate() {
        if w[0].kubernetes.version() >= w[1].kubernetes.version() {
            let f = format!("hops[{}].kubernetes", i + 1);
            return Err(field(f, "hops must be in ascending version order"));
        }
    }
    if let (Some(from), Some(first)) = (&b.upgrade_from, b.hops.first()) {
        if from.version() >= first.kubernetes.version() {
            let reason = format!("{from} is not older than the first hop {}", first.kubernetes);
            return Err(field("upgrade_from", reason));
        }
    }
    Ok(())
}

fn check_base(b: &BundleJson) -> Result<(), MetaError> {
    if b.base.is_none() && b.entries.iter().any(|e| e.in_base) {
        return Err(field("base", "entries are marked in_base but no base bundle is named"));
    }
    Ok(())
}
