//! Crowds of idle, slow or busy connections against a front end (issue 28), alone in their
//! process and one at a time: each holds as many sockets as the front end may (10,000
//! where the descriptor limit allows), which would leave tests beside it none. No timing is
//! asserted.

mod common;

use bazar::http::{raise_fd_limit, PER_ADDRESS};
use common::raw::{connect_from, exchange, get_req};
use common::*;
use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// As many connections as a front end may hold (10,000 where the descriptor limit allows),
/// from addresses that each stay under the per-address cap, half of them sending nothing and
/// half of them half a head, each opened again as soon as it is closed: a client from
/// another address is still answered, every time. At capacity a newcomer takes the place
/// of an idle connection of the address that holds the most (the fair share); the hogs'
/// own reconnections only refuse each other. (Before: the client met a full front end and
/// was refused 503 about two times in three.)
#[test]
fn ten_thousand_idle_or_slow_connections_do_not_lock_out_a_client() {
    crowd(0);
}

/// The same, the heaviest address busy rather than idle: its 512 connections each sent a
/// head announcing a body that never comes, so a worker holds every one of them and none
/// can be closed for a newcomer. The place is taken from the heaviest address that has an
/// idle connection. (A review found the first draft looked only at the heaviest address,
/// and the client was answered 1 time in 10.)
#[test]
fn a_busy_heaviest_address_does_not_shield_the_idle_ones() {
    crowd(PER_ADDRESS);
}

/// Fills the front end: `busy` connections from one address that send a head and wait in
/// their body, the rest idle or half-headed; then the client asks 20 times.
fn crowd(busy: usize) {
    // One crowd at a time: each holds as many descriptors as the process may.
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // As the front end does: room for as many connections as it may hold.
    raise_fd_limit();
    let s = Store::start(Opts::default()).expect("a store");
    let fe: SocketAddr = s.fe().trim_start_matches("http://").parse().unwrap();
    let said = fs::read_to_string(&s.frontend.spec.log).unwrap();
    let most: usize = said
        .split("(at most ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the front end says how many connections it holds: {said}"));
    const EACH: usize = 500;
    let hog = move |i: usize| match i.checked_sub(busy) {
        None => Ipv4Addr::new(127, 0, 5, 1),
        Some(i) => Ipv4Addr::new(127, 0, 6 + (i / EACH / 250) as u8, 1 + (i / EACH % 250) as u8),
    };
    let half_a_head = b"GET /info/1 HTTP/1.1\r\nHost: t\r\n";
    let no_body = b"POST /purchase/1 HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n";
    let open = move |i: usize| -> Option<TcpStream> {
        let c = bazar::bench::connect_from(hog(i), fe).ok()?;
        if i < busy {
            let _ = (&c).write_all(no_body);
        } else if i % 2 == 1 {
            let _ = (&c).write_all(half_a_head);
        }
        c.set_nonblocking(true).ok()?;
        Some(c)
    };
    let mut hogs: Vec<Option<TcpStream>> = (0..most).map(open).collect();
    let held = hogs.iter().flatten().count();
    assert!(held >= most * 9 / 10, "the hogs hold the front end ({held} of {most} connections)");

    // The hogs open again whatever is closed, until the client is done.
    let done = Arc::new(AtomicBool::new(false));
    let storm = {
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            let mut reopened = 0u64;
            while !done.load(Ordering::SeqCst) {
                use std::os::fd::AsRawFd;
                let mut fds: Vec<libc::pollfd> = hogs
                    .iter()
                    .map(|c| libc::pollfd {
                        fd: c.as_ref().map_or(-1, |c| c.as_raw_fd()),
                        events: libc::POLLIN,
                        revents: 0,
                    })
                    .collect();
                // SAFETY: `fds` is a valid array of `fds.len()` entries for the call.
                unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 50) };
                for (i, fd) in fds.iter().enumerate() {
                    let closed = fd.fd < 0
                        || (fd.revents != 0 && hogs[i].as_ref().is_some_and(|c| (&*c).read(&mut [0u8; 512]).is_ok()));
                    if closed {
                        hogs[i] = open(i);
                        reopened += 1;
                    }
                }
            }
            reopened
        })
    };
    for i in 0..20 {
        let c = connect_from(Ipv4Addr::new(127, 0, 0, 1), fe).expect("connected");
        let (head, body) = exchange(&c, &get_req("/info/1", "Connection: close\r\n"));
        assert_eq!(head.status, 200, "request {i} of the client among {most} hogs: {body}");
        std::thread::sleep(Duration::from_millis(250));
    }
    done.store(true, Ordering::SeqCst);
    let reopened = storm.join().unwrap();
    let metrics = String::from_utf8(get(&s.fe(), "/metrics").body).unwrap();
    let evicted = metrics.lines().any(|l| l.starts_with("bazar_requests_total{route=\"evicted\""));
    assert!(evicted, "the client's places were taken from the hogs ({reopened} hogs opened again):\n{metrics}");
}
