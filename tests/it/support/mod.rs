#![allow(dead_code)]
//! Test-support code shared by the integration tests.
//!
//! * [`mirror`]: a loopback HTTP/1.1 file server with fault injection that
//!   stands in for dl.k8s.io / github.com.
//! * [`drip`]: a loopback proxy that slows chosen responses to a drip.
//! * [`upstream`]: builds a fake upstream tree with upstream's real URL layout
//!   and checksum-file formats, to be served by the mirror.

pub mod addons;
pub mod bundles;
pub mod containerd;
pub mod cosign;
pub mod cosign_keyless;
pub mod drip;
pub mod harness;
pub mod images;
pub mod ks;
pub mod kubeadm_files;
pub mod mirror;
pub mod node;
pub mod registry;
pub mod spdx;
pub mod upgrade_env;
pub mod upstream;
pub mod versions;
