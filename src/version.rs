//! Release versions (`v1.34.3`, `2.1.5`) as used by Kubernetes and its components.
//!
//! Kubernetes and most components tag releases `vMAJOR.MINOR.PATCH`; their asset names
//! sometimes drop the `v`. A [`Version`] keeps the numbers and prints either form on request.

use std::fmt;
use std::str::FromStr;

/// A `MAJOR.MINOR.PATCH` release, written with or without a leading `v`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid version {input:?}: expected MAJOR.MINOR.PATCH such as v1.34.3 or 2.1.5 (no pre-release or build suffix)"
)]
pub struct VersionError {
    pub input: String,
}

impl Version {
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        Version { major, minor, patch }
    }

    /// `v1.34.3`
    pub fn with_v(&self) -> String {
        format!("v{self}")
    }

    /// `(major, minor)`: the release line a version belongs to.
    pub fn minor_line(&self) -> (u32, u32) {
        (self.major, self.minor)
    }
}

impl fmt::Display for Version {
    /// Without the `v`: `1.34.3`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl FromStr for Version {
    type Err = VersionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || VersionError { input: s.to_string() };
        let body = s.strip_prefix('v').unwrap_or(s);
        let mut parts = body.split('.');
        let mut next = || -> Result<u32, VersionError> {
            let p = parts.next().ok_or_else(err)?;
            // Digits only; no leading zeros except "0" itself; no sign, no whitespace.
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) || (p.len() > 1 && p.starts_with('0')) {
                return Err(err());
            }
            p.parse::<u32>().map_err(|_| err())
        };
        let v = Version::new(next()?, next()?, next()?);
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(v)
    }
}

impl serde::Serialize for Version {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Version {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_forms() {
        assert_eq!("v1.34.3".parse::<Version>().unwrap(), Version::new(1, 34, 3));
        assert_eq!("2.1.5".parse::<Version>().unwrap(), Version::new(2, 1, 5));
        assert_eq!(Version::new(1, 34, 3).with_v(), "v1.34.3");
    }

    #[test]
    fn rejects_junk() {
        for bad in [
            "",
            "v",
            "1.34",
            "1.34.3.4",
            "v1.34.x",
            "1.34.3-rc.1",
            " 1.2.3",
            "01.2.3",
            "+1.2.3",
            "vv1.2.3",
        ] {
            assert!(bad.parse::<Version>().is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn orders_numerically() {
        let a: Version = "1.9.0".parse().unwrap();
        let b: Version = "1.10.0".parse().unwrap();
        assert!(a < b);
    }
}
