//! Building the signing string and the Authorization header, byte for byte as the OCI Python
//! SDK does (the rules are in the crate README, "What is signed"; the vectors in `tests/vectors` pin them).

use std::borrow::Cow;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use sha2::{Digest, Sha256};

use super::error::clipped;
use super::{KeyId, RsaSha256Signer, SignError};

/// A request as it will go on the wire, before signing.
#[derive(Clone, Copy, Debug)]
pub struct SignableRequest<'a> {
    /// "GET", "PUT", ... (any case).
    pub method: &'a str,
    /// The URL exactly as it goes on the wire; path and query are signed as written.
    pub url: &'a str,
    /// Caller headers (any case). A caller `date`, `content-type` or `host` is kept and signed;
    /// `authorization` is replaced, and on PUT/POST/PATCH so are `content-length` and
    /// `x-content-sha256` (we sign what we send).
    pub headers: &'a [(&'a str, &'a str)],
    /// The body exactly as it will be sent (hashed into `x-content-sha256` on PUT/POST/PATCH).
    pub body: &'a [u8],
}

/// The headers to send, and the intermediate products so tests can assert on them.
#[derive(Clone)]
pub struct SignedRequest {
    headers: Vec<(String, String)>,
    signing_string: String,
    signed_headers: &'static [&'static str],
}

impl SignedRequest {
    /// Every header to send, lower-case names: the caller's headers plus date, host, and for
    /// PUT/POST/PATCH content-length, content-type (default application/json),
    /// x-content-sha256; then authorization.
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    /// The value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The string the signature covers, one `name: value` line per signed header.
    pub fn signing_string(&self) -> &str {
        &self.signing_string
    }

    /// The `headers="..."` list, e.g. `["date", "(request-target)", "host"]`.
    pub fn signed_headers(&self) -> &[&'static str] {
        self.signed_headers
    }

    /// The Authorization value (it carries the keyId, so it may hold a session token).
    pub fn authorization(&self) -> &str {
        // sign_request always appends it last.
        self.headers.last().map(|(_, v)| v.as_str()).unwrap_or("")
    }
}

impl fmt::Debug for SignedRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = f.debug_list();
        for (name, value) in &self.headers {
            if name == AUTHORIZATION {
                list.entry(&(name, "<redacted>"));
            } else {
                list.entry(&(name, value));
            }
        }
        list.finish()
    }
}

const AUTHORIZATION: &str = "authorization";
const REQUEST_TARGET: &str = "(request-target)";
const GENERIC_HEADERS: &[&str] = &["date", REQUEST_TARGET, "host"];
const BODY_HEADERS: &[&str] = &[
    "date",
    REQUEST_TARGET,
    "host",
    "content-length",
    "content-type",
    "x-content-sha256",
];
const DEFAULT_CONTENT_TYPE: &str = "application/json";

/// Signs `req` for `key_id` with `key`. Pure: never reads the clock; `now` fills `date` when
/// the caller gave none.
pub fn sign_request(
    req: &SignableRequest<'_>,
    key_id: &KeyId,
    key: &dyn RsaSha256Signer,
    now: SystemTime,
) -> Result<SignedRequest, SignError> {
    let method = Method::parse(req.method)?;
    let url = split_url(req.url)?;
    check_key_id(key_id.as_str())?;
    let body_verb = method.has_body();

    let mut headers: Vec<(String, String)> = Vec::with_capacity(req.headers.len() + 7);
    for &(name, value) in req.headers {
        let name = header_name(name)?;
        check_header_value(&name, value)?;
        let replaced = match name.as_str() {
            AUTHORIZATION => true,
            "content-length" | "x-content-sha256" => body_verb,
            _ => false,
        };
        if replaced {
            continue;
        }
        if matches!(name.as_str(), "date" | "host" | "content-type")
            && headers.iter().any(|(n, _)| *n == name)
        {
            return Err(SignError::DuplicateHeader { name });
        }
        headers.push((name, value.to_owned()));
    }

    let has = |headers: &[(String, String)], name: &str| headers.iter().any(|(n, _)| n == name);
    if !has(&headers, "date") {
        headers.push(("date".to_owned(), http_date(now)?));
    }
    if !has(&headers, "host") {
        headers.push(("host".to_owned(), url.authority.to_owned()));
    }
    if body_verb {
        headers.push(("content-length".to_owned(), req.body.len().to_string()));
        if !has(&headers, "content-type") {
            headers.push(("content-type".to_owned(), DEFAULT_CONTENT_TYPE.to_owned()));
        }
        headers.push(("x-content-sha256".to_owned(), body_hash(req.body)));
    }

    let signed_headers = if body_verb {
        BODY_HEADERS
    } else {
        GENERIC_HEADERS
    };
    let signing_string = build_signing_string(signed_headers, &headers, method, &url.target);
    let signature = BASE64.encode(key.sign_pkcs1v15_sha256(signing_string.as_bytes())?);
    let authorization = format!(
        "Signature algorithm=\"rsa-sha256\",headers=\"{}\",keyId=\"{}\",signature=\"{}\",version=\"1\"",
        signed_headers.join(" "),
        key_id.as_str(),
        signature
    );
    headers.push((AUTHORIZATION.to_owned(), authorization));
    Ok(SignedRequest {
        headers,
        signing_string,
        signed_headers,
    })
}

/// One `name: value` line per signed header, joined by LF, no trailing newline.
fn build_signing_string(
    signed_headers: &[&str],
    headers: &[(String, String)],
    method: Method,
    target: &str,
) -> String {
    let mut out = String::with_capacity(256 + target.len());
    for (i, &name) in signed_headers.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(name);
        out.push_str(": ");
        if name == REQUEST_TARGET {
            out.push_str(method.lower());
            out.push(' ');
            out.push_str(target);
        } else {
            // Every signed header was added above, so the lookup cannot miss.
            let value = headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
                .unwrap_or("");
            out.push_str(value);
        }
    }
    out
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Method {
    Get,
    Head,
    Delete,
    Put,
    Post,
    Patch,
}

impl Method {
    fn parse(method: &str) -> Result<Self, SignError> {
        const ALL: [(&str, Method); 6] = [
            ("GET", Method::Get),
            ("HEAD", Method::Head),
            ("DELETE", Method::Delete),
            ("PUT", Method::Put),
            ("POST", Method::Post),
            ("PATCH", Method::Patch),
        ];
        ALL.iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(method))
            .map(|&(_, m)| m)
            .ok_or_else(|| SignError::UnsupportedMethod {
                method: clipped(method, 32),
            })
    }

    /// Verbs whose body is covered by the signature (decided by the verb alone, as every SDK does).
    fn has_body(self) -> bool {
        matches!(self, Method::Put | Method::Post | Method::Patch)
    }

    fn lower(self) -> &'static str {
        match self {
            Method::Get => "get",
            Method::Head => "head",
            Method::Delete => "delete",
            Method::Put => "put",
            Method::Post => "post",
            Method::Patch => "patch",
        }
    }
}

/// The parts of a URL that are signed, taken textually (no re-encoding).
#[derive(Debug, PartialEq, Eq)]
struct UrlParts<'a> {
    /// `host[:port]` exactly as written (an explicit `:443` stays, as in Python).
    authority: &'a str,
    /// Path (`/` if empty) and `?query`, without the fragment.
    target: Cow<'a, str>,
}

fn split_url(url: &str) -> Result<UrlParts<'_>, SignError> {
    let invalid = |reason: &str| SignError::InvalidUrl {
        reason: reason.to_owned(),
    };
    // A request line cannot carry these, and the signing string must stay ASCII.
    if !url.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid(
            "contains a space, a control character or a non-ASCII character",
        ));
    }
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| invalid("not an absolute URL (no `scheme://`)"))?;
    if !scheme.eq_ignore_ascii_case("https") && !scheme.eq_ignore_ascii_case("http") {
        return Err(invalid("scheme is neither http nor https"));
    }
    let without_fragment = rest.split('#').next().unwrap_or("");
    let authority_end = without_fragment
        .find(['/', '?'])
        .unwrap_or(without_fragment.len());
    let (authority, target) = without_fragment.split_at(authority_end);
    if authority.contains('@') {
        return Err(SignError::UrlUserInfo);
    }
    if authority.is_empty() || authority.starts_with(':') {
        return Err(invalid("has no host"));
    }
    // Python and Go sign `/` for an empty path, and HTTP clients send it.
    let target = if target.starts_with('/') {
        Cow::Borrowed(target)
    } else {
        Cow::Owned(format!("/{target}"))
    };
    Ok(UrlParts { authority, target })
}

/// Lower-cased header name, if it is an RFC 9110 token.
fn header_name(name: &str) -> Result<String, SignError> {
    let is_tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() {
        return Err(SignError::InvalidHeaderName {
            name: String::new(),
            reason: "is empty",
        });
    }
    if !name.bytes().all(is_tchar) {
        return Err(SignError::InvalidHeaderName {
            name: clipped(name, 64),
            reason: "contains a character not allowed in header names",
        });
    }
    Ok(name.to_ascii_lowercase())
}

/// Header values must survive the wire unchanged, or the server's signing string differs.
fn check_header_value(name: &str, value: &str) -> Result<(), SignError> {
    let bad = |reason| {
        Err(SignError::InvalidHeaderValue {
            name: name.to_owned(),
            reason,
        })
    };
    if value.bytes().any(|b| b == b'\r' || b == b'\n') {
        return bad("contains CR or LF");
    }
    if !value.is_ascii() {
        return bad("contains non-ASCII characters");
    }
    if value.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return bad("contains control characters");
    }
    if value.starts_with([' ', '\t']) || value.ends_with([' ', '\t']) {
        return bad("has leading or trailing whitespace, which servers strip before verifying");
    }
    Ok(())
}

/// The keyId sits inside a quoted parameter of the Authorization header.
fn check_key_id(key_id: &str) -> Result<(), SignError> {
    if key_id.is_empty() {
        return Err(SignError::InvalidKeyId { reason: "is empty" });
    }
    if !key_id
        .bytes()
        .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
    {
        return Err(SignError::InvalidKeyId {
            reason: "contains whitespace, quotes, backslashes or non-ASCII characters",
        });
    }
    Ok(())
}

fn body_hash(body: &[u8]) -> String {
    BASE64.encode(Sha256::digest(body))
}

/// IMF-fixdate, e.g. `Thu, 05 Mar 2026 09:30:00 GMT`.
fn http_date(now: SystemTime) -> Result<String, SignError> {
    // httpdate panics outside 1970..=9999; check first.
    const YEAR_10000: Duration = Duration::from_secs(253_402_300_800);
    match now.duration_since(UNIX_EPOCH) {
        Ok(since) if since < YEAR_10000 => Ok(httpdate::fmt_http_date(now)),
        _ => Err(SignError::ClockOutOfRange),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Returns the message itself, so tests see exactly what would be signed.
    struct EchoSigner;
    impl RsaSha256Signer for EchoSigner {
        fn sign_pkcs1v15_sha256(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
            Ok(message.to_vec())
        }
    }

    const DATE: &str = "Thu, 05 Mar 2026 09:30:00 GMT";

    fn at_fixed_date() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_772_703_000)
    }

    fn sign(
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<SignedRequest, SignError> {
        sign_request(
            &SignableRequest {
                method,
                url,
                headers,
                body,
            },
            &KeyId::new("t/u/f".to_owned()),
            &EchoSigner,
            at_fixed_date(),
        )
    }

    #[test]
    fn url_parts_are_taken_textually() {
        let cases = [
            ("https://h.example.com", "h.example.com", "/"),
            ("https://h.example.com?a=b", "h.example.com", "/?a=b"),
            (
                "https://h.example.com:443/p?q=%3A:x#frag",
                "h.example.com:443",
                "/p?q=%3A:x",
            ),
            ("HTTP://127.0.0.1:18080/a/b/", "127.0.0.1:18080", "/a/b/"),
            ("https://[::1]:8443/x", "[::1]:8443", "/x"),
            ("https://h/p?", "h", "/p?"),
            ("https://h#only-fragment", "h", "/"),
        ];
        for (url, authority, target) in cases {
            let parts = split_url(url).unwrap();
            assert_eq!(parts.authority, authority, "{url}");
            assert_eq!(parts.target, target, "{url}");
        }
    }

    #[test]
    fn bad_urls_are_errors() {
        for url in [
            "",
            "/relative/path",
            "ftp://h/x",
            "https:///path",
            "https://:443/path",
            "https://h/a b",
            "https://h/\u{e9}",
            "https://h/\r\n",
        ] {
            assert!(
                matches!(split_url(url), Err(SignError::InvalidUrl { .. })),
                "{url:?}"
            );
        }
        assert!(matches!(
            split_url("https://user:pw@h/x"),
            Err(SignError::UrlUserInfo)
        ));
        let err = split_url("https://user:s3cret@h/x").unwrap_err();
        assert!(!err.to_string().contains("s3cret"));
    }

    #[test]
    fn get_signs_three_headers_and_fills_date_from_now() {
        let signed = sign("get", "https://h.example.com/a?b=c", &[], b"").unwrap();
        assert_eq!(
            signed.signed_headers(),
            ["date", "(request-target)", "host"]
        );
        assert_eq!(
            signed.signing_string(),
            format!("date: {DATE}\n(request-target): get /a?b=c\nhost: h.example.com")
        );
        let names: Vec<&str> = signed.headers().iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["date", "host", "authorization"]);
        assert!(signed.authorization().starts_with(
            "Signature algorithm=\"rsa-sha256\",headers=\"date (request-target) host\",keyId=\"t/u/f\",signature=\""
        ));
        assert!(signed.authorization().ends_with("\",version=\"1\""));
    }

    #[test]
    fn put_adds_body_headers_and_replaces_caller_hash_and_length() {
        let signed = sign(
            "Put",
            "https://h/x",
            &[
                ("X-Content-SHA256", "bogus"),
                ("Content-Length", "999"),
                ("Authorization", "old"),
                ("Accept", "application/json"),
            ],
            b"",
        )
        .unwrap();
        assert_eq!(signed.signed_headers().len(), 6);
        assert_eq!(signed.header("content-length"), Some("0"));
        assert_eq!(signed.header("Content-Type"), Some("application/json"));
        assert_eq!(
            signed.header("x-content-sha256"),
            Some("47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=")
        );
        assert_eq!(signed.header("accept"), Some("application/json"));
        let auth_count = signed
            .headers()
            .iter()
            .filter(|(n, _)| n == "authorization")
            .count();
        assert_eq!(auth_count, 1);
        assert_ne!(signed.authorization(), "old");
        assert!(signed.signing_string().ends_with(
            "content-length: 0\ncontent-type: application/json\nx-content-sha256: 47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
        ));
    }

    #[test]
    fn caller_date_host_and_content_type_are_kept() {
        let signed = sign(
            "POST",
            "https://h:443/x",
            &[
                ("Date", "Mon, 01 Jan 2001 00:00:00 GMT"),
                ("HOST", "other.example"),
                ("content-type", "application/scim+json"),
            ],
            b"{}",
        )
        .unwrap();
        assert_eq!(
            signed.signing_string(),
            "date: Mon, 01 Jan 2001 00:00:00 GMT\n(request-target): post /x\nhost: other.example\ncontent-length: 2\ncontent-type: application/scim+json\nx-content-sha256: RBNvo1WzZ4oRRq0W9+hknpT7T8If536DEMBg9hyq/4o="
        );
    }

    #[test]
    fn delete_signs_generic_headers_only() {
        let signed = sign("DELETE", "https://h/x", &[], b"").unwrap();
        assert_eq!(signed.signed_headers(), GENERIC_HEADERS);
        assert_eq!(signed.header("content-length"), None);
        assert_eq!(signed.header("x-content-sha256"), None);
    }

    #[test]
    fn other_methods_are_refused() {
        for m in ["OPTIONS", "TRACE", "CONNECT", "", "GET ", "gEt\n"] {
            assert!(
                matches!(
                    sign(m, "https://h/", &[], b""),
                    Err(SignError::UnsupportedMethod { .. })
                ),
                "{m:?}"
            );
        }
        assert!(sign("head", "https://h/", &[], b"").is_ok());
        assert!(sign("PaTcH", "https://h/", &[], b"").is_ok());
    }

    #[test]
    fn bad_header_names_and_values_are_errors_without_echoing_values() {
        for (name, value) in [
            ("x-a", "line\r\nbreak"),
            ("x-a", "line\nbreak"),
            ("x-a", "caf\u{e9}"),
            ("x-a", "nul\0"),
            ("x-a", " zqlead"),
            ("x-a", "zqtrail\t"),
        ] {
            let err = sign("GET", "https://h/", &[(name, value)], b"").unwrap_err();
            assert!(
                matches!(err, SignError::InvalidHeaderValue { .. }),
                "{value:?}"
            );
            assert!(!err.to_string().contains(value));
            assert!(err.to_string().contains("x-a"));
        }
        for name in ["", "bad name", "bad:name", "caf\u{e9}"] {
            let err = sign("GET", "https://h/", &[(name, "v")], b"").unwrap_err();
            assert!(
                matches!(err, SignError::InvalidHeaderName { .. }),
                "{name:?}"
            );
        }
        let err = sign("GET", "https://h/", &[("date", "a"), ("Date", "b")], b"").unwrap_err();
        assert!(matches!(err, SignError::DuplicateHeader { .. }));
        // Unsigned headers may repeat.
        assert!(sign(
            "GET",
            "https://h/",
            &[("accept", "a"), ("Accept", "b")],
            b""
        )
        .is_ok());
    }

    #[test]
    fn key_ids_that_would_break_the_header_are_refused() {
        for key_id in ["", "a\"b", "a b", "a\\b", "tok\u{e9}n"] {
            let err = sign_request(
                &SignableRequest {
                    method: "GET",
                    url: "https://h/",
                    headers: &[],
                    body: b"",
                },
                &KeyId::new(key_id.to_owned()),
                &EchoSigner,
                at_fixed_date(),
            )
            .unwrap_err();
            assert!(matches!(err, SignError::InvalidKeyId { .. }));
        }
    }

    #[test]
    fn http_date_format_and_range() {
        assert_eq!(http_date(at_fixed_date()).unwrap(), DATE);
        assert_eq!(
            http_date(UNIX_EPOCH + Duration::from_secs(9 * 86_400)).unwrap(),
            "Sat, 10 Jan 1970 00:00:00 GMT"
        );
        assert!(matches!(
            http_date(UNIX_EPOCH - Duration::from_secs(1)),
            Err(SignError::ClockOutOfRange)
        ));
        assert!(matches!(
            http_date(UNIX_EPOCH + Duration::from_secs(253_402_300_800)),
            Err(SignError::ClockOutOfRange)
        ));
        let err = sign_request(
            &SignableRequest {
                method: "GET",
                url: "https://h/",
                headers: &[],
                body: b"",
            },
            &KeyId::new("k".to_owned()),
            &EchoSigner,
            UNIX_EPOCH - Duration::from_secs(1),
        );
        assert!(err.is_err());
    }

    #[test]
    fn debug_hides_the_authorization_value() {
        let signed = sign_request(
            &SignableRequest {
                method: "GET",
                url: "https://h/",
                headers: &[],
                body: b"",
            },
            &KeyId::new("ST$secret-token-value".to_owned()),
            &EchoSigner,
            at_fixed_date(),
        )
        .unwrap();
        let shown = format!("{signed:?}");
        assert!(!shown.contains("secret-token-value"), "{shown}");
        assert!(shown.contains("<redacted>"));
    }
}
