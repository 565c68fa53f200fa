//! One signed-call layer for OCI REST APIs, whatever the service: calls as data ([`Call`]), an
//! adaptive rate limiter per host and [`RateGroup`], OCI request signing at the moment of sending,
//! answers read only up to a per-call limit, and one classifier ([`classify`]) that says what each
//! answer means (retry, re-read credentials, fail, reject). It knows nothing of any particular
//! service: clients (an identity domain, the IAM control plane, Functions, Monitoring) build
//! [`Call`]s and read [`Answer`]s.
//!
//! An attempt is: wait for the limiter of the call's host and group → sign with the current
//! credentials (so the signed `date` is taken after the wait) → send → judge the status → read the
//! body within the limit. Retries honour `Retry-After` and never sleep past the caller's deadline;
//! a 401 re-reads the credentials once and retries once; redirects are never followed; a signed
//! request goes only to `https` (or `http` on a loopback address, for tests).
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::{Duration, SystemTime};
//! use oci_transport::{Call, RateGroup, Settings, Transport, PAGE_ANSWER_LIMIT};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let env = |name: &str| std::env::var(name).ok();
//! let credentials = oci_signer::ResourcePrincipal::from_env(&env, SystemTime::now())?;
//! let transport = Transport::new(Arc::new(credentials), Settings::default())?;
//! let url = url::Url::parse(
//!     "https://identity.us-ashburn-1.oci.oraclecloud.com/20160918/domains?compartmentId=ocid1.tenancy.oc1..aaaa",
//! )?;
//! let call = Call::get(url)
//!     .with_service("the identity control plane")
//!     .with_group(RateGroup::DEFAULT)
//!     .with_answer_limit(PAGE_ANSWER_LIMIT);
//! let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
//! match transport.send(&call, deadline).await {
//!     Ok(answer) => {
//!         let next = answer.header("opc-next-page");
//!         let domains: serde_json::Value = answer.json()?;
//!         println!("{domains} (next page: {next:?}, request ids {:?})", answer.request_ids);
//!     }
//!     // `failure.settled` says whether a retry could help; Display prints the cause chain.
//!     Err(failure) => eprintln!("{failure}"),
//! }
//! # Ok(())
//! # }
//! ```

mod call;
mod classify;
mod error;
mod rate_limit;
mod send;

pub use call::{Call, Hints, RateGroup, UnauthorizedHint};
pub use classify::{
    backoff, classify, generic_hint, parse_retry_after, Intent, Observed, Verdict,
    ERROR_ANSWER_LIMIT, PAGE_ANSWER_LIMIT, RETRY_AFTER_MAX, SMALL_ANSWER_LIMIT,
};
pub use error::{error_detail, truncated, Answer, Error, Failure, Settled};
pub use rate_limit::{Grant, PastDeadline, RateLimiter, MIN_RATE, RECOVERY};
pub use send::{BuildError, Settings, Transport};

/// The HTTP types calls and answers use.
pub use reqwest::{header::HeaderMap, Method, StatusCode};
/// The URL type calls use.
pub use url::Url;
