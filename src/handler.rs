//! The function behind the socket: invocation body in, per-user report out.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;

use crate::action::apply::{
    json_bytes, log_report, report_for_log, to_json, Engine, Report, START_MARGIN,
};
use crate::action::reconcile::{
    reconcile, ReconcileJob, ReconcileReport, StopReason, DEFAULT_FILTER, MAX_PAGE_SIZE,
};
use crate::action::tenancy::{fan_out, new_run_id, plan_domains, FanOutReport, Hop};
use crate::clients::control_plane::ResolveError;
use crate::clients::functions::Functions;
use crate::config::Config;
use crate::fdk::{CallContext, FnResponse, HandlerError, Payload};
use crate::intake::audit::{parse_invocation, Invocation, ReconcileRequest, MAX_BODY_BYTES};
use crate::intake::names::CompartmentOcid;
use crate::report::metrics::{self, Counts, Metrics};
use tokio::time::Instant;

/// The engine stops this long before the FDK's own cutoff, so a slow batch ends with its report (502
/// and every unfinished record named) rather than a bare 504.
pub const REPORT_MARGIN: Duration = Duration::from_millis(750);

/// Metrics are posted only until this long before the FDK's cutoff: the answer always leaves first.
pub const METRICS_MARGIN: Duration = Duration::from_millis(250);

/// A reconcile that may hand off stops its own work this much earlier, so the hand-off (and the
/// one `GetFunction` that may precede it) has time for its retries.
pub const HANDOFF_RESERVE: Duration = Duration::from_millis(1500);

/// The least time for work a reconcile that may hand off needs after every margin; with less, it
/// refuses to start rather than chain invocations that cannot progress.
pub const MIN_WORK: Duration = Duration::from_secs(1);

/// Everything a call needs, built once at start.
#[derive(Debug, Clone)]
pub struct Function {
    /// The configuration, validated once at start.
    pub config: Arc<Config>,
    /// Applies the profile to targets; shared by every call (client, credentials, caches).
    pub engine: Engine,
    /// Posts each call's counts to OCI Monitoring; `None` without `METRICS_COMPARTMENT_ID`.
    pub metrics: Option<Metrics>,
    /// Starts this function again, detached: a domain's reconcile per domain, and hand-offs.
    pub functions: Functions,
    /// The tenancy's OCID (the resource principal's `res_tenant`): the default compartment of a
    /// tenancy-wide reconcile; `None` when the credentials do not say.
    pub tenancy: Option<CompartmentOcid>,
}

/// How a call ends when it does not end with a report of final outcomes: the one place that decides
/// between "answer 200 so the platform never retries a body that cannot work" and "fail the invocation
/// (502) so the platform retries".
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The body can never be processed (not JSON, another shape, too large, a reconcile domain that is
    /// refused): 200 with `received: 0` and this error, logged at error level.
    #[error("{0}")]
    Unusable(String),
    /// Some records failed for a reason a retry can fix; the report was logged, since the platform
    /// discards a 502 body.
    #[error("{failed} of {received} records failed and need a retry (report logged above)")]
    RetryNeeded {
        /// Records (or reconciled users) that failed.
        failed: usize,
        /// Records received (or users scanned).
        received: usize,
    },
    /// The reconcile domain's OCID could not be resolved for a reason a retry can fix.
    #[error("reconcile.domain: {0}")]
    DomainUnresolved(String),
    /// A reconcile stopped before the end and could not hand the rest on (or may not: the hop
    /// limit); the log names the cursor to resume from.
    #[error("reconcile stopped before the end of the domain: {0}")]
    Incomplete(String),
    /// A tenancy-wide run could not list its domains, or start every domain's reconcile.
    #[error("tenancy reconcile: {0}")]
    TenancyIncomplete(String),
}

impl CallError {
    /// The platform's answer: 200 for an unusable body, a handler error (502) for the rest.
    fn into_answer(self, dry_run: bool) -> Result<FnResponse, HandlerError> {
        match self {
            CallError::Unusable(error) => {
                tracing::error!(error = %error, "invocation body cannot be processed; answering 200 so it is not retried");
                Ok(FnResponse::json(
                    StatusCode::OK,
                    &to_json(&Report::unusable(error, dry_run)),
                ))
            }
            retry => Err(Box::new(retry)),
        }
    }
}

impl Function {
    /// Handles one invocation (the FDK handler).
    pub async fn call(
        &self,
        ctx: CallContext,
        payload: Payload,
    ) -> Result<FnResponse, HandlerError> {
        let started = Instant::now();
        let fdk_deadline = ctx.deadline;
        let throttled_before = self.metrics.as_ref().map(Metrics::throttled_so_far);
        let (answer, counts) = metrics::counting(self.answer(ctx, payload)).await;
        if let Some(m) = &self.metrics {
            // A body that never became a report still counts as an invocation.
            let mut counts = counts.unwrap_or_else(|| Counts {
                kind: "batch",
                ..Counts::default()
            });
            counts.throttled = m.throttled_so_far() - throttled_before.unwrap_or(0);
            counts.invocation_ms = started.elapsed().as_millis() as u64;
            // Bounded (metrics::POST_WAIT) and clear of the FDK's cutoff; the answer is already
            // settled, and nothing the post does changes it.
            let deadline = fdk_deadline
                .checked_sub(METRICS_MARGIN)
                .unwrap_or(fdk_deadline);
            m.post(&counts, deadline).await;
        }
        let answer = match answer {
            Ok(response) => Ok(response),
            Err(e) => e.into_answer(self.config.dry_run),
        };
        memory::release();
        answer
    }

    async fn answer(&self, ctx: CallContext, payload: Payload) -> Result<FnResponse, CallError> {
        let body = match payload {
            Payload::Complete(body) => body,
            Payload::TooLarge { received, .. } => {
                return Err(CallError::Unusable(format!(
                    "body is {received} bytes; the limit is {MAX_BODY_BYTES} bytes (6 MiB)"
                )))
            }
        };
        let invocation = parse_invocation(&body).map_err(|e| CallError::Unusable(e.to_string()))?;
        // The records own what they need; the 6 MiB body is not held through the call.
        drop(body);
        let deadline = ctx
            .deadline
            .checked_sub(REPORT_MARGIN)
            .unwrap_or(ctx.deadline);
        let report = match invocation {
            Invocation::Records(records) => {
                self.engine
                    .process_records(
                        records,
                        &self.config.event_types,
                        &self.config.domains,
                        deadline,
                    )
                    .await
            }
            Invocation::Reconcile(request) => return self.reconcile(*request, deadline).await,
        };
        log_report(&report);
        metrics::note(Counts::from_batch(&report));
        if report.needs_retry() {
            // The platform discards a 502 body: the report goes to the log (every record also has
            // its own line, logged as it settled).
            let (failed, received) = (report.failed, report.received);
            tracing::error!(report = %report_for_log(report), "records failed; the invocation fails so the platform retries it");
            return Err(CallError::RetryNeeded { failed, received });
        }
        Ok(FnResponse::new(
            StatusCode::OK,
            "application/json",
            json_bytes(&report),
        ))
    }

    async fn reconcile(
        &self,
        request: ReconcileRequest,
        deadline: Instant,
    ) -> Result<FnResponse, CallError> {
        if request.domains.is_some() {
            return self.reconcile_all(request, deadline).await;
        }
        let route = self
            .config
            .domains
            .resolve_for_reconcile(&request.domain)
            .map_err(|reason| CallError::Unusable(format!("reconcile.domain: {reason}")))?;
        let domain = match self.engine.domain_url(&route, deadline).await {
            Ok(url) => url,
            Err(ResolveError::Rejected(reason)) => {
                return Err(CallError::Unusable(format!("reconcile.domain: {reason}")))
            }
            Err(ResolveError::Failed { reason, .. }) => {
                tracing::error!(reason = %reason, "reconcile.domain could not be resolved");
                return Err(CallError::DomainUnresolved(reason));
            }
        };
        let hop = Hop::of(&request);
        let job = ReconcileJob {
            domain_values: self.engine.route_values(&route, &request.domain, &domain),
            domain,
            filter: request
                .filter
                .clone()
                .unwrap_or_else(|| DEFAULT_FILTER.to_string()),
            start_index: request.start_index.unwrap_or(1),
            after: request.after.clone(),
            max_users: request.max_users,
            page_size: MAX_PAGE_SIZE,
        };
        // A bounded run (maxUsers) answers its caller; any other hands off at its deadline.
        let may_hand_off = request.max_users.is_none();
        let work_deadline = if may_hand_off {
            deadline.checked_sub(HANDOFF_RESERVE).unwrap_or(deadline)
        } else {
            deadline
        };
        if may_hand_off && work_deadline < Instant::now() + START_MARGIN + MIN_WORK {
            // Handing on a hop that can do nothing would chain empty invocations to the hop limit.
            let reason = format!(
                "the invocation's deadline leaves less than {} s of work after its margins (run {}, hop {}); raise the function's timeout",
                MIN_WORK.as_secs(),
                hop.run_id,
                hop.hop
            );
            tracing::error!(run_id = %hop.run_id, hop = hop.hop, reason = %reason, "reconcile deadline too short");
            return Err(CallError::Incomplete(reason));
        }
        let report = reconcile(&self.engine, &job, work_deadline).await;
        log_hop(&hop, &request, &report);
        metrics::note(Counts::from_reconcile(&report, &job.domain_values));
        let handing_off = may_hand_off
            && report.error.is_none()
            && report.stopped_because == Some(StopReason::Deadline);
        if handing_off && report.scanned == 0 {
            // A slow page can leave one hop without a user done; the hop limit bounds a chain of
            // them, and a deadline too short for any work was refused before starting.
            tracing::warn!(run_id = %hop.run_id, hop = hop.hop, "reconcile hop processed no user before its deadline; handing on");
        }
        if handing_off {
            return self.hand_off(&hop, &request, report, deadline).await;
        }
        if report.next_start_index.is_none() && report.error.is_none() {
            log_complete(&hop, &request, &report);
        }
        if report.needs_retry()
            || (report.next_start_index.is_none() && hop.totals(&report).failed > 0)
        {
            tracing::error!(report = %to_json(&report), "reconcile incomplete; the invocation fails so it can be retried from nextAfter (or nextStartIndex)");
            return Err(CallError::RetryNeeded {
                failed: report.failed as usize,
                received: report.scanned as usize,
            });
        }
        Ok(FnResponse::json(
            StatusCode::OK,
            &hop_answer(&hop, report, None),
        ))
    }

    /// Hands the rest of a domain's reconcile to the next invocation: 200 once it is accepted, 502
    /// (the cursor logged) when it is not, or when the hop limit is reached.
    async fn hand_off(
        &self,
        hop: &Hop,
        request: &ReconcileRequest,
        report: ReconcileReport,
        deadline: Instant,
    ) -> Result<FnResponse, CallError> {
        let next = hop.next_request(request, &report);
        let cursor = serde_json::to_string(&next.after).unwrap_or_default();
        let next_hop = hop.hop + 1;
        if next_hop > self.config.max_hops {
            let reason = format!(
                "run {} reached RECONCILE_MAX_HOPS ({}) with users left; resume with {{\"reconcile\": {}}}",
                hop.run_id,
                self.config.max_hops,
                serde_json::json!(next)
            );
            tracing::error!(run_id = %hop.run_id, hop = hop.hop, cursor = %cursor, reason = %reason, "reconcile hop limit reached");
            return Err(CallError::Incomplete(reason));
        }
        let body = serde_json::json!({ "reconcile": next }).to_string();
        match self
            .functions
            .invoke_detached(body.into_bytes(), deadline)
            .await
        {
            Ok(_) => {
                tracing::info!(run_id = %hop.run_id, domain = %request.domain, hop = hop.hop, next_hop, cursor = %cursor, "reconcile handed off");
                if report.failed > 0 {
                    // The next hops carry the count; the last one fails the run.
                    tracing::error!(report = %to_json(&report), "users failed in this hop");
                }
                Ok(FnResponse::json(
                    StatusCode::OK,
                    &hop_answer(hop, report, Some(next_hop)),
                ))
            }
            Err(reason) => {
                let reason = format!(
                    "{reason}; resume with {{\"reconcile\": {}}}",
                    serde_json::json!(next)
                );
                tracing::error!(run_id = %hop.run_id, hop = hop.hop, cursor = %cursor, reason = %reason, "reconcile hand-off failed");
                Err(CallError::Incomplete(reason))
            }
        }
    }

    /// `{"domains": "all"}`: one detached reconcile per ACTIVE domain of the compartment tree.
    async fn reconcile_all(
        &self,
        request: ReconcileRequest,
        deadline: Instant,
    ) -> Result<FnResponse, CallError> {
        let root =
            match (&request.compartment, &self.tenancy) {
                (Some(c), _) => CompartmentOcid::parse(c)
                    .map_err(|e| CallError::Unusable(format!("reconcile.compartment: {e}")))?,
                (None, Some(t)) => t.clone(),
                (None, None) => return Err(CallError::Unusable(
                    "reconcile.compartment: the credentials name no tenancy; give the compartment"
                        .into(),
                )),
            };
        let run_id = request.run_id.clone().unwrap_or_else(new_run_id);
        let (compartments, planned) = plan_domains(
            self.engine.control_plane(),
            &root,
            &self.config.domains,
            deadline,
        )
        .await
        .map_err(|reason| {
            tracing::error!(run_id = %run_id, reason = %reason, "tenancy reconcile: listing domains failed");
            CallError::TenancyIncomplete(reason)
        })?;
        // A fan-out counts no users itself (each domain's own invocation does); it still posts its
        // time and throttling as a reconcile.
        metrics::note(Counts {
            kind: "reconcile",
            ..Counts::default()
        });
        let domains = fan_out(&self.functions, &request, &run_id, planned, deadline).await;
        let count = |o: &str| domains.iter().filter(|d| d.outcome == o).count();
        let report = FanOutReport {
            run_id: run_id.clone(),
            compartment: root.as_str().to_owned(),
            compartments,
            started: count("started"),
            skipped: count("skipped"),
            failed: count("failed"),
            dry_run: self.config.dry_run,
            domains,
        };
        tracing::info!(run_id = %run_id, compartments, started = report.started, skipped = report.skipped, failed = report.failed, "tenancy reconcile started");
        if report.failed > 0 {
            tracing::error!(report = %to_json(&report), "tenancy reconcile: some domains could not be started");
            return Err(CallError::TenancyIncomplete(format!(
                "{} of {} domains could not be started (report logged)",
                report.failed,
                report.domains.len()
            )));
        }
        Ok(FnResponse::json(StatusCode::OK, &to_json(&report)))
    }
}

/// The hop's report with the run's id, the hop and, when handed off, the next hop.
fn hop_answer(hop: &Hop, report: ReconcileReport, handed_off_to: Option<u32>) -> serde_json::Value {
    let mut answer = to_json(&report);
    if let Some(map) = answer.as_object_mut() {
        map.insert("runId".into(), serde_json::json!(hop.run_id));
        map.insert("hop".into(), serde_json::json!(hop.hop));
        if let Some(next) = handed_off_to {
            map.insert("handedOffTo".into(), serde_json::json!(next));
        }
    }
    answer
}

/// One line per hop: where it started and stopped, and its counts.
fn log_hop(hop: &Hop, request: &ReconcileRequest, report: &ReconcileReport) {
    tracing::info!(
        run_id = %hop.run_id,
        domain = %request.domain,
        hop = hop.hop,
        cursor = %serde_json::to_string(&request.after).unwrap_or_default(),
        next_cursor = %serde_json::to_string(&report.next_after).unwrap_or_default(),
        scanned = report.scanned,
        applied = report.applied,
        unchanged = report.unchanged,
        rejected = report.rejected,
        failed = report.failed,
        lingering = %serde_json::to_string(&report.lingering).unwrap_or_default(),
        revoked = %serde_json::to_string(&report.revoked).unwrap_or_default(),
        next_start_index = report.next_start_index,
        stopped_because = ?report.stopped_because,
        error = report.error.as_deref().unwrap_or(""),
        "reconcile summary"
    );
}

/// The domain's last hop: its totals over every hop, the hops and the duration.
fn log_complete(hop: &Hop, request: &ReconcileRequest, report: &ReconcileReport) {
    let totals = hop.totals(report);
    tracing::info!(
        run_id = %hop.run_id,
        domain = %request.domain,
        url = %report.domain,
        hops = hop.hop,
        duration_s = hop.elapsed_secs(),
        scanned = totals.scanned,
        applied = totals.applied,
        unchanged = totals.unchanged,
        rejected = totals.rejected,
        failed = totals.failed,
        "reconcile complete"
    );
}

/// Process memory between calls. A function container serves call after call: what one call's
/// 39,000 records needed must not stay resident for the next. glibc keeps freed memory in per-thread
/// arenas and returns little of it on its own, so the process uses one arena (with two, a call's peak
/// could land in both, and the peak grew call after call), maps large blocks on their own, and gives
/// the free pages back after every call. musl (the deployed image) needs none of it; there these are
/// no-ops.
pub mod memory {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    mod glibc {
        extern "C" {
            fn mallopt(param: i32, value: i32) -> i32;
            fn malloc_trim(pad: usize) -> i32;
        }
        /// glibc's `M_ARENA_MAX`.
        const M_ARENA_MAX: i32 = -8;
        /// glibc's `M_MMAP_THRESHOLD`.
        const M_MMAP_THRESHOLD: i32 = -3;
        /// Blocks from this size up are mapped on their own and unmapped when freed. Set, it stays
        /// put: by default glibc raises it to the size of each large block freed, after which answer
        /// buffers (up to 1 MiB each, 16 at once) come from the heap and leave resident holes.
        const MMAP_THRESHOLD: i32 = 128 * 1024;

        pub(super) fn limit_arenas() {
            // SAFETY: mallopt only sets an allocator parameter; it is called once at start, before
            // the runtime's threads allocate.
            unsafe {
                mallopt(M_ARENA_MAX, 1);
                mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD);
            }
        }

        pub(super) fn release() {
            // SAFETY: malloc_trim only returns free memory to the system; it is thread-safe.
            unsafe {
                malloc_trim(0);
            }
        }
    }

    /// At start: one malloc arena (each thread otherwise gets its own, and each keeps what it once
    /// held), and a fixed threshold for mapping large blocks on their own.
    pub fn limit_arenas() {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        glibc::limit_arenas();
    }

    /// After a call: free pages go back to the system.
    pub fn release() {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        glibc::release();
    }
}
