//! Sends one signed `POST` with a JSON body to a tiny loopback server and prints what came back.
//! It signs with the throwaway resource-principal key and token of the signer's test vectors.
//!
//! `cargo run -p oci-transport --example send`

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use oci_transport::{Call, RateGroup, Settings, Transport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let vectors = concat!(env!("CARGO_MANIFEST_DIR"), "/../oci-signer/tests/vectors");
    let lookup = |name: &str| match name {
        "OCI_RESOURCE_PRINCIPAL_VERSION" => Some("2.2".to_owned()),
        "OCI_RESOURCE_PRINCIPAL_RPST" => Some(format!("{vectors}/rpst.jwt")),
        "OCI_RESOURCE_PRINCIPAL_PRIVATE_PEM" => Some(format!("{vectors}/rp_session_key_pkcs1.pem")),
        _ => None,
    };
    let credentials = oci_signer::ResourcePrincipal::from_env(&lookup, SystemTime::now())?;

    // A server that prints the request it gets and answers 200 with a small JSON body.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        if let Ok((mut socket, _)) = listener.accept().await {
            let mut buf = vec![0u8; 64 * 1024];
            let n = socket.read(&mut buf).await.unwrap_or(0);
            let request = String::from_utf8_lossy(&buf[..n]);
            for line in request.lines().filter(|l| !l.starts_with("authorization")) {
                println!("server got: {line}");
            }
            let body = r#"{"accepted":true}"#;
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nopc-request-id: example-1\r\nopc-next-page: page-2\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(answer.as_bytes()).await;
        }
    });

    // One limiter per host and group: "metrics" here is paced at 2 calls a second.
    let metrics = RateGroup::new("metrics");
    let transport = Transport::new(
        Arc::new(credentials),
        Settings {
            group_rates: vec![(metrics, Some(2.0))],
            ..Settings::default()
        },
    )?;
    let url = url::Url::parse(&format!("http://{addr}/20180401/metrics"))?;
    let call = Call::post_json(url, br#"{"metricData":[]}"#.to_vec())
        .with_service("the example service")
        .with_group(metrics)
        .with_answer_limit(64 * 1024);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let answer = transport.send(&call, deadline).await?;
    println!(
        "answer: {} {} (request ids {:?}, next page {:?})",
        answer.status,
        String::from_utf8_lossy(&answer.body),
        answer.request_ids,
        answer.header("opc-next-page"),
    );
    Ok(())
}
