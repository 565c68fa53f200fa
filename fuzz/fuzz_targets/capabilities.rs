//! `CAPABILITIES` values: `profile::Profile::parse`. On success the PUT body must be valid JSON
//! with the changer schema, and `describe()` must parse back to the same profile.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oci_user_capabilities::decision::profile::{Capability, CurrentCapabilities, Profile, CHANGER_SCHEMA};
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let profile = match Profile::parse(text) {
        Ok(p) => p,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    // Current values derived from the input so unmanaged copies are exercised too.
    let mut current = CurrentCapabilities::default();
    for (i, c) in Capability::ALL.into_iter().enumerate() {
        let v = match data.get(i).map(|b| b % 3) {
            Some(0) => Some(false),
            Some(1) => Some(true),
            _ => None,
        };
        current = current.with(c, v);
    }
    for cur in [CurrentCapabilities::default(), current] {
        // Never fewer than eight booleans: an unknown unmanaged value refuses the body.
        let body = match profile.put_body(&cur) {
            Ok(body) => body,
            Err(missing) => {
                assert!(profile.get(missing).is_none() && cur.get(missing).is_none());
                continue;
            }
        };
        let json: Value = serde_json::from_slice(&body).unwrap_or_else(|e| {
            panic!(
                "put_body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&body)
            )
        });
        assert_eq!(json["schemas"][0], CHANGER_SCHEMA);
        for c in Capability::ALL {
            let expected = profile.get(c).or(cur.get(c));
            assert!(expected.is_some(), "{c}");
            assert_eq!(
                json.get(c.attribute()).and_then(Value::as_bool),
                expected,
                "{c}"
            );
        }
        // Applying the body makes the profile satisfied.
        let mut after = cur;
        for c in Capability::ALL {
            if let Some(v) = json.get(c.attribute()).and_then(Value::as_bool) {
                after = after.with(c, Some(v));
            }
        }
        assert!(profile.is_satisfied_by(&after));
    }
    let plan = profile.plan_body();
    assert!(plan.is_object());
    let again = Profile::parse(&profile.describe()).expect("describe() must parse back");
    assert_eq!(again, profile);
});
