//! The `~/.oci/config` INI parser, reached through `signer::fuzzing::parse_oci_config`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oci_user_capabilities::signer::fuzzing::parse_oci_config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse_oci_config(text) {
        Ok(ini) => {
            for (section, keys) in &ini {
                assert!(!section.is_empty());
                assert_eq!(section.trim(), section);
                for (key, value) in keys {
                    assert!(!key.is_empty());
                    assert_eq!(key, &key.to_ascii_lowercase());
                    assert_eq!(key.trim(), key);
                    assert_eq!(value.trim(), value);
                    assert!(!key.contains('\n') && !value.contains('\n'));
                }
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
