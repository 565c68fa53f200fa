//! Invocation bodies: `audit::parse_invocation` on raw bytes (batch, single record, OCI Events
//! object such as `createuser`, reconcile request), then `audit::triage` on every record under the
//! default event types with three domain policies (no DOMAINS, an allow list of names and URLs,
//! one with a bare domain OCID), and `resolve_for_reconcile` for a reconcile request.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oci_user_capabilities::intake::audit::{parse_invocation, triage, Invocation, Triage};
use oci_user_capabilities::config::{DomainPolicy, DomainRoute, EventTypes, DEFAULT_TEMPLATE};
use oci_user_capabilities::intake::names::{DomainName, DomainOcid, UserRef};
use std::sync::OnceLock;

struct Setup {
    events: EventTypes,
    policies: [DomainPolicy; 3],
}

fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| Setup {
        events: EventTypes::default(),
        policies: [
            DomainPolicy::new(None, DEFAULT_TEMPLATE).unwrap(),
            DomainPolicy::new(
                Some(
                    "Default=https://a.example,ocid1.domain.oc1..x=http://127.0.0.1:8080,\
                     idcs-0123456789abcdef0123456789abcdef",
                ),
                DEFAULT_TEMPLATE,
            )
            .unwrap(),
            DomainPolicy::new(
                Some("ocid1.domain.oc1..aaaaexample,Default=https://a.example"),
                DEFAULT_TEMPLATE,
            )
            .unwrap(),
        ],
    })
}

fuzz_target!(|data: &[u8]| {
    let setup = setup();
    match parse_invocation(data) {
        Ok(Invocation::Records(records)) => {
            for record in records.iter() {
                let Ok(record) = record else { continue };
                for policy in &setup.policies {
                    if let Triage::Act(t) = triage(&record, &setup.events, policy) {
                        // Acting needs a valid user id or OCID and a usable URL or domain OCID.
                        assert!(UserRef::parse(t.user_id.as_str()).is_ok());
                        match &t.route {
                            DomainRoute::Url(url) => assert!(!url.host().is_empty()),
                            DomainRoute::Ocid(ocid) => {
                                assert!(DomainOcid::parse(ocid.as_str()).is_ok())
                            }
                        }
                        if !policy.has_allow_list() {
                            // Without DOMAINS only a valid domain name or domain OCID can act.
                            assert!(
                                DomainName::parse(&t.domain).is_ok()
                                    || DomainOcid::parse(&t.domain).is_ok(),
                                "{t:?}"
                            );
                        }
                    }
                }
            }
        }
        Ok(Invocation::Reconcile(request)) => {
            for policy in &setup.policies {
                match policy.resolve_for_reconcile(&request.domain) {
                    Ok(DomainRoute::Url(url)) => assert!(!url.host().is_empty()),
                    Ok(DomainRoute::Ocid(ocid)) => assert_eq!(ocid.as_str(), request.domain),
                    Err(_) => {}
                }
            }
        }
        Err(e) => {
            // The reason is for people; it must render.
            let _ = e.to_string();
        }
    }
});
