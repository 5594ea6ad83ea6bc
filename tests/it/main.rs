//! kbundle's integration tests, in one binary (one compile and link of the shared support
//! code). Each module is one area; `cargo test --test it <module>::` runs one of them.

mod support;

mod addon_images;
mod build;
mod build_hostile;
mod cli_output;
mod crash;
mod etcd;
mod fuzz_archive;
mod hop_choice;
mod hostile;
mod hostprep;
mod image_faults;
mod image_signatures;
mod images;
mod install;
mod install_addons;
mod iso;
mod kickstart;
mod kubeadm_config;
mod registry_selftest;
mod sbom;
mod signing;
mod skew;
mod support_selftest;
mod trust;
mod upgrade;
mod upgrade_cluster;
mod upgrade_walk;
mod verify;
mod zero_network;
