mod fdk_platform;
mod signer_vectors;
