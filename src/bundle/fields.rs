//! Validated scalar fields of `bundle.json`. Every value that becomes a node path, a command
//! argument or a config value has its own type, checked when `bundle.json` is parsed, so a
//! bundle cannot smuggle `../` or a newline through a field that passed `verify`.

use crate::checked::checked_string;
use crate::version::Version;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// A value printed in an error: escaped (no raw newlines or control characters, so it
/// cannot forge output lines) and cut to a readable length.
pub fn shown(s: &str) -> String {
    let cut: String = s.chars().take(120).collect();
    let more = if cut.len() < s.len() { "…" } else { "" };
    format!("{:?}{more}", cut)
}

/// A name from an archive or bundle.json as printed in a report: unchanged when it is
/// plain printable ASCII, escaped and quoted otherwise (a newline can never start a
/// forged line of output).
pub fn esc(s: &str) -> std::borrow::Cow<'_, str> {
    if s.chars().all(|c| c.is_ascii() && !c.is_ascii_control()) && s.len() <= 1100 {
        std::borrow::Cow::Borrowed(s)
    } else {
        std::borrow::Cow::Owned(shown(s))
    }
}

/// A `bundle.json` value that failed its check: which field kind, the value (escaped when
/// shown) and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} {} is not valid: {why}", shown(.value))]
pub struct FieldError {
    pub what: &'static str,
    pub value: String,
    pub why: &'static str,
}

fn field(what: &'static str, s: &str, r: Result<(), &'static str>) -> Result<(), FieldError> {
    r.map_err(|why| FieldError {
        what,
        value: s.to_string(),
        why,
    })
}

/// One safe path component: `[A-Za-z0-9._-]`, 1-100 bytes, not starting with `.` or `-`.
pub fn check_name(s: &str) -> Result<(), &'static str> {
    if crate::manifest::valid_name(s) {
        Ok(())
    } else {
        Err("expected one plain path component of [A-Za-z0-9._-] (1-100 bytes, not starting with '.' or '-')")
    }
}

/// A version-like token (`2.1.5`, `v0.27.4`, `1.6.20~ds1`): printable, no separators.
pub fn check_token(s: &str) -> Result<(), &'static str> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'+' | b'~'));
    if ok {
        Ok(())
    } else {
        Err("expected 1-64 of [A-Za-z0-9._+~-], starting with a letter or digit")
    }
}

/// `vMAJOR.MINOR.PATCH`, exactly as Kubernetes tags releases.
pub fn check_kube_version(s: &str) -> Result<(), &'static str> {
    match (s.strip_prefix('v'), s.parse::<Version>()) {
        (Some(_), Ok(_)) => Ok(()),
        _ => Err("expected vMAJOR.MINOR.PATCH such as v1.34.3"),
    }
}

/// The platforms a bundle can target.
pub const PLATFORMS: [&str; 2] = ["linux/amd64", "linux/arm64"];

pub fn check_platform(s: &str) -> Result<(), &'static str> {
    if PLATFORMS.contains(&s) {
        Ok(())
    } else {
        Err("expected linux/amd64 or linux/arm64")
    }
}

checked_string!(
    /// A bundle or component name: one safe path component.
    #[derive(Serialize, Deserialize)]
    #[serde(try_from = "String", into = "String")]
    SafeName,
    FieldError,
    |s| field("name", s, check_name(s))
);
checked_string!(
    /// A component or tool version as upstream writes it.
    #[derive(Serialize, Deserialize)]
    #[serde(try_from = "String", into = "String")]
    Token,
    FieldError,
    |s| field("version", s, check_token(s))
);
checked_string!(
    /// A Kubernetes release, `vMAJOR.MINOR.PATCH`.
    #[derive(Serialize, Deserialize)]
    #[serde(try_from = "String", into = "String")]
    KubeVersion,
    FieldError,
    |s| field("Kubernetes version", s, check_kube_version(s))
);
checked_string!(
    /// `os/arch` from [`PLATFORMS`].
    #[derive(Serialize, Deserialize)]
    #[serde(try_from = "String", into = "String")]
    Platform,
    FieldError,
    |s| field("platform", s, check_platform(s))
);

impl AsRef<Path> for SafeName {
    fn as_ref(&self) -> &Path {
        Path::new(self.as_str())
    }
}

impl KubeVersion {
    /// The numbers (`1.34.3`).
    pub fn version(&self) -> Version {
        // Checked at construction: always parses.
        self.0.parse().unwrap_or(Version::new(0, 0, 0))
    }
}

impl From<Version> for KubeVersion {
    fn from(v: Version) -> KubeVersion {
        KubeVersion(v.with_v())
    }
}

impl Platform {
    /// `linux-amd64`: the form used in bundle paths.
    pub fn dir_name(&self) -> String {
        self.0.replace('/', "-")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_one_component() {
        for ok in ["kubernetes-v1.34.3", "a", "x_y.z"] {
            assert!(SafeName::try_from(ok.to_string()).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "../x", "/abs", "a/b", "-x", ".hidden", "a\nb", "a b"] {
            assert!(SafeName::try_from(bad.to_string()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn kube_versions_are_strict() {
        assert_eq!(
            KubeVersion::try_from("v1.34.3".to_string()).unwrap().version(),
            Version::new(1, 34, 3)
        );
        for bad in [
            "1.34.3",
            "v1.34.3/../../x",
            "v1.34",
            "v1.34.3-rc.0",
            "v01.2.3",
            "v1.34.3\n",
        ] {
            assert!(KubeVersion::try_from(bad.to_string()).is_err(), "{bad:?}");
        }
        assert_eq!(KubeVersion::from(Version::new(1, 2, 3)).as_str(), "v1.2.3");
    }

    #[test]
    fn platforms_and_tokens() {
        assert!(Platform::try_from("linux/amd64".to_string()).is_ok());
        for bad in ["linux/../x", "windows/amd64", "linux/amd64/v8", ""] {
            assert!(Platform::try_from(bad.to_string()).is_err(), "{bad:?}");
        }
        for ok in ["2.1.5", "v0.27.4", "1.6.20~ds1"] {
            assert!(Token::try_from(ok.to_string()).is_ok(), "{ok}");
        }
        for bad in ["", "../1", "1/2", "a b", "\"x"] {
            assert!(Token::try_from(bad.to_string()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn shown_escapes_newlines() {
        assert_eq!(shown("a\nOK b"), "\"a\\nOK b\"");
        assert!(shown(&"x".repeat(500)).ends_with('…'));
    }
}
