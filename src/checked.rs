//! Checked text: `String` newtypes that can only be made through their check, so a value of
//! one of them is known good wherever it goes (a node path, a command argument, kubeadm's
//! YAML). `bundle.json` fields ([`crate::bundle::fields`]) and cluster values
//! ([`crate::cluster::values`]) are both defined with [`checked_string!`].

/// Defines `$name(String)`, made only by `FromStr` or `TryFrom<String>` through
/// `$check: fn(&str) -> Result<(), $err>`. It derefs to, borrows as, compares with and
/// displays as its text; callers add serde derives through the attributes they pass.
macro_rules! checked_string {
    ($(#[$m:meta])* $name:ident, $err:ty, $check:expr) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = $err;
            fn try_from(s: String) -> Result<Self, $err> {
                let check: fn(&str) -> Result<(), $err> = $check;
                check(&s).map(|()| $name(s))
            }
        }

        impl std::str::FromStr for $name {
            type Err = $err;
            fn from_str(s: &str) -> Result<Self, $err> {
                $name::try_from(s.to_string())
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.pad(&self.0)
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<String> for $name {
            fn eq(&self, other: &String) -> bool {
                &self.0 == other
            }
        }
    };
}

pub(crate) use checked_string;
