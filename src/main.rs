//! Command line: `serve` (the function), `plan` (offline), and the operator commands `apply`,
//! `reconcile` and `report` (read only). Exit codes: 0 done, 1 some record failed, 2 bad usage or configuration.

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use oci_user_capabilities::action::apply::{log_report, to_json, Engine, Report};
use oci_user_capabilities::action::reconcile::{
    domain_values, reconcile, ReconcileJob, ReconcileReport, DEFAULT_FILTER, MAX_PAGE_SIZE,
};
use oci_user_capabilities::action::tenancy::plan_domains;
use oci_user_capabilities::clients::control_plane::{self, ResolveError};
use oci_user_capabilities::clients::functions::{self, Functions};
use oci_user_capabilities::clients::identity_domain::{
    BuildError, ClientSettings, IdentityDomainClient,
};
use oci_user_capabilities::config::{
    near_misses, Config, ConfigError, DomainRoute, LogFormat, PolicyFile, KEY_CONTROL_PLANE,
};
use oci_user_capabilities::decision::credentials::{add_counts, Counts};
use oci_user_capabilities::fdk::{Fdk, RunError, StartError};
use oci_user_capabilities::handler::Function;
use oci_user_capabilities::intake::audit::Cursor;
use oci_user_capabilities::intake::audit::{parse_invocation, Invocation};
use oci_user_capabilities::intake::names::{CompartmentOcid, DomainUrl};
use oci_user_capabilities::report::html;
use oci_user_capabilities::report::metrics::{
    ingestion_url, Metrics, MetricsConfig, KEY_COMPARTMENT, KEY_INGESTION_URL,
};
use oci_user_capabilities::report::posture::{self, PolicyShown, ScanJob};
use oci_user_capabilities::report::progress::Progress;
use oci_user_capabilities::report::telemetry;
use oci_user_capabilities::signer::{
    default_oci_config_path, ApiKeyProvider, CredentialError, CredentialKind, CredentialsProvider,
    ResourcePrincipal,
};

#[derive(Parser, Debug)]
#[command(
    name = "oci-user-capabilities",
    version,
    about = "Enforce a least-privilege capability profile on OCI identity-domain users",
    long_about = "Enforce a least-privilege capability profile on OCI identity-domain users.\n\n\
        The profile and the other settings come from the same environment variables as the function's \
        configuration (CAPABILITIES, EVENT_TYPES, DOMAINS, IDENTITY_DOMAIN_URL_TEMPLATE, DRY_RUN, \
        MAX_CONCURRENCY, MAX_REQUESTS_PER_SECOND, LOG_FORMAT, IDENTITY_CONTROL_PLANE_URL, POLICY, \
        TAG_NAMESPACE, CREDENTIALS). The policy that decides each user's profile is the one compiled in from \
        policies/capabilities.toml, replaced whole by POLICY (the same TOML) or by --policy FILE on \
        plan, apply and reconcile."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run as the OCI Function (Fn http-stream on the socket named by FN_LISTENER).
    #[command(long_about = SERVE_HELP)]
    Serve,
    /// Show, offline, what the function would do with a payload: no network, no credentials.
    Plan {
        /// Payload file (a Service Connector batch, one audit record, or a reconcile request); `-` or
        /// nothing reads standard input.
        file: Option<PathBuf>,
        /// Policy file (TOML) replacing the baked-in policy and POLICY.
        #[arg(long, value_name = "FILE")]
        policy: Option<PathBuf>,
    },
    /// Process a payload against the identity domains now, as the function would.
    Apply {
        /// Payload file; `-` or nothing reads standard input.
        file: Option<PathBuf>,
        #[command(flatten)]
        run: RunOptions,
    },
    /// Bring every matching user of one identity domain (or of every ACTIVE domain of a
    /// compartment tree) to the profile, page by page.
    Reconcile {
        /// The identity domain: its URL, e.g. https://idcs-….identity.oraclecloud.com (http only to
        /// loopback), a name in DOMAINS, or its OCID (resolved through the IAM control plane).
        #[arg(
            long,
            required_unless_present = "all_domains",
            conflicts_with = "all_domains"
        )]
        domain: Option<String>,
        /// Every ACTIVE identity domain of the compartment tree, one after another (DOMAINS, when
        /// set, still limits which).
        #[arg(long)]
        all_domains: bool,
        /// With --all-domains: the root of the compartment tree [default: the tenancy]
        #[arg(long, value_name = "OCID", requires = "all_domains")]
        compartment: Option<String>,
        /// SCIM filter selecting the users [default: JIT-created users]
        #[arg(long)]
        filter: Option<String>,
        /// Stop after this many users (the report says where to continue).
        #[arg(long)]
        max_users: Option<u64>,
        /// 1-based index to start from (a previous run's nextStartIndex).
        #[arg(long, default_value_t = 1)]
        start_index: u64,
        /// Users per page (at most 1000).
        #[arg(long, default_value_t = MAX_PAGE_SIZE, value_parser = clap::value_parser!(u64).range(1..=1000))]
        page_size: u64,
        #[command(flatten)]
        run: RunOptions,
    },
    /// Write a read-only posture report of one identity domain: every user against the policy.
    #[command(long_about = REPORT_HELP)]
    Report {
        /// The identity domain: its URL, a name in DOMAINS, a domain name or its OCID.
        #[arg(long)]
        domain: String,
        /// SCIM filter narrowing the users [default: every user]
        #[arg(long)]
        filter: Option<String>,
        /// Where to write it: FILE.html, FILE.csv or FILE.json (the name decides the format); `-`
        /// or nothing prints JSON on standard output.
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Users per page (at most 1000).
        #[arg(long, default_value_t = MAX_PAGE_SIZE, value_parser = clap::value_parser!(u64).range(1..=1000))]
        page_size: u64,
        #[command(flatten)]
        auth: AuthOptions,
    },
}

/// Every variable `serve` reads, with its default (PRODUCT.md's configuration table).
const SERVE_HELP: &str = "Run as the OCI Function: the Fn http-stream protocol on the Unix socket named by \
FN_LISTENER. Configuration and credentials are checked before the socket is created; a bad value stops \
the process with one line naming the key (exit 2).

Function configuration (fn config keys, read as environment variables):
  CAPABILITIES                  the policy's default profile, e.g. api_keys=on,smtp_credentials=off;
                                names not listed are unmanaged [default: api_keys=on,auth_tokens=on,
                                console_password=off,customer_secret_keys=off,db_credentials=off,
                                oauth2_client_credentials=off,smtp_credentials=off]
  EVENT_TYPES                   names that select a record (data.eventName, additionalDetails.eventId,
                                last segment of type/eventType) [default: UserJit,createuser]
  DOMAINS                       allow-list: idcs-<32 hex>, a domain OCID, or NAME=URL [default: unset,
                                any idcs-<32 hex> domain and any domain OCID the control plane resolves]
  IDENTITY_DOMAIN_URL_TEMPLATE  URL for a domain name, {domain} replaced
                                [default: https://{domain}.identity.oraclecloud.com]
  IDENTITY_CONTROL_PLANE_URL    where domain OCIDs are resolved (GetDomain); https, or http to
                                loopback [default: https://identity.{region}.oci.oraclecloud.com,
                                region from OCI_RESOURCE_PRINCIPAL_REGION]
  POLICY                        the whole capability policy as TOML: default, then [[rule]]s matching
                                users, groups, domains, federated, service_user [default: the built-in
                                policies/capabilities.toml]
  TAG_NAMESPACE                 defined-tag namespace for per-user overrides: <ns>.<capability> = yes/no,
                                <ns>.exempt = yes [default: unset]
  CREDENTIALS                   credentials a user already holds for a capability the profile turns
                                off: report (count them, log their ids), revoke (delete them after
                                the capability is off; needs a role that may delete other users'
                                credentials, see the README) or off (never read them) [default: report]
  DRY_RUN                       true: read and report, never write [default: false]
  MAX_CONCURRENCY               users processed at once, 1-64 [default: 4]
  MAX_REQUESTS_PER_SECOND       client-side request cap, 0.1-10000, or 0/off [default: 20]
  LOG_FORMAT                    json or text [default: json]
  METRICS_COMPARTMENT_ID        compartment (or tenancy) OCID to post each invocation's counts to, as
                                OCI Monitoring custom metrics [default: unset, no metrics]
  METRICS_NAMESPACE             the metrics' namespace: letters, digits and _, starting with a letter,
                                not oci_ or oracle_ [default: user_capabilities]
  MONITORING_INGESTION_URL      where metrics are posted; https to telemetry-ingestion.*, or http to
                                loopback [default: https://telemetry-ingestion.{region}.oraclecloud.com]
  FUNCTION_INVOKE_ENDPOINT      the function's own invoke endpoint for reconcile hand-offs: an https
                                host under oci.oraclecloud.com [default: unset, resolved once from
                                FUNCTIONS_URL]
  FUNCTIONS_URL                 where the invoke endpoint is resolved (GetFunction)
                                [default: https://functions.{region}.oci.oraclecloud.com]
  RECONCILE_MAX_HOPS            most hand-offs one domain's reconcile may chain, 1-10000 [default: 500]
  RUST_LOG                      log filter [default: info]

Set by the platform:
  FN_LISTENER                   unix:<socket path> (required)
  FN_FN_ID                      the function's OCID (hand-offs invoke it)
  FN_FORMAT                     http-stream, or empty
  FN_LOGFRAME_NAME, FN_LOGFRAME_HDR   log-frame line written before each call's output
  OCI_RESOURCE_PRINCIPAL_VERSION      2.2 (required)
  OCI_RESOURCE_PRINCIPAL_RPST         the session token, or a path to it (required)
  OCI_RESOURCE_PRINCIPAL_PRIVATE_PEM  the session key, or a path to it (required)
  OCI_RESOURCE_PRINCIPAL_PRIVATE_PEM_PASSPHRASE   its passphrase, or a path to it [default: none]
  OCI_RESOURCE_PRINCIPAL_REGION       the region, e.g. us-ashburn-1 (also names the control plane)
  OCI_REGION_METADATA                 JSON naming the realm's domain [default: oraclecloud.com]
A value starting with / is a path; anything else is the content itself.";

const REPORT_HELP: &str = "Write a read-only posture report of one identity domain: every user (or those \
--filter selects) against the profile the policy decides for it, the rule or tag that decided, and \
exemptions. The listing is read page by page (GET /admin/v1/Users, sorted by creation); nothing is \
written to the domain. --output FILE.html is one self-contained page (inline CSS, an inline SVG chart, \
no script, nothing fetched); FILE.csv and FILE.json carry the same rows. Progress goes to stderr. \
Exit 1 when the listing could not be read to its end (the report says where it stopped).";

/// How an operator command signs (the part of [`RunOptions`] that `report` shares).
#[derive(Args, Debug)]
struct AuthOptions {
    /// Policy file (TOML) replacing the baked-in policy and POLICY.
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// How to sign requests [default: resource-principal when its variables are set, else api-key]
    #[arg(long, value_enum)]
    auth: Option<AuthKind>,
    /// OCI config file for api-key and security-token auth [default: ~/.oci/config]
    #[arg(long)]
    config_file: Option<PathBuf>,
    /// Profile in the OCI config file.
    #[arg(long, default_value = "DEFAULT")]
    profile: String,
}

#[derive(Args, Debug)]
struct RunOptions {
    /// Read and report, never write.
    #[arg(long)]
    dry_run: bool,
    /// Policy file (TOML) replacing the baked-in policy and POLICY.
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// How to sign requests [default: resource-principal when its variables are set, else api-key]
    #[arg(long, value_enum)]
    auth: Option<AuthKind>,
    /// OCI config file for api-key and security-token auth [default: ~/.oci/config]
    #[arg(long)]
    config_file: Option<PathBuf>,
    /// Profile in the OCI config file.
    #[arg(long, default_value = "DEFAULT")]
    profile: String,
    /// Output format [default: table on a terminal, else json]
    #[arg(long, value_enum)]
    output: Option<OutputKind>,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum AuthKind {
    ApiKey,
    SecurityToken,
    ResourcePrincipal,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum OutputKind {
    Json,
    Table,
}

fn main() -> ExitCode {
    oci_user_capabilities::handler::memory::limit_arenas();
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
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!(
                "oci-user-capabilities: {}",
                oci_user_capabilities::signer::ErrorChain(&e)
            );
            e.exit_code()
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode, CliError> {
    match cli.command {
        Command::Serve => serve(),
        Command::Plan { file, policy } => plan(file, policy),
        Command::Apply { file, run } => operator(run, |ctx| Box::pin(apply(ctx, file))),
        Command::Reconcile {
            domain,
            all_domains: _,
            compartment,
            filter,
            max_users,
            start_index,
            page_size,
            run,
        } => {
            let job = ReconcileArgs {
                domain,
                compartment,
                filter,
                max_users,
                start_index,
                page_size,
            };
            operator(run, move |ctx| Box::pin(reconcile_command(ctx, job)))
        }
        Command::Report {
            domain,
            filter,
            output,
            page_size,
            auth,
        } => report(domain, filter, output, page_size, auth),
    }
}

fn report(
    domain: String,
    filter: Option<String>,
    output: Option<PathBuf>,
    page_size: u64,
    auth: AuthOptions,
) -> Result<ExitCode, CliError> {
    // Usage mistakes stop before any credential is read or request sent.
    let output = report_output(output)?;
    let args = ReportArgs {
        domain,
        filter,
        output,
        page_size,
        policy_source: policy_source(auth.policy.as_deref()),
    };
    // Reading only: the dry-run switch is on as a second guard.
    let run = RunOptions {
        dry_run: true,
        policy: auth.policy,
        auth: auth.auth,
        config_file: auth.config_file,
        profile: auth.profile,
        output: None,
    };
    operator(run, move |ctx| Box::pin(report_command(ctx, args)))
}

/// Why a command stopped before doing its job: bad usage or configuration (exit 2), or a server that
/// failed after it started (exit 1). The message is one line naming the flag, key or file.
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Start(#[from] StartError),
    #[error(transparent)]
    Credentials(#[from] CredentialError),
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
    #[error(transparent)]
    Client(#[from] BuildError),
    #[error("the server failed")]
    Serve(#[source] RunError),
}

impl CliError {
    fn usage(message: impl std::fmt::Display) -> Self {
        CliError::Usage(message.to_string())
    }

    fn exit_code(&self) -> ExitCode {
        match self {
            CliError::Serve(_) => ExitCode::FAILURE,
            _ => ExitCode::from(2),
        }
    }
}

fn env(key: &str) -> Option<String> {
    std::env::var(key).ok()
}

/// One warning per environment variable that looks like a configuration key but is not one
/// (`CAPABILITY`, `event_types`, `MAX_CONCURENCY`): it is ignored, and the operator should know.
fn warn_near_misses() {
    for miss in env_near_misses() {
        tracing::warn!(variable = %miss.found, meant = miss.meant, "{miss}");
    }
}

/// [`near_misses`] among the environment's variable names, in name order.
fn env_near_misses() -> Vec<oci_user_capabilities::config::NearMiss> {
    let mut names: Vec<String> = std::env::vars_os()
        .filter_map(|(name, _)| name.into_string().ok())
        .collect();
    names.sort();
    near_misses(names.iter().map(String::as_str))
}

/// The default profile as the start line states it, and the capabilities it leaves to each user
/// (`CAPABILITIES=api_keys=off` manages one and leaves seven).
fn profile_fields(config: &Config) -> (String, String) {
    let profile = &config.policy.default;
    let unmanaged = profile.unmanaged_names();
    let unmanaged = if unmanaged.is_empty() {
        "none".to_owned()
    } else {
        format!("{} (left as each user has them)", unmanaged.join(","))
    };
    (profile.describe(), unmanaged)
}

fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    // Two workers at most: the work is I/O bound apart from RSA signing (about 0.35 ms per request,
    // done in place on the workers), and Fn caps a container at 50 processes/threads. Two blocking
    // threads serve DNS look-ups.
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(2)
        .enable_all()
        .build()
        .map_err(CliError::Runtime)
}

fn client_settings(config: &Config) -> ClientSettings {
    ClientSettings {
        max_requests_per_second: config.max_requests_per_second,
        group_rates: vec![(
            oci_user_capabilities::clients::scim_bulk::BULK_GROUP,
            config.bulk.requests_per_second,
        )],
        user_agent: format!("oci-user-capabilities/{}", env!("CARGO_PKG_VERSION")),
        ..ClientSettings::default()
    }
}

/// The control plane for domain OCIDs: IDENTITY_CONTROL_PLANE_URL, else the region's. A DOMAINS
/// entry that is a bare OCID needs one, so its absence then stops the start.
fn control_plane_base(
    config: &Config,
    region: Option<&str>,
) -> Result<Result<DomainUrl, String>, CliError> {
    let metadata = env("OCI_REGION_METADATA");
    let base = control_plane::base_url(
        config.control_plane_url.as_ref(),
        region,
        metadata.as_deref(),
    )
    .map_err(|e| CliError::usage(format_args!("cannot derive {KEY_CONTROL_PLANE}: {e}")))?;
    let base = base.ok_or_else(|| {
        format!("{KEY_CONTROL_PLANE} is unset and no region is known to derive it from")
    });
    match &base {
        Err(why) if config.domains.needs_control_plane() => Err(CliError::usage(format_args!(
            "DOMAINS lists a domain OCID to resolve, but {why}"
        ))),
        _ => Ok(base),
    }
}

/// Where metrics go, when `METRICS_COMPARTMENT_ID` is set: `MONITORING_INGESTION_URL`, else the
/// region's ingestion endpoint (the same region and realm as the control plane's default).
fn metrics_endpoint(
    config: &Config,
    control_plane: Option<&DomainUrl>,
) -> Result<Option<(MetricsConfig, DomainUrl)>, CliError> {
    let Some(settings) = config.metrics.clone() else {
        return Ok(None);
    };
    match ingestion_url(settings.ingestion_url.as_ref(), control_plane) {
        Some(url) => Ok(Some((settings, url))),
        None => Err(CliError::usage(format_args!(
            "{KEY_COMPARTMENT} is set, but {KEY_INGESTION_URL} is unset and no region is known to derive it from"
        ))),
    }
}

/// The Functions management endpoint: FUNCTIONS_URL, else the region's.
fn functions_base(config: &Config, region: Option<&str>) -> Result<DomainUrl, String> {
    match (&config.functions_url, region) {
        (Some(url), _) => Ok(url.clone()),
        (None, Some(region)) => functions::default_url(region),
        (None, None) => {
            Err("FUNCTIONS_URL is unset and no region is known to derive it from".into())
        }
    }
}

fn serve() -> Result<ExitCode, CliError> {
    let fdk = Fdk::from_env(telemetry::fdk_version(), telemetry::fdk_runtime())?;
    // Configuration and credentials are checked before the socket exists: a function that cannot work
    // must not look ready. Both are quick (a few small files, one key parse).
    let config = Config::from_lookup(&env)?;
    // Logging first: loading the credentials may warn (a token already expired).
    telemetry::init(config.log_format);
    telemetry::install_panic_hook();
    warn_near_misses();
    let credentials = ResourcePrincipal::from_env(&env, std::time::SystemTime::now())?;
    let control_plane_base = control_plane_base(&config, credentials.region())?;
    let metrics_endpoint = metrics_endpoint(&config, control_plane_base.as_ref().ok())?;
    let functions_url = functions_base(&config, credentials.region());
    let tenancy = credentials
        .claims()
        .res_tenant
        .and_then(|t| CompartmentOcid::parse(&t).ok());
    runtime()?.block_on(async {
        let bound = fdk.bind()?;
        // After the bind: the TLS client set-up is the slowest part of the start.
        let client = IdentityDomainClient::new(Arc::new(credentials), client_settings(&config))?;
        let (profile, unmanaged) = profile_fields(&config);
        let rules = config.policy.rules.len();
        let metrics = metrics_endpoint
            .map(|(settings, url)| Metrics::new(settings, url, client.transport().clone()));
        let functions = Functions::new(
            client.transport().clone(),
            env("FN_FN_ID").as_deref(),
            config.invoke_endpoint.clone(),
            functions_url,
        );
        let credentials = config.credentials.as_str();
        let engine = Engine::new(client, &config).with_control_plane(control_plane_base);
        stop_on_signal(engine.ledger());
        let function = Arc::new(Function {
            config: Arc::new(config),
            engine,
            metrics,
            functions,
            tenancy,
        });
        let handler = move |ctx, payload| {
            let function = Arc::clone(&function);
            async move { function.call(ctx, payload).await }
        };
        tracing::info!(socket = %bound.socket().display(), profile = %profile, unmanaged = %unmanaged, rules, credentials, "ready");
        bound.serve(handler).await.map_err(CliError::Serve)?;
        tracing::info!("stopped");
        Ok(ExitCode::SUCCESS)
    })
}

/// On SIGTERM or SIGINT (the FDK stops accepting calls on the same signals and lets the one in
/// flight finish), the ledger logs what the call has settled and what it has not, and no user is
/// started and no write sent after it: the platform may kill the process any moment now, and a write
/// whose answer is never read would go unrecorded.
fn stop_on_signal(ledger: Arc<oci_user_capabilities::action::ledger::Ledger>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::warn!("cannot listen for SIGTERM; a stop will not be logged");
        return;
    };
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
        ledger.stop();
    });
}

fn read_payload(file: Option<PathBuf>) -> Result<Vec<u8>, CliError> {
    match file {
        Some(path) if path.as_os_str() != "-" => std::fs::read(&path)
            .map_err(|e| CliError::usage(format_args!("cannot read {}: {e}", path.display()))),
        _ => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .map_err(|e| CliError::usage(format_args!("cannot read standard input: {e}")))?;
            Ok(buf)
        }
    }
}

/// The configuration, with the policy from `--policy FILE` when one is given.
fn load_config(policy: Option<&std::path::Path>) -> Result<Config, ConfigError> {
    let file = policy.map(PolicyFile::read).transpose()?;
    Config::load(&env, file.as_ref())
}

fn plan(file: Option<PathBuf>, policy: Option<PathBuf>) -> Result<ExitCode, CliError> {
    let config = load_config(policy.as_deref())?;
    // No log here (the plan is the output): the warnings go to stderr as plain lines.
    for miss in env_near_misses() {
        eprintln!("warning: {miss}");
    }
    let body = read_payload(file)?;
    match oci_user_capabilities::report::plan::plan(&body, &config) {
        Ok(plan) => {
            let text = serde_json::to_string_pretty(&plan).unwrap_or_default();
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{text}");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Err(CliError::usage(format_args!("payload: {e}"))),
    }
}

/// What the operator commands share: configuration, credentials, the client and the output format.
struct OperatorContext {
    config: Config,
    engine: Engine,
    output: OutputKind,
    /// The tenancy the credentials belong to, when they say: `--all-domains`' default root.
    tenancy: Option<CompartmentOcid>,
}

type OperatorFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<ExitCode, CliError>>>>;

fn operator(
    run: RunOptions,
    body: impl FnOnce(OperatorContext) -> OperatorFuture,
) -> Result<ExitCode, CliError> {
    let mut config = load_config(run.policy.as_deref())?;
    if run.dry_run {
        config.dry_run = true;
    }
    telemetry::init(match env("LOG_FORMAT") {
        Some(_) => config.log_format,
        None => LogFormat::Text,
    });
    warn_near_misses();
    let (credentials, region) = credentials(&run)?;
    let tenancy = tenancy_of(credentials.as_ref());
    let control_plane_base = control_plane_base(&config, region.as_deref())?;
    let output = run.output.unwrap_or(if std::io::stdout().is_terminal() {
        OutputKind::Table
    } else {
        OutputKind::Json
    });
    runtime()?.block_on(async move {
        let client = IdentityDomainClient::new(credentials, client_settings(&config))?;
        let (profile, unmanaged) = profile_fields(&config);
        tracing::info!(credentials = %client.credentials_label(), dry_run = config.dry_run, profile = %profile, unmanaged = %unmanaged, "operator run");
        let engine = Engine::new(client, &config).with_control_plane(control_plane_base);
        body(OperatorContext {
            config,
            engine,
            output,
            tenancy,
        })
        .await
    })
}

/// The tenancy OCID an API key signs for (its key id starts with it). Session tokens and resource
/// principals on a workstation give `--compartment` instead.
fn tenancy_of(credentials: &dyn CredentialsProvider) -> Option<CompartmentOcid> {
    let current = credentials.credentials(std::time::SystemTime::now()).ok()?;
    let key_id = current.key_id.as_str();
    if key_id.starts_with("ST$") {
        return None;
    }
    CompartmentOcid::parse(key_id.split('/').next()?).ok()
}

/// The signing credentials and the region they come with (the resource principal's, or the
/// config profile's `region`).
fn credentials(
    run: &RunOptions,
) -> Result<(Arc<dyn CredentialsProvider>, Option<String>), CliError> {
    let kind = run
        .auth
        .unwrap_or(if env("OCI_RESOURCE_PRINCIPAL_VERSION").is_some() {
            AuthKind::ResourcePrincipal
        } else {
            AuthKind::ApiKey
        });
    match kind {
        AuthKind::ResourcePrincipal => {
            let rp = ResourcePrincipal::from_env(&env, std::time::SystemTime::now())?;
            let region = rp.region().map(str::to_owned);
            Ok((Arc::new(rp), region))
        }
        AuthKind::ApiKey | AuthKind::SecurityToken => {
            let home = env("HOME").map(PathBuf::from);
            let path = match &run.config_file {
                Some(p) => p.clone(),
                None => default_oci_config_path(home.as_deref()).ok_or_else(|| {
                    CliError::usage(
                        "no --config-file given and HOME is not set to find ~/.oci/config",
                    )
                })?,
            };
            if !path.exists() {
                return Err(missing_oci_config(&path, run.config_file.is_some()));
            }
            let provider = ApiKeyProvider::from_oci_config(&path, &run.profile, home.as_deref())?;
            if kind == AuthKind::SecurityToken && provider.kind() != CredentialKind::SessionToken {
                return Err(CliError::usage(format_args!(
                    "--auth security-token: profile [{}] in {} has no security_token_file (run `oci session authenticate`, or use --auth api-key)",
                    run.profile,
                    path.display()
                )));
            }
            let region = provider.region().map(str::to_owned);
            Ok((Arc::new(provider), region))
        }
    }
}

/// No OCI config file where one was expected: how to make one, or how to do without.
fn missing_oci_config(path: &std::path::Path, named: bool) -> CliError {
    let place = if named {
        "--config-file"
    } else {
        "the default OCI config file"
    };
    CliError::usage(format_args!(
        "{place} {} does not exist: create it with `oci setup config` (an API key) or \
         `oci session authenticate` (then --auth security-token), name another with \
         --config-file, or sign as a resource principal with --auth resource-principal",
        path.display()
    ))
}

/// Operators have no platform deadline; this bounds one run all the same.
const OPERATOR_BUDGET: Duration = Duration::from_secs(6 * 3600);

async fn apply(ctx: OperatorContext, file: Option<PathBuf>) -> Result<ExitCode, CliError> {
    let body = read_payload(file)?;
    let records = match parse_invocation(&body) {
        Ok(Invocation::Records(records)) => records,
        Ok(Invocation::Reconcile(_)) => {
            return Err(CliError::usage(
                "payload is a reconcile request: use the reconcile command",
            ))
        }
        Err(e) => return Err(CliError::usage(format_args!("payload: {e}"))),
    };
    let deadline = tokio::time::Instant::now() + OPERATOR_BUDGET;
    let report = ctx
        .engine
        .process_records(
            records,
            &ctx.config.event_types,
            &ctx.config.domains,
            deadline,
        )
        .await;
    log_report(&report);
    print_apply(&report, ctx.output);
    Ok(exit_for(report.needs_retry()))
}

/// 1 when some record failed (a retry could fix it), else 0.
fn exit_for(needs_retry: bool) -> ExitCode {
    if needs_retry {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

struct ReconcileArgs {
    /// `None`: every domain of the compartment tree.
    domain: Option<String>,
    compartment: Option<String>,
    filter: Option<String>,
    max_users: Option<u64>,
    start_index: u64,
    page_size: u64,
}

async fn reconcile_command(
    ctx: OperatorContext,
    args: ReconcileArgs,
) -> Result<ExitCode, CliError> {
    let Some(domain) = args.domain.clone() else {
        return reconcile_all_domains(ctx, args).await;
    };
    let report = match reconcile_domain(&ctx, &domain, &args, "").await? {
        Ok(report) => report,
        Err(reason) => {
            eprintln!("oci-user-capabilities: --domain: {reason}");
            return Ok(ExitCode::from(1));
        }
    };
    let Some(report) = report else {
        return Ok(ExitCode::SUCCESS);
    };
    print_reconcile(&report, ctx.output);
    Ok(exit_for(report.needs_retry()))
}

/// `--all-domains`: every ACTIVE domain of the compartment tree, one after another, each to its
/// end (no hand-off: an operator's run has no platform deadline).
async fn reconcile_all_domains(
    ctx: OperatorContext,
    args: ReconcileArgs,
) -> Result<ExitCode, CliError> {
    let root = match (&args.compartment, &ctx.tenancy) {
        (Some(c), _) => CompartmentOcid::parse(c)
            .map_err(|e| CliError::usage(format_args!("--compartment: {e}")))?,
        (None, Some(t)) => t.clone(),
        (None, None) => {
            return Err(CliError::usage(
                "--all-domains: the credentials name no tenancy; give --compartment OCID",
            ))
        }
    };
    let deadline = tokio::time::Instant::now() + OPERATOR_BUDGET;
    let (compartments, planned) = match plan_domains(
        ctx.engine.control_plane(),
        &root,
        &ctx.config.domains,
        deadline,
    )
    .await
    {
        Ok(planned) => planned,
        Err(reason) => {
            eprintln!("oci-user-capabilities: listing the identity domains: {reason}");
            return Ok(ExitCode::from(1));
        }
    };
    eprintln!(
        "reconcile: {} identity domains in {compartments} compartments under {root}",
        planned.len()
    );
    let mut failed = false;
    for (domain, start) in planned {
        let label = format!("{} ({})", domain.display_name, domain.id);
        let value = match start {
            Err(reason) => {
                eprintln!("reconcile: {label}: skipped: {reason}");
                continue;
            }
            Ok(value) => value,
        };
        match reconcile_domain(&ctx, &value, &args, &format!("{label}: ")).await {
            Ok(Ok(Some(report))) => {
                failed |= report.needs_retry();
                print_reconcile(&report, ctx.output);
            }
            Ok(Ok(None)) => {}
            Ok(Err(reason)) | Err(CliError::Usage(reason)) => {
                failed = true;
                eprintln!("reconcile: {label}: {reason}");
            }
            Err(other) => return Err(other),
        }
    }
    Ok(exit_for(failed))
}

/// One domain's reconcile to its end, a page per step so progress shows as the scan goes.
/// `Ok(Err)`: the domain could not be resolved for a reason a retry can fix.
async fn reconcile_domain(
    ctx: &OperatorContext,
    domain_arg: &str,
    args: &ReconcileArgs,
    label: &str,
) -> Result<Result<Option<ReconcileReport>, String>, CliError> {
    // What the function accepts in a reconcile request (a domain name, a DOMAINS name, a domain OCID
    // or an allowed URL), and beyond that any identity-domain URL or domain OCID the operator names
    // explicitly. An OCID is resolved through the control plane.
    let route = ctx
        .config
        .domains
        .resolve_for_reconcile(domain_arg)
        .or_else(|reason| {
            DomainUrl::parse(domain_arg)
                .map(DomainRoute::Url)
                .map_err(|_| reason)
        })
        .map_err(|e| CliError::usage(format_args!("--domain: {e}")))?;
    let deadline = tokio::time::Instant::now() + OPERATOR_BUDGET;
    let domain = match ctx.engine.domain_url(&route, deadline).await {
        Ok(url) => url,
        Err(ResolveError::Rejected(reason)) => {
            return Err(CliError::usage(format_args!("--domain: {reason}")))
        }
        Err(ResolveError::Failed { reason, .. }) => return Ok(Err(reason)),
    };
    let filter = args
        .filter
        .clone()
        .unwrap_or_else(|| DEFAULT_FILTER.to_string());
    let mut progress = Progress::stderr(format!("{label}reconcile"));
    let start_index = args.start_index.max(1);
    let mut total: Option<ReconcileReport> = None;
    let mut next_index = args.start_index.max(1);
    let mut next_after: Option<Cursor> = None;
    loop {
        let left = args
            .max_users
            .map(|m| m.saturating_sub(total.as_ref().map_or(0, |t| t.scanned)));
        if left == Some(0) {
            break;
        }
        let step = left.map_or(args.page_size, |l| l.min(args.page_size));
        let job = ReconcileJob {
            domain_values: domain_values(domain_arg, &domain),
            domain: domain.clone(),
            filter: filter.clone(),
            start_index: next_index,
            after: next_after.clone(),
            max_users: Some(step),
            page_size: args.page_size,
        };
        let deadline = tokio::time::Instant::now() + OPERATOR_BUDGET;
        let part = reconcile(&ctx.engine, &job, deadline).await;
        let finished = part.next_start_index.is_none() || part.error.is_some();
        let resume = (part.next_start_index, part.next_after.clone());
        let scanned_before = total.as_ref().map(|t| t.scanned);
        let merged = merge(total.take(), part);
        // A first step counts from the listing's index 1; a later one from its cursor, after
        // the users done so far.
        let to_scan = merged.total_results.map(|t| {
            if scanned_before.is_none() {
                t.saturating_sub(start_index - 1)
            } else {
                t + scanned_before.unwrap_or(0)
            }
        });
        let mut merged = merged;
        merged.total_results = to_scan.map(|t| t + start_index - 1);
        progress.set_total(to_scan);
        progress.set_detail(format!(
            "applied {}, unchanged {}, rejected {}, failed {}",
            merged.applied, merged.unchanged, merged.rejected, merged.failed
        ));
        progress.set_done(merged.scanned);
        total = Some(merged);
        match resume {
            (Some(n), after) if !finished => {
                next_index = n;
                next_after = after;
            }
            _ => break,
        }
    }
    progress.finish();
    Ok(Ok(total))
}

/// `report`: what it reads and where it writes.
struct ReportArgs {
    domain: String,
    filter: Option<String>,
    output: Option<(PathBuf, ReportFormat)>,
    page_size: u64,
    policy_source: String,
}

/// The report's file format, from the `--output` file's extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReportFormat {
    Html,
    Csv,
    Json,
}

/// `--output FILE.html|.csv|.json`; `-` (or no flag) is JSON on stdout.
fn report_output(output: Option<PathBuf>) -> Result<Option<(PathBuf, ReportFormat)>, CliError> {
    let Some(path) = output.filter(|p| p.as_os_str() != "-") else {
        return Ok(None);
    };
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let format = match ext.as_deref() {
        Some("html" | "htm") => ReportFormat::Html,
        Some("csv") => ReportFormat::Csv,
        Some("json") => ReportFormat::Json,
        _ => {
            return Err(CliError::usage(format_args!(
                "--output: {}: the name must end in .html, .csv or .json (the format follows it)",
                path.display()
            )))
        }
    };
    Ok(Some((path, format)))
}

/// Says where the policy came from, for the report's "policy applied".
fn policy_source(policy: Option<&std::path::Path>) -> String {
    let base = match (policy, env("POLICY").filter(|v| !v.trim().is_empty())) {
        (Some(path), _) => format!("--policy {}", path.display()),
        (None, Some(_)) => "the POLICY configuration key".to_owned(),
        (None, None) => "the built-in policies/capabilities.toml".to_owned(),
    };
    match env("CAPABILITIES").filter(|v| !v.trim().is_empty()) {
        Some(_) => format!("{base}, its default replaced by CAPABILITIES"),
        None => base,
    }
}

/// The domain an operator command names: what the function accepts (a domain name, a DOMAINS
/// name, a domain OCID, an allowed URL), and beyond that any identity-domain URL. `Err(code)` when
/// an OCID could not be resolved for a reason a retry can fix.
async fn operator_domain(
    ctx: &OperatorContext,
    domain: &str,
) -> Result<Result<DomainUrl, ExitCode>, CliError> {
    let route = ctx
        .config
        .domains
        .resolve_for_reconcile(domain)
        .or_else(|reason| {
            DomainUrl::parse(domain)
                .map(DomainRoute::Url)
                .map_err(|_| reason)
        })
        .map_err(|e| CliError::usage(format_args!("--domain: {e}")))?;
    let deadline = tokio::time::Instant::now() + OPERATOR_BUDGET;
    match ctx.engine.domain_url(&route, deadline).await {
        Ok(url) => Ok(Ok(url)),
        Err(ResolveError::Rejected(reason)) => {
            Err(CliError::usage(format_args!("--domain: {reason}")))
        }
        Err(ResolveError::Failed { reason, .. }) => {
            eprintln!("oci-user-capabilities: --domain: {reason}");
            Ok(Err(ExitCode::from(1)))
        }
    }
}

async fn report_command(ctx: OperatorContext, args: ReportArgs) -> Result<ExitCode, CliError> {
    let domain = match operator_domain(&ctx, &args.domain).await? {
        Ok(url) => url,
        Err(code) => return Ok(code),
    };
    let job = ScanJob {
        domain_values: domain_values(&args.domain, &domain),
        domain,
        filter: args.filter,
        page_size: args.page_size,
    };
    let shown = PolicyShown::new(&ctx.config.policy, args.policy_source);
    let mut progress = Progress::stderr("report");
    let deadline = tokio::time::Instant::now() + OPERATOR_BUDGET;
    let report = posture::scan(&ctx.engine, &job, shown, deadline, &mut |done, total| {
        progress.set_total(total);
        progress.set_done(done);
    })
    .await;
    progress.finish();
    let text = match args.output.as_ref().map(|(_, f)| *f) {
        Some(ReportFormat::Html) => html::render(&report),
        Some(ReportFormat::Csv) => posture::to_csv(&report),
        Some(ReportFormat::Json) | None => {
            serde_json::to_string_pretty(&report).unwrap_or_default() + "\n"
        }
    };
    let s = &report.summary;
    let written = match &args.output {
        Some((path, _)) => {
            std::fs::write(path, text).map_err(|e| {
                CliError::usage(format_args!(
                    "--output: cannot write {}: {e}",
                    path.display()
                ))
            })?;
            format!("; written to {}", path.display())
        }
        None => {
            let _ = std::io::stdout().lock().write_all(text.as_bytes());
            String::new()
        }
    };
    eprintln!(
        "report: {} users: {} to change, {} compliant, {} exempt, {} undecided, {} unreadable{written}{}",
        s.users,
        s.to_change,
        s.compliant,
        s.exempt,
        s.undecided,
        s.unreadable,
        report
            .error
            .as_ref()
            .map(|e| format!("; INCOMPLETE: {e}"))
            .unwrap_or_default()
    );
    Ok(exit_for(!report.complete))
}

/// Folds one step's report into the running total.
fn merge(total: Option<ReconcileReport>, part: ReconcileReport) -> ReconcileReport {
    let Some(mut t) = total else { return part };
    t.total_results = part.total_results.or(t.total_results);
    t.scanned += part.scanned;
    t.applied += part.applied;
    t.unchanged += part.unchanged;
    t.rejected += part.rejected;
    t.failed += part.failed;
    add_counts(&mut t.lingering, &part.lingering);
    add_counts(&mut t.revoked, &part.revoked);
    t.next_start_index = part.next_start_index;
    t.next_after = part.next_after;
    t.stopped_because = part.stopped_because;
    t.error = part.error;
    t.users.extend(part.users);
    t
}

fn print_apply(report: &Report, output: OutputKind) {
    let mut out = std::io::stdout().lock();
    if output == OutputKind::Json {
        let _ = writeln!(out, "{:#}", to_json(report));
        return;
    }
    let _ = writeln!(
        out,
        "{:>5}  {:<9}  {:<32}  {:<30}  DETAIL",
        "INDEX", "OUTCOME", "USER ID", "USER NAME"
    );
    for r in report.results.results() {
        let mut detail = if r.changed.is_empty() {
            r.reason.clone().unwrap_or_default()
        } else {
            r.changed
                .iter()
                .map(|(k, [from, to])| format!("{k} {}→{}", show(*from), show(*to)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        if !r.policy.is_empty() {
            detail.push_str(&format!(" [policy: {}]", r.policy.join(", ")));
        }
        detail.push_str(&credential_detail(&r.lingering, &r.revoked));
        let _ = writeln!(
            out,
            "{:>5}  {:<9}  {:<32}  {:<30}  {}",
            r.index,
            r.outcome,
            r.user_id.as_deref().unwrap_or("-"),
            r.user_name.as_deref().unwrap_or("-"),
            detail
        );
    }
    let _ = writeln!(
        out,
        "received {}: applied {}, unchanged {}, ignored {}, rejected {}, failed {}{}{}",
        report.received,
        report.applied,
        report.unchanged,
        report.ignored,
        report.rejected,
        report.failed,
        credential_totals(&report.lingering, &report.revoked),
        if report.dry_run {
            " (dry run: nothing written)"
        } else {
            ""
        }
    );
}

fn print_reconcile(report: &ReconcileReport, output: OutputKind) {
    // The progress lines end with counts; a run that stopped on an error says which, on stderr
    // too (stdout may be a JSON file nobody reads at once).
    if let Some(error) = &report.error {
        eprintln!(
            "oci-user-capabilities: reconcile of {} stopped after {} users: {error}{}",
            report.domain,
            report.scanned,
            report
                .next_start_index
                .map(|n| format!("; continue with --start-index {n}"))
                .unwrap_or_default()
        );
    }
    let mut out = std::io::stdout().lock();
    if output == OutputKind::Json {
        let _ = writeln!(out, "{:#}", to_json(report));
        return;
    }
    for u in &report.users {
        let mut detail = u
            .reason
            .clone()
            .unwrap_or_else(|| u.changed.keys().copied().collect::<Vec<_>>().join(","));
        if !u.policy.is_empty() {
            detail.push_str(&format!(" [policy: {}]", u.policy.join(", ")));
        }
        detail.push_str(&credential_detail(&u.lingering, &u.revoked));
        let _ = writeln!(
            out,
            "{:<9}  {:<32}  {:<30}  {}",
            u.outcome.as_str(),
            u.user_id.as_deref().unwrap_or("-"),
            u.user_name.as_deref().unwrap_or("-"),
            detail
        );
    }
    let _ = writeln!(
        out,
        "{}: scanned {}, applied {}, unchanged {}, rejected {}, failed {}{}{}{}",
        report.domain,
        report.scanned,
        report.applied,
        report.unchanged,
        report.rejected,
        report.failed,
        credential_totals(&report.lingering, &report.revoked),
        report
            .next_start_index
            .map(|n| format!("; continue with --start-index {n}"))
            .unwrap_or_default(),
        report
            .error
            .as_ref()
            .map(|e| format!("; stopped: {e}"))
            .unwrap_or_default(),
    );
}

/// `; lingering apiKeys 2; revoked apiKeys 2` for the table's summary line; empty when none.
fn credential_totals(lingering: &Counts, revoked: &Counts) -> String {
    let mut out = String::new();
    if !lingering.is_empty() {
        out.push_str(&format!("; lingering {}", count_list(lingering)));
    }
    if !revoked.is_empty() {
        out.push_str(&format!("; revoked {}", count_list(revoked)));
    }
    out
}

/// ` [lingering: apiKeys 2; revoked: apiKeys 2]` for one user's table row; empty when none.
fn credential_detail<K: std::fmt::Display>(
    lingering: &std::collections::BTreeMap<K, usize>,
    revoked: &std::collections::BTreeMap<K, usize>,
) -> String {
    if lingering.is_empty() {
        return String::new();
    }
    let revoked = if revoked.is_empty() {
        String::new()
    } else {
        format!("; revoked: {}", count_list(revoked))
    };
    format!(" [lingering: {}{revoked}]", count_list(lingering))
}

/// `apiKeys 2, authTokens 1`.
fn count_list<K: std::fmt::Display>(counts: &std::collections::BTreeMap<K, usize>) -> String {
    counts
        .iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn show(v: Option<bool>) -> &'static str {
    match v {
        Some(true) => "true",
        Some(false) => "false",
        None => "unset",
    }
}
