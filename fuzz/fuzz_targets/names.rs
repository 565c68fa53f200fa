//! Name validation: `DomainName`, `UserId`, `UserOcid`/`UserRef`, `DomainOcid` and `DomainUrl`
//! from arbitrary UTF-8, with the guarantees the `names` module documents checked on every accepted
//! value; and `control_plane::identity_domain_url`, which must accept only identity-domain URLs.
//!
//! Input layout: the first line is tried as each of the three names; the remaining lines are
//! used as path segments (and, in pairs, as query pairs) for `DomainUrl::endpoint`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oci_user_capabilities::clients::control_plane::identity_domain_url;
use oci_user_capabilities::intake::names::{DomainName, DomainOcid, DomainUrl, UserId, UserOcid, UserRef};

fn lower_hex(s: &str) -> bool {
    s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn check_domain_url(s: &str, rest: &[&str]) {
    let Ok(u) = DomainUrl::parse(s) else { return };
    // https, or http only to a loopback address.
    assert!(
        u.as_str().starts_with("https://")
            || (u.as_str().starts_with("http://") && u.is_loopback()),
        "{s:?} -> {}",
        u.as_str()
    );
    assert!(!u.host().is_empty(), "{s:?}");
    assert!(!u.as_str().ends_with('/'), "{s:?} -> {}", u.as_str());
    // No credentials, query or fragment survive, and nothing in the input was whitespace.
    assert!(
        !u.as_str().contains(['@', '?', '#', ' ', '\\']),
        "{s:?} -> {}",
        u.as_str()
    );
    // The normalised form parses back to the same value.
    let again =
        DomainUrl::parse(u.as_str()).unwrap_or_else(|e| panic!("{s:?} -> {}: {e}", u.as_str()));
    assert_eq!(again, u, "{s:?}");

    // endpoint(): host and port are the base's, and each segment stays exactly one segment.
    let segments: Vec<&str> = rest.to_vec();
    let query: Vec<(&str, &str)> = rest.chunks_exact(2).map(|p| (p[0], p[1])).collect();
    for q in [&[][..], &query[..]] {
        let url = u.endpoint(&segments, q);
        assert_eq!(url.host_str(), Some(u.host()), "{s:?} {segments:?}");
        assert_eq!(url.port(), u.port(), "{s:?}");
        assert_eq!(
            url.scheme(),
            if u.as_str().starts_with("https:") {
                "https"
            } else {
                "http"
            }
        );
        assert_eq!(url.fragment(), None, "{s:?} {segments:?}");
        assert!(url.username().is_empty() && url.password().is_none());
        if q.is_empty() {
            assert_eq!(url.query(), None);
        } else {
            let pairs = url.query_pairs().count();
            assert_eq!(pairs, q.len(), "{url} {q:?}");
        }
        if !segments.is_empty() {
            let got: Vec<&str> = url.path_segments().unwrap().collect();
            assert_eq!(got.len(), segments.len(), "{url} {segments:?}");
            for g in got {
                assert!(g != "." && g != "..", "{url}");
            }
        }
        // The URL the client builds must survive a round trip through the URL parser.
        let reparsed = url::Url::parse(url.as_str()).unwrap();
        assert_eq!(reparsed, url);
    }
}

/// An OCID the parser accepted: `ocid1.<kind>.<realm>..<id>`, lower-case letters and digits only,
/// so it is one URL path segment as it stands.
fn check_ocid(s: &str, kind: &str) {
    let rest = s
        .strip_prefix("ocid1.")
        .and_then(|r| r.strip_prefix(kind))
        .and_then(|r| r.strip_prefix('.'))
        .unwrap_or_else(|| panic!("{s:?}"));
    let (realm, id) = rest.split_once("..").unwrap_or_else(|| panic!("{s:?}"));
    for part in [realm, id] {
        assert!(!part.is_empty(), "{s:?}");
        assert!(
            part.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()),
            "{s:?}"
        );
    }
    assert!(s.len() <= 255);
}

fn check_control_plane_answer(s: &str) {
    let plane = DomainUrl::parse("https://identity.us-ashburn-1.oci.oraclecloud.com").unwrap();
    let Ok(url) = identity_domain_url(s, &plane) else {
        return;
    };
    // Only https to an idcs-<32 hex> host under identity.oraclecloud.com or a region's
    // identity.<region>.oci.oraclecloud.com, default port, nothing else.
    assert!(url.as_str().starts_with("https://"), "{s:?} -> {url}");
    assert_eq!(url.port(), None, "{s:?}");
    let host = url.host();
    let (stripe, rest) = host.split_once('.').unwrap();
    assert!(stripe.len() == 37 && stripe.starts_with("idcs-") && lower_hex(&stripe[5..]));
    assert!(
        rest == "identity.oraclecloud.com"
            || (rest.starts_with("identity.") && rest.ends_with(".oci.oraclecloud.com")),
        "{s:?} -> {url}"
    );
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.split('\n');
    let first = lines.next().unwrap_or("");
    let rest: Vec<&str> = lines.take(8).collect();

    for candidate in [text, first] {
        if let Ok(d) = DomainName::parse(candidate) {
            let s = d.as_str();
            assert_eq!(s, candidate);
            assert_eq!(s.len(), 37);
            assert!(s.starts_with("idcs-") && lower_hex(&s[5..]), "{s:?}");
        }
        if let Ok(u) = UserId::parse(candidate) {
            let s = u.as_str();
            assert_eq!(s, candidate);
            assert_eq!(s.len(), 32);
            assert!(lower_hex(s), "{s:?}");
            assert!(!s.contains(['/', '?', '#', '%', '.']));
        }
        if let Ok(o) = UserOcid::parse(candidate) {
            assert_eq!(o.as_str(), candidate);
            check_ocid(o.as_str(), "user");
        }
        if let Ok(o) = DomainOcid::parse(candidate) {
            assert_eq!(o.as_str(), candidate);
            check_ocid(o.as_str(), "domain");
        }
        match UserRef::parse(candidate) {
            Ok(UserRef::Id(id)) => assert_eq!(id.as_str(), candidate),
            Ok(UserRef::Ocid(o)) => check_ocid(o.as_str(), "user"),
            Err(e) => assert!(e.to_string().chars().count() <= 80 * 10 + 120, "{e}"),
        }
        check_control_plane_answer(candidate);
        // Errors repeat the value cut to 80 characters (then escaped, at most 10 characters
        // each as `\u{10ffff}`), so a message stays bounded whatever the input's length.
        if let Err(e) = UserId::parse(candidate) {
            assert!(e.to_string().chars().count() <= 80 * 10 + 100, "{e}");
        }
    }
    check_domain_url(text, &[]);
    check_domain_url(first, &rest);
});
