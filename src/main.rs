//! Command line: `serve` (the function), and the operator commands.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use oci_user_capabilities::fdk::{self, FdkSettings, FnConfig, ListenerSpec};
use oci_user_capabilities::telemetry::{self, LogStyle};

#[derive(Parser, Debug)]
#[command(
    name = "oci-user-capabilities",
    version,
    about = "Enforce a least-privilege capability profile on OCI identity-domain users"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run as the OCI Function (Fn http-stream on the socket named by FN_LISTENER).
    Serve,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match cli.command {
        Command::Serve => serve(),
    }
}

/// One line on stderr, exit 2: bad usage or configuration.
fn refuse(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("oci-user-capabilities: {message}");
    ExitCode::from(2)
}

fn serve() -> ExitCode {
    let env = |k: &str| std::env::var(k).ok();
    let spec = match ListenerSpec::from_lookup(&env) {
        Ok(spec) => spec,
        Err(e) => return refuse(e),
    };
    telemetry::init(LogStyle::from_value(env("LOG_FORMAT").as_deref()));
    telemetry::install_panic_hook();

    // Two workers at most: the work is I/O bound apart from RSA signing, and Fn caps a container at 50
    // processes/threads. Blocking threads serve DNS look-ups only.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return refuse(format_args!("cannot start the async runtime: {e}")),
    };
    runtime.block_on(async {
        // Bind first: the platform gives the container 5 s to announce the socket.
        let listener = match spec.bind() {
            Ok(l) => l,
            Err(e) => return refuse(e),
        };
        let config = FnConfig::from_process_env();
        let settings = FdkSettings::new(telemetry::fdk_version(), telemetry::fdk_runtime(), config);
        let app = fdk::router(oci_user_capabilities::handler::placeholder, settings);
        tracing::info!(socket = %spec.announced.display(), "ready");
        let served = fdk::serve(listener, app, fdk::shutdown_signal()).await;
        spec.cleanup();
        match served {
            Ok(()) => {
                tracing::info!("stopped");
                ExitCode::SUCCESS
            }
            Err(e) => {
                tracing::error!(error = %e, "server failed");
                ExitCode::FAILURE
            }
        }
    })
}
