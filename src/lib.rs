//! kbundle: pinned manifests → verified, reproducible offline Kubernetes bundles for
//! air-gapped Rocky Linux nodes.
//!
//! Flow: [`manifest`] → [`catalog`] (what upstream looks like) → [`resolve`] ([`lock`]) →
//! [`fetch`] (cache) → [`bundle`] (pack, verify). The CLI in [`cli`] is a thin layer.

// Errors carry their context (paths, URLs, expected and actual digests) by value; they are
// created once per failure, so their size does not matter.
#![allow(clippy::result_large_err)]

pub mod addons;
pub mod builder;
pub mod bundle;
pub mod catalog;
pub mod checked;
pub mod cli;
pub mod cluster;
pub mod digest;
pub mod etcd;
pub mod fetch;
pub mod fsutil;
pub mod host;
pub mod image_ref;
pub mod images;
pub mod install;
pub mod kickstart;
pub mod lock;
pub mod manifest;
pub mod progress;
pub mod resolve;
pub mod sbom;
pub mod trust;
pub mod upgrade;
pub mod version;

#[cfg(test)]
pub mod testkit;
