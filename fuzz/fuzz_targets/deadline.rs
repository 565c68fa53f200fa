//! `Fn-Deadline` header values: `fdk::parse_deadline`. An accepted value must agree with a
//! straight RFC 3339 reading of the trimmed text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oci_user_capabilities::fdk::parse_deadline;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = parse_deadline(text);
    let reference = OffsetDateTime::parse(text.trim(), &Rfc3339).ok();
    match parsed {
        Some(t) => {
            let reference = reference.expect("accepted a value RFC 3339 refuses");
            let back = OffsetDateTime::from(t);
            assert_eq!(back, reference, "{text:?}");
            // Round trip through the RFC 3339 form.
            let shown = back.format(&Rfc3339).unwrap();
            assert_eq!(parse_deadline(&shown), Some(t), "{shown}");
        }
        None => {
            // Refused: unparseable, or more than u64 nanoseconds (about 584 years) from 1970.
            if let Some(r) = reference {
                let fits = u64::try_from(r.unix_timestamp_nanos().unsigned_abs()).is_ok();
                assert!(!fits, "{text:?} refused though it is valid RFC 3339");
            }
        }
    }
});
