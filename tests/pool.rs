//! Idle and slow connections cost no thread (issue 28: thousands of idle or slow sockets
//! must not lock a service out): the HTTP layer parks them in its worker pool's epoll set.
//! One test in this file, so that the process's thread count is this server's alone.

use bazar::http::{self, Request, Response, ServerConfig, Trust};
use bazar::metrics::Metrics;
use bazar::shutdown::Shutdown;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Threads of this process now.
fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count())
}

/// The status of the answer to `GET /{path}` on a new connection.
fn ask(addr: SocketAddr, path: &str) -> u16 {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "GET /{path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").unwrap();
    status(&mut s)
}

fn status(s: &mut TcpStream) -> u16 {
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("no answer: {text:?}"))
}

/// 400 connections that send nothing and 100 that send half a head leave the server at
/// about its few workers: a normal request is answered at once meanwhile, the halves are
/// answered once their heads are finished (a byte at a time, in turns), and a server with a
/// thread per connection would have started 500 threads. Bodies that stop halfway do not
/// lock the others out either.
#[test]
fn idle_and_slow_connections_hold_no_thread() {
    const IDLE: usize = 400;
    const SLOW: usize = 100;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = Shutdown::new();
    let config = ServerConfig { threads: 4, name: "pool test", trust: Trust::LoopbackOnly };
    let stop = shutdown.clone();
    let server = std::thread::spawn(move || {
        http::serve(listener, config, Arc::new(Metrics::new()), stop, |r: &Request| {
            Response::raw_json(200, format!("{{\"path\":{:?}}}", r.path).into_bytes())
        })
    });
    assert_eq!(ask(addr, "warm"), 200);
    let before = threads();
    let idle: Vec<TcpStream> = (0..IDLE).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let head = "GET /slow HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    let (begun, rest) = head.split_at(head.len() / 2);
    let mut slow: Vec<TcpStream> = (0..SLOW)
        .map(|_| {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(begun.as_bytes()).unwrap();
            s
        })
        .collect();
    // Every connection has reached the server (a request after them all is answered).
    assert_eq!(ask(addr, "meanwhile"), 200, "a normal request among {IDLE} idle and {SLOW} slow connections");
    let during = threads();
    assert!(
        during < before + 40,
        "{} threads more for {} connections that sent no whole request",
        during - before,
        IDLE + SLOW
    );
    // The slow ones finish their heads, a byte per connection in turn.
    for byte in rest.as_bytes() {
        for s in &mut slow {
            s.write_all(std::slice::from_ref(byte)).unwrap();
        }
    }
    let started = Instant::now();
    for s in &mut slow {
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        assert_eq!(status(s), 200, "a head sent in pieces is served once whole");
    }
    assert!(started.elapsed() < Duration::from_secs(30));
    // Bodies that stop halfway hold the workers that read them (up to the body deadline,
    // 408): the pool starts others, and a normal request is answered while they wait,
    // before any of them has had its 408.
    let stalled: Vec<TcpStream> = (0..16)
        .map(|_| {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(b"POST /slow-body HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n12345").unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(ask(addr, "beside-slow-bodies"), 200, "a request beside 16 stalled bodies");
    for s in &stalled {
        s.set_nonblocking(true).unwrap();
        let mut byte = [0u8; 1];
        let nothing = matches!((&*s).read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
        assert!(nothing, "a stalled body was answered before the request beside it");
    }
    drop((idle, stalled));
    shutdown.trigger();
    server.join().unwrap().unwrap();
}
