mod enforcement;
mod fdk_platform;
mod idd_server;
mod platform_harness;
mod signer_vectors;
mod support;
