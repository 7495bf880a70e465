//! kmshost: a WebAssembly-plugin host for KMS providers.
//!
//! The data path reads straight down: [`kms::Kms`] is the one facade the
//! rest of the host calls; it finds the kmsID in the [`config`], binds its
//! plugin in the [`sandbox`] to the kmsID's [`capability`] policy and
//! [`secrets`] grants, and runs the operation. [`luks`] keeps volume keys in
//! LUKS2 headers.

pub mod capability;
pub mod cli;
pub mod config;
pub mod conformance;
pub mod csi;
pub mod deadline;
pub mod demo;
pub mod fetch;
pub mod host_setup;
pub mod inspect;
pub mod kms;
pub mod logging;
pub mod luks;
pub mod manifest;
pub mod plugin_text;
pub mod plugins;
pub mod sandbox;
pub mod secrets;
pub mod signing;
pub mod telemetry;
pub mod types;
pub mod volume;
pub mod watch;
