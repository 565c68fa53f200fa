//! Plays the Fn platform: a fresh socket directory, an environment built from scratch, the real binary
//! spawned, readiness detected by the announced name appearing, Fn's socket destination checks, then calls
//! sent the way the agent sends them (HTTP/1.1 over the Unix socket, chunked bodies, Fn headers).
#![allow(dead_code)]

use std::convert::Infallible;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

pub const FN_BINARY: &str = env!("CARGO_BIN_EXE_oci-user-capabilities");

/// The FDK test function built from `examples/fdk_echo.rs` (cargo test builds examples).
pub fn echo_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let debug_dir = exe.parent().and_then(Path::parent).expect("target dir");
    let path = debug_dir.join("examples").join("fdk_echo");
    assert!(
        path.exists(),
        "{} is missing: run the whole `cargo test`, which builds the examples",
        path.display()
    );
    path
}

pub use crate::support::identity_domain_server::vectors_dir;

/// How to start a function.
#[derive(Clone)]
pub struct Launch {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// `None` leaves FN_LISTENER out entirely; the default points into the fresh directory.
    pub listener: Option<String>,
    pub logframe: bool,
}

pub const LOGFRAME_NAME: &str = "01HZTESTFRAME000000000000000";

impl Launch {
    pub fn new(program: impl Into<PathBuf>, args: &[&str]) -> Self {
        Launch {
            program: program.into(),
            args: args.iter().map(|s| s.to_string()).collect(),
            env: Vec::new(),
            listener: Some(String::new()),
            logframe: true,
        }
    }

    /// The product, with the throwaway resource-principal credentials it needs to start. These
    /// tests pin the single-request path (`BULK=off`: one GET and one PUT per user, faults keyed on
    /// them); the search and Bulk path (`BULK=auto`, the default) has its own module, `bulk`.
    pub fn function() -> Self {
        Self::new(FN_BINARY, &["serve"])
            .with_resource_principal()
            .env("BULK", "off")
    }

    pub fn echo() -> Self {
        Self::new(echo_binary(), &[])
    }

    pub fn env(mut self, key: &str, value: impl Into<String>) -> Self {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_string(), value.into()));
        self
    }

    /// The resource-principal variables pointing at the throwaway test key and token.
    pub fn with_resource_principal(self) -> Self {
        let dir = vectors_dir();
        self.env("OCI_RESOURCE_PRINCIPAL_VERSION", "2.2")
            .env("OCI_RESOURCE_PRINCIPAL_REGION", "us-ashburn-1")
            .env(
                "OCI_RESOURCE_PRINCIPAL_RPST",
                dir.join("rpst.jwt").display().to_string(),
            )
            .env(
                "OCI_RESOURCE_PRINCIPAL_PRIVATE_PEM",
                dir.join("rp_session_key_pkcs1.pem").display().to_string(),
            )
    }

    /// The environment the Fn agent builds: nothing of the test process leaks in.
    fn environment(&self, dir: &Path) -> Vec<(String, String)> {
        let mut env = vec![
            (
                "PATH".to_string(),
                "/usr/local/bin:/usr/bin:/bin".to_string(),
            ),
            ("HOME".to_string(), "/home/fn".to_string()),
            ("FN_FORMAT".to_string(), "http-stream".to_string()),
            ("FN_APP_ID".to_string(), "ocid1.fnapp.oc1..test".to_string()),
            ("FN_FN_ID".to_string(), "ocid1.fnfunc.oc1..test".to_string()),
            ("FN_APP_NAME".to_string(), "test-app".to_string()),
            ("FN_FN_NAME".to_string(), "user-capabilities".to_string()),
            ("FN_MEMORY".to_string(), "256".to_string()),
            ("FN_TYPE".to_string(), "sync".to_string()),
            ("FN_CPUS".to_string(), "125m".to_string()),
        ];
        if self.logframe {
            env.push(("FN_LOGFRAME_NAME".to_string(), LOGFRAME_NAME.to_string()));
            env.push(("FN_LOGFRAME_HDR".to_string(), "Opc-Request-Id".to_string()));
        }
        match &self.listener {
            Some(l) if l.is_empty() => env.push((
                "FN_LISTENER".to_string(),
                format!("unix:{}/lsnr.sock", dir.display()),
            )),
            Some(l) => env.push(("FN_LISTENER".to_string(), l.clone())),
            None => {}
        }
        for (k, v) in &self.env {
            env.retain(|(ek, _)| ek != k);
            env.push((k.clone(), v.clone()));
        }
        env
    }
}

/// Output captured from one stream, readable while the process runs.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>, Arc<std::sync::atomic::AtomicBool>);

impl Captured {
    fn follow(mut stream: impl Read + Send + 'static) -> Self {
        let captured = Captured::default();
        let sink = captured.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = stream.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.0.lock().unwrap().extend_from_slice(&buf[..n]);
            }
            sink.1.store(true, std::sync::atomic::Ordering::Release);
        });
        captured
    }

    /// Waits (up to 5 s) until the stream has ended, so everything an exited process wrote is here.
    pub fn drained(&self) -> String {
        let start = Instant::now();
        while !self.1.load(std::sync::atomic::Ordering::Acquire)
            && start.elapsed() < Duration::from_secs(5)
        {
            std::thread::sleep(Duration::from_millis(2));
        }
        self.text()
    }

    /// Waits (up to 2 s) until `needle` has been written, then returns everything captured so far.
    pub fn wait_for(&self, needle: &str) -> String {
        let start = Instant::now();
        loop {
            let text = self.text();
            if text.contains(needle) || start.elapsed() > Duration::from_secs(2) {
                return text;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

pub struct FnProcess {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub ready_after: Duration,
    pub stdout: Captured,
    pub stderr: Captured,
}

/// Why a start failed, as the platform would see it.
#[derive(Debug)]
pub enum InitFailure {
    Exited { status: ExitStatus, stderr: String },
    Timeout,
}

fn socket_dir() -> tempfile::TempDir {
    // A short path under /tmp keeps the socket path far below the 107-byte limit.
    let dir = tempfile::Builder::new()
        .prefix("fn")
        .tempdir_in("/tmp")
        .expect("temp dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))
        .expect("chmod dir");
    dir
}

impl FnProcess {
    pub fn start(launch: &Launch) -> Result<FnProcess, InitFailure> {
        Self::start_in(launch, socket_dir())
    }

    /// Starts in a directory the caller prepared (e.g. with stale files in it).
    pub fn start_in(launch: &Launch, dir: tempfile::TempDir) -> Result<FnProcess, InitFailure> {
        let socket = dir.path().join("lsnr.sock");
        // Like the agent's inotify watch, only a newly created lsnr.sock counts: a stale one left in the
        // directory must not look ready.
        let identity = |m: &std::fs::Metadata| (m.ino(), m.ctime(), m.ctime_nsec());
        let stale = std::fs::symlink_metadata(&socket)
            .ok()
            .map(|m| identity(&m));
        let spawned = Instant::now();
        // IT_FN_WRAPPER=/path/to/script runs every started process as `script <program> <args>`:
        // a profiler (heaptrack, valgrind) for one test, never set in CI.
        let mut cmd = match std::env::var_os("IT_FN_WRAPPER") {
            Some(wrapper) => {
                let mut c = Command::new(wrapper);
                c.arg(&launch.program);
                c
            }
            None => Command::new(&launch.program),
        };
        let mut child = cmd
            .args(&launch.args)
            .env_clear()
            .envs(launch.environment(dir.path()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn function");
        let stdout = Captured::follow(child.stdout.take().expect("stdout"));
        let stderr = Captured::follow(child.stderr.take().expect("stderr"));
        loop {
            if let Ok(meta) = std::fs::symlink_metadata(&socket) {
                if Some(identity(&meta)) != stale {
                    break;
                }
            }
            if let Some(status) = child.try_wait().expect("wait") {
                // The reader thread may still be draining what the process wrote: wait for its end.
                return Err(InitFailure::Exited {
                    status,
                    stderr: stderr.drained(),
                });
            }
            if spawned.elapsed() > Duration::from_secs(5) {
                let _ = child.kill();
                let _ = child.wait();
                return Err(InitFailure::Timeout);
            }
            std::thread::sleep(Duration::from_micros(500));
        }
        let ready_after = spawned.elapsed();
        Ok(FnProcess {
            child,
            dir,
            socket,
            ready_after,
            stdout,
            stderr,
        })
    }

    /// Fn's `checkSocketDestination`, plus the stricter 0666 rule.
    pub fn check_socket_destination(&self) {
        let meta = std::fs::symlink_metadata(&self.socket).expect("lstat lsnr.sock");
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&self.socket).expect("readlink");
            assert!(
                !target.to_string_lossy().contains('/'),
                "symlink target must be a bare name in the same directory, got {}",
                target.display()
            );
        }
        let resolved = std::fs::metadata(&self.socket).expect("stat lsnr.sock");
        assert!(
            resolved.file_type().is_socket(),
            "lsnr.sock must resolve to a socket"
        );
        assert_eq!(
            resolved.permissions().mode() & 0o777,
            0o666,
            "socket mode must be 0666"
        );
    }

    pub async fn connect(&self) -> Conn {
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .expect("connect to lsnr.sock");
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Conn { sender }
    }

    /// One call on a fresh connection.
    pub async fn call(&self, call: Call) -> Reply {
        self.connect().await.send(call).await
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, signal: i32) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status();
        assert!(
            status.map(|s| s.success()).unwrap_or(false),
            "kill -{signal} failed"
        );
    }

    /// Waits up to `limit` for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        None
    }

    /// Threads of the running process, from /proc.
    pub fn thread_count(&self) -> usize {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("Threads:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("Threads line")
    }

    /// Peak resident set (VmHWM) in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM line")
    }
}

impl Drop for FnProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Conn {
    sender: SendRequest<http_body_util::combinators::BoxBody<Bytes, Infallible>>,
}

/// A call as the agent sends it.
#[derive(Clone)]
pub struct Call {
    pub body: Vec<u8>,
    pub chunked: bool,
    pub deadline: Option<String>,
    pub call_id: String,
    pub headers: Vec<(String, String)>,
    pub method: &'static str,
    pub path: &'static str,
}

static CALL_SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

pub use crate::support::fixtures::deadline_in;

impl Call {
    pub fn new(body: impl Into<Vec<u8>>) -> Self {
        let seq = CALL_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Call {
            body: body.into(),
            chunked: true,
            deadline: Some(deadline_in(Duration::from_secs(30))),
            call_id: format!("01HZCALL{seq:018}"),
            headers: vec![
                ("Content-Type".into(), "application/json".into()),
                ("Fn-Invoke-Type".into(), "sync".into()),
                ("Opc-Request-Id".into(), format!("/REQ{seq}/SUB{seq}")),
                ("Oci-Subject-Type".into(), "resource".into()),
            ],
            method: "POST",
            path: "/call",
        }
    }

    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    pub fn deadline(mut self, value: Option<String>) -> Self {
        self.deadline = value;
        self
    }

    pub fn sized(mut self) -> Self {
        self.chunked = false;
        self
    }

    pub fn opc_request_id(&self) -> String {
        self.headers
            .iter()
            .find(|(k, _)| k == "Opc-Request-Id")
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    }
}

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// Fn kills a container that answers anything but these, and every official FDK stamps both headers.
    pub fn assert_platform_valid(&self) {
        assert!(
            matches!(self.status, 200 | 502 | 504),
            "status {} would make Fn kill the container",
            self.status
        );
        let version = self.header("fn-fdk-version").expect("Fn-Fdk-Version");
        let (name, semver) = version.split_once('/').expect("name/version");
        assert!(
            name.starts_with("fdk-") && name.chars().all(|c| c.is_ascii_lowercase() || c == '-')
        );
        assert_eq!(
            semver
                .split('.')
                .filter(|p| p.parse::<u64>().is_ok())
                .count(),
            3,
            "{version}"
        );
        assert!(self
            .header("fn-fdk-runtime")
            .is_some_and(|r| r.starts_with("rust/")));
        assert!(self.header("content-encoding").is_none());
    }
}

impl Conn {
    pub async fn send(&mut self, call: Call) -> Reply {
        let mut builder = hyper::Request::builder()
            .method(call.method)
            .uri(format!("http://localhost{}", call.path))
            .header("Host", "localhost")
            .header("User-Agent", "Go-http-client/1.1")
            .header("Accept-Encoding", "gzip")
            .header("Fn-Call-Id", &call.call_id);
        if let Some(deadline) = &call.deadline {
            builder = builder.header("Fn-Deadline", deadline);
        }
        for (k, v) in &call.headers {
            builder = builder.header(k, v);
        }
        let body = if call.chunked {
            // An opaque stream: hyper sends it with Transfer-Encoding: chunked, as the Go agent does.
            let chunks: Vec<Result<Frame<Bytes>, Infallible>> = call
                .body
                .chunks(64 * 1024)
                .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
                .collect();
            StreamBody::new(futures_util::stream::iter(chunks)).boxed()
        } else {
            Full::new(Bytes::from(call.body.clone())).boxed()
        };
        let request = builder.body(body).expect("request");
        self.sender.ready().await.expect("connection ready");
        let response = self.sender.send_request(request).await.expect("response");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes()
            .to_vec();
        Reply {
            status,
            headers,
            body,
        }
    }
}
