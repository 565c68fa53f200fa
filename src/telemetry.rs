//! Logging: `tracing` to stderr (the platform collects both streams), JSON by default.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber once; `RUST_LOG` overrides the default `info` level.
pub fn init(style: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let result = match style {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Text => builder.with_ansi(false).try_init(),
    };
    // A second init (tests) keeps the first subscriber.
    drop(result);
}

/// Routes panics through the log so they keep the log format; the message never includes handler data
/// beyond what the panic itself carries.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let message = crate::fdk::layers::panic_payload_text(info.payload());
        tracing::error!(%location, panic = %message, "panic");
    }));
}

/// `Fn-Fdk-Version` and `Fn-Fdk-Runtime` values as PRODUCT.md names them.
pub fn fdk_version() -> String {
    format!(
        "fdk-rust-oci-user-capabilities/{}",
        env!("CARGO_PKG_VERSION")
    )
}

pub fn fdk_runtime() -> String {
    format!("rust/{}", env!("OUC_RUSTC_VERSION"))
}
