//! Editing the install media's boot menus (GRUB 2 `grub.cfg` for UEFI and BIOS, isolinux
//! `isolinux.cfg`) so they boot a kickstart, as lorax's `mkksiso` does: `inst.ks=` goes on
//! every kernel line that starts the installer (`inst.stage2=`), replacing any earlier
//! `inst.ks=`; rescue entries are left alone. Pure text in, text out.

/// The volume ID escaped for `hd:LABEL=` (udev's rules, as `mkksiso` does): anything but
/// `A-Za-z0-9#+.:=@_-` becomes `\xNN`, so a space is `\x20`.
pub fn udev_escape(label: &str) -> String {
    let mut out = String::new();
    for c in label.chars() {
        if c.is_ascii_alphanumeric() || "#+.:=@_-".contains(c) {
            out.push(c);
        } else {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("\\x{b:02x}"));
            }
        }
    }
    out
}

/// `inst.ks=hd:LABEL=<escaped volume id>:/<ks file>`
pub fn ks_arg(volid: &str, ks_file: &str) -> String {
    format!("inst.ks=hd:LABEL={}:/{ks_file}", udev_escape(volid))
}

/// How the menus should boot the kickstarts.
#[derive(Debug, Clone)]
pub enum Plan {
    /// Every installer entry boots this kickstart (`kbundle iso --node`).
    Single { ks_file: String },
    /// One new entry per node, copied from the first installer entry and titled
    /// "Install <node> (kbundle)"; the existing entries are unchanged.
    PerNode { nodes: Vec<(String, String)> },
}

/// Raw whitespace-separated words of a kernel command line; double quotes keep spaces.
fn words(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = None;
    let mut quoted = false;
    for (i, c) in s.char_indices() {
        if c == '"' {
            quoted = !quoted;
        }
        if c.is_whitespace() && !quoted {
            if let Some(st) = start.take() {
                out.push(&s[st..i]);
            }
        } else if start.is_none() {
            start = Some(i);
        }
    }
    if let Some(st) = start {
        out.push(&s[st..]);
    }
    out
}

/// Is this a kernel line (first word in `cmds`) that starts the installer?
fn is_install_line(line: &str, cmds: &[&str]) -> bool {
    let w = words(line);
    w.first().is_some_and(|c| cmds.contains(c))
        && w.iter().any(|a| a.starts_with("inst.stage2="))
        && !w.iter().any(|a| *a == "inst.rescue" || a.starts_with("inst.rescue="))
}

/// The line with any `inst.ks=`/`ks=` removed and `arg` appended, indentation kept.
fn with_ks(line: &str, arg: &str) -> String {
    let indent = &line[..line.len() - line.trim_start().len()];
    let mut w: Vec<&str> = words(line)
        .into_iter()
        .filter(|a| !a.starts_with("inst.ks=") && !a.starts_with("ks="))
        .collect();
    w.push(arg);
    format!("{indent}{}", w.join(" "))
}

const GRUB_CMDS: [&str; 2] = ["linux", "linuxefi"];
const ISOLINUX_CMDS: [&str; 1] = ["append"];

fn join(lines: &[String], trailing_newline: bool) -> String {
    let mut s = lines.join("\n");
    if trailing_newline {
        s.push('\n');
    }
    s
}

/// `--node`: every install line (per `cmds`) gets the one `inst.ks=` argument.
fn edit_single(lines: &[String], nl: bool, arg: &str, cmds: &[&str]) -> (String, usize) {
    let mut n = 0;
    let out: Vec<String> = lines
        .iter()
        .map(|l| {
            if is_install_line(l, cmds) {
                n += 1;
                with_ks(l, arg)
            } else {
                l.clone()
            }
        })
        .collect();
    (join(&out, nl), n)
}

/// Edits a GRUB 2 config. Returns the new text and how many entries boot a kickstart.
pub fn edit_grub(text: &str, volid: &str, plan: &Plan) -> (String, usize) {
    let lines: Vec<String> = text.lines().map(str::to_string).collect();
    let nl = text.ends_with('\n');
    match plan {
        Plan::Single { ks_file } => edit_single(&lines, nl, &ks_arg(volid, ks_file), &GRUB_CMDS),
        Plan::PerNode { nodes } => match grub_per_node(&lines, volid, nodes) {
            Some(out) => (join(&out, nl), nodes.len()),
            None => (text.to_string(), 0),
        },
    }
}

/// Top-level entries (menuentry/submenu at brace depth 0): (first, last line).
fn grub_entries(lines: &[String]) -> Vec<(usize, usize)> {
    let mut entries = Vec::new();
    let mut depth: i64 = 0;
    let mut open: Option<usize> = None;
    for (i, l) in lines.iter().enumerate() {
        let first = l.split_whitespace().next().unwrap_or("");
        if depth == 0 && (first == "menuentry" || first == "submenu") {
            open = Some(i);
        }
        depth += l.matches('{').count() as i64 - l.matches('}').count() as i64;
        if depth <= 0 {
            depth = 0;
            if let Some(s) = open.take() {
                entries.push((s, i));
            }
        }
    }
    entries
}

/// One entry per node, copied from the first top-level install entry and put right after
/// it; `None` when there is no install entry.
fn grub_per_node(lines: &[String], volid: &str, nodes: &[(String, String)]) -> Option<Vec<String>> {
    let entries = grub_entries(lines);
    let (index, &(start, end)) = entries.iter().enumerate().find(|(_, (s, e))| {
        lines[*s].trim_start().starts_with("menuentry") && lines[*s..=*e].iter().any(|l| is_install_line(l, &GRUB_CMDS))
    })?;
    let mut added = Vec::new();
    for (node, ks_file) in nodes {
        let arg = ks_arg(volid, ks_file);
        for (k, l) in lines[start..=end].iter().enumerate() {
            added.push(if k == 0 {
                retitle_menuentry(l, &format!("Install {node} (kbundle)"))
            } else if is_install_line(l, &GRUB_CMDS) {
                with_ks(l, &arg)
            } else {
                l.clone()
            });
        }
    }
    let mut out: Vec<String> = lines[..=end]
        .iter()
        .map(|l| bump_default(l, index, nodes.len()))
        .collect();
    out.extend(added);
    out.extend(lines[end + 1..].iter().cloned());
    Some(out)
}

/// `menuentry 'Old title' --class … {` with a new title.
fn retitle_menuentry(line: &str, title: &str) -> String {
    let indent = &line[..line.len() - line.trim_start().len()];
    let rest = line.trim_start().trim_start_matches("menuentry").trim_start();
    let after = match rest.chars().next() {
        Some(q @ ('\'' | '"')) => rest[1..].find(q).map_or("", |i| &rest[i + 2..]),
        _ => rest.find(char::is_whitespace).map_or("", |i| &rest[i..]),
    };
    format!("{indent}menuentry '{title}'{after}")
}

/// `set default="N"`: entries were inserted after top-level entry `index`, so N above it moves.
fn bump_default(line: &str, index: usize, inserted: usize) -> String {
    let t = line.trim();
    let Some(v) = t.strip_prefix("set default=") else {
        return line.to_string();
    };
    let v = v.trim_matches('"').trim_matches('\'');
    let (first, rest) = match v.split_once('>') {
        Some((a, b)) => (a, format!(">{b}")),
        None => (v, String::new()),
    };
    match first.parse::<usize>() {
        Ok(n) if n > index => {
            let indent = &line[..line.len() - line.trim_start().len()];
            format!("{indent}set default=\"{}{rest}\"", n + inserted)
        }
        _ => line.to_string(),
    }
}

/// Edits an isolinux config. Returns the new text and how many entries boot a kickstart.
pub fn edit_isolinux(text: &str, volid: &str, plan: &Plan) -> (String, usize) {
    let lines: Vec<String> = text.lines().map(str::to_string).collect();
    let nl = text.ends_with('\n');
    match plan {
        Plan::Single { ks_file } => edit_single(&lines, nl, &ks_arg(volid, ks_file), &ISOLINUX_CMDS),
        Plan::PerNode { nodes } => match isolinux_install_label(&lines) {
            Some(label) => (join(&isolinux_per_node(&lines, label, volid, nodes), nl), nodes.len()),
            None => (text.to_string(), 0),
        },
    }
}

fn lower(l: &str) -> String {
    l.trim().to_ascii_lowercase()
}

/// Does this line end a `label` block?
fn ends_label(l: &str) -> bool {
    let t = lower(l);
    t.is_empty()
        || t.starts_with("label ")
        || t.starts_with("menu begin")
        || t.starts_with("menu end")
        || t.starts_with("menu separator")
}

/// The first `label` block that starts the installer: (first, last line).
fn isolinux_install_label(lines: &[String]) -> Option<(usize, usize)> {
    let mut i = 0;
    while i < lines.len() {
        if lower(&lines[i]).starts_with("label ") {
            let mut e = i;
            while e + 1 < lines.len() && !ends_label(&lines[e + 1]) {
                e += 1;
            }
            if lines[i..=e].iter().any(|l| is_install_line(l, &ISOLINUX_CMDS)) {
                return Some((i, e));
            }
            i = e;
        }
        i += 1;
    }
    None
}

/// One `label kbundle-<node>` block per node, copied from the install block (without its
/// `menu default`) and put right after it.
fn isolinux_per_node(
    lines: &[String],
    (start, end): (usize, usize),
    volid: &str,
    nodes: &[(String, String)],
) -> Vec<String> {
    let mut out: Vec<String> = lines[..=end].to_vec();
    for (node, ks_file) in nodes {
        let arg = ks_arg(volid, ks_file);
        out.push(String::new());
        for l in &lines[start..=end] {
            let indent = &l[..l.len() - l.trim_start().len()];
            let t = lower(l);
            if t.starts_with("label ") {
                out.push(format!("{indent}label kbundle-{node}"));
            } else if t.starts_with("menu label") {
                out.push(format!("{indent}menu label Install {node} (kbundle)"));
            } else if t == "menu default" {
                continue;
            } else if is_install_line(l, &ISOLINUX_CMDS) {
                out.push(with_ks(l, &arg));
            } else {
                out.push(l.clone());
            }
        }
    }
    out.extend(lines[end + 1..].iter().cloned());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const VOL: &str = "Rocky-10-0-x86_64-dvd";
    const GRUB: &str = "set default=\"1\"\n\nsearch --no-floppy --set=root -l 'Rocky-10-0-x86_64-dvd'\n\nmenuentry 'Install Rocky Linux 10.0' --class fedora --class gnu-linux --class gnu --class os {\n\tlinux /images/pxeboot/vmlinuz inst.stage2=hd:LABEL=Rocky-10-0-x86_64-dvd quiet\n\tinitrd /images/pxeboot/initrd.img\n}\nmenuentry 'Test this media & install Rocky Linux 10.0' --class fedora --class gnu-linux --class gnu --class os {\n\tlinux /images/pxeboot/vmlinuz inst.stage2=hd:LABEL=Rocky-10-0-x86_64-dvd rd.live.check quiet\n\tinitrd /images/pxeboot/initrd.img\n}\nsubmenu 'Troubleshooting -->' {\n\tmenuentry 'Rescue a Rocky Linux system' --class fedora --class gnu-linux --class gnu --class os {\n\t\tlinux /images/pxeboot/vmlinuz inst.stage2=hd:LABEL=Rocky-10-0-x86_64-dvd inst.rescue quiet\n\t\tinitrd /images/pxeboot/initrd.img\n\t}\n}\n";

    #[test]
    fn escapes_like_mkksiso() {
        assert_eq!(udev_escape("Rocky-10-0-x86_64-dvd"), "Rocky-10-0-x86_64-dvd");
        assert_eq!(udev_escape("Rocky 10 dvd"), "Rocky\\x2010\\x20dvd");
        assert_eq!(udev_escape("a/b'c"), "a\\x2fb\\x27c");
        assert_eq!(ks_arg("My Disk", "cp1.ks"), "inst.ks=hd:LABEL=My\\x20Disk:/cp1.ks");
    }

    #[test]
    fn grub_single_edits_install_lines_not_rescue() {
        let old = GRUB.replace("rd.live.check quiet", "rd.live.check inst.ks=file:/old.ks quiet");
        let (out, n) = edit_grub(
            &old,
            VOL,
            &Plan::Single {
                ks_file: "cp1.ks".into(),
            },
        );
        assert_eq!(n, 2);
        let ks = "inst.ks=hd:LABEL=Rocky-10-0-x86_64-dvd:/cp1.ks";
        assert!(
            out.contains(&format!(
                "\tlinux /images/pxeboot/vmlinuz inst.stage2=hd:LABEL={VOL} quiet {ks}\n"
            )),
            "{out}"
        );
        assert!(
            out.contains(&format!("rd.live.check quiet {ks}\n")) && !out.contains("old.ks"),
            "{out}"
        );
        assert!(
            out.contains("inst.rescue quiet\n") && out.matches("inst.ks=").count() == 2,
            "{out}"
        );
        assert_eq!(out.lines().count(), GRUB.lines().count());
    }

    #[test]
    fn grub_per_node_adds_entries_after_the_first_and_keeps_the_default() {
        let nodes = vec![
            ("cp1".to_string(), "cp1.ks".to_string()),
            ("worker1".to_string(), "worker1.ks".to_string()),
        ];
        let (out, n) = edit_grub(GRUB, VOL, &Plan::PerNode { nodes });
        assert_eq!(n, 2);
        let titles: Vec<&str> = out
            .lines()
            .filter(|l| l.starts_with("menuentry") || l.starts_with("submenu"))
            .collect();
        assert_eq!(titles.len(), 5, "{out}");
        assert!(
            titles[1].starts_with("menuentry 'Install cp1 (kbundle)' --class fedora"),
            "{out}"
        );
        assert!(
            titles[2].starts_with("menuentry 'Install worker1 (kbundle)' --class fedora"),
            "{out}"
        );
        assert!(titles[3].starts_with("menuentry 'Test this media"), "{out}");
        // The default (index 1, the media test) moves with it.
        assert!(out.starts_with("set default=\"3\"\n"), "{out}");
        assert!(
            out.contains("quiet inst.ks=hd:LABEL=Rocky-10-0-x86_64-dvd:/worker1.ks\n"),
            "{out}"
        );
        assert_eq!(out.matches("inst.ks=").count(), 2);
    }

    #[test]
    fn isolinux_both_plans() {
        let cfg = "default vesamenu.c32\ntimeout 600\n\nlabel linux\n  menu label ^Install Rocky Linux 9.5\n  kernel vmlinuz\n  append initrd=initrd.img inst.stage2=hd:LABEL=Rocky\\x209 quiet\n\nlabel check\n  menu label Test this ^media & install Rocky Linux 9.5\n  menu default\n  kernel vmlinuz\n  append initrd=initrd.img inst.stage2=hd:LABEL=Rocky\\x209 rd.live.check quiet\n\nmenu begin ^Troubleshooting\nlabel rescue\n  menu label ^Rescue a Rocky Linux system\n  kernel vmlinuz\n  append initrd=initrd.img inst.stage2=hd:LABEL=Rocky\\x209 inst.rescue quiet\nmenu end\n";
        let (out, n) = edit_isolinux(
            cfg,
            "Rocky 9",
            &Plan::Single {
                ks_file: "w1.ks".into(),
            },
        );
        assert_eq!(n, 2);
        assert_eq!(out.matches("inst.ks=hd:LABEL=Rocky\\x209:/w1.ks").count(), 2, "{out}");
        let nodes = vec![("w1".to_string(), "w1.ks".to_string())];
        let (out, n) = edit_isolinux(cfg, "Rocky 9", &Plan::PerNode { nodes });
        assert_eq!(n, 1);
        assert!(out.contains("\nlabel kbundle-w1\n  menu label Install w1 (kbundle)\n  kernel vmlinuz\n  append initrd=initrd.img inst.stage2=hd:LABEL=Rocky\\x209 quiet inst.ks=hd:LABEL=Rocky\\x209:/w1.ks\n\nlabel check\n"), "{out}");
        assert_eq!(out.matches("menu default").count(), 1);
    }

    #[test]
    fn quoted_args_survive() {
        let l = "  linux /vmlinuz inst.stage2=hd:LABEL=X a=\"b c\" quiet";
        assert_eq!(
            with_ks(l, "inst.ks=y"),
            "  linux /vmlinuz inst.stage2=hd:LABEL=X a=\"b c\" quiet inst.ks=y"
        );
    }
}
