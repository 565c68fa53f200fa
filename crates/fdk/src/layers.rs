//! Cross-cutting concerns as wrappers around a [`Handler`], so the request path stays about the
//! protocol: [`CatchPanic`] turns a panic into a handler error, [`Deadline`] cuts a call off at its
//! deadline. [`crate::router`] applies both; they are public so a caller composing its own stack can
//! reuse them.

use std::any::Any;
use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;

use crate::{CallContext, Handler, HandlerFuture, Payload};

/// The handler panicked; the FDK answers 502 and logs the panic's message.
#[derive(Debug, thiserror::Error)]
#[error("handler panicked: {message}")]
pub struct HandlerPanicked {
    message: String,
}

/// The handler did not finish before the call's deadline; the FDK answers 504.
#[derive(Debug, thiserror::Error)]
#[error("handler did not finish before the call deadline")]
pub struct DeadlineExceeded;

/// The text of a panic payload (`&str` and `String` payloads; anything else is named, not shown).
pub fn panic_payload_text(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "non-string panic payload"
    }
}

/// Catches a panic in the wrapped handler, whether it happens when the call starts or while its
/// future runs, and returns it as a [`HandlerPanicked`] error.
#[derive(Debug, Clone)]
pub struct CatchPanic<H>(pub H);

impl<H: Handler> Handler for CatchPanic<H> {
    fn call(&self, ctx: CallContext, payload: Payload) -> HandlerFuture {
        let started = std::panic::catch_unwind(AssertUnwindSafe(|| self.0.call(ctx, payload)));
        Box::pin(async move {
            let outcome = match started {
                Ok(future) => AssertUnwindSafe(future).catch_unwind().await,
                Err(panic) => Err(panic),
            };
            outcome.unwrap_or_else(|panic| {
                Err(Box::new(HandlerPanicked {
                    message: panic_payload_text(panic.as_ref()).to_string(),
                }) as _)
            })
        })
    }
}

/// Ends the wrapped handler's call at [`CallContext::deadline`] with a [`DeadlineExceeded`] error.
#[derive(Debug, Clone)]
pub struct Deadline<H>(pub H);

impl<H: Handler> Handler for Deadline<H> {
    fn call(&self, ctx: CallContext, payload: Payload) -> HandlerFuture {
        let deadline = ctx.deadline;
        let call = self.0.call(ctx, payload);
        Box::pin(async move {
            match tokio::time::timeout_at(deadline, call).await {
                Ok(result) => result,
                Err(_) => Err(Box::new(DeadlineExceeded) as _),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FnConfig, FnResponse, HandlerError};
    use std::time::Duration;
    use tokio::time::Instant;

    fn ctx(budget: Duration) -> CallContext {
        CallContext::for_test(Instant::now() + budget, FnConfig::default())
    }

    async fn ok(_: CallContext, _: Payload) -> Result<FnResponse, HandlerError> {
        Ok(FnResponse::new(
            axum::http::StatusCode::OK,
            "text/plain",
            "fine",
        ))
    }

    #[tokio::test]
    async fn panics_become_errors_with_their_message() {
        let late = CatchPanic(|_: CallContext, _: Payload| async {
            if true {
                panic!("late {}", 7);
            }
            Ok::<_, HandlerError>(FnResponse::new(
                axum::http::StatusCode::OK,
                "text/plain",
                "",
            ))
        });
        let err = late
            .call(
                ctx(Duration::from_secs(5)),
                Payload::Complete(Default::default()),
            )
            .await
            .unwrap_err();
        assert!(err.downcast_ref::<HandlerPanicked>().is_some());
        assert_eq!(err.to_string(), "handler panicked: late 7");

        struct Early;
        impl Handler for Early {
            fn call(&self, _: CallContext, _: Payload) -> HandlerFuture {
                panic!("before the future")
            }
        }
        let err = CatchPanic(Early)
            .call(
                ctx(Duration::from_secs(5)),
                Payload::Complete(Default::default()),
            )
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "handler panicked: before the future");
        let fine = CatchPanic(ok)
            .call(
                ctx(Duration::from_secs(5)),
                Payload::Complete(Default::default()),
            )
            .await;
        assert!(fine.is_ok());
    }

    #[tokio::test]
    async fn deadline_cuts_a_slow_call_and_lets_a_quick_one_through() {
        let slow = Deadline(|_: CallContext, _: Payload| async {
            tokio::time::sleep(Duration::from_secs(10)).await;
            ok(ctx(Duration::ZERO), Payload::Complete(Default::default())).await
        });
        let started = std::time::Instant::now();
        let err = slow
            .call(
                ctx(Duration::from_millis(50)),
                Payload::Complete(Default::default()),
            )
            .await
            .unwrap_err();
        assert!(err.downcast_ref::<DeadlineExceeded>().is_some());
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(Deadline(ok)
            .call(
                ctx(Duration::from_secs(5)),
                Payload::Complete(Default::default())
            )
            .await
            .is_ok());
    }

    #[test]
    fn payload_text_names_non_strings() {
        assert_eq!(panic_payload_text(&"a"), "a");
        assert_eq!(panic_payload_text(&String::from("b")), "b");
        assert_eq!(panic_payload_text(&3u8), "non-string panic payload");
    }
}
