//! The function behind the socket: invocation body in, per-user report out.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;

use crate::apply::{log_report, Engine, Report};
use crate::audit::{parse_invocation, Invocation, ReconcileRequest, MAX_BODY_BYTES};
use crate::config::Config;
use crate::control_plane::ResolveError;
use crate::fdk::{CallContext, FnResponse, HandlerError, Payload};
use crate::reconcile::{reconcile, ReconcileJob, DEFAULT_FILTER, MAX_PAGE_SIZE};
use tokio::time::Instant;

/// The engine stops this long before the FDK's own cutoff, so a slow batch ends with its report (502
/// and every unfinished record named) rather than a bare 504.
pub const REPORT_MARGIN: Duration = Duration::from_millis(750);

/// Everything a call needs, built once at start.
#[derive(Debug, Clone)]
pub struct Function {
    /// The configuration, validated once at start.
    pub config: Arc<Config>,
    /// Applies the profile to targets; shared by every call (client, credentials, caches).
    pub engine: Engine,
}

/// A batch with records that a retry could fix: the invocation fails so the platform retries it.
#[derive(Debug, thiserror::Error)]
#[error("{failed} of {received} records failed and need a retry (report logged above)")]
pub(crate) struct RetryNeeded {
    failed: usize,
    received: usize,
}

impl Function {
    /// Answers one invocation: 200 with the report when every record reached a final outcome
    /// (or the body is unusable), an error (the platform answers 502) when a retry could help.
    pub async fn call(
        &self,
        ctx: CallContext,
        payload: Payload,
    ) -> Result<FnResponse, HandlerError> {
        let dry_run = self.config.dry_run;
        let body = match payload {
            Payload::Complete(body) => body,
            Payload::TooLarge { received, .. } => {
                return Ok(unusable(
                    format!(
                        "body is {received} bytes; the limit is {MAX_BODY_BYTES} bytes (6 MiB)"
                    ),
                    dry_run,
                ))
            }
        };
        let invocation = match parse_invocation(&body) {
            Ok(i) => i,
            Err(e) => return Ok(unusable(e.to_string(), dry_run)),
        };
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
        if report.needs_retry() {
            // The platform discards a 502 body: the full report goes to the log.
            tracing::error!(report = %report.to_json(), "records failed; the invocation fails so the platform retries it");
            return Err(Box::new(RetryNeeded {
                failed: report.failed,
                received: report.received,
            }));
        }
        Ok(FnResponse::json(StatusCode::OK, &report.to_json()))
    }
}

/// The reconcile domain's OCID could not be resolved for a reason a retry can fix.
#[derive(Debug, thiserror::Error)]
#[error("reconcile.domain: {0}")]
pub struct DomainUnresolved(String);

impl Function {
    async fn reconcile(
        &self,
        request: ReconcileRequest,
        deadline: Instant,
    ) -> Result<FnResponse, HandlerError> {
        let route = match self.config.domains.resolve_for_reconcile(&request.domain) {
            Ok(route) => route,
            Err(reason) => {
                return Ok(unusable(
                    format!("reconcile.domain: {reason}"),
                    self.config.dry_run,
                ))
            }
        };
        let domain = match self.engine.domain_url(&route, deadline).await {
            Ok(url) => url,
            Err(ResolveError::Rejected(reason)) => {
                return Ok(unusable(
                    format!("reconcile.domain: {reason}"),
                    self.config.dry_run,
                ))
            }
            Err(ResolveError::Failed { reason, .. }) => {
                // A retry can fix it: fail the invocation so the caller retries.
                tracing::error!(reason = %reason, "reconcile.domain could not be resolved");
                return Err(Box::new(DomainUnresolved(reason)));
            }
        };
        let job = ReconcileJob {
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
            next_start_index = report.next_start_index,
            error = report.error.as_deref().unwrap_or(""),
            "reconcile summary"
        );
        if report.needs_retry() {
            tracing::error!(report = %report.to_json(), "reconcile incomplete; the invocation fails so it can be retried from nextStartIndex");
            return Err(Box::new(RetryNeeded {
                failed: report.failed as usize,
                received: report.scanned as usize,
            }));
        }
        Ok(FnResponse::json(StatusCode::OK, &report.to_json()))
    }
}

fn unusable(error: String, dry_run: bool) -> FnResponse {
    tracing::error!(error = %error, "invocation body cannot be processed; answering 200 so it is not retried");
    FnResponse::json(StatusCode::OK, &Report::unusable(error, dry_run).to_json())
}
