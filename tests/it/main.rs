mod fdk_platform;
