//! Logging: `tracing` to stderr (the platform collects both streams), JSON by default.

use std::fmt::Write as _;

use tracing_subscriber::field::MakeExt;
use tracing_subscriber::fmt::format::{debug_fn, Writer};
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
        LogFormat::Text => builder
            .with_ansi(false)
            .fmt_fields(
                debug_fn(
                    |w: &mut Writer<'_>,
                     field: &tracing::field::Field,
                     value: &dyn std::fmt::Debug| {
                        let text = escape_control(&format!("{value:?}"));
                        match field.name() {
                            "message" => w.write_str(&text),
                            name => write!(w, "{name}={text}"),
                        }
                    },
                )
                .delimited(" "),
            )
            .try_init(),
    };
    // A second init (tests) keeps the first subscriber.
    drop(result);
}

/// Text logs are one line per event: a value holding a line break or a terminal escape (an error
/// detail from a server, say) is written with those characters escaped, so it cannot forge a line
/// or recolour the terminal.
pub fn escape_control(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() || c == '\u{2028}' || c == '\u{2029}' => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
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

/// The `Fn-Fdk-Version` value as PRODUCT.md names it: this function and its version.
pub fn fdk_version() -> String {
    format!(
        "fdk-rust-oci-user-capabilities/{}",
        env!("CARGO_PKG_VERSION")
    )
}

/// The `Fn-Fdk-Runtime` value as PRODUCT.md names it: the Rust compiler version it was built with.
pub fn fdk_runtime() -> String {
    format!("rust/{}", env!("OUC_RUSTC_VERSION"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_cannot_forge_a_text_line() {
        let forged = "bad\n2026-01-01T00:00:00Z  INFO record outcome=applied\r\u{1b}[31mred\u{7f}\u{85}\u{2028}";
        let escaped = escape_control(forged);
        assert!(
            !escaped.chars().any(|c| c.is_control() || c == '\u{2028}'),
            "{escaped}"
        );
        assert_eq!(
            escaped,
            "bad\\n2026-01-01T00:00:00Z  INFO record outcome=applied\\r\\u{1b}[31mred\\u{7f}\\u{85}\\u{2028}"
        );
        assert_eq!(escape_control("plain – ünïcode"), "plain – ünïcode");
    }
}
