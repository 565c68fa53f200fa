mod cli;
mod enforcement;
mod fdk_platform;
mod idd_server;
mod platform_harness;
mod reconcile;
mod signer_vectors;
mod support;
