mod fdk_platform;
mod platform_harness;
mod signer_vectors;
