//! One connection to memcached: the exchange of one command, over a socket.
//!
//! The memcache crate's meta-protocol wire layer: [`MetaCommand`] encodes each command
//! whole (one write, one packet), [`MetaResponse::parse_header`] reads the answer line and
//! `Rendezvous` routes keys over several servers (in the
//! cache proper). The socket calls are ours (`Conn`),
//! because every transport the crate offers costs the hot path eight system calls more
//! than the exchange itself: `MetaConnection` sets both socket timeouts before each write
//! and each read (four `setsockopt`, also when no timeout is wanted), and `MetaClient`'s
//! pool adds a liveness peek between two `ioctl`s and a condition-variable wake per
//! command. Here the timeouts are set once when a connection is dialed, a lookup is one
//! `sendto` and one `recvfrom`, and a connection that died while pooled is noticed by its
//! failed exchange and replaced once (docs/performance.md has the before and after). The
//! crate's classic client was worse still: it writes every field of a command separately,
//! about 20 packets each way per binary `gets`.

use super::OP_TIMEOUT;
use memcache::exp::{Error as McError, MetaCommand, MetaResponse, ReturnCode};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};

/// Largest value read back (memcached's default item size limit).
pub(super) const MAX_VALUE: usize = 1024 * 1024;
/// Longest response line read back.
const MAX_LINE: usize = 1024;

/// One connection to memcached. Its socket timeouts are set once, when dialed, so an
/// exchange is one write and, for our small values, one read: no per-command socket
/// options and no liveness probe (a dead pooled connection fails its exchange, which
/// [`super::Cache::exchange`] retries once on a fresh one).
pub(super) struct Conn {
    stream: BufReader<TcpStream>,
    /// Reused for encoding commands.
    buffer: Vec<u8>,
    /// The cache's epoch when dialed: after a failure older connections are not pooled.
    pub(super) epoch: u64,
}

/// An answer: its return code, its CAS token and its value, if it carried them.
pub(super) struct Reply {
    /// The return code (`HD`, `VA`, `EN`, `NS`, `EX`, `NF`).
    pub(super) code: ReturnCode,
    /// The CAS token, when asked for.
    pub(super) cas: Option<u64>,
    /// The value, when it carried one.
    pub(super) value: Option<Vec<u8>>,
}

impl Conn {
    /// Dials `address` with [`OP_TIMEOUT`] on connect, reads and writes.
    pub(super) fn dial(address: &str, epoch: u64) -> Result<Conn, McError> {
        let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{address} resolves to no address"));
        for addr in address.to_socket_addrs()? {
            match TcpStream::connect_timeout(&addr, OP_TIMEOUT) {
                Ok(stream) => {
                    stream.set_nodelay(true)?;
                    stream.set_read_timeout(Some(OP_TIMEOUT))?;
                    stream.set_write_timeout(Some(OP_TIMEOUT))?;
                    return Ok(Conn { stream: BufReader::with_capacity(4096, stream), buffer: Vec::new(), epoch });
                }
                Err(e) => last = e,
            }
        }
        Err(last.into())
    }

    /// Sends one text-protocol command line and reads its one-line answer (without CRLF).
    pub(super) fn line(&mut self, command: &[u8]) -> Result<Vec<u8>, McError> {
        self.stream.get_mut().write_all(command)?;
        let mut line = Vec::new();
        self.stream.by_ref().take(MAX_LINE as u64).read_until(b'\n', &mut line)?;
        if !line.ends_with(b"\r\n") {
            return Err(McError::Protocol("response line cut short or too long".into()));
        }
        line.truncate(line.len() - 2);
        Ok(line)
    }

    /// Sends one command (encoded by the memcache crate) and reads its answer (whose
    /// header line the crate parses). Each socket call is bounded by [`OP_TIMEOUT`].
    pub(super) fn exchange(&mut self, command: &MetaCommand) -> Result<Reply, McError> {
        self.buffer.clear();
        command.encode_into(&mut self.buffer)?;
        self.stream.get_mut().write_all(&self.buffer)?;
        self.reply()
    }

    /// Sends two commands at once (one write) and reads their two answers, in order.
    pub(super) fn exchange_two(&mut self, a: &MetaCommand, b: &MetaCommand) -> Result<(Reply, Reply), McError> {
        self.buffer.clear();
        a.encode_into(&mut self.buffer)?;
        b.encode_into(&mut self.buffer)?;
        self.stream.get_mut().write_all(&self.buffer)?;
        Ok((self.reply()?, self.reply()?))
    }

    /// Reads one answer.
    fn reply(&mut self) -> Result<Reply, McError> {
        let mut line = Vec::new();
        let read = self.stream.by_ref().take(MAX_LINE as u64).read_until(b'\n', &mut line)?;
        if read == 0 || !line.ends_with(b"\r\n") {
            return Err(McError::Protocol("response line cut short or too long".into()));
        }
        line.truncate(line.len() - 2);
        let header = MetaResponse::parse_header(&line)?;
        let cas = header.flags().find_map(|f| f.strip_prefix(b"c").and_then(parse_u64));
        let mut reply = Reply { code: header.rc(), cas, value: None };
        if reply.code == ReturnCode::Va {
            // The crate keeps the data length to itself; it is the token after `VA`.
            let len = line.split(|&b| b == b' ').nth(1).and_then(parse_u64).map_or(usize::MAX, |n| n as usize);
            if len > MAX_VALUE {
                return Err(McError::Protocol(format!("value of {len} bytes announced")));
            }
            let mut value = vec![0; len + 2];
            self.stream.read_exact(&mut value)?;
            if !value.ends_with(b"\r\n") {
                return Err(McError::Protocol("value not followed by CRLF".into()));
            }
            value.truncate(len);
            reply.value = Some(value);
        }
        Ok(reply)
    }
}

/// A decimal number, if `digits` is one.
pub(super) fn parse_u64(digits: &[u8]) -> Option<u64> {
    std::str::from_utf8(digits).ok()?.parse().ok()
}
