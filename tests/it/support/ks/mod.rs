//! Kickstart and ISO test support: a small valid bundle made here, pykickstart, fake ISOs.

pub mod common;
pub mod fake_iso;
pub mod pyks;
