//! OCI Monitoring, asked for one thing: `PostMetricData` (`POST {ingestion endpoint}/20180401/metrics`,
//! on the `telemetry-ingestion` host, not the `telemetry` one that reads metrics).
//!
//! The call goes through the shared transport ([`crate::transport`]) like every other: signed,
//! paced (the endpoint has a limiter of its own, so metrics never slow the identity-domain calls),
//! retried and classified. The body is built by [`crate::report::metrics`].

use crate::intake::names::DomainUrl;
use crate::signer::CredentialKind;
use crate::transport::{Call, Hints};

/// Monitoring's API version in the path.
const API_VERSION: &str = "20180401";
/// How messages name the service.
pub const SERVICE: &str = "OCI Monitoring";
/// What a 403 most likely means.
const FORBIDDEN: &str = "the function may not post metrics there (policy: allow dynamic-group <group> to use metrics in compartment <compartment> where target.metrics.namespace='<METRICS_NAMESPACE>')";

fn unauthorized(kind: CredentialKind) -> &'static str {
    match kind {
        CredentialKind::ResourcePrincipal => {
            "check that the function's dynamic group matches this function"
        }
        _ => "check the signing key and its user",
    }
}

/// `POST {ingestion}/20180401/metrics` with a `PostMetricDataDetails` body.
pub fn post_metric_data(ingestion: &DomainUrl, body: Vec<u8>) -> Call {
    Call::post_json(ingestion.endpoint(&[API_VERSION, "metrics"], &[]), body)
        .with_service(SERVICE)
        .with_hints(Hints {
            forbidden: Some(FORBIDDEN),
            unauthorized: Some(unauthorized),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_call_is_a_signed_post_to_the_ingestion_path() {
        let base =
            DomainUrl::parse("https://telemetry-ingestion.us-ashburn-1.oraclecloud.com").unwrap();
        let call = post_metric_data(&base, b"{}".to_vec());
        assert_eq!(call.method, crate::transport::Method::POST);
        assert_eq!(
            call.url.as_str(),
            "https://telemetry-ingestion.us-ashburn-1.oraclecloud.com/20180401/metrics"
        );
        assert_eq!(call.body.as_deref(), Some(&b"{}"[..]));
    }
}
