//! Clients that hold connections open without finishing anything: half-sent headers, bodies that
//! never come, idle keep-alives, floods of connections, sockets that never start a stream. Each
//! is shed within its timeout, the cap keeps `/healthz` and live calls answering, and a stopping
//! server does not wait on any of them.

use crate::common;

use callkeeper_relay::listener::{CLOSE_GRACE, HEADER_TIMEOUT, REQUEST_TIMEOUT};
use callkeeper_relay::upgrade::MAX_OPENING;
use common::*;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the server closes the connection (or `limit` passes); returns what it sent and
/// how long it took.
async fn read_until_closed(socket: &mut TcpStream, limit: Duration) -> (String, Duration) {
    let began = Instant::now();
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match tokio::time::timeout(limit.saturating_sub(began.elapsed()), socket.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => received.extend_from_slice(&buffer[..n]),
            Err(_) => panic!("still open after {limit:?}; received {:?}", String::from_utf8_lossy(&received)),
        }
    }
    (String::from_utf8_lossy(&received).into_owned(), began.elapsed())
}

async fn connect(addr: SocketAddr) -> TcpStream {
    TcpStream::connect(addr).await.unwrap()
}

#[tokio::test]
async fn half_sent_headers_are_closed_at_the_header_timeout() {
    let app = spawn_app().await;
    let mut socket = connect(app.addr).await;
    socket.write_all(b"POST /webhook/incoming_call HTTP/1.1\r\nHost: ck.example.com\r\n").await.unwrap();
    let (_, took) = read_until_closed(&mut socket, HEADER_TIMEOUT + Duration::from_secs(3)).await;
    assert!(took >= HEADER_TIMEOUT - Duration::from_millis(500), "closed after {took:?}, before the timeout");
}

#[tokio::test]
async fn a_body_that_never_comes_is_answered_408_and_closed() {
    let app = spawn_app().await;
    let mut socket = connect(app.addr).await;
    // Signed (the signature cannot be checked before the body is in).
    let head = "POST /webhook/incoming_call HTTP/1.1\r\nHost: ck.example.com\r\nX-Twilio-Signature: c2lnbmF0dXJl\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 500\r\n\r\nCallSid=CA";
    socket.write_all(head.as_bytes()).await.unwrap();
    let (answer, took) = read_until_closed(&mut socket, REQUEST_TIMEOUT + Duration::from_secs(3)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "answered {answer:?}");
    assert!(took >= REQUEST_TIMEOUT - Duration::from_millis(500), "answered after {took:?}");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_header_timeout() {
    let app = spawn_app().await;
    let mut socket = connect(app.addr).await;
    socket.write_all(b"GET /healthz HTTP/1.1\r\nHost: ck.example.com\r\n\r\n").await.unwrap();
    let (answer, took) = read_until_closed(&mut socket, HEADER_TIMEOUT + Duration::from_secs(3)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "answered {answer:?}");
    assert!(took >= HEADER_TIMEOUT - Duration::from_millis(500), "closed after {took:?}");
}

#[tokio::test]
async fn past_the_connection_cap_new_connections_are_closed_and_the_server_recovers() {
    let app = spawn_app_with(&[("MAX_CONNECTIONS", "8")]).await;
    // A live stream, the client's pooled keep-alive (it answered the call) and six idle
    // connections fill the cap.
    let (sid, mut call) = app.start_call().await;
    let mut idle = Vec::new();
    for _ in 0..6 {
        let mut socket = connect(app.addr).await;
        socket.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut buffer = [0u8; 512];
        assert!(socket.read(&mut buffer).await.unwrap() > 0, "answered while under the cap");
        idle.push(socket);
    }
    let mut over = connect(app.addr).await;
    let _ = over.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let (answer, took) = read_until_closed(&mut over, Duration::from_secs(2)).await;
    assert_eq!(answer, "", "a connection over the cap is closed unanswered");
    assert!(took < Duration::from_secs(1), "closed at once, took {took:?}");
    // The live call goes on regardless.
    call.speak(&[0xff; 1600]).await;
    assert!(call.closed(Duration::from_millis(200)).await.is_none(), "the live call stays up");
    // Once the idle ones go, new connections are served again.
    drop(idle);
    let mut healthy = false;
    for _ in 0..50 {
        if let Ok(response) = app.client.get(format!("http://{}/healthz", app.addr)).send().await {
            healthy = response.status() == 200;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(healthy, "healthz answers once under the cap");
    call.hang_up();
    app.figures(&sid).await;
}

#[tokio::test]
async fn stopping_does_not_wait_on_idle_or_slow_connections() {
    let mut app = spawn_app().await;
    let mut keep_alive = connect(app.addr).await;
    keep_alive.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut buffer = [0u8; 512];
    assert!(keep_alive.read(&mut buffer).await.unwrap() > 0);
    let mut slow = connect(app.addr).await;
    slow.write_all(b"POST /webhook/incoming_call HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let began = Instant::now();
    app.shutdown.take().unwrap().send(()).unwrap();
    tokio::time::timeout(CLOSE_GRACE + Duration::from_secs(2), &mut app.server)
        .await
        .expect("the server stops within its close grace")
        .unwrap();
    assert!(began.elapsed() <= CLOSE_GRACE + Duration::from_secs(1), "stopped after {:?}", began.elapsed());
    let (_, took) = read_until_closed(&mut keep_alive, Duration::from_secs(1)).await;
    assert!(took < Duration::from_secs(1));
}

#[tokio::test]
async fn sockets_that_never_start_are_capped_and_closed_at_the_handshake_timeout() {
    let app = spawn_app().await;
    let mut opened = Vec::new();
    for _ in 0..MAX_OPENING {
        opened.push(app.dial().await.expect("upgrades under the cap are accepted"));
    }
    let refused = app.dial().await.err().expect("one more upgrade is refused");
    let refused = refused.downcast::<callkeeper::media_client::Refused>().expect("refused with an HTTP status");
    assert_eq!(refused.status, 503);
    for call in opened.iter_mut() {
        let closed = call.closed(callkeeper_relay::session::HANDSHAKE_TIMEOUT + Duration::from_secs(3)).await.expect("closed");
        assert_eq!((closed.code, closed.reason.as_str()), (1008, "no start frame in time"));
    }
    drop(opened);
    // The places are free again: a real call gets through.
    let (sid, call) = app.start_call().await;
    call.hang_up();
    app.figures(&sid).await;
}
