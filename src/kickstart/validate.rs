//! Checks on rendered kickstarts before anything is written: every section closed by
//! `%end`, no empty option values (`--hostname=`), no unresolved `{{placeholders}}`, and
//! every shell script body accepted by `bash -n`. pykickstart's `ksvalidator` checks the
//! command syntax in the tests; these catch what it does not.

use super::{KickstartError, Rendered};
use std::process::Command;

/// One mistake, with the kickstart file and line it is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: String,
    pub line: usize,
    pub what: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.what)
    }
}

/// The problems, one per line, indented (for error messages).
pub fn list(problems: &[Problem]) -> String {
    problems.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n")
}

/// Whether the script bodies could be run through `bash -n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BashCheck {
    /// This many script bodies passed `bash -n`.
    Passed(usize),
    /// No `bash` on PATH: script bodies were not syntax-checked.
    BashMissing,
}

/// A script section's body and where it starts.
#[derive(Debug, Clone)]
pub struct Script {
    /// The section header, e.g. `%post --nochroot`.
    pub header: String,
    pub header_line: usize,
    /// 1-based line of the body's first line.
    pub body_line: usize,
    pub body: String,
    pub interpreter: String,
}

const SECTIONS: [&str; 9] = [
    "%packages",
    "%pre",
    "%pre-install",
    "%post",
    "%onerror",
    "%traceback",
    "%addon",
    "%anaconda",
    "%certificate",
];
const SCRIPTS: [&str; 5] = ["%pre", "%pre-install", "%post", "%onerror", "%traceback"];

/// Checks all kickstarts; `Err(Invalid)` lists every problem in every file.
pub fn check(rendered: &[Rendered]) -> Result<BashCheck, KickstartError> {
    let mut problems = Vec::new();
    let mut scripts = Vec::new();
    for r in rendered {
        let (p, s) = check_text(&r.file_name, &r.text);
        problems.extend(p);
        scripts.extend(s.into_iter().map(|s| (r.file_name.clone(), s)));
    }
    let mut passed = 0;
    let mut missing = false;
    for (file, s) in &scripts {
        if !s.interpreter.ends_with("sh") {
            continue;
        }
        match bash_n(&s.body) {
            Ok(None) => passed += 1,
            Ok(Some((line, msg))) => problems.push(Problem {
                file: file.clone(),
                line: line.map_or(s.header_line, |l| s.body_line + l - 1),
                what: format!("{} (line {}): bash -n: {msg}", s.header, s.header_line),
            }),
            Err(BashMissing) => missing = true,
        }
    }
    if !problems.is_empty() {
        return Err(KickstartError::Invalid(problems));
    }
    Ok(if missing {
        BashCheck::BashMissing
    } else {
        BashCheck::Passed(passed)
    })
}

/// Shell-like split that keeps quoted strings together (quotes removed).
fn split_args(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut any = false;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                any = true;
            }
            (None, c) if c.is_whitespace() => {
                if any || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                any = false;
            }
            (None, c) => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any || !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn empty_options(file: &str, n: usize, line: &str, problems: &mut Vec<Problem>) {
    for a in split_args(line) {
        if let Some((opt, value)) = a.split_once('=') {
            if opt.starts_with("--") && value.trim().is_empty() {
                problems.push(Problem {
                    file: file.to_string(),
                    line: n,
                    what: format!("{opt}= has an empty value"),
                });
            }
        }
    }
}

/// A section opened by `%packages`, `%post`, …: its header line, where, and its body so far.
struct Open<'a> {
    header: String,
    line: usize,
    body: Vec<&'a str>,
}

/// Reads a kickstart line by line: sections, their bodies, and the problems found.
struct Scan<'a> {
    file: &'a str,
    problems: Vec<Problem>,
    scripts: Vec<Script>,
    open: Option<Open<'a>>,
}

impl<'a> Scan<'a> {
    fn problem(&mut self, line: usize, what: String) {
        self.problems.push(Problem {
            file: self.file.to_string(),
            line,
            what,
        });
    }

    fn line(&mut self, n: usize, line: &'a str) {
        if line.contains("{{") || line.contains("}}") {
            let what = format!("unresolved template placeholder in {:?}", line.trim());
            self.problem(n, what);
        }
        let t = line.trim();
        let word = t.split_whitespace().next().unwrap_or("");
        match self.open.take() {
            Some(open) => self.in_section(open, n, line, word),
            None => self.command(n, t, word),
        }
    }

    /// A line inside an open section: `%end`, a new section (the open one was not closed),
    /// or a body line.
    fn in_section(&mut self, mut open: Open<'a>, n: usize, line: &'a str, word: &str) {
        if word == "%end" {
            self.close(open);
        } else if SECTIONS.contains(&word) {
            let what = format!(
                "{} (line {}) is not closed by %end before {word}",
                open.header, open.line
            );
            self.problem(n, what);
            self.open = Some(Open {
                header: line.trim().to_string(),
                line: n,
                body: Vec::new(),
            });
        } else {
            open.body.push(line);
            self.open = Some(open);
        }
    }

    /// A line outside any section.
    fn command(&mut self, n: usize, t: &str, word: &str) {
        if t.is_empty() || t.starts_with('#') {
            return;
        }
        if word == "%end" {
            self.problem(n, "%end without an open section".into());
        } else if SECTIONS.contains(&word) {
            empty_options(self.file, n, t, &mut self.problems);
            self.open = Some(Open {
                header: t.to_string(),
                line: n,
                body: Vec::new(),
            });
        } else if word.starts_with('%') && !matches!(word, "%include" | "%ksappend") {
            self.problem(n, format!("unknown section {word}"));
        } else {
            empty_options(self.file, n, t, &mut self.problems);
        }
    }

    /// `%end`: a script section's body is kept for `bash -n`.
    fn close(&mut self, open: Open) {
        let kind = open.header.split_whitespace().next().unwrap_or("");
        if !SCRIPTS.contains(&kind) {
            return;
        }
        let interpreter = split_args(&open.header)
            .iter()
            .find_map(|a| a.strip_prefix("--interpreter=").map(str::to_string))
            .unwrap_or_else(|| "/bin/sh".into());
        let mut body = open.body.join("\n");
        body.push('\n');
        self.scripts.push(Script {
            header: open.header,
            header_line: open.line,
            body_line: open.line + 1,
            body,
            interpreter,
        });
    }
}

/// The checks that need no other program. Returns the problems and the script sections.
pub fn check_text(file: &str, text: &str) -> (Vec<Problem>, Vec<Script>) {
    let mut scan = Scan {
        file,
        problems: Vec::new(),
        scripts: Vec::new(),
        open: None,
    };
    let mut last = 0;
    for (i, line) in text.lines().enumerate() {
        last = i + 1;
        scan.line(last, line);
    }
    if let Some(open) = scan.open.take() {
        let what = format!("{} (line {}) is not closed by %end", open.header, open.line);
        scan.problem(last, what);
    }
    (scan.problems, scan.scripts)
}

/// bash is not installed.
#[derive(Debug)]
pub struct BashMissing;

/// `bash -n` with `script` on stdin: bash's exit status and stderr.
fn run_bash_n(script: &str) -> std::io::Result<std::process::Output> {
    use crate::host::sys::{Real, Stdin, Sys};
    // Through the node seam's process runner; bash exiting before it read everything is
    // judged by its status and stderr.
    let ran = Real.run(Command::new("bash").arg("-n"), Stdin::Bytes(script.as_bytes()), None)?;
    Ok(std::process::Output {
        status: ran.status,
        stdout: ran.stdout,
        stderr: ran.stderr,
    })
}

/// Runs `bash -n` on a script: `Ok(None)` if it parses, else the (body-relative) line and
/// bash's message.
pub fn bash_n(script: &str) -> Result<Option<(Option<usize>, String)>, BashMissing> {
    match run_bash_n(script) {
        Ok(out) if out.status.success() => Ok(None),
        Ok(out) => Ok(Some(bash_error(&out))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(BashMissing),
        Err(e) => Ok(Some((None, format!("cannot run bash: {e}")))),
    }
}

/// The line bash's complaint is about, and the complaint.
fn bash_error(out: &std::process::Output) -> (Option<usize>, String) {
    let msg = String::from_utf8_lossy(&out.stderr).trim().to_string();
    let line = msg
        .split("line ")
        .nth(1)
        .and_then(|r| r.split(':').next())
        .and_then(|n| n.trim().parse::<usize>().ok());
    let msg = msg
        .lines()
        .map(|l| l.trim_start_matches("bash: "))
        .collect::<Vec<_>>()
        .join("; ");
    if msg.is_empty() {
        (line, format!("exit status {}", out.status))
    } else {
        (line, msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<String> {
        check_text("x.ks", text).0.iter().map(|p| p.to_string()).collect()
    }

    #[test]
    fn sections_must_close() {
        assert!(problems("text\n%packages\n@core\n%end\n").is_empty());
        let p = problems("text\n%packages\n@core\n%post\necho\n%end\n");
        assert_eq!(p, ["x.ks:4: %packages (line 2) is not closed by %end before %post"]);
        let p = problems("%post --nochroot\necho hi\n");
        assert_eq!(p, ["x.ks:2: %post --nochroot (line 1) is not closed by %end"]);
        assert_eq!(problems("%end\n"), ["x.ks:1: %end without an open section"]);
        assert_eq!(problems("%postt\n"), ["x.ks:1: unknown section %postt"]);
    }

    #[test]
    fn empty_values_and_placeholders() {
        assert_eq!(
            problems("network --hostname= --activate\n"),
            ["x.ks:1: --hostname= has an empty value"]
        );
        assert_eq!(
            problems("network --hostname=\"\"\n"),
            ["x.ks:1: --hostname= has an empty value"]
        );
        assert_eq!(problems("%post --log=\n%end\n"), ["x.ks:1: --log= has an empty value"]);
        assert!(problems("sshkey --username=root \"ssh-ed25519 AAAA a --b=\"\n").is_empty());
        assert_eq!(
            problems("timezone {{tz}}\n"),
            ["x.ks:1: unresolved template placeholder in \"timezone {{tz}}\""]
        );
        // Script bodies are shell, not kickstart options.
        assert!(problems("%post\nx=--a=\n%end\n").is_empty());
    }

    #[test]
    fn scripts_are_found_with_lines() {
        let (_, s) = check_text("x.ks", "text\n%post --nochroot --interpreter=/bin/bash\na\nb\n%end\n");
        assert_eq!(s.len(), 1);
        assert_eq!((s[0].header_line, s[0].body_line, s[0].body.as_str()), (2, 3, "a\nb\n"));
        assert_eq!(s[0].interpreter, "/bin/bash");
    }

    #[test]
    fn bash_n_reports_the_line() {
        // No skip when bash is missing: this test is what shows `bash -n` works here.
        let needs = "bash -n on PATH (Debian and Rocky package: bash)";
        let (line, msg) = bash_n("echo ok\nif true; then\n")
            .expect(needs)
            .expect("a syntax error");
        assert!(line.is_some(), "{msg}");
        assert!(matches!(bash_n("echo ok\n"), Ok(None)));
    }
}
