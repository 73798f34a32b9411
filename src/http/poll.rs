//! epoll(7), as the server's connection pool uses it: many threads wait on one set, each
//! readiness goes to one of them, and a socket is watched once (`EPOLLONESHOT`) until the
//! thread that got it hands it back.
//!
//! Why our own few lines over `libc` and not a crate: `mio`'s `Poll::poll` and `polling`'s
//! `Poller::wait` serve one waiting thread at a time (`&mut self`, or a lock around the
//! wait), and the pool needs the opposite, the leader/followers pattern: every idle worker
//! blocks in `epoll_wait` on the same set, and the kernel wakes one of them per event
//! (`epoll_wait` waits exclusively), which then serves that connection itself, with no
//! hand-off between threads. The calls are four, the data a `u64` token.
//!
//! The load generator of `bazar-bench overload` drives its users' connections with it too
//! (one thread per core, thousands of connections), so that the generator's own cost does
//! not grow with the users it stands for.
//!
//! Invariant: a token is reported at most once per `add` or `rearm` (one-shot), so the
//! thread that receives it owns its connection until it arms it again.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// One epoll set.
pub(crate) struct Epoll(OwnedFd);

impl Epoll {
    pub(crate) fn new() -> io::Result<Epoll> {
        // SAFETY: a plain system call; a non-negative result is a new descriptor we own.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is open and owned by no one else.
        Ok(Epoll(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Watches `fd` until it is readable (or closed by the other end), once.
    pub(crate) fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, token)
    }

    /// Watches `fd` for as long as it is open: reported at every wait while readable (the
    /// load generator's, whose one thread owns every connection it watches).
    pub(crate) fn watch(&self, fd: RawFd, token: u64) -> io::Result<()> {
        self.ctl_with(libc::EPOLL_CTL_ADD, fd, token, libc::EPOLLIN | libc::EPOLLRDHUP)
    }

    /// Watches an added `fd` once more, after its last event was taken.
    pub(crate) fn rearm(&self, fd: RawFd, token: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, token)
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, token: u64) -> io::Result<()> {
        self.ctl_with(op, fd, token, libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLONESHOT)
    }

    fn ctl_with(&self, op: libc::c_int, fd: RawFd, token: u64, events: libc::c_int) -> io::Result<()> {
        let mut event = libc::epoll_event { events: events as u32, u64: token };
        // SAFETY: both descriptors are open; the event lives across the call.
        if unsafe { libc::epoll_ctl(self.0.as_raw_fd(), op, fd, &mut event) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// The token of one ready descriptor, or `None` once `timeout` passed (or a signal
    /// cut the wait short).
    pub(crate) fn wait(&self, timeout: Duration) -> Option<u64> {
        let mut event = libc::epoll_event { events: 0, u64: 0 };
        let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
        // SAFETY: room for exactly the one event asked for, alive across the call.
        let n = unsafe { libc::epoll_wait(self.0.as_raw_fd(), &mut event, 1, ms) };
        (n == 1).then_some(event.u64)
    }
}

impl Epoll {
    /// The tokens of up to 256 ready descriptors (none once `timeout` passed), in `into`,
    /// which is cleared first.
    pub(crate) fn wait_many(&self, timeout: Duration, into: &mut Vec<u64>) {
        into.clear();
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 256];
        let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
        // SAFETY: room for `events.len()` events, alive across the call.
        let n = unsafe { libc::epoll_wait(self.0.as_raw_fd(), events.as_mut_ptr(), events.len() as libc::c_int, ms) };
        into.extend(events.iter().take(n.max(0) as usize).map(|e| e.u64));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    /// One event per arming: a readable socket is reported once, then not again until it is
    /// armed again.
    #[test]
    fn a_socket_is_reported_once_per_arming() {
        let epoll = Epoll::new().unwrap();
        let (mut a, b) = UnixStream::pair().unwrap();
        epoll.add(b.as_raw_fd(), 7).unwrap();
        assert_eq!(epoll.wait(Duration::from_millis(10)), None, "nothing to read yet");
        a.write_all(b"x").unwrap();
        assert_eq!(epoll.wait(Duration::from_secs(1)), Some(7));
        assert_eq!(epoll.wait(Duration::from_millis(10)), None, "one-shot: disarmed until rearmed");
        epoll.rearm(b.as_raw_fd(), 8).unwrap();
        assert_eq!(epoll.wait(Duration::from_secs(1)), Some(8), "still readable, under its new token");
        drop(a);
        epoll.rearm(b.as_raw_fd(), 9).unwrap();
        assert_eq!(epoll.wait(Duration::from_secs(1)), Some(9), "the other end closed");
    }
}
