//! The trust flags shared by the commands that read a bundle (see [`crate::trust`]).

use std::path::PathBuf;

/// On a node: `--trusted-key`, `--allow-unsigned`, `--allow-downgrade`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct NodeTrust {
    /// A public key (kbundle.pub, minisign format) trusted in addition to the node's
    /// /etc/kbundle/trusted-keys/*.pub; repeatable. With any trusted key, the bundle must be
    /// signed by one of them.
    #[arg(long, value_name = "FILE")]
    pub trusted_key: Vec<PathBuf>,
    /// Accept a bundle without a valid signature by a trusted key (warned on stderr).
    #[arg(long)]
    pub allow_unsigned: bool,
    /// Accept a bundle whose serial is lower than one already installed from its signing key
    /// (warned on stderr).
    #[arg(long)]
    pub allow_downgrade: bool,
}

impl NodeTrust {
    pub fn flags(&self) -> crate::trust::Flags {
        crate::trust::Flags {
            trusted_keys: self.trusted_key.clone(),
            allow_unsigned: self.allow_unsigned,
            allow_downgrade: self.allow_downgrade,
        }
    }
}

/// On the admin machine (kickstart, iso): `--trusted-key`, `--allow-unsigned`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct BuildTrust {
    /// A public key (kbundle.pub, minisign format) the bundle must be signed by; repeatable.
    /// This machine's own /etc/kbundle/trusted-keys is not consulted.
    #[arg(long, value_name = "FILE")]
    pub trusted_key: Vec<PathBuf>,
    /// With --trusted-key: accept a bundle without a valid signature by one of them (warned).
    #[arg(long)]
    pub allow_unsigned: bool,
}

impl BuildTrust {
    pub fn flags(&self) -> crate::trust::Flags {
        crate::trust::Flags {
            trusted_keys: self.trusted_key.clone(),
            allow_unsigned: self.allow_unsigned,
            allow_downgrade: false,
        }
    }
}
