//! The function behind the socket: invocation body in, per-user report out.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;

use crate::action::apply::{log_report, to_json, Engine, Report};
use crate::action::reconcile::{
    domain_values, reconcile, ReconcileJob, DEFAULT_FILTER, MAX_PAGE_SIZE,
};
use crate::clients::control_plane::ResolveError;
use crate::config::Config;
use crate::fdk::{CallContext, FnResponse, HandlerError, Payload};
use crate::intake::audit::{parse_invocation, Invocation, ReconcileRequest, MAX_BODY_BYTES};
use crate::report::metrics::{self, Counts, Metrics};
use tokio::time::Instant;

/// The engine stops this long before the FDK's own cutoff, so a slow batch ends with its report (502
/// and every unfinished record named) rather than a bare 504.
pub const REPORT_MARGIN: Duration = Duration::from_millis(750);

/// Metrics are posted only until this long before the FDK's cutoff: the answer always leaves first.
pub const METRICS_MARGIN: Duration = Duration::from_millis(250);

/// Everything a call needs, built once at start.
#[derive(Debug, Clone)]
pub struct Function {
    /// The configuration, validated once at start.
    pub config: Arc<Config>,
    /// Applies the profile to targets; shared by every call (client, credentials, caches).
    pub engine: Engine,
    /// Posts each call's counts to OCI Monitoring; `None` without `METRICS_COMPARTMENT_ID`.
    pub metrics: Option<Metrics>,
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
        match answer {
            Ok(response) => Ok(response),
            Err(e) => e.into_answer(self.config.dry_run),
        }
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
        let deadline = ctx
            .deadline
            .checked_sub(REPORT_MARGIN)
            .unwrap_or(ctx.deadline);
        let report = match invocation {
            Invocation::Records(records) => {
                self.engine
                    .process_records(
                        &records,
                        &self.config.event_types,
                        &self.config.domains,
                        deadline,
                    )
                    .await
            }
            Invocation::Reconcile(request) => return self.reconcile(request, deadline).await,
        };
        log_report(&report);
        metrics::note(Counts::from_batch(&report));
        if report.needs_retry() {
            // The platform discards a 502 body: the full report goes to the log.
            tracing::error!(report = %to_json(&report), "records failed; the invocation fails so the platform retries it");
            return Err(CallError::RetryNeeded {
                failed: report.failed,
                received: report.received,
            });
        }
        Ok(FnResponse::json(StatusCode::OK, &to_json(&report)))
    }

    async fn reconcile(
        &self,
        request: ReconcileRequest,
        deadline: Instant,
    ) -> Result<FnResponse, CallError> {
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
        let job = ReconcileJob {
            domain_values: domain_values(&request.domain, &domain),
            domain,
            filter: request.filter.unwrap_or_else(|| DEFAULT_FILTER.to_string()),
            start_index: request.start_index.unwrap_or(1),
            max_users: request.max_users,
            page_size: MAX_PAGE_SIZE,
        };
        let report = reconcile(&self.engine, &job, deadline).await;
        tracing::info!(
            domain = %report.domain,
            scanned = report.scanned,
            applied = report.applied,
            unchanged = report.unchanged,
            rejected = report.rejected,
            failed = report.failed,
            lingering = %serde_json::to_string(&report.lingering).unwrap_or_default(),
            revoked = %serde_json::to_string(&report.revoked).unwrap_or_default(),
            next_start_index = report.next_start_index,
            error = report.error.as_deref().unwrap_or(""),
            "reconcile summary"
        );
        metrics::note(Counts::from_reconcile(&report, &job.domain_values));
        if report.needs_retry() {
            tracing::error!(report = %to_json(&report), "reconcile incomplete; the invocation fails so it can be retried from nextStartIndex");
            return Err(CallError::RetryNeeded {
                failed: report.failed as usize,
                received: report.scanned as usize,
            });
        }
        Ok(FnResponse::json(StatusCode::OK, &to_json(&report)))
    }
}
