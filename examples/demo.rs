//! The function doing its job end to end, locally, in one command: `cargo run --example demo`.
//!
//! Starts a local identity domain that checks every request's OCI signature, seeded with the users
//! that `examples/payloads/sch-batch.json` names; starts the real function binary as the Fn platform
//! would (its own socket directory, an environment built from scratch, the throwaway test key and
//! token of the test suite as its resource principal); posts the batch over the Unix socket with the
//! platform's headers; prints each user's capabilities before and after, and the function's answer.
//! Loopback only: no network, no credentials. `-- --dry-run` runs the function with `DRY_RUN=true`;
//! `-- --log` also prints the function's log; `-- KEY=VALUE` sets function configuration (for example
//! `CAPABILITIES=api_keys=off`). The same code runs in the test suite
//! (`tests/it/demo.rs`), so this output cannot drift from what the function does.

// The support module is shared with the test binary; its `pub` items are for the tests.
#![allow(unreachable_pub)]

#[path = "../tests/it/support/mod.rs"]
mod support;

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Instant;

use clap::Parser;

use support::demo::{self, Options};

#[derive(Parser, Debug)]
#[command(
    about = "Run the function end to end against a local, signature-verifying identity domain"
)]
struct Args {
    /// Start the function with DRY_RUN=true: users are read and reported, never written.
    #[arg(long)]
    dry_run: bool,
    /// Also print the function's log (LOG_FORMAT=text).
    #[arg(long)]
    log: bool,
    /// The function binary; by default the one cargo builds beside this example.
    #[arg(long)]
    binary: Option<PathBuf>,
    /// Function configuration to try, e.g. `CAPABILITIES=api_keys=off` (see the README's table).
    #[arg(value_name = "KEY=VALUE", value_parser = config_pair)]
    config: Vec<(String, String)>,
}

fn config_pair(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))
}

/// `target/<profile>/oci-user-capabilities`, brought up to date first when run through cargo: cargo
/// builds an example's package library but not its binaries. The binary is built together with this
/// example so both get the same dependency features (those of `cargo test` too); built alone, it
/// would get another feature set and every later build would recompile part of the tree.
fn function_binary() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("own path: {e}"))?;
    let profile_dir = exe
        .parent()
        .and_then(|examples| examples.parent())
        .ok_or("cannot find the target directory")?;
    let binary = profile_dir.join("oci-user-capabilities");
    if let Some(cargo) = std::env::var_os("CARGO") {
        let mut build = Command::new(cargo);
        // `cargo run` gives this process the package's build-time variables; passed on, they reach the
        // build scripts (ring's tracks CARGO_MANIFEST_DIR) and every later build would recompile them.
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy().into_owned();
            if key.starts_with("CARGO_PKG_")
                || matches!(
                    key.as_str(),
                    "CARGO_MANIFEST_DIR"
                        | "CARGO_MANIFEST_PATH"
                        | "CARGO_CRATE_NAME"
                        | "CARGO_BIN_NAME"
                        | "CARGO_PRIMARY_PACKAGE"
                        | "CARGO_RUSTC_CURRENT_DIR"
                        | "OUT_DIR"
                )
            {
                build.env_remove(key);
            }
        }
        build.args([
            "build",
            "--quiet",
            "--bin",
            "oci-user-capabilities",
            "--example",
            "demo",
        ]);
        match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") => {}
            Some("release") => {
                build.arg("--release");
            }
            Some(other) => {
                build.args(["--profile", other]);
            }
            None => {}
        }
        let status = build
            .status()
            .map_err(|e| format!("cargo build failed to start: {e}"))?;
        if !status.success() {
            return Err(format!("cargo build --bin oci-user-capabilities: {status}"));
        }
    }
    if binary.exists() {
        Ok(binary)
    } else {
        Err(format!(
            "{} is missing: run `cargo build --bin oci-user-capabilities` (or pass --binary)",
            binary.display()
        ))
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    let binary = match args.binary.map_or_else(function_binary, Ok) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("demo: {e}");
            return ExitCode::from(2);
        }
    };
    let started = Instant::now();
    let run = match demo::run(&Options {
        binary,
        dry_run: args.dry_run,
        config: args.config,
    })
    .await
    {
        Ok(run) => run,
        Err(e) => {
            eprintln!("demo: {e}");
            return ExitCode::FAILURE;
        }
    };
    print!("{}", demo::render(&run));
    if args.log {
        println!("\nThe function's log:\n{}", run.log.trim_end());
    }
    eprintln!(
        "\ndemo: socket ready {:.1} ms after the spawn, call {:.1} ms, {:.0} ms in all",
        run.ready_after.as_secs_f64() * 1e3,
        run.call.as_secs_f64() * 1e3,
        started.elapsed().as_secs_f64() * 1e3
    );
    if run.status == 200 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
