mod fdk_platform;
mod platform_harness;
