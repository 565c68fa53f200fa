//! The Fn http-stream contract, checked through real sockets and real processes.

use std::time::{Duration, Instant};

use crate::platform_harness::{deadline_in, Call, FnProcess, InitFailure, Launch, LOGFRAME_NAME};

fn start(launch: &Launch) -> FnProcess {
    match FnProcess::start(launch) {
        Ok(p) => {
            p.check_socket_destination();
            p
        }
        Err(e) => panic!("function did not start: {e:?}"),
    }
}

fn refused(launch: Launch) -> String {
    match FnProcess::start(&launch) {
        Ok(_) => panic!("the function started but should have refused"),
        Err(InitFailure::Exited { status, stderr }) => {
            assert_eq!(
                status.code(),
                Some(2),
                "exit code for a refusal; stderr: {stderr}"
            );
            let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
            assert_eq!(lines.len(), 1, "one clear line, got: {stderr}");
            lines[0].to_string()
        }
        Err(InitFailure::Timeout) => panic!("neither ready nor exited"),
    }
}

#[tokio::test]
async fn function_becomes_ready_with_a_valid_socket_and_answers_with_fdk_headers() {
    let mut ready = Vec::new();
    for _ in 0..5 {
        let f = start(&Launch::function());
        ready.push(f.ready_after);
        let reply = f.call(Call::new("[]")).await;
        reply.assert_platform_valid();
        assert_eq!(reply.status, 200);
        assert!(reply
            .header("fn-fdk-version")
            .unwrap()
            .starts_with("fdk-rust-oci-user-capabilities/"));
        assert!(reply
            .header("content-type")
            .unwrap()
            .starts_with("application/json"));
    }
    ready.sort();
    eprintln!(
        "spawn -> lsnr.sock ready (debug build): median {:?}, min {:?}, max {:?}",
        ready[2], ready[0], ready[4]
    );
}

#[test]
fn refuses_to_start_without_a_usable_listener() {
    let line = refused(Launch {
        listener: None,
        ..Launch::function()
    });
    assert!(line.contains("FN_LISTENER"), "{line}");
    let line = refused(Launch {
        listener: Some("tcp://127.0.0.1:8080".into()),
        ..Launch::function()
    });
    assert!(line.contains("unix:"), "{line}");
    let line = refused(Launch {
        listener: Some("unix:relative/lsnr.sock".into()),
        ..Launch::function()
    });
    assert!(line.contains("absolute"), "{line}");
    let long = format!("unix:/tmp/{}/lsnr.sock", "d".repeat(100));
    let line = refused(Launch {
        listener: Some(long),
        ..Launch::function()
    });
    assert!(line.contains("107"), "{line}");
    let line = refused(Launch::function().env("FN_FORMAT", "json"));
    assert!(line.contains("FN_FORMAT"), "{line}");
}

#[tokio::test]
async fn handler_error_is_502_and_the_next_call_on_the_same_connection_works() {
    let f = start(&Launch::echo());
    let mut conn = f.connect().await;
    let reply = conn.send(Call::new("error")).await;
    reply.assert_platform_valid();
    assert_eq!(reply.status, 502);
    let reply = conn.send(Call::new("hello")).await;
    reply.assert_platform_valid();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["body"], "hello");
    assert!(
        f.stderr
            .wait_for("deliberate handler error")
            .contains("deliberate handler error"),
        "error text goes to the log"
    );
}

#[tokio::test]
async fn panic_is_502_and_the_server_keeps_serving() {
    let f = start(&Launch::echo());
    let reply = f.call(Call::new("panic")).await;
    reply.assert_platform_valid();
    assert_eq!(reply.status, 502);
    let reply = f.call(Call::new("still there?")).await;
    assert_eq!(reply.status, 200);
    assert!(f
        .stderr
        .wait_for("deliberate handler panic")
        .contains("deliberate handler panic"));
}

#[tokio::test]
async fn a_handler_past_the_deadline_gets_504_before_the_deadline() {
    let f = start(&Launch::echo());
    // Whole-second deadlines (the agent's form) land between 1 and 2 s from now.
    let deadline = deadline_in(Duration::from_secs(2));
    let sent = Instant::now();
    let reply = f
        .call(Call::new("sleep:10000").deadline(Some(deadline)))
        .await;
    let took = sent.elapsed();
    reply.assert_platform_valid();
    assert_eq!(reply.status, 504);
    assert!(
        took < Duration::from_secs(2),
        "504 must come before the deadline, took {took:?}"
    );
    let reply = f.call(Call::new("after")).await;
    assert_eq!(reply.status, 200);
}

#[tokio::test]
async fn deadline_forms_and_fallback() {
    let f = start(&Launch::echo());
    let mut conn = f.connect().await;
    for deadline in [
        Some(deadline_in(Duration::from_secs(60))),
        Some("2099-01-01T00:00:00.000Z".to_string()),
        Some("2099-01-01T01:00:00+01:00".to_string()),
    ] {
        let reply = conn.send(Call::new("x").deadline(deadline.clone())).await;
        assert_eq!(reply.status, 200, "{deadline:?}");
        assert!(
            reply.json()["remainingMs"].as_u64().unwrap() > 50_000,
            "{deadline:?}"
        );
    }
    for deadline in [None, Some("not a time".to_string())] {
        let reply = conn.send(Call::new("x").deadline(deadline.clone())).await;
        assert_eq!(reply.status, 200);
        let remaining = reply.json()["remainingMs"].as_u64().unwrap();
        assert!(
            (25_000..=30_000).contains(&remaining),
            "fallback budget, got {remaining}"
        );
    }
    assert!(
        f.stderr.wait_for("Fn-Deadline").contains("Fn-Deadline"),
        "a warning names the header"
    );
}

#[tokio::test]
async fn log_frame_comes_first_on_both_streams() {
    let f = start(&Launch::echo());
    let call = Call::new("framed");
    let frame = format!("\n{LOGFRAME_NAME}={}\n", call.opc_request_id());
    let id = call.call_id.clone();
    assert_eq!(f.call(call).await.status, 200);
    let handler_line = format!("handler stdout for {id}");
    let out = f.stdout.wait_for(&handler_line);
    let err = f.stderr.wait_for(&format!("handler stderr for {id}"));
    let frame_at = out.find(&frame).expect("frame line on stdout");
    assert!(
        frame_at < out.find(&handler_line).expect("handler output"),
        "frame before the call's output"
    );
    let frame_at = err.find(&frame).expect("frame line on stderr");
    assert!(
        frame_at
            < err
                .find(&format!("handler stderr for {id}"))
                .expect("handler stderr")
    );
}

#[tokio::test]
async fn gateway_calls_are_encapsulated_and_plain_calls_are_not() {
    let f = start(&Launch::echo());
    let call = Call::new("gw")
        .header("Fn-Intent", "httprequest")
        .header("Fn-Http-Method", "PUT")
        .header("Fn-Http-Request-Url", "/path?q=1")
        .header("Fn-Http-H-X-Api-Key", "k1");
    let reply = f.call(call).await;
    reply.assert_platform_valid();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("fn-http-status"), Some("201"));
    assert_eq!(reply.header("fn-http-h-x-echo"), Some("1"));
    assert!(reply.header("x-echo").is_none());
    assert!(reply
        .header("content-type")
        .unwrap()
        .starts_with("application/json"));
    let body = reply.json();
    assert_eq!(body["gatewayMethod"], "PUT");
    assert_eq!(body["gatewayUrl"], "/path?q=1");
    assert_eq!(
        body["gatewayHeaders"][0],
        serde_json::json!(["x-api-key", "k1"])
    );

    let reply = f.call(Call::new("plain")).await;
    assert_eq!(
        reply.status, 200,
        "a plain call's success is always 200 to the platform"
    );
    assert_eq!(reply.header("x-echo"), Some("1"));
    assert!(reply.header("fn-http-status").is_none());
}

#[tokio::test]
async fn wrong_method_or_path_never_gets_404_or_405() {
    let f = start(&Launch::echo());
    for (method, path) in [("GET", "/call"), ("POST", "/other"), ("PUT", "/")] {
        let mut call = Call::new("x");
        call.method = method;
        call.path = path;
        let reply = f.call(call).await;
        reply.assert_platform_valid();
        assert_eq!(reply.status, 502, "{method} {path}");
    }
}

#[tokio::test]
async fn keep_alive_reconnects_sized_and_large_bodies_and_freezing() {
    let f = start(&Launch::echo());
    let mut conn = f.connect().await;
    for i in 0..3 {
        let reply = conn.send(Call::new(format!("c{i}"))).await;
        assert_eq!(reply.json()["body"], format!("c{i}"));
    }
    let reply = conn.send(Call::new("sized body").sized()).await;
    assert_eq!(reply.json()["body"], "sized body");
    let reply = conn.send(Call::new("")).await;
    assert_eq!(reply.json()["body"], "");
    drop(conn);
    // Like the agent after a second idle, and frozen in between as `docker pause` would.
    f.signal(19); // SIGSTOP
    std::thread::sleep(Duration::from_millis(100));
    f.signal(18); // SIGCONT
    let big = vec![b'a'; 5 * 1024 * 1024];
    let reply = f.call(Call::new(big)).await;
    assert_eq!(
        reply.json()["body"].as_str().unwrap().len(),
        5 * 1024 * 1024
    );
    let too_big = vec![b'b'; 7 * 1024 * 1024];
    let reply = f.call(Call::new(too_big)).await;
    assert_eq!(
        reply.json()["body"],
        format!("too-large:{}", 7 * 1024 * 1024)
    );
}

#[tokio::test]
async fn sigterm_when_idle_exits_zero_and_removes_the_socket() {
    let mut f = start(&Launch::function());
    let _idle = f.connect().await;
    let threads = f.thread_count();
    eprintln!("idle serve process threads: {threads}");
    assert!(
        threads <= 6,
        "thread count {threads} must stay far below Fn's 50-process limit"
    );
    f.signal(15);
    let status = f
        .wait_exit(Duration::from_secs(3))
        .expect("exits after SIGTERM");
    assert_eq!(status.code(), Some(0));
    assert!(
        std::fs::symlink_metadata(&f.socket).is_err(),
        "lsnr.sock removed"
    );
    assert!(
        std::fs::symlink_metadata(f.dir.path().join("phonylsnr.sock")).is_err(),
        "socket removed"
    );
}

#[tokio::test]
async fn sigterm_during_a_call_lets_it_finish() {
    let mut f = start(&Launch::echo());
    let mut conn = f.connect().await;
    let pending = tokio::spawn(async move { conn.send(Call::new("sleep:500")).await });
    tokio::time::sleep(Duration::from_millis(150)).await;
    f.signal(15);
    let reply = pending.await.unwrap();
    assert_eq!(reply.status, 200);
    let status = f
        .wait_exit(Duration::from_secs(3))
        .expect("exits after the call");
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn stale_files_from_an_earlier_run_do_not_stop_the_start() {
    let dir = tempfile::Builder::new()
        .prefix("fn")
        .tempdir_in("/tmp")
        .unwrap();
    // A dead socket under the bound name and a dangling link under the announced name.
    let stale = std::os::unix::net::UnixListener::bind(dir.path().join("phonylsnr.sock")).unwrap();
    drop(stale);
    std::os::unix::fs::symlink("gone.sock", dir.path().join("lsnr.sock")).unwrap();
    let f = FnProcess::start_in(&Launch::function(), dir).expect("starts over stale files");
    f.check_socket_destination();
    assert_eq!(f.call(Call::new("[]")).await.status, 200);

    // Only the bound name left behind (the case that crashes the Python FDK).
    let dir = tempfile::Builder::new()
        .prefix("fn")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::write(dir.path().join("phonylsnr.sock"), b"").unwrap();
    let f = FnProcess::start_in(&Launch::function(), dir).expect("starts over a stale bound name");
    f.check_socket_destination();
}
