//! What kbundle prints, as insta snapshots (tests/it/snapshots/it__cli_output__*.snap): the
//! help of every command, `example-config`, `inspect` and `inspect --json` of the kickstart
//! tests' small bundle, and `list --json` of the shipped v1.34.3 manifest. Any change to the
//! output fails until the snapshot is reviewed (README.md, Tests). Temp paths are masked.

use crate::support::ks::common::{self, kbundle_env, make_bundle, s, text, KS_KUBEADM};
use kbundle::bundle::pack::Compression;
use std::path::Path;

/// Runs kbundle with a fixed help width (clap reads COLUMNS when stdout is no terminal);
/// it must succeed with nothing on stderr. Returns stdout.
fn stdout_of(args: &[&str]) -> String {
    let o = kbundle_env(args, &[("COLUMNS", "100")]);
    assert!(
        o.status.success() && o.stderr.is_empty(),
        "kbundle {args:?}: {}",
        text(&o)
    );
    String::from_utf8(o.stdout).expect("UTF-8 output")
}

/// insta settings that mask `dir` (a temp directory) as `[TMP]`.
fn masking(dir: &Path) -> insta::Settings {
    let mut settings = insta::Settings::clone_current();
    settings.add_filter(&regex::escape(s(dir)), "[TMP]");
    settings
}

/// The subcommand names listed under `Commands:` in a help text (without `help`).
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| l.trim_end() != "Commands:")
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter(|l| !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_string)
        .collect()
}

#[test]
fn help_of_every_command() {
    let mut queue: Vec<Vec<String>> = vec![Vec::new()];
    let mut seen = 0;
    while let Some(path) = queue.pop() {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        let help = stdout_of(&args);
        let name = std::iter::once("help")
            .chain(path.iter().map(String::as_str))
            .collect::<Vec<_>>();
        insta::assert_snapshot!(name.join("_"), help, &format!("kbundle {}", args.join(" ")));
        for sub in subcommands(&help) {
            let mut p = path.clone();
            p.push(sub);
            queue.push(p);
        }
        seen += 1;
    }
    assert!(
        seen > 10,
        "only {seen} help texts: is the Commands: section still parsed?"
    );
}

#[test]
fn example_config() {
    insta::assert_snapshot!("example_config", stdout_of(&["example-config"]));
}

#[test]
fn inspect_of_the_kickstart_bundle() {
    let tmp = tempfile::tempdir().unwrap();
    let bundle = make_bundle(&tmp.path().join("bundles"), Compression::None, KS_KUBEADM);
    masking(tmp.path()).bind(|| {
        insta::assert_snapshot!("inspect", stdout_of(&["inspect", s(&bundle)]));
        insta::assert_snapshot!("inspect_json", stdout_of(&["inspect", "--json", s(&bundle)]));
    });
}

#[test]
fn list_json_of_the_shipped_manifest() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let manifest = root.join(format!("manifests/{}.toml", common::NAME));
    masking(root).bind(|| {
        insta::assert_snapshot!("list_json", stdout_of(&["list", "--json", s(&manifest)]));
    });
}
