//! The sockets: the accept loop, a pool of workers for idle public connections, a thread
//! for each connection of the store's own services, reading requests within their limits
//! and deadlines, keep-alive, writing answers and the graceful stop.
//!
//! - the request head is read with a bound ([`MAX_HEAD`], else 431) and a deadline
//!   ([`HEAD_TIMEOUT`], else 408), and parsed by `parse.rs`; the body is read only when its
//!   declared length is at most [`MAX_BODY`] (else 413 and the connection is closed unread);
//! - **connections cost no thread while idle.** The accept loop counts a new connection
//!   against the caps (`budget::max_connections` in all, [`PER_ADDRESS`] per client
//!   address; one over gets the prebuilt [`REFUSED`] at once and is closed) and *parks*
//!   it: it sits in one epoll set (`poll.rs`) with a deadline. The pool's workers all wait
//!   on that set (leader/followers: the kernel gives each readiness to one of them); the
//!   worker that gets a connection reads what has arrived, and with a whole head serves
//!   the request itself, then the next one if it has come, and parks the connection again
//!   once nothing more is there. A head that comes in pieces is kept with the connection
//!   between readinesses, so a slow client holds no thread at all. The accept loop also
//!   closes parked connections whose deadline passed (408 when a head had begun);
//! - **the pool grows when its workers wait, not when they work**: it starts with
//!   [`min_workers`] (twice the cores); a handler about to wait for another service says so
//!   ([`blocking`]: the client of `crate::client`, a batch's follower, a write waiting for
//!   the group commit, [`step_aside`]; and this layer itself for a body that has not all
//!   come with its head, and for the linger after an error answer, so that stalled bodies
//!   and bad requests cannot hold every worker), and whenever fewer than the minimum are
//!   left that do not wait, one more starts at once; the accept loop adds one when none
//!   waits for connections and none has finished a request for [`STALL`] (handlers that
//!   wait without saying so); a worker beyond the minimum that got no connection for
//!   [`RETIRE`] leaves. Busy workers therefore
//!   serve ready connections one after the other on the CPU they hold, instead of a thread
//!   per connection woken per request;
//! - **an answer may be sent later, by another thread** ([`later`]): a public request
//!   served by a worker, with nothing more from its client behind it, hands its
//!   connection to its handler, which passes it on (the front end: to the batch that
//!   carries a purchase) and returns; whoever has the answer sends it ([`Reply::send`])
//!   and parks the connection again. No thread waits for such a request, and the worker
//!   that read it serves the next connection at once;
//! - **the store's own traffic never waits for a worker**: a connection whose request is
//!   control or peer (`budget.rs`) moves to a thread of its own for the rest of its life,
//!   which blocks on it as before (the services' connection pools are few and long-lived);
//! - handlers run in three budgets (`budget.rs`): control (`/internal/...`), peer (the
//!   services' calls to each other) and public, each with its own slots (a counting
//!   semaphore each, `semaphore.rs`); a public request that finds no slot within
//!   [`PUBLIC_WAIT`], or finds as many waiting as there are slots, is answered 503 with
//!   `Retry-After`; a handler that from some point only waits for other services gives
//!   its public slot back early ([`step_aside`]). Public work cannot crowd out the
//!   threads that keep the store together: the workers that run at once are about
//!   [`min_workers`] whatever the load (the rest of a surge waits in the kernel's socket
//!   buffers, costing no thread), and a connection thread that serves a public request
//!   lowers itself to nice 10;
//! - keep-alive per HTTP/1.1, idle connections closed after [`IDLE_TIMEOUT`] (a new one
//!   that sends nothing after [`FIRST_HEAD_TIMEOUT`]); with more than half the connections
//!   open, after [`PRESSED_IDLE`], and an unfinished head after [`PRESSED_HEAD`];
//! - shutdown is an input: once set, the accept loop stops, idle connections are closed,
//!   requests in flight finish (within [`DRAIN_TIMEOUT`]), then [`serve`] returns.
//!
//! Invariant: a connection holds at most `MAX_HEAD` bytes of head and `MAX_BODY` bytes of
//! body (plus its read buffer); a parked connection is owned by the pool's map and by no
//! thread, a connection taken from the map by exactly one thread (epoll's one-shot
//! readiness, `poll.rs`), which serves it, parks it again, or hands it to a [`Reply`]
//! that carries it to the thread that sends its answer; a handler panic is answered 500 and logged, and never takes the
//! process down.

use super::budget::{
    classify, max_connections, raise_fd_limit, Addresses, Class, Trust, CONTROL_SLOTS, FIRST_HEAD_TIMEOUT, PEER_WAIT,
    PER_ADDRESS, PRESSED_HEAD, PRESSED_IDLE, PUBLIC_WAIT, REFUSED, RETRY_AFTER,
};
use super::message::{Request, Response};
use super::parse::{blank_lines, body_length, chunk_size, parse_head, wants_keep_alive, BodyLength};
use super::poll::Epoll;
use super::semaphore::{Permit, Semaphore};
use super::{BODY_TIMEOUT, DRAIN_TIMEOUT, HEAD_TIMEOUT, IDLE_TIMEOUT, MAX_BODY, MAX_HEAD};
use crate::error::Error;
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::trace::Span;
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Granularity at which blocked reads and idle workers notice a shutdown, and at which the
/// accept loop checks parked connections' deadlines and the pool's progress.
const TICK: Duration = Duration::from_millis(100);
/// With no worker waiting for connections and none finishing a request for this long, the
/// pool takes one more.
const STALL: Duration = Duration::from_secs(1);
/// A worker beyond the minimum that got no connection for this long leaves.
const RETIRE: Duration = Duration::from_secs(1);
/// Stack of a worker or connection thread: parsing and handlers need little.
const CONNECTION_STACK: usize = 256 * 1024;

/// Workers kept however quiet the server is: two per core, so that the CPU is used while
/// one waits for something it did not announce. Asked once: the standard library reads
/// the cgroup's files at every call.
fn min_workers() -> usize {
    static MIN: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *MIN.get_or_init(|| 2 * std::thread::available_parallelism().map_or(2, |n| n.get()))
}

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
        gate: Arc::new(Gate { open: AtomicUsize::new(0), max_open, addresses: Addresses::default() }),
        pool: Arc::new(Pool::new()?),
    });
    for _ in 0..min_workers() {
        shared.spawn_worker();
    }
    log::info!("{} listening on {} (at most {max_open} connections)", config.name, listener.local_addr()?);
    let mut swept = Instant::now();
    while !shutdown.is_set() {
        if wait_readable(&listener, TICK) {
            match listener.accept() {
                Ok((stream, addr)) => shared.admit(stream, addr.ip()),
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    log::warn!("accept failed: {e}");
                    std::thread::sleep(TICK);
                }
            }
        }
        shared.watch_over();
        if swept.elapsed() >= TICK {
            swept = Instant::now();
            shared.sweep(false);
        }
    }
    drop(listener);
    // Idle connections are closed now; those in a handler close once answered.
    shared.sweep(true);
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    while shared.gate.open.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
        shared.sweep(true);
    }
    log::info!("{} stopped", config.name);
    Ok(())
}

/// What the accept loop, the workers and the connection threads share.
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
    /// The connection count and caps.
    gate: Arc<Gate>,
    /// Idle public connections and the workers that wait for them.
    pool: Arc<Pool>,
}

/// Open connections: the caps and the count for draining. Every [`Conn`] holds a share
/// and counts itself out when dropped.
struct Gate {
    open: AtomicUsize,
    max_open: usize,
    addresses: Addresses,
}

impl Gate {
    /// Whether more than half the connections this process may hold are open.
    fn pressed(&self) -> bool {
        self.open.load(Ordering::Relaxed) > self.max_open / 2
    }

    /// Whether a connection stays open after an answer of `status`: its client asked
    /// (`wanted`), the server is not `stopping`, and a 503 under pressure closes it.
    fn keeps(&self, wanted: bool, stopping: bool, status: u16) -> bool {
        wanted && !stopping && !(status == 503 && self.pressed())
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
}

/// A client's connection: its socket behind a read buffer, the head read so far.
struct Conn {
    reader: BufReader<Sock>,
    /// The next request's head, as far as it came.
    head: Head,
    ip: IpAddr,
    /// No request answered yet: a new connection has [`FIRST_HEAD_TIMEOUT`] to begin.
    first: bool,
    /// In the pool's epoll set (added once, armed again at every park).
    watched: bool,
    gate: Arc<Gate>,
}

impl Conn {
    fn stream(&self) -> &TcpStream {
        &self.reader.get_ref().stream
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.gate.addresses.release(self.ip);
        self.gate.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A socket whose reads either wait (up to its read timeout, [`TICK`]) or, while
/// `dontwait`, take only what has arrived (`MSG_DONTWAIT`), so one socket serves both a
/// worker that must not wait for a slow client and a connection thread that may.
struct Sock {
    stream: TcpStream,
    dontwait: bool,
}

impl Read for Sock {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !self.dontwait {
            return (&self.stream).read(buf);
        }
        // SAFETY: `buf` is valid for `buf.len()` bytes and the descriptor is open.
        let n = unsafe { libc::recv(self.stream.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }
}

/// The connection pool: idle connections parked in one epoll set, and the workers that
/// wait on it (see the module doc).
struct Pool {
    epoll: Epoll,
    /// Parked connections by token, with the deadline each must be active by. The lock is
    /// held around an insert or a removal and the `epoll_ctl` that goes with it, and by the
    /// sweep; never while a socket is read or written.
    parked: Mutex<ParkedSet>,
    next_token: AtomicU64,
    /// Workers alive, how many of them wait in `epoll_wait` now, and how many serve a
    /// request that said it waits ([`blocking`]).
    workers: AtomicUsize,
    idle: AtomicUsize,
    waiting: AtomicUsize,
    /// When a worker last finished a request or the pool last grew, in ms since `base`.
    progress: AtomicU64,
    base: Instant,
}

struct Parked {
    conn: Conn,
    deadline: Instant,
}

/// The parked connections by token, and the tokens by client address (so that at capacity
/// one of an address's connections is found without a search).
#[derive(Default)]
struct ParkedSet {
    by_token: HashMap<u64, Parked>,
    by_address: HashMap<IpAddr, HashSet<u64>>,
}

impl ParkedSet {
    fn insert(&mut self, token: u64, parked: Parked) {
        self.by_address.entry(parked.conn.ip).or_default().insert(token);
        self.by_token.insert(token, parked);
    }

    fn remove(&mut self, token: &u64) -> Option<Parked> {
        let parked = self.by_token.remove(token)?;
        if let Some(tokens) = self.by_address.get_mut(&parked.conn.ip) {
            tokens.remove(token);
            if tokens.is_empty() {
                self.by_address.remove(&parked.conn.ip);
            }
        }
        Some(parked)
    }
}

impl Pool {
    fn new() -> io::Result<Pool> {
        Ok(Pool {
            epoll: Epoll::new()?,
            parked: Mutex::new(ParkedSet::default()),
            next_token: AtomicU64::new(0),
            workers: AtomicUsize::new(0),
            idle: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            progress: AtomicU64::new(0),
            base: Instant::now(),
        })
    }

    fn now_ms(&self) -> u64 {
        self.base.elapsed().as_millis() as u64
    }

    fn moved_on(&self) {
        self.progress.store(self.now_ms(), Ordering::Relaxed);
    }

    /// Puts an idle connection in the set until it is readable or `deadline` passes.
    fn park(&self, mut conn: Conn, deadline: Instant) {
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        let fd = conn.stream().as_raw_fd();
        let added = !conn.watched;
        conn.watched = true;
        let mut parked = self.parked.lock().unwrap_or_else(|e| e.into_inner());
        // Armed under the lock: the sweep cannot close the descriptor between the insert
        // and the `epoll_ctl` (whose number a new connection could then have).
        parked.insert(token, Parked { conn, deadline });
        let armed = if added { self.epoll.add(fd, token) } else { self.epoll.rearm(fd, token) };
        if let Err(e) = armed {
            log::warn!("cannot watch a connection: {e}");
            parked.remove(&token);
        }
    }

    /// Parks a connection whose request was just answered, until its next request begins
    /// or it has been idle too long.
    fn park_answered(&self, mut conn: Conn) {
        conn.first = false;
        let idle = conn.gate.limits(false).idle;
        self.park(conn, Instant::now() + idle);
    }

    /// The addresses that have a connection parked now.
    fn parked_addresses(&self) -> Vec<IpAddr> {
        self.parked.lock().unwrap_or_else(|e| e.into_inner()).by_address.keys().copied().collect()
    }

    /// Takes a parked connection from `ip` out of the set, if one is parked (to close it).
    fn unpark_one_of(&self, ip: IpAddr) -> Option<Conn> {
        let mut parked = self.parked.lock().unwrap_or_else(|e| e.into_inner());
        let token = *parked.by_address.get(&ip)?.iter().next()?;
        parked.remove(&token).map(|p| p.conn)
    }

    /// The parked connection behind a readiness, unless the sweep closed it meanwhile.
    fn unpark(&self, token: u64) -> Option<Conn> {
        self.parked.lock().unwrap_or_else(|e| e.into_inner()).remove(&token).map(|p| p.conn)
    }
}

/// Counts out, when dropped, the wait the request this thread served announced
/// ([`blocking`]), if it did.
struct WaitEnds<'a>(&'a Pool);

impl Drop for WaitEnds<'_> {
    fn drop(&mut self) {
        if WAITS.replace(false) {
            self.0.waiting.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Why no request came off a connection.
enum Next {
    /// A whole request.
    Request(Request),
    /// Nothing (or part of a head) has come: park until readable, or this deadline.
    Park(Instant),
    /// Closed by the client, timed out while idle, or the server is stopping.
    Close,
    /// The client sent something we answer with an error, then close.
    Answer(Error),
}

/// How a connection is served: by pool workers, parked while idle (public traffic), or by
/// a thread of its own that blocks on it (a service's connection, whose requests must
/// never wait behind public work for a worker).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Pooled,
    Own,
}

thread_local! {
    /// In a pool worker: asks the pool for one more worker when none waits.
    static WORKER: RefCell<Option<Box<dyn Fn()>>> = const { RefCell::new(None) };
    /// In a pool worker: what a [`Reply`] needs to park its connection again.
    static LATER: RefCell<Option<Arc<Later>>> = const { RefCell::new(None) };
    /// The connection of the request this worker serves, while its handler may take it to
    /// answer later ([`later`]).
    static HERE: RefCell<Option<Here>> = const { RefCell::new(None) };
    /// Whether the request this thread serves has already said it waits.
    static WAITS: Cell<bool> = const { Cell::new(false) };
}

/// Says that the request this thread serves will now wait for something other than the
/// CPU (another service, a batch, the group commit). In a pool worker, the pool counts it
/// as waiting and starts another worker at once when fewer than the minimum (twice the
/// cores) are left that do not wait, so that public connections are not left unread
/// behind waiting handlers. Once per request; nothing in a thread that is not a worker.
pub fn blocking() {
    WORKER.with(|w| {
        if let Some(wait) = w.borrow().as_ref() {
            if !WAITS.replace(true) {
                wait()
            }
        }
    });
}

/// A pool worker's share of the server, for the replies sent later from it (one `Arc`
/// per reply, not one per field).
struct Later {
    pool: Arc<Pool>,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
}

/// A request's connection and what its answer needs, while its handler runs.
struct Here {
    conn: Conn,
    /// The request's span (current on the worker while the handler runs).
    span: Option<Span>,
    /// Its method (for the span's name; empty when the span records nothing).
    method: String,
    /// Whether the client asked to keep the connection open, and for a `HEAD`.
    keep: bool,
    head_only: bool,
    started: Instant,
}

/// The answer to a request, to be sent later, perhaps by another thread ([`later`]).
/// Dropped unsent, it answers 500 (a handler's bug: nothing may leave a client waiting).
#[must_use = "a reply not sent answers 500"]
pub struct Reply(Option<Box<(Here, Arc<Later>)>>);

/// Takes the connection of the public request this thread serves, so that its answer
/// can be sent later by whoever has it ([`Reply::send`]), and this worker can serve
/// other connections meanwhile. The handler then returns [`Response::later`] (which is
/// not sent). `None` when the request cannot be answered later: it is not public, its
/// connection has its own thread, or its client already sent more behind it. The
/// request's span stops being this thread's current one (take `trace::current()`
/// before, to carry it on; and call this with no span of the handler's own open, whose
/// end would make the request's current again).
pub fn later() -> Option<Reply> {
    let later = LATER.with(|l| l.borrow().clone())?;
    let mut here = HERE.with(|h| h.borrow_mut().take())?;
    here.span = here.span.take().map(Span::detach);
    Some(Reply(Some(Box::new((here, later)))))
}

impl Reply {
    /// Sends the answer and parks the connection again (or closes it), as the worker would
    /// have: counted in the metrics, with the request's span ended. Without waiting for a
    /// client that reads nothing: what does not fit in its socket now is written by a
    /// thread of its own.
    pub fn send(mut self, response: Response) {
        if let Some(pending) = self.0.take() {
            let (here, later) = *pending;
            here.finish(response, &later);
        }
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        if let Some(pending) = self.0.take() {
            let (here, later) = *pending;
            log::error!("a request's answer was dropped unsent");
            here.finish(Response::error(&Error::Internal("internal error: no answer was made".into())), &later);
        }
    }
}

impl Here {
    fn finish(self, mut response: Response, later: &Later) {
        let Here { conn, span, method, keep, head_only, started } = self;
        if let Some(mut span) = span {
            close_span(&mut span, &method, &mut response);
        }
        later.metrics.record(response.route, response.status, started.elapsed());
        later.pool.moved_on();
        let keep = conn.gate.keeps(keep, later.shutdown.is_set(), response.status);
        let bytes = encode_response(&response, keep, head_only);
        // SAFETY: `bytes` is valid for its length and the descriptor is open.
        let sent = unsafe {
            libc::send(
                conn.stream().as_raw_fd(),
                bytes.as_ptr().cast(),
                bytes.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        let sent = match sent {
            n if n >= 0 => n as usize,
            _ if io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock => 0,
            _ => return,
        };
        if sent < bytes.len() {
            // The client reads nothing: a thread of its own waits for it (BODY_TIMEOUT
            // for each write), not the thread that sends many answers.
            let (pool, shutdown) = (Arc::clone(&later.pool), later.shutdown.clone());
            let finish = move || {
                let stream = conn.stream();
                if stream.set_write_timeout(Some(BODY_TIMEOUT)).is_ok()
                    && (&*stream).write_all(&bytes[sent..]).is_ok()
                    && keep
                    && !shutdown.is_set()
                {
                    let _ = stream.set_write_timeout(None);
                    pool.park_answered(conn);
                }
            };
            if let Err(e) = std::thread::Builder::new().name("reply".into()).stack_size(CONNECTION_STACK).spawn(finish)
            {
                log::warn!("cannot start a thread to finish an answer: {e}");
            }
            return;
        }
        if keep {
            later.pool.park_answered(conn);
        }
    }
}

impl<H: Fn(&Request) -> Response + Send + Sync + 'static> Shared<H> {
    /// A new connection from the accept loop: counted against the caps, then parked. At
    /// capacity it takes the place of an idle connection of another address, when one
    /// holds at least two more than its own ([`Shared::make_room`]); otherwise it is
    /// refused.
    fn admit(self: &Arc<Self>, stream: TcpStream, ip: IpAddr) {
        if self.gate.open.fetch_add(1, Ordering::SeqCst) >= self.gate.max_open && !self.make_room(ip) {
            self.gate.open.fetch_sub(1, Ordering::SeqCst);
            return refuse(stream, &self.metrics);
        }
        if !self.gate.addresses.admit(ip, PER_ADDRESS) {
            self.gate.open.fetch_sub(1, Ordering::SeqCst);
            return refuse(stream, &self.metrics);
        }
        let _ = stream.set_nodelay(true);
        let timeout = stream.set_read_timeout(Some(TICK));
        let sock = Sock { stream, dontwait: false };
        let conn = Conn {
            reader: BufReader::with_capacity(8 * 1024, sock),
            head: Head::default(),
            ip,
            first: true,
            watched: false,
            gate: Arc::clone(&self.gate),
        };
        if timeout.is_ok() {
            self.pool.park(conn, Instant::now() + self.gate.limits(true).idle);
        }
    }

    /// At capacity, closes an idle (parked) connection of the address that holds the most
    /// connections among those with one parked, for a newcomer from `ip` that holds at
    /// least two fewer: whether it did. Those held by a worker or a handler are never
    /// closed (an address busy with them cannot shield the idle ones of another). The
    /// closed one gets the answer a refused connection gets (503, `Retry-After`), unless it
    /// was idle between requests with nothing sent: that one is closed without a word.
    fn make_room(&self, ip: IpAddr) -> bool {
        if !self.gate.addresses.may_give_way_to(ip) {
            return false;
        }
        let parked = self.pool.parked_addresses();
        let heavy = self.gate.addresses.heaviest_over(ip, &parked);
        let Some(conn) = heavy.and_then(|heavy| self.pool.unpark_one_of(heavy)) else {
            return false;
        };
        if !conn.first && conn.head.first_byte.is_none() && nothing_pending(conn.stream()) {
            // Idle between requests, nothing sent: closed as an idle deadline closes it (a
            // 503 there would be read as the answer to the client's next request).
            let _ = conn.stream().shutdown(std::net::Shutdown::Both);
        } else {
            self.metrics.record("evicted", 503, Duration::ZERO);
            turn_away(conn.stream());
        }
        // Dropped: its place (and its address's count) is given back.
        true
    }

    /// Starts a worker; false when the system refused a thread.
    fn spawn_worker(self: &Arc<Self>) -> bool {
        self.pool.workers.fetch_add(1, Ordering::SeqCst);
        let me = Arc::clone(self);
        // The worker counts itself out as it leaves (`work`).
        let spawned =
            std::thread::Builder::new().name("worker".into()).stack_size(CONNECTION_STACK).spawn(move || me.work());
        if let Err(e) = &spawned {
            self.pool.workers.fetch_sub(1, Ordering::SeqCst);
            log::warn!("cannot start a worker: {e}");
        }
        spawned.is_ok()
    }

    /// A worker's request will wait ([`blocking`]): one more worker when fewer than the
    /// minimum are left that do not.
    fn waits(self: &Arc<Self>) {
        let waiting = self.pool.waiting.fetch_add(1, Ordering::SeqCst) + 1;
        let working = self.pool.workers.load(Ordering::SeqCst).saturating_sub(waiting);
        if working < min_workers() && !self.shutdown.is_set() {
            self.spawn_worker();
        }
    }

    /// The accept loop's check: a worker more when none waits for connections and none
    /// has finished a request for [`STALL`] (every worker in a handler that waits without
    /// saying so).
    fn watch_over(self: &Arc<Self>) {
        let stalled = self.pool.now_ms().saturating_sub(self.pool.progress.load(Ordering::Relaxed));
        if stalled >= STALL.as_millis() as u64
            && self.pool.idle.load(Ordering::SeqCst) == 0
            && !self.shutdown.is_set()
            && self.spawn_worker()
        {
            self.pool.moved_on();
        }
    }

    /// Whether this worker is one too many: more than [`min_workers`] are not in a request
    /// that waits. Counts it out if so.
    fn surplus(&self) -> bool {
        let (min, waiting) = (min_workers(), self.pool.waiting.load(Ordering::SeqCst));
        self.pool
            .workers
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n.saturating_sub(waiting) > min).then(|| n - 1))
            .is_ok()
    }

    /// A pool worker: waits for a parked connection to become readable and serves it
    /// until it is idle again; leaves when the server stops, or when it got no connection
    /// for [`RETIRE`] and more than [`min_workers`] do not wait. (Leaving as soon as it is
    /// one too many made a pool that follows waiting purchases start and end a thread for
    /// nearly every purchase: a batch answered frees dozens of workers at once, and the
    /// next purchases need them again.) The kernel wakes the worker that waited last, so
    /// the ones a load does not need are the ones that stay quiet.
    fn work(self: &Arc<Self>) {
        let me = Arc::clone(self);
        WORKER.with(|w| *w.borrow_mut() = Some(Box::new(move || me.waits())));
        let later = Arc::new(Later {
            pool: Arc::clone(&self.pool),
            metrics: Arc::clone(&self.metrics),
            shutdown: self.shutdown.clone(),
        });
        LATER.with(|l| *l.borrow_mut() = Some(later));
        let mut quiet_since = Instant::now();
        loop {
            self.pool.idle.fetch_add(1, Ordering::SeqCst);
            let token = self.pool.epoll.wait(TICK);
            self.pool.idle.fetch_sub(1, Ordering::SeqCst);
            match token {
                Some(token) => {
                    quiet_since = Instant::now();
                    if let Some(conn) = self.pool.unpark(token) {
                        self.serve_conn(conn, Mode::Pooled, None);
                    }
                }
                None if self.shutdown.is_set() => {
                    self.pool.workers.fetch_sub(1, Ordering::SeqCst);
                    break;
                }
                None if quiet_since.elapsed() >= RETIRE && self.surplus() => break,
                None => {}
            }
        }
        WORKER.with(|w| w.borrow_mut().take());
        LATER.with(|l| l.borrow_mut().take());
    }

    /// Closes parked connections whose deadline passed (all of them when `all`); one that
    /// began a head and stopped is answered 408 first.
    fn sweep(&self, all: bool) {
        let now = Instant::now();
        let expired: Vec<Parked> = {
            let mut parked = self.pool.parked.lock().unwrap_or_else(|e| e.into_inner());
            let due: Vec<u64> =
                parked.by_token.iter().filter(|(_, p)| all || p.deadline <= now).map(|(t, _)| *t).collect();
            due.iter().filter_map(|t| parked.remove(t)).collect()
        };
        for p in expired {
            if !all && p.conn.head.first_byte.is_some() {
                let r = Response::error(&Error::RequestTimeout).at("invalid");
                self.metrics.record(r.route, r.status, Duration::ZERO);
                // Without waiting: the sweep must not hang on a client that reads nothing.
                if p.conn.stream().set_nonblocking(true).is_ok() {
                    let _ = write_response(&mut p.conn.stream(), &r, false, false);
                    let _ = p.conn.stream().shutdown(std::net::Shutdown::Write);
                }
            }
        }
    }

    /// Serves a connection's requests (the first already read when `pending`) until it is
    /// idle (pooled: parked again), closes or moves to a thread of its own.
    fn serve_conn(self: &Arc<Self>, mut conn: Conn, mode: Mode, mut pending: Option<Request>) {
        let mut niced = false;
        loop {
            // Whatever way this request ends, a wait it announced is counted out.
            let _waits = WaitEnds(&self.pool);
            let request = match pending.take() {
                Some(r) => r,
                None => match self.next_request(&mut conn, mode) {
                    Next::Request(r) => r,
                    Next::Park(deadline) if !self.shutdown.is_set() => return self.pool.park(conn, deadline),
                    Next::Park(_) | Next::Close => return,
                    Next::Answer(e) => {
                        let r = Response::error(&e).at("invalid");
                        self.metrics.record(r.route, r.status, Duration::ZERO);
                        let _ = write_response(&mut conn.stream(), &r, false, false);
                        // Lingering waits up to a second for the client: not on a worker
                        // the pool counts as free.
                        blocking();
                        linger(conn.stream());
                        return;
                    }
                },
            };
            let class = classify(&request, &self.trust);
            if class != Class::Public && mode == Mode::Pooled {
                return self.own_thread(conn, request);
            }
            if class == Class::Public && mode == Mode::Own && !niced {
                // A thread can raise its nice value but not lower it again, so it stays so.
                lower_priority();
                niced = true;
            }
            let started = Instant::now();
            // A public request with nothing behind it may be answered later ([`later`]):
            // its connection waits where the handler can take it.
            let offer = mode == Mode::Pooled && class == Class::Public && conn.reader.buffer().is_empty();
            let (response, back) = if offer {
                let keep = wants_keep_alive(&request);
                let head_only = request.method == "HEAD";
                let here = Here { conn, span: None, method: String::new(), keep, head_only, started };
                match self.answer(&request, class, Some(here)) {
                    (response, Some(here)) => (response, here.conn),
                    // Taken: whoever has the answer sends it and parks the connection.
                    (_, None) => return,
                }
            } else {
                (self.answer(&request, class, None).0, conn)
            };
            conn = back;
            self.metrics.record(response.route, response.status, started.elapsed());
            self.pool.moved_on();
            let keep = self.gate.keeps(wants_keep_alive(&request), self.shutdown.is_set(), response.status);
            if write_response(&mut conn.stream(), &response, keep, request.method == "HEAD").is_err() || !keep {
                return;
            }
            if mode == Mode::Pooled && conn.reader.buffer().is_empty() && !self.shutdown.is_set() {
                // Nothing pipelined: park at once rather than ask the socket (the client
                // rarely has sent again already, and epoll says so at once if it has).
                return self.pool.park_answered(conn);
            }
            conn.first = false;
        }
    }

    /// Moves a connection that carries the services' own traffic to a thread of its own.
    fn own_thread(self: &Arc<Self>, conn: Conn, request: Request) {
        let me = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("conn".into())
            .stack_size(CONNECTION_STACK)
            .spawn(move || me.serve_conn(conn, Mode::Own, Some(request)));
        // On failure the connection, moved into the dropped closure, is closed.
        if let Err(e) = spawned {
            log::warn!("cannot start a connection thread: {e}");
        }
    }

    /// The next request on `conn`: a pooled connection reads only what has arrived and
    /// asks to be parked otherwise; a connection with its own thread waits for it.
    fn next_request(&self, conn: &mut Conn, mode: Mode) -> Next {
        let limits = self.gate.limits(conn.first);
        let peer = Some(conn.ip);
        if mode == Mode::Own {
            return match read_request(&mut conn.reader, &self.shutdown, limits) {
                Ok(r) => Next::Request(Request { peer, ..r }),
                // (`Wait` is never the end of a read that waits.)
                Err(ReadError::Closed | ReadError::Wait) => Next::Close,
                Err(ReadError::Answer(e)) => Next::Answer(e),
            };
        }
        conn.reader.get_mut().dontwait = true;
        let head = conn.head.advance(&mut conn.reader);
        conn.reader.get_mut().dontwait = false;
        if let Ok(request) = &head {
            let waits = match body_length(request) {
                Ok(BodyLength::Fixed(n)) => conn.reader.buffer().len() < n,
                Ok(BodyLength::Chunked) => true,
                Err(_) => false,
            };
            if waits {
                // The body is read waiting for the client (within BODY_TIMEOUT).
                blocking();
            }
        }
        match head {
            Ok(mut request) => match read_body(&mut conn.reader, &mut request) {
                Ok(()) => Next::Request(Request { peer, ..request }),
                Err(ReadError::Closed | ReadError::Wait) => Next::Close,
                Err(ReadError::Answer(e)) => Next::Answer(e),
            },
            Err(ReadError::Answer(e)) => Next::Answer(e),
            Err(ReadError::Closed) => Next::Close,
            Err(ReadError::Wait) => match conn.head.first_byte {
                Some(t) if t.elapsed() > limits.head => Next::Answer(Error::RequestTimeout),
                Some(t) => Next::Park(t + limits.head),
                None => Next::Park(Instant::now() + limits.idle),
            },
        }
    }

    /// Runs the handler in its budget, within the request's span. With `here` (the
    /// request's connection), the handler may take it to answer later ([`later`]): then
    /// it is not given back, and the response returned is not to be sent.
    fn answer(&self, request: &Request, class: Class, here: Option<Here>) -> (Response, Option<Here>) {
        // The request's span: continues the caller's trace, or starts one for public
        // work on the API (see `trace::starts_trace`); current on this thread until
        // the answer is ready (or handed to a `Reply`, which ends it when sent).
        let may_start = class == Class::Public && crate::trace::starts_trace(&request.path);
        let mut span =
            crate::trace::serve(request.header("traceparent"), request.header("tracestate"), may_start, "request");
        if span.is_recording() {
            span.attr("http.target", request.path.as_str());
        }
        let mut span = Some(span);
        let offered = here.is_some();
        if let Some(mut here) = here {
            if span.as_ref().is_some_and(Span::is_recording) {
                here.method.clone_from(&request.method);
            }
            here.span = span.take();
            HERE.with(|h| *h.borrow_mut() = Some(here));
        }
        let mut response = match self.permit(class) {
            Some(permit) => {
                // A public slot sits where `step_aside` can give it back early; the
                // seat gives it back at the latest when the handler ends (or panics).
                let _seat = Seat::take(permit, class == Class::Public);
                match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (self.handler)(request))) {
                    Ok(r) => r,
                    Err(_) => {
                        log::error!("handler panicked on {} {}", request.method, request.path);
                        Response::error(&Error::Internal("internal error".into()))
                    }
                }
            }
            None => shed(class),
        };
        let here = if offered {
            match HERE.with(|h| h.borrow_mut().take()) {
                Some(mut here) => {
                    span = here.span.take();
                    Some(here)
                }
                None => return (response, None),
            }
        } else {
            None
        };
        if let Some(span) = &mut span {
            close_span(span, &request.method, &mut response);
        }
        (response, here)
    }
}

/// Names a request's span after its route and marks its status (a 5xx fails it); the
/// answer says which trace it belongs to (W3C Trace Context Level 2's `traceresponse`:
/// the storefront links an order to the view of its trace with it).
fn close_span(span: &mut Span, method: &str, response: &mut Response) {
    if span.is_recording() {
        span.rename(format!("{} {}", method, response.route));
        span.attr("http.status", response.status);
        if response.status >= 500 {
            span.fail();
        }
        if let Some(ctx) = span.context() {
            response.headers.push(("traceresponse", ctx.traceparent()));
        }
    }
}

impl<H> Shared<H> {
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
    blocking();
    give_back_slot();
}

/// Drops the public slot of the request this thread serves, if it still holds one.
fn give_back_slot() {
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
            give_back_slot();
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
fn refuse(stream: TcpStream, metrics: &Metrics) {
    metrics.record("refused", 503, Duration::ZERO);
    turn_away(&stream);
}

/// Whether nothing has come on `stream` that was not read yet (a peek, without waiting).
fn nothing_pending(stream: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    // SAFETY: `byte` is valid for 1 byte and the descriptor is open.
    let n = unsafe { libc::recv(stream.as_raw_fd(), byte.as_mut_ptr().cast(), 1, libc::MSG_PEEK | libc::MSG_DONTWAIT) };
    n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock
}

/// The prebuilt 503 on `stream`, then its writing half shut, without waiting: what the
/// client already sent is read first, so that the close does not reset the connection
/// before the answer is read.
fn turn_away(stream: &TcpStream) {
    if stream.set_nonblocking(true).is_err() {
        return;
    }
    let mut buf = [0u8; 4096];
    let _ = (&*stream).read(&mut buf);
    let _ = (&*stream).write_all(REFUSED);
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

/// Why reading a request stopped.
enum ReadError {
    /// The connection closed, timed out while idle, or the server is stopping: close quietly.
    Closed,
    /// The client sent something we answer with an error, then close.
    Answer(Error),
    /// Nothing more has arrived for now (a read would wait, or its timeout passed).
    Wait,
}

/// Reads one request, with the head and body limits and deadlines, waiting for its bytes.
fn read_request(reader: &mut impl BufRead, shutdown: &Shutdown, limits: Limits) -> Result<Request, ReadError> {
    let mut request = read_head(reader, shutdown, limits)?;
    read_body(reader, &mut request)?;
    Ok(request)
}

/// Reads the body a head declares, within [`BODY_TIMEOUT`].
fn read_body(reader: &mut impl BufRead, request: &mut Request) -> Result<(), ReadError> {
    let deadline = Instant::now() + BODY_TIMEOUT;
    request.body = match body_length(request).map_err(ReadError::Answer)? {
        BodyLength::Fixed(n) => read_exact(reader, n, deadline)?,
        BodyLength::Chunked => read_chunked(reader, deadline)?,
    };
    Ok(())
}

/// Waits for a whole head, within the idle and head deadlines.
fn read_head(reader: &mut impl BufRead, shutdown: &Shutdown, limits: Limits) -> Result<Request, ReadError> {
    let mut head = Head::default();
    let idle_since = Instant::now();
    loop {
        match head.advance(reader) {
            Err(ReadError::Wait) => match head.first_byte {
                None if shutdown.is_set() || idle_since.elapsed() > limits.idle => return Err(ReadError::Closed),
                Some(t) if t.elapsed() > limits.head => return Err(ReadError::Answer(Error::RequestTimeout)),
                _ => {}
            },
            done => return done,
        }
    }
}

/// A request head as far as it has come: its bytes and when the first arrived.
#[derive(Default)]
struct Head {
    bytes: Vec<u8>,
    first_byte: Option<Instant>,
}

impl Head {
    /// Takes bytes from `reader` until they hold a whole head, as [`parse_head`] decides,
    /// and takes exactly the head out of `reader`: the body and any pipelined request stay
    /// there. `Wait` when `reader` has no more for now; what came is kept for the next call.
    ///
    /// The bytes are at most `MAX_HEAD + 1`, which is enough for the parser to answer 431.
    /// The parser runs when a read brought a line feed (a head can only end with one), on
    /// the first bytes (to refuse garbage at once) and at the limit, so a client that sends
    /// one byte at a time costs one parse per line, not one per byte.
    fn advance(&mut self, reader: &mut impl BufRead) -> Result<Request, ReadError> {
        loop {
            let bytes = match reader.fill_buf() {
                // Closed, before a request or within one.
                Ok([]) => return Err(ReadError::Closed),
                Ok(bytes) => bytes,
                Err(e) if is_timeout(&e) => return Err(ReadError::Wait),
                Err(_) => return Err(ReadError::Closed),
            };
            self.first_byte.get_or_insert_with(Instant::now);
            if self.bytes.is_empty() {
                // Robustness (RFC 9112 2.2): empty lines before the request line are dropped.
                let blank = blank_lines(bytes);
                if blank > 0 {
                    reader.consume(blank);
                    continue;
                }
            }
            let old = self.bytes.len();
            let new = &bytes[..bytes.len().min(MAX_HEAD + 1 - old)];
            let (taken, line_end) = (new.len(), new.contains(&b'\n'));
            self.bytes.extend_from_slice(new);
            if old == 0 || line_end || self.bytes.len() > MAX_HEAD {
                if let Some((request, len)) = parse_head(&self.bytes).map_err(ReadError::Answer)? {
                    // `len > old`: the head ends with a line feed, and had one come before
                    // this read, the parse after it would have found the head whole.
                    reader.consume(len - old);
                    *self = Head::default();
                    return Ok(request);
                }
            }
            reader.consume(taken);
        }
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
    out.write_all(&encode_response(r, keep_alive, head_only))?;
    out.flush()
}

/// An answer's bytes on the wire: status line, headers, body.
fn encode_response(r: &Response, keep_alive: bool, head_only: bool) -> Vec<u8> {
    let mut buf = Vec::with_capacity(160 + r.body.len());
    let _ = write!(
        buf,
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n",
        r.status,
        reason(r.status),
        r.content_type,
        r.body.len()
    );
    for (name, value) in &r.headers {
        let _ = write!(buf, "{name}: {value}\r\n");
    }
    buf.extend_from_slice(if keep_alive { b"\r\n" } else { b"Connection: close\r\n\r\n" });
    if !head_only {
        buf.extend_from_slice(&r.body);
    }
    buf
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

/// Connections the kernel may hold for the accept loop (it caps this at
/// `net.core.somaxconn`, 4,096 by default).
const ACCEPT_BACKLOG: libc::c_int = 4096;

/// Binds `addr`, with a clear error naming it, and a queue of 4,096 (`ACCEPT_BACKLOG`) for
/// connections not yet accepted. std listens with 128: thousands of clients connecting at
/// once overflowed it, and each connection whose SYN the kernel dropped waited a second
/// (then three) for its retransmission.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let named = |e: io::Error| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}"));
    let listener = TcpListener::bind(addr).map_err(named)?;
    // SAFETY: listen(2) on a socket this function owns; calling it again on a listening
    // socket only changes its backlog.
    if unsafe { libc::listen(listener.as_raw_fd(), ACCEPT_BACKLOG) } != 0 {
        return Err(named(io::Error::last_os_error()));
    }
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hundreds of clients connecting at once all get through the handshake while the
    /// accept loop is busy elsewhere (here: not accepting at all). With std's backlog of
    /// 128 the 130th connection's SYN was dropped and its connect waited a second.
    #[test]
    fn a_connection_storm_waits_in_the_accept_queue_not_in_syn_retries() {
        const STORM: usize = 600;
        let somaxconn =
            std::fs::read_to_string("/proc/sys/net/core/somaxconn").ok().and_then(|s| s.trim().parse().ok());
        if somaxconn.is_none_or(|n: usize| n < STORM) {
            eprintln!("skipped: net.core.somaxconn is {somaxconn:?}, below the {STORM} connections this test opens");
            return;
        }
        super::super::budget::raise_fd_limit();
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let clients: Vec<TcpStream> = (0..STORM)
            .map(|i| {
                TcpStream::connect_timeout(&addr, Duration::from_millis(500))
                    .unwrap_or_else(|e| panic!("connection {i} of {STORM}: {e}"))
            })
            .collect();
        assert_eq!(clients.len(), STORM);
    }

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
                    Err(ReadError::Closed | ReadError::Wait) => break,
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
                ReadError::Closed | ReadError::Wait => 0,
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
                Err(ReadError::Closed | ReadError::Wait) => {}
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

    /// A handler that takes its connection ([`later`]) returns at once, and the answer
    /// sent from another thread reaches the client: with its status, body and trace, on a
    /// connection that then serves the next request; a `Connection: close` is closed
    /// after it, a reply dropped unsent answers 500, and a request with another behind it
    /// in the same packet is not offered (it is answered in order, by the worker).
    #[test]
    fn an_answer_sent_later_by_another_thread_reaches_its_client() {
        use std::sync::mpsc;
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = Shutdown::new();
        let (to_sender, replies) = mpsc::channel::<(Reply, &'static str)>();
        let to_sender = std::sync::Mutex::new(to_sender);
        let handler = move |r: &Request| {
            let Some(reply) = later() else {
                return Response::raw_json(200, format!("{{\"now\": \"{}\"}}", r.path).into_bytes()).at("now");
            };
            match r.path.as_str() {
                "/drop" => drop(reply),
                "/teapot" => to_sender.lock().unwrap().send((reply, "teapot")).unwrap(),
                _ => to_sender.lock().unwrap().send((reply, "later")).unwrap(),
            }
            Response::later()
        };
        // The other thread: answers each reply 20 ms after it came.
        let sender = std::thread::spawn(move || {
            for (reply, what) in replies {
                std::thread::sleep(Duration::from_millis(20));
                let status = if what == "teapot" { 409 } else { 200 };
                reply.send(Response::raw_json(status, format!("{{\"later\": \"{what}\"}}").into_bytes()).at("sent"));
            }
        });
        let metrics = Arc::new(Metrics::new());
        let config = ServerConfig { threads: 4, name: "test", trust: Trust::Anyone };
        let server = {
            let (shutdown, metrics) = (shutdown.clone(), Arc::clone(&metrics));
            std::thread::spawn(move || serve(listener, config, metrics, shutdown, handler))
        };
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let read_answer = |reader: &mut BufReader<TcpStream>| {
            let mut head = String::new();
            loop {
                let mut line = String::new();
                assert!(reader.read_line(&mut line).unwrap() > 0, "the connection closed early: {head}");
                head.push_str(&line);
                if line == "\r\n" {
                    break;
                }
            }
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .map(|v| v.trim().parse().unwrap())
                .unwrap();
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            (head, String::from_utf8(body).unwrap())
        };
        for (path, status, body) in
            [("/a", "200", "{\"later\": \"later\"}"), ("/teapot", "409", "{\"later\": \"teapot\"}")]
        {
            write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            let (head, got) = read_answer(&mut reader);
            assert!(head.starts_with(&format!("HTTP/1.1 {status} ")), "{path}: {head}");
            assert_eq!(got, body, "{path}: the answer sent later");
            assert!(!head.contains("Connection: close"), "{path}: kept open: {head}");
        }
        // Two requests in one write: the first has the second behind it, so it is served
        // now; the second, with nothing behind it, later.
        write!(stream, "GET /p1 HTTP/1.1\r\nHost: x\r\n\r\nGET /p2 HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert_eq!(read_answer(&mut reader).1, "{\"now\": \"/p1\"}");
        assert_eq!(read_answer(&mut reader).1, "{\"later\": \"later\"}");
        write!(stream, "GET /drop HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let (head, _) = read_answer(&mut reader);
        assert!(head.starts_with("HTTP/1.1 500 "), "a reply dropped unsent: {head}");
        write!(stream, "GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let (head, _) = read_answer(&mut reader);
        assert!(head.contains("Connection: close"), "{head}");
        let mut rest = Vec::new();
        assert_eq!(reader.read_to_end(&mut rest).unwrap(), 0, "closed after the answer");
        let text = metrics.render("");
        assert!(text.contains(r#"bazar_requests_total{route="sent",status="200"} 3"#), "{text}");
        assert!(text.contains(r#"bazar_requests_total{route="sent",status="409"} 1"#), "{text}");
        shutdown.trigger();
        server.join().unwrap().unwrap();
        sender.join().unwrap();
    }
}
