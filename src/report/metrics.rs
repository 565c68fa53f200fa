//! Custom metrics in OCI Monitoring: each invocation's counts, posted once at its end.
//!
//! With `METRICS_COMPARTMENT_ID` set, an invocation posts `records` (by `outcome` and `domain`),
//! `lingering_credentials` and `revoked_credentials` (by `credential_type`), `throttled_requests`
//! and `invocation_ms` (by `kind`: `batch` or `reconcile`) in `METRICS_NAMESPACE`, with
//! `POST {MONITORING_INGESTION_URL}/20180401/metrics` (Monitoring's `PostMetricData`), signed like
//! every request. Posting is bounded: the answer waits at most [`POST_WAIT`] for it, a failure is
//! logged once for the call, and nothing is retried past that wait. Metrics never change an
//! answer.
//!
//! The body follows the API's documented shape: `{"metricData": [{"namespace", "compartmentId",
//! "name", "dimensions", "metadata", "datapoints": [{"timestamp", "value"}]}]}`, at most
//! [`MAX_STREAMS_PER_CALL`] streams a call. Dimension values come from validated names only: a
//! record's domain that is not a valid domain name or OCID is counted under `invalid`, so a
//! hostile record can neither inject a value nor create streams without bound.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;

use crate::action::apply::{Outcome, Report};
use crate::action::reconcile::ReconcileReport;
use crate::clients::monitoring::{post_metric_data, SERVICE};
use crate::config::ConfigError;
use crate::intake::names::{shown, DomainName, DomainOcid, DomainUrl};
use crate::transport::Transport;

/// The compartment key; unset means no metrics.
pub const KEY_COMPARTMENT: &str = "METRICS_COMPARTMENT_ID";
/// The namespace key.
pub const KEY_NAMESPACE: &str = "METRICS_NAMESPACE";
/// The ingestion endpoint key.
pub const KEY_INGESTION_URL: &str = "MONITORING_INGESTION_URL";
/// `METRICS_NAMESPACE` when unset.
pub const DEFAULT_NAMESPACE: &str = "user_capabilities";
/// Monitoring's limit on streams in one `PostMetricData` call.
pub const MAX_STREAMS_PER_CALL: usize = 50;
/// Calls one invocation makes at most; record streams past what they hold are folded into the
/// domain `other` (a batch naming hundreds of valid domains is not what this function sees).
pub const MAX_CALLS: usize = 4;
/// The longest an answer waits for its metrics, whatever Monitoring does.
pub const POST_WAIT: Duration = Duration::from_millis(1500);
/// Longest namespace accepted (Monitoring documents 1 to 256 characters).
const MAX_NAMESPACE_LEN: usize = 256;
/// The dimension value for a record's domain that is not a valid name or OCID.
const INVALID_DOMAIN: &str = "invalid";
/// The dimension value for a record that names no domain.
const NO_DOMAIN: &str = "none";
/// The dimension value that folds domains past [`MAX_CALLS`].
pub(crate) const OTHER_DOMAIN: &str = "other";

/// The validated metrics configuration; `None` from [`MetricsConfig::from_lookup`] when
/// `METRICS_COMPARTMENT_ID` is unset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsConfig {
    /// The compartment (or tenancy) OCID the metrics go into.
    pub compartment_id: String,
    /// The namespace.
    pub namespace: String,
    /// `MONITORING_INGESTION_URL`, when set; else derived from the region (see [`ingestion_url`]).
    pub ingestion_url: Option<DomainUrl>,
}

impl MetricsConfig {
    /// Reads and validates the three keys; an empty value counts as unset. `METRICS_NAMESPACE` and
    /// `MONITORING_INGESTION_URL` are checked even when metrics are off, so a typo shows at start.
    pub fn from_lookup(get: &dyn Fn(&str) -> Option<String>) -> Result<Option<Self>, ConfigError> {
        let get = |k: &str| {
            get(k)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let namespace = get(KEY_NAMESPACE).unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned());
        check_namespace(&namespace).map_err(|reason| err(KEY_NAMESPACE, reason))?;
        let ingestion_url = get(KEY_INGESTION_URL)
            .map(|v| check_ingestion_url(&v).map_err(|reason| err(KEY_INGESTION_URL, reason)))
            .transpose()?;
        let Some(compartment_id) = get(KEY_COMPARTMENT) else {
            return Ok(None);
        };
        check_compartment(&compartment_id).map_err(|reason| err(KEY_COMPARTMENT, reason))?;
        Ok(Some(Self {
            compartment_id,
            namespace,
            ingestion_url,
        }))
    }
}

fn err(key: &'static str, reason: String) -> ConfigError {
    ConfigError { key, reason }
}

/// Letters, digits and `_`, starting with a letter, not `oci_` or `oracle_` (Monitoring reserves
/// them; compared ignoring case, so a reserved prefix in another case is refused too).
fn check_namespace(ns: &str) -> Result<(), String> {
    let lower = ns.to_ascii_lowercase();
    if ns.len() > MAX_NAMESPACE_LEN {
        return Err(format!("longer than {MAX_NAMESPACE_LEN} characters"));
    }
    if !ns.starts_with(|c: char| c.is_ascii_alphabetic())
        || !ns.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Err(format!(
            "expected letters, digits and _ starting with a letter, got {}",
            shown(ns)
        ));
    }
    if lower.starts_with("oci_") || lower.starts_with("oracle_") {
        return Err(format!(
            "{} starts with a prefix Monitoring reserves (oci_, oracle_)",
            shown(ns)
        ));
    }
    Ok(())
}

/// `ocid1.compartment.<realm>..<id>` or `ocid1.tenancy.<realm>..<id>` (the root compartment).
fn check_compartment(ocid: &str) -> Result<(), String> {
    let refuse = || {
        format!(
            "expected a compartment or tenancy OCID (ocid1.compartment.<realm>..<id>), got {}",
            shown(ocid)
        )
    };
    let alnum = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    let rest = ocid
        .strip_prefix("ocid1.compartment.")
        .or_else(|| ocid.strip_prefix("ocid1.tenancy."))
        .ok_or_else(refuse)?;
    let (realm, id) = rest.split_once("..").ok_or_else(refuse)?;
    if ocid.len() > 255 || !alnum(realm) || !alnum(id) {
        return Err(refuse());
    }
    Ok(())
}

/// https to a `telemetry-ingestion.` host (http only to a loopback address, for tests): signed
/// requests go only to the service they are meant for.
fn check_ingestion_url(value: &str) -> Result<DomainUrl, String> {
    let url =
        DomainUrl::parse(value).map_err(|e| e.to_string().replacen("domain URL", "URL", 1))?;
    let host = url.host();
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if loopback
        || (url.as_str().starts_with("https://") && host.starts_with("telemetry-ingestion."))
    {
        Ok(url)
    } else {
        Err(format!(
            "{} is not a Monitoring ingestion endpoint (https://telemetry-ingestion.<region>.<realm domain>)",
            shown(value)
        ))
    }
}

/// The ingestion endpoint: `explicit` when set, else the region's
/// `https://telemetry-ingestion.{region}.{realm domain}`, from the same region and realm the
/// control plane's default comes from. `None` when no region is known.
pub fn ingestion_url(
    explicit: Option<&DomainUrl>,
    control_plane: Option<&DomainUrl>,
) -> Option<DomainUrl> {
    if let Some(url) = explicit {
        return Some(url.clone());
    }
    // identity.{region}.oci.{realm domain} → telemetry-ingestion.{region}.{realm domain}
    let host = control_plane?.host();
    let (region, realm) = host.strip_prefix("identity.")?.split_once(".oci.")?;
    DomainUrl::parse(&format!("https://telemetry-ingestion.{region}.{realm}")).ok()
}

/// What an invocation counted, before it becomes streams.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    /// `batch` or `reconcile`.
    pub kind: &'static str,
    /// Records (or reconciled users) by (outcome, domain dimension value).
    pub records: BTreeMap<(&'static str, String), u64>,
    /// Lingering credentials by type.
    pub lingering: BTreeMap<String, u64>,
    /// Revoked credentials by type.
    pub revoked: BTreeMap<String, u64>,
    /// 429 answers the call met.
    pub throttled: u64,
    /// The call's wall time.
    pub invocation_ms: u64,
}

impl Counts {
    /// A batch's counts, by each record's outcome and domain.
    pub fn from_batch(report: &Report) -> Self {
        let mut counts = Counts {
            kind: "batch",
            lingering: by_type(&report.lingering),
            revoked: by_type(&report.revoked),
            ..Counts::default()
        };
        for (&(outcome, ref domain), &n) in &report.records_by_domain {
            *counts.records.entry((outcome, domain.clone())).or_default() += n;
        }
        counts
    }

    /// A reconcile's counts: its users by outcome, under the first of the domain's names (as the
    /// request gave it, then the `idcs-` name its URL carries) that is a valid name or OCID.
    pub fn from_reconcile(report: &ReconcileReport, domain_values: &[String]) -> Self {
        let domain = domain_values
            .iter()
            .map(|v| domain_dimension(Some(v)))
            .find(|d| d != INVALID_DOMAIN)
            .unwrap_or_else(|| INVALID_DOMAIN.to_owned());
        let mut counts = Counts {
            kind: "reconcile",
            lingering: by_type(&report.lingering),
            revoked: by_type(&report.revoked),
            ..Counts::default()
        };
        for (outcome, n) in [
            (Outcome::Applied, report.applied),
            (Outcome::Unchanged, report.unchanged),
            (Outcome::Rejected, report.rejected),
            (Outcome::Failed, report.failed),
        ] {
            if n > 0 {
                counts.records.insert((outcome.as_str(), domain.clone()), n);
            }
        }
        counts
    }
}

/// Credential counts by type (the credentials extension's attribute names, a fixed set).
fn by_type(counts: &crate::decision::credentials::Counts) -> BTreeMap<String, u64> {
    counts
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(kind, n)| ((*kind).to_owned(), *n as u64))
        .collect()
}

/// A record's domain as a dimension value: a valid domain name or OCID as it is, else `invalid`.
pub(crate) fn domain_dimension(domain: Option<&str>) -> String {
    match domain {
        None => NO_DOMAIN.to_owned(),
        Some(d) if DomainName::parse(d).is_ok() || DomainOcid::parse(d).is_ok() => d.to_owned(),
        Some(_) => INVALID_DOMAIN.to_owned(),
    }
}

/// The streams of one invocation, all stamped `timestamp` (RFC 3339, now): records with a
/// count, lingering and revoked credentials when any, and always `throttled_requests` and
/// `invocation_ms` (so a dashboard sees every invocation, even one with nothing to count).
pub fn streams(config: &MetricsConfig, counts: &Counts, timestamp: &str) -> Vec<Value> {
    let stream = |name: &str, dimensions: Value, unit: &str, value: u64| {
        json!({
            "namespace": config.namespace,
            "compartmentId": config.compartment_id,
            "name": name,
            "dimensions": dimensions,
            "metadata": {"unit": unit},
            "datapoints": [{"timestamp": timestamp, "value": value as f64}],
        })
    };
    let mut out = Vec::new();
    for ((outcome, domain), n) in fold_records(&counts.records) {
        out.push(stream(
            "records",
            json!({"outcome": outcome, "domain": domain}),
            "count",
            n,
        ));
    }
    for (name, by_type) in [
        ("lingering_credentials", &counts.lingering),
        ("revoked_credentials", &counts.revoked),
    ] {
        for (kind, n) in by_type {
            out.push(stream(name, json!({"credential_type": kind}), "count", *n));
        }
    }
    let kind = json!({"kind": counts.kind});
    out.push(stream(
        "throttled_requests",
        kind.clone(),
        "count",
        counts.throttled,
    ));
    out.push(stream(
        "invocation_ms",
        kind,
        "milliseconds",
        counts.invocation_ms,
    ));
    out
}

/// Record streams beyond what [`MAX_CALLS`] calls hold (less the other streams' room) are folded
/// into the domain `other`, per outcome.
fn fold_records(
    records: &BTreeMap<(&'static str, String), u64>,
) -> BTreeMap<(&'static str, String), u64> {
    // Room for the credential types (6 each) and the two per-invocation streams.
    let room = MAX_STREAMS_PER_CALL * MAX_CALLS - 14 - 5;
    if records.len() <= room {
        return records.clone();
    }
    let mut by_size: Vec<_> = records.iter().collect();
    by_size.sort_by(|a, b| b.1.cmp(a.1));
    let mut out = BTreeMap::new();
    for (i, ((outcome, domain), n)) in by_size.into_iter().enumerate() {
        let domain = if i < room {
            domain.clone()
        } else {
            OTHER_DOMAIN.to_owned()
        };
        *out.entry((*outcome, domain)).or_default() += n;
    }
    out
}

/// `PostMetricData` bodies of at most [`MAX_STREAMS_PER_CALL`] streams each.
pub fn bodies(streams: Vec<Value>) -> Vec<Vec<u8>> {
    streams
        .chunks(MAX_STREAMS_PER_CALL)
        .map(|chunk| json!({"metricData": chunk}).to_string().into_bytes())
        .collect()
}

/// Now, as Monitoring wants a datapoint's time (RFC 3339, UTC, milliseconds).
pub fn timestamp_now() -> String {
    let now = time::OffsetDateTime::now_utc();
    let ms = now.millisecond();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    )
}

/// Posts each invocation's metrics through the shared transport (see the module documentation).
#[derive(Debug, Clone)]
pub struct Metrics {
    config: MetricsConfig,
    ingestion: DomainUrl,
    transport: Transport,
}

impl Metrics {
    /// Metrics for `config`, posted to `ingestion` (see [`ingestion_url`]) through `transport`.
    pub fn new(config: MetricsConfig, ingestion: DomainUrl, transport: Transport) -> Self {
        Self {
            config,
            ingestion,
            transport,
        }
    }

    /// 429 answers the transport has met so far (a call's count is the difference).
    pub fn throttled_so_far(&self) -> u64 {
        self.transport.throttled_answers()
    }

    /// Posts `counts`, waiting at most [`POST_WAIT`] and never past `deadline`; a failure is
    /// logged once, at warn level, and never retried after that. Returns whether every stream was
    /// accepted.
    pub async fn post(&self, counts: &Counts, deadline: Instant) -> bool {
        let started = Instant::now();
        let deadline = deadline.min(started + POST_WAIT);
        let result = if deadline <= started {
            Err("no time was left before the call's deadline".to_owned())
        } else {
            let bodies = bodies(streams(&self.config, counts, &timestamp_now()));
            let sends = bodies.into_iter().map(|body| self.send(body, deadline));
            match tokio::time::timeout_at(deadline, futures_util::future::join_all(sends)).await {
                Ok(results) => results.into_iter().collect::<Result<(), String>>(),
                Err(_) => Err(format!(
                    "{SERVICE} did not answer within {} ms; given up so the answer is not delayed",
                    deadline.saturating_duration_since(started).as_millis()
                )),
            }
        };
        match result {
            Ok(()) => {
                tracing::debug!(namespace = %self.config.namespace, "metrics posted");
                true
            }
            Err(error) => {
                tracing::warn!(error = %error, namespace = %self.config.namespace, "metrics not posted for this call");
                false
            }
        }
    }

    /// One `PostMetricData` call; an answer that lists refused streams is a failure too.
    async fn send(&self, body: Vec<u8>, deadline: Instant) -> Result<(), String> {
        let call = post_metric_data(&self.ingestion, body);
        let answer = self
            .transport
            .send(&call, deadline)
            .await
            .map_err(|f| f.to_string())?;
        let parsed: Value = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
        match parsed.get("failedMetricsCount").and_then(Value::as_u64) {
            Some(n) if n > 0 => Err(format!(
                "{SERVICE} refused {n} stream(s): {}",
                crate::transport::truncated(&parsed["failedMetrics"].to_string(), 300)
            )),
            _ => Ok(()),
        }
    }
}

tokio::task_local! {
    /// The counts of the call in progress, noted where its report is settled ([`note`]).
    static NOTED: std::cell::RefCell<Option<Counts>>;
}

/// Runs `work` (one invocation's answer) and returns the counts it [`note`]d.
pub async fn counting<F: std::future::Future>(work: F) -> (F::Output, Option<Counts>) {
    NOTED
        .scope(std::cell::RefCell::new(None), async move {
            let out = work.await;
            let counts = NOTED.with(|c| c.borrow_mut().take());
            (out, counts)
        })
        .await
}

/// Notes the call's counts where its report is settled; outside [`counting`] it does nothing.
pub fn note(counts: Counts) {
    let _ = NOTED.try_with(|c| *c.borrow_mut() = Some(counts));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(key, _)| *key == k)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    const COMPARTMENT: &str = "ocid1.compartment.oc1..aaaaaaaaexample";

    #[test]
    fn keys_are_validated_naming_the_key() {
        assert_eq!(MetricsConfig::from_lookup(&lookup(&[])).unwrap(), None);
        let on = MetricsConfig::from_lookup(&lookup(&[(KEY_COMPARTMENT, COMPARTMENT)]))
            .unwrap()
            .unwrap();
        assert_eq!(on.namespace, "user_capabilities");
        for (pairs, key) in [
            (
                &[(KEY_COMPARTMENT, "ocid1.user.oc1..x")][..],
                KEY_COMPARTMENT,
            ),
            (
                &[(KEY_COMPARTMENT, "ocid1.compartment.oc1..X/../")][..],
                KEY_COMPARTMENT,
            ),
            (&[(KEY_NAMESPACE, "oci_mine")][..], KEY_NAMESPACE),
            (&[(KEY_NAMESPACE, "Oracle_x")][..], KEY_NAMESPACE),
            (&[(KEY_NAMESPACE, "my-ns")][..], KEY_NAMESPACE),
            (&[(KEY_NAMESPACE, "1abc")][..], KEY_NAMESPACE),
            (
                &[(KEY_INGESTION_URL, "https://evil.example.com")][..],
                KEY_INGESTION_URL,
            ),
            (
                &[(
                    KEY_INGESTION_URL,
                    "http://telemetry-ingestion.x.oraclecloud.com",
                )][..],
                KEY_INGESTION_URL,
            ),
        ] {
            let pairs: &'static [(&'static str, &'static str)] =
                Box::leak(pairs.to_vec().into_boxed_slice());
            assert_eq!(
                MetricsConfig::from_lookup(&lookup(pairs)).unwrap_err().key,
                key,
                "{pairs:?}"
            );
        }
        for ok in [
            "https://telemetry-ingestion.us-ashburn-1.oraclecloud.com",
            "http://127.0.0.1:8080",
        ] {
            assert!(check_ingestion_url(ok).is_ok(), "{ok}");
        }
        assert!(check_namespace("user_capabilities_2").is_ok());
        assert!(check_compartment("ocid1.tenancy.oc1..aaaa").is_ok());
    }

    #[test]
    fn the_default_endpoint_follows_the_control_plane_region_and_realm() {
        let cp = DomainUrl::parse("https://identity.eu-frankfurt-1.oci.oraclecloud.com").unwrap();
        assert_eq!(
            ingestion_url(None, Some(&cp)).unwrap().as_str(),
            "https://telemetry-ingestion.eu-frankfurt-1.oraclecloud.com"
        );
        assert_eq!(ingestion_url(None, None), None);
    }

    #[test]
    fn streams_carry_the_documented_shape_and_at_most_fifty_a_call() {
        let config = MetricsConfig {
            compartment_id: COMPARTMENT.into(),
            namespace: "user_capabilities".into(),
            ingestion_url: None,
        };
        let mut counts = Counts {
            kind: "batch",
            throttled: 2,
            invocation_ms: 840,
            ..Counts::default()
        };
        for n in 0..120 {
            let domain = format!("idcs-{n:032x}");
            counts.records.insert(("applied", domain), 1);
        }
        counts.lingering.insert("apiKeys".into(), 3);
        let all = streams(&config, &counts, "2026-12-06T09:00:00.000Z");
        assert_eq!(all.len(), 123);
        let first = &all[0];
        assert_eq!(first["namespace"], "user_capabilities");
        assert_eq!(first["compartmentId"], COMPARTMENT);
        assert_eq!(first["name"], "records");
        assert_eq!(first["dimensions"]["outcome"], "applied");
        assert_eq!(first["datapoints"][0]["value"], 1.0);
        assert_eq!(
            first["datapoints"][0]["timestamp"],
            "2026-12-06T09:00:00.000Z"
        );
        let calls = bodies(all);
        assert_eq!(calls.len(), 3);
        for body in &calls {
            let v: Value = serde_json::from_slice(body).unwrap();
            assert!(v["metricData"].as_array().unwrap().len() <= MAX_STREAMS_PER_CALL);
        }
    }

    #[test]
    fn hostile_domains_are_neither_echoed_nor_unbounded() {
        assert_eq!(domain_dimension(Some("evil\"},{")), "invalid");
        assert_eq!(domain_dimension(None), "none");
        let d = "idcs-0123456789abcdef0123456789abcdef";
        assert_eq!(domain_dimension(Some(d)), d);
        let mut records = BTreeMap::new();
        for n in 0..1000u64 {
            records.insert(("failed", format!("idcs-{n:032x}")), n + 1);
        }
        let folded = fold_records(&records);
        assert!(folded.len() <= MAX_STREAMS_PER_CALL * MAX_CALLS);
        assert_eq!(folded.values().sum::<u64>(), records.values().sum::<u64>());
        assert!(folded.contains_key(&("failed", "other".to_owned())));
    }
}
