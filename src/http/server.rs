//! The sockets: the accept loop, one thread per connection, reading requests within their
//! limits and deadlines, keep-alive, writing answers and the graceful stop.
//!
//! - the request head is read with a bound ([`MAX_HEAD`], else 431) and a deadline
//!   ([`HEAD_TIMEOUT`], else 408), and parsed by `parse.rs`; the body is read only when its
//!   declared length is at most [`MAX_BODY`] (else 413 and the connection is closed unread);
//! - each connection has its own thread (small stack), up to `budget::max_connections` in
//!   all and [`PER_ADDRESS`] per client address; one over a cap gets the prebuilt
//!   [`REFUSED`] at once and is closed, with no thread started; a slow client holds only
//!   its own thread, never a worker another client needs;
//! - handlers run in three budgets (`budget.rs`): control (`/internal/...`), peer (the
//!   services' calls to each other) and public, each with its own slots (a counting
//!   semaphore each, `semaphore.rs`); a public request that finds no slot within
//!   [`PUBLIC_WAIT`], or finds as many waiting as there are slots, is answered 503 with
//!   `Retry-After`; a handler that from some point only waits for other services gives
//!   its public slot back early ([`step_aside`]); a connection thread that
//!   serves public requests lowers its own CPU priority (nice 10), so that under a surge
//!   the threads that keep the store together win the CPU;
//! - keep-alive per HTTP/1.1, idle connections closed after [`IDLE_TIMEOUT`] (a new one
//!   that sends nothing after [`FIRST_HEAD_TIMEOUT`]); with more than half the connections
//!   open, after [`PRESSED_IDLE`], and an unfinished head after [`PRESSED_HEAD`];
//! - shutdown is an input: once set, the accept loop stops, requests in flight finish
//!   and idle connections are closed (within [`DRAIN_TIMEOUT`]), then [`serve`] returns.
//!
//! Invariant: a connection thread holds at most `MAX_HEAD` bytes of head and `MAX_BODY`
//! bytes of body (plus its read buffer); a handler panic is answered 500 and logged, and
//! never takes the process down.

use super::budget::{
    classify, max_connections, raise_fd_limit, Addresses, Class, Trust, CONTROL_SLOTS, FIRST_HEAD_TIMEOUT, PEER_WAIT,
    PER_ADDRESS, PRESSED_HEAD, PRESSED_IDLE, PUBLIC_WAIT, REFUSED, RETRY_AFTER,
};
use super::message::{Request, Response};
use super::parse::{blank_lines, body_length, chunk_size, parse_head, wants_keep_alive, BodyLength};
use super::semaphore::{Permit, Semaphore};
use super::{BODY_TIMEOUT, DRAIN_TIMEOUT, HEAD_TIMEOUT, IDLE_TIMEOUT, MAX_BODY, MAX_HEAD};
use crate::error::Error;
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use std::cell::RefCell;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Granularity at which blocked reads and the accept loop notice a shutdown.
const TICK: Duration = Duration::from_millis(100);
/// Stack of a connection thread: parsing and handlers need little.
const CONNECTION_STACK: usize = 256 * 1024;

/// Settings of one server.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Most public handlers running at once, and as many for peers' calls (the control
    /// budget has its own `CONTROL_SLOTS`).
    pub threads: usize,
    /// Name used in log lines.
    pub name: &'static str,
    /// Who may use the control and peer budgets: the admission of the internal routes.
    pub trust: Trust,
}

/// Serves `listener` until `shutdown` is set, then drains and returns.
pub fn serve<H>(
    listener: TcpListener,
    config: ServerConfig,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
    handler: H,
) -> io::Result<()>
where
    H: Fn(&Request) -> Response + Send + Sync + 'static,
{
    let max_open = max_connections(raise_fd_limit());
    let threads = config.threads.max(1);
    let shared = Arc::new(Shared {
        handler,
        metrics,
        shutdown: shutdown.clone(),
        control: Arc::new(Semaphore::new(CONTROL_SLOTS)),
        peer: Arc::new(Semaphore::new(threads)),
        public: Arc::new(Semaphore::new(threads)),
        public_queue: threads,
        trust: config.trust,
        open: AtomicUsize::new(0),
        max_open,
        addresses: Addresses::default(),
    });
    log::info!("{} listening on {} (at most {max_open} connections)", config.name, listener.local_addr()?);
    while !shutdown.is_set() {
        if !wait_readable(&listener, TICK) {
            continue;
        }
        let (stream, ip) = match listener.accept() {
            Ok((s, a)) => (s, a.ip()),
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                log::warn!("accept failed: {e}");
                std::thread::sleep(TICK);
                continue;
            }
        };
        if shared.open.fetch_add(1, Ordering::SeqCst) >= max_open {
            shared.open.fetch_sub(1, Ordering::SeqCst);
            refuse(stream, &shared.metrics);
            continue;
        }
        if !shared.addresses.admit(ip, PER_ADDRESS) {
            shared.open.fetch_sub(1, Ordering::SeqCst);
            refuse(stream, &shared.metrics);
            continue;
        }
        let conn = Arc::clone(&shared);
        let spawned = std::thread::Builder::new().name("conn".into()).stack_size(CONNECTION_STACK).spawn(move || {
            conn.connection(stream);
            conn.addresses.release(ip);
            conn.open.fetch_sub(1, Ordering::SeqCst);
        });
        if let Err(e) = spawned {
            shared.addresses.release(ip);
            shared.open.fetch_sub(1, Ordering::SeqCst);
            log::warn!("cannot start a connection thread: {e}");
        }
    }
    drop(listener);
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    while shared.open.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    log::info!("{} stopped", config.name);
    Ok(())
}

/// What every connection thread shares.
struct Shared<H> {
    handler: H,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
    /// Handler slots of the store's own protocol (`/internal/...`).
    control: Arc<Semaphore>,
    /// Handler slots of the services' calls to each other.
    peer: Arc<Semaphore>,
    /// Handler slots of everyone else.
    public: Arc<Semaphore>,
    /// Most public requests waiting for a slot; one more is shed at once.
    public_queue: usize,
    /// Who may use `control` and `peer`.
    trust: Trust,
    /// Open connections, for the limit and for draining.
    open: AtomicUsize,
    /// Most connections open at once.
    max_open: usize,
    /// Open connections per client address.
    addresses: Addresses,
}

/// Why reading a request stopped.
enum ReadError {
    /// The connection closed, timed out while idle, or the server is stopping: close quietly.
    Closed,
    /// The client sent something we answer with an error, then close.
    Answer(Error),
}

impl<H: Fn(&Request) -> Response + Send + Sync + 'static> Shared<H> {
    fn connection(&self, stream: TcpStream) {
        let _ = stream.set_nodelay(true);
        if stream.set_read_timeout(Some(TICK)).is_err() {
            return;
        }
        // Who is on the other end: what a service with no token admits admin requests by.
        let peer = stream.peer_addr().ok().map(|a| a.ip());
        let mut reader = BufReader::with_capacity(8 * 1024, &stream);
        let mut first = true;
        let mut niced = false;
        loop {
            let limits = self.limits(first);
            first = false;
            let request = match read_request(&mut reader, &self.shutdown, limits) {
                Ok(r) => Request { peer, ..r },
                Err(ReadError::Closed) => return,
                Err(ReadError::Answer(e)) => {
                    let r = Response::error(&e).at("invalid");
                    self.metrics.record(r.route, r.status, Duration::ZERO);
                    let _ = write_response(&mut &stream, &r, false, false);
                    linger(&stream);
                    return;
                }
            };
            let started = Instant::now();
            let class = classify(&request, &self.trust);
            if class == Class::Public && !niced {
                // Public work yields the CPU to the store's own threads; a thread can
                // raise its nice value but not lower it again, so it stays so.
                lower_priority();
                niced = true;
            }
            // The request's span: continues the caller's trace, or starts one for public
            // work on the API (see `trace::starts_trace`); current on this thread until
            // the answer is ready.
            let may_start = class == Class::Public && crate::trace::starts_trace(&request.path);
            let mut span =
                crate::trace::serve(request.header("traceparent"), request.header("tracestate"), may_start, "request");
            let mut response = match self.permit(class) {
                Some(permit) => {
                    // A public slot sits where `step_aside` can give it back early; the
                    // seat gives it back at the latest when the handler ends (or panics).
                    let _seat = Seat::take(permit, class == Class::Public);
                    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (self.handler)(&request))) {
                        Ok(r) => r,
                        Err(_) => {
                            log::error!("handler panicked on {} {}", request.method, request.path);
                            Response::error(&Error::Internal("internal error".into()))
                        }
                    }
                }
                None => shed(class),
            };
            if span.is_recording() {
                span.rename(format!("{} {}", request.method, response.route));
                span.attr("http.target", request.path.as_str()).attr("http.status", response.status);
                if response.status >= 500 {
                    span.fail();
                }
                // W3C Trace Context Level 2: which trace the answer belongs to (the
                // storefront links an order to the view of its trace with it).
                if let Some(ctx) = span.context() {
                    response.headers.push(("traceresponse", ctx.traceparent()));
                }
            }
            drop(span);
            self.metrics.record(response.route, response.status, started.elapsed());
            let keep =
                wants_keep_alive(&request) && !self.shutdown.is_set() && !(response.status == 503 && self.pressed());
            if write_response(&mut &stream, &response, keep, request.method == "HEAD").is_err() || !keep {
                return;
            }
        }
    }
}

impl<H> Shared<H> {
    /// Whether more than half the connections this process may hold are open.
    fn pressed(&self) -> bool {
        self.open.load(Ordering::Relaxed) > self.max_open / 2
    }

    /// The deadlines for the next request's head: shorter for a connection's first, and
    /// shorter still under pressure.
    fn limits(&self, first: bool) -> Limits {
        match (self.pressed(), first) {
            (true, _) => Limits { idle: PRESSED_IDLE, head: PRESSED_HEAD },
            (false, true) => Limits { idle: FIRST_HEAD_TIMEOUT, head: HEAD_TIMEOUT },
            (false, false) => Limits { idle: IDLE_TIMEOUT, head: HEAD_TIMEOUT },
        }
    }

    /// A handler slot of `class`'s budget, or `None` when the request is to be shed.
    fn permit(&self, class: Class) -> Option<Permit> {
        match class {
            Class::Control => Some(self.control.acquire()),
            Class::Peer => self.peer.acquire_within(PEER_WAIT, usize::MAX),
            Class::Public => self.public.acquire_within(PUBLIC_WAIT, self.public_queue),
        }
    }
}

thread_local! {
    /// The public slot of the request this thread is serving, while it holds one.
    static PUBLIC_SLOT: RefCell<Option<Permit>> = const { RefCell::new(None) };
}

/// Gives back the public handler slot of the request this thread serves, before its
/// handler ends: for a handler that from here on only waits for other services (a
/// purchase waiting for its batch's answer), so that its wait does not count against the
/// requests that need the CPU. Public slots bound the work a service does at once, not
/// the answers it awaits; what waits is bounded by the connection caps and by the
/// batches' own limits. Does nothing outside a public request, or when called twice.
pub fn step_aside() {
    drop(PUBLIC_SLOT.with(|slot| slot.borrow_mut().take()));
}

/// Where a request's handler slot is kept while its handler runs: a public one in
/// [`PUBLIC_SLOT`] (for [`step_aside`]), any other here. Dropping the seat gives back
/// whichever is still held.
struct Seat(Option<Permit>);

impl Seat {
    fn take(permit: Permit, public: bool) -> Seat {
        if !public {
            return Seat(Some(permit));
        }
        PUBLIC_SLOT.with(|slot| *slot.borrow_mut() = Some(permit));
        Seat(None)
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        if self.0.take().is_none() {
            step_aside();
        }
    }
}

/// The answer to a request that found no handler slot in time.
fn shed(class: Class) -> Response {
    let who = if class == Class::Public { "requests" } else { "calls from other services" };
    Response::error(&Error::Unavailable(format!(
        "overloaded: too many {who} at once, retry after {RETRY_AFTER} second"
    )))
    .with_header("Retry-After", RETRY_AFTER)
    .at("shed")
}

/// Refuses a connection over a cap at once: the prebuilt answer in one write, then close.
/// What the client already sent is read first (without waiting), so that the close does
/// not reset the connection before the answer is read.
fn refuse(stream: TcpStream, metrics: &Metrics) {
    metrics.record("refused", 503, Duration::ZERO);
    if stream.set_nonblocking(true).is_err() {
        return;
    }
    let mut buf = [0u8; 4096];
    let _ = (&stream).read(&mut buf);
    let _ = (&stream).write_all(REFUSED);
    let _ = stream.shutdown(std::net::Shutdown::Write);
}

/// Lowers the calling thread's CPU priority to nice 10 (Linux: a thread's own nice value).
fn lower_priority() {
    // SAFETY: plain system calls on the calling thread's own id.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 10);
    }
}

/// How long a connection may sit before a head begins (`idle`), and how long a head may
/// take once begun (`head`).
#[derive(Clone, Copy, Debug)]
struct Limits {
    idle: Duration,
    head: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { idle: IDLE_TIMEOUT, head: HEAD_TIMEOUT }
    }
}

/// Reads one request, with the head and body limits and deadlines.
fn read_request(reader: &mut impl BufRead, shutdown: &Shutdown, limits: Limits) -> Result<Request, ReadError> {
    let mut request = read_head(reader, shutdown, limits)?;
    let deadline = Instant::now() + BODY_TIMEOUT;
    request.body = match body_length(&request).map_err(ReadError::Answer)? {
        BodyLength::Fixed(n) => read_exact(reader, n, deadline)?,
        BodyLength::Chunked => read_chunked(reader, deadline)?,
    };
    Ok(request)
}

/// Reads until the bytes hold a whole head, as [`parse_head`] decides, and takes exactly
/// the head out of `reader`: the body and any pipelined request stay there.
///
/// `head` holds at most `MAX_HEAD + 1` bytes, which is enough for the parser to answer 431.
/// The parser runs when a read brought a line feed (a head can only end with one), on the
/// first bytes (to refuse garbage at once) and at the limit, so a client that sends one
/// byte at a time costs one parse per line, not one per byte.
fn read_head(reader: &mut impl BufRead, shutdown: &Shutdown, limits: Limits) -> Result<Request, ReadError> {
    let mut head: Vec<u8> = Vec::new();
    let idle_since = Instant::now();
    let mut first_byte: Option<Instant> = None;
    loop {
        let bytes = match reader.fill_buf() {
            // Closed, before a request or within one.
            Ok([]) => return Err(ReadError::Closed),
            Ok(bytes) => bytes,
            Err(e) if is_timeout(&e) => {
                match first_byte {
                    None if shutdown.is_set() || idle_since.elapsed() > limits.idle => return Err(ReadError::Closed),
                    Some(t) if t.elapsed() > limits.head => return Err(ReadError::Answer(Error::RequestTimeout)),
                    _ => {}
                }
                continue;
            }
            Err(_) => return Err(ReadError::Closed),
        };
        first_byte.get_or_insert_with(Instant::now);
        if head.is_empty() {
            // Robustness (RFC 9112 2.2): empty lines before the request line are dropped.
            let blank = blank_lines(bytes);
            if blank > 0 {
                reader.consume(blank);
                continue;
            }
        }
        let old = head.len();
        let new = &bytes[..bytes.len().min(MAX_HEAD + 1 - old)];
        let (taken, line_end) = (new.len(), new.contains(&b'\n'));
        head.extend_from_slice(new);
        if old == 0 || line_end || head.len() > MAX_HEAD {
            if let Some((request, len)) = parse_head(&head).map_err(ReadError::Answer)? {
                // `len > old`: the head ends with a line feed, and had one come before this
                // read, the parse after it would have found the head whole.
                reader.consume(len - old);
                return Ok(request);
            }
        }
        reader.consume(taken);
    }
}

/// Closes after an error answer without resetting the connection: stops writing, then
/// reads and drops what the client still sends, bounded in bytes and time, so the client
/// reads the answer instead of a reset.
fn linger(stream: &TcpStream) {
    const MAX_DRAIN: usize = 1024 * 1024;
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut buf = [0u8; 8192];
    let mut drained = 0;
    while drained < MAX_DRAIN && Instant::now() < deadline {
        match (&*stream).read(&mut buf) {
            Ok(0) => return,
            Ok(n) => drained += n,
            Err(e) if is_timeout(&e) => {}
            Err(_) => return,
        }
    }
}

/// Reads exactly `n` (at most [`MAX_BODY`]) bytes before `deadline`.
fn read_exact(reader: &mut impl BufRead, n: usize, deadline: Instant) -> Result<Vec<u8>, ReadError> {
    let mut body = vec![0; n];
    let mut filled = 0;
    while filled < n {
        match reader.read(&mut body[filled..]) {
            Ok(0) => return Err(ReadError::Closed),
            Ok(k) => filled += k,
            Err(e) if is_timeout(&e) => {
                if Instant::now() > deadline {
                    return Err(ReadError::Answer(Error::RequestTimeout));
                }
            }
            Err(_) => return Err(ReadError::Closed),
        }
    }
    Ok(body)
}

/// Reads one line (at most `max` bytes) before `deadline`.
fn read_line(reader: &mut impl BufRead, max: usize, deadline: Instant) -> Result<Vec<u8>, ReadError> {
    let mut line = Vec::new();
    loop {
        let limit = (max + 1).saturating_sub(line.len()) as u64;
        match reader.by_ref().take(limit).read_until(b'\n', &mut line) {
            Ok(0) => return Err(ReadError::Closed),
            Ok(_) if line.last() == Some(&b'\n') => return Ok(line),
            Ok(_) if line.len() > max => {
                return Err(ReadError::Answer(Error::BadRequest("chunk framing line too long".into())))
            }
            Ok(_) => return Err(ReadError::Closed),
            Err(e) if is_timeout(&e) => {
                if Instant::now() > deadline {
                    return Err(ReadError::Answer(Error::RequestTimeout));
                }
            }
            Err(_) => return Err(ReadError::Closed),
        }
    }
}

/// Reads a chunked body (RFC 9112 7.1), at most [`MAX_BODY`] bytes in all.
fn read_chunked(reader: &mut impl BufRead, deadline: Instant) -> Result<Vec<u8>, ReadError> {
    const MAX_LINE: usize = 1024;
    let mut body = Vec::new();
    loop {
        let size = chunk_size(&read_line(reader, MAX_LINE, deadline)?).map_err(ReadError::Answer)?;
        if size == 0 {
            // Trailer fields up to the blank line; their total is bounded like a head.
            let mut trailer = 0;
            loop {
                let line = read_line(reader, MAX_LINE, deadline)?;
                if line == b"\r\n" || line == b"\n" {
                    return Ok(body);
                }
                trailer += line.len();
                if trailer > MAX_HEAD {
                    return Err(ReadError::Answer(Error::HeadersTooLarge));
                }
            }
        }
        if body.len() + size > MAX_BODY {
            return Err(ReadError::Answer(Error::PayloadTooLarge));
        }
        body.extend(read_exact(reader, size, deadline)?);
        let end = read_line(reader, 2, deadline)?;
        if end != b"\r\n" && end != b"\n" {
            return Err(ReadError::Answer(Error::BadRequest("bad chunked body: chunk not followed by CRLF".into())));
        }
    }
}

fn write_response(out: &mut impl Write, r: &Response, keep_alive: bool, head_only: bool) -> io::Result<()> {
    let mut buf = Vec::with_capacity(160 + r.body.len());
    write!(
        buf,
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n",
        r.status,
        reason(r.status),
        r.content_type,
        r.body.len()
    )?;
    for (name, value) in &r.headers {
        write!(buf, "{name}: {value}\r\n")?;
    }
    buf.extend_from_slice(if keep_alive { b"\r\n" } else { b"Connection: close\r\n\r\n" });
    if !head_only {
        buf.extend_from_slice(&r.body);
    }
    out.write_all(&buf)?;
    out.flush()
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "",
    }
}

/// Whether a socket call failed only because its timeout passed (or a signal cut it short).
pub(crate) fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted)
}

/// Waits until the listener has a connection to accept, or `timeout` passes.
fn wait_readable(listener: &TcpListener, timeout: Duration) -> bool {
    let mut fd = libc::pollfd { fd: listener.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd that lives across the call.
    let n = unsafe { libc::poll(&mut fd, 1, timeout.as_millis() as libc::c_int) };
    n > 0
}

/// Binds `addr`, with a clear error naming it.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    TcpListener::bind(addr).map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that hands out at most `step` bytes per read, as a slow network would.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.fill_buf()?.len().min(buf.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.consume(n);
            Ok(n)
        }
    }

    impl BufRead for Trickle<'_> {
        fn fill_buf(&mut self) -> io::Result<&[u8]> {
            Ok(&self.data[..self.step.min(self.data.len())])
        }

        fn consume(&mut self, n: usize) {
            self.data = &self.data[n..];
        }
    }

    /// Pipelined requests whatever the bytes per read: each head is taken whole and no more,
    /// bodies and the next request stay in the reader.
    #[test]
    fn pipelined_requests_in_pieces() {
        let bytes: &[u8] = b"\r\n\nGET /a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc\
            POST /b HTTP/1.1\nTransfer-Encoding: chunked\n\n1\r\nx\r\n0\r\n\r\n\
            \r\nGET /c?d HTTP/1.0\r\n\r\n";
        let shutdown = Shutdown::new();
        for step in [1, 2, 3, 7, 8192] {
            let mut reader = Trickle { data: bytes, step };
            let mut got = Vec::new();
            loop {
                match read_request(&mut reader, &shutdown, Limits::default()) {
                    Ok(r) => got.push(format!(
                        "{} {} {:?} {}",
                        r.method,
                        r.path,
                        r.version,
                        String::from_utf8_lossy(&r.body)
                    )),
                    Err(ReadError::Closed) => break,
                    Err(ReadError::Answer(e)) => panic!("step {step}: {e:?}"),
                }
            }
            assert_eq!(got, ["GET /a Http11 abc", "POST /b Http11 x", "GET /c Http10 "], "step {step}");
        }
    }

    #[test]
    fn chunked_bodies() {
        let deadline = Instant::now() + Duration::from_secs(1);
        let read = |text: &str| {
            read_chunked(&mut text.as_bytes(), deadline).map_err(|e| match e {
                ReadError::Answer(e) => e.status(),
                ReadError::Closed => 0,
            })
        };
        assert_eq!(read("3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\nTrailer: x\r\n\r\n").unwrap(), b"abcde");
        assert_eq!(read("0\r\n\r\n").unwrap(), b"");
        assert_eq!(read("zz\r\n"), Err(400));
        assert_eq!(read("3\r\nabcX\r\n"), Err(400));
        assert_eq!(read("ffffffff\r\n"), Err(413));
        assert_eq!(read("3\r\nab"), Err(0));
        let big = format!("{:x}\r\n{}\r\n", MAX_BODY, "a".repeat(MAX_BODY)) + "1\r\na\r\n0\r\n\r\n";
        assert_eq!(read(&big), Err(413));
    }

    /// xorshift64*: a small deterministic generator for the property tests.
    pub(crate) struct Rng(pub u64);

    impl Rng {
        pub fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        pub fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    /// Property: whatever the bytes, reading a request gives a complete request, a 4xx
    /// answer, or a closed connection; never a panic, never an answer of 5xx.
    #[test]
    fn any_bytes_give_a_request_or_a_4xx() {
        let seeds: &[&[u8]] = &[
            b"GET /info/1 HTTP/1.1\r\nHost: x\r\n\r\n",
            b"POST /purchase/2 HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
            b"PATCH /books/3 HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 17\r\n\r\n{\"quantity\": 20}",
            b"POST /books/1/purchase HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n0\r\n\r\n",
            b"GET /search/distributed%20systems?topic=a+b HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        ];
        let pieces: &[&[u8]] = &[
            b"\r\n",
            b"\n",
            b":",
            b" ",
            b"%",
            b"%ff",
            b"\xff\xfe",
            b"\0",
            b"Content-Length: 99999999999999999999\r\n",
            b"Transfer-Encoding: chunked\r\n",
            b"ffffffff\r\n",
            b"/",
            b"?",
            b"=",
            b"-1",
        ];
        let shutdown = Shutdown::new();
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for case in 0..20_000 {
            let mut bytes = seeds[rng.below(seeds.len())].to_vec();
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(bytes.len() + 1);
                match rng.below(5) {
                    0 => bytes.insert(at, rng.next() as u8),
                    1 if at < bytes.len() => bytes[at] = rng.next() as u8,
                    2 => bytes.truncate(at),
                    3 => bytes.splice(at..at, pieces[rng.below(pieces.len())].iter().copied()).for_each(drop),
                    _ => bytes.splice(at..at, std::iter::repeat_n(b'a', rng.below(3) * MAX_HEAD / 2)).for_each(drop),
                }
            }
            match read_request(&mut bytes.as_slice(), &shutdown, Limits::default()) {
                Ok(r) => {
                    let _ = (r.segments(), r.query_param("topic"), wants_keep_alive(&r));
                    assert!(r.body.len() <= MAX_BODY);
                }
                Err(ReadError::Answer(e)) => assert!(
                    (400..500).contains(&e.status()),
                    "case {case}: {e:?} for {:?}",
                    String::from_utf8_lossy(&bytes)
                ),
                Err(ReadError::Closed) => {}
            }
        }
    }

    /// A public request that steps aside gives its slot to the next one while it waits; one
    /// that does not holds it, and with one slot the next request waits for it.
    #[test]
    fn a_request_that_steps_aside_frees_its_slot_while_it_waits() {
        use std::sync::mpsc;
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = Shutdown::new();
        let (release, held) = mpsc::channel::<()>();
        let held = std::sync::Mutex::new(held);
        let handler = move |r: &Request| {
            if r.path != "/quick" {
                if r.path == "/aside" {
                    step_aside();
                }
                held.lock().unwrap().recv_timeout(Duration::from_secs(10)).ok();
            }
            Response::raw_json(200, b"{}".to_vec())
        };
        let config = ServerConfig { threads: 1, name: "test", trust: Trust::Anyone };
        let server = {
            let shutdown = shutdown.clone();
            std::thread::spawn(move || serve(listener, config, Arc::new(Metrics::new()), shutdown, handler))
        };
        let ask = |path: &str| {
            let mut stream = TcpStream::connect(addr).unwrap();
            write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
            stream
        };
        let answer = |mut stream: TcpStream| {
            let mut text = String::new();
            stream.read_to_string(&mut text).unwrap();
            text.split(' ').nth(1).unwrap().parse::<u16>().unwrap()
        };
        for (waiting, quick_waits) in [("/aside", false), ("/hold", true)] {
            let first = ask(waiting);
            std::thread::sleep(Duration::from_millis(200));
            let asked = Instant::now();
            let quick = answer(ask("/quick"));
            let took = asked.elapsed();
            if quick_waits {
                // The one slot is held: /quick waits for it (PUBLIC_WAIT) and is shed.
                assert_eq!(quick, 503, "{waiting}: the slot is held while it waits");
                assert!(took >= PUBLIC_WAIT / 2, "{waiting}: refused after {took:?}");
            } else {
                assert_eq!(quick, 200, "{waiting}: the slot was given back");
            }
            release.send(()).unwrap();
            assert_eq!(answer(first), 200);
        }
        shutdown.trigger();
        server.join().unwrap().unwrap();
    }
}
