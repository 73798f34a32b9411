//! W3C Trace Context (<https://www.w3.org/TR/trace-context/>): reading and writing the
//! `traceparent` and `tracestate` headers, and drawing new ids. No I/O, no clock.
//!
//! Hand-written rather than a crate's: `traceparent` is one fixed-width line of four
//! hex fields, and the crates that parse it (`opentelemetry`'s `TraceContextPropagator`)
//! come with the OpenTelemetry API and SDK, an async-oriented stack this store does not
//! run. The sharp edges are few and each is a row of the tests below: the exact length,
//! lower-case hex only, version `ff` and all-zero ids invalid, a later version's extra
//! fields accepted after the first four.
//!
//! What arrives malformed is ignored, never an error: the request is served, and a new
//! trace starts (the sampling decides whether it is recorded). A `tracestate` that is
//! malformed, over [`MAX_TRACESTATE`] bytes or over [`MAX_STATE_MEMBERS`] members is
//! dropped alone (the spec lets a participant drop what it cannot keep), and one without
//! a valid `traceparent` is never kept.

use std::cell::Cell;
use std::fmt;
use std::sync::Arc;

/// The longest `tracestate` kept (the spec asks participants to pass on at least 512
/// characters; a longer one is dropped whole, never truncated mid-member).
pub const MAX_TRACESTATE: usize = 512;
/// Most list members of a `tracestate` (the spec's limit).
pub const MAX_STATE_MEMBERS: usize = 32;

/// A trace's id: 16 bytes, never all zero.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TraceId(pub [u8; 16]);

/// A span's id: 8 bytes, never all zero.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpanId(pub [u8; 8]);

/// Appends `bytes` as lower-case hex digits (a table, not `write!` per byte: every traced
/// answer formats a `traceresponse`).
fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
}

fn hex(bytes: &[u8], f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let mut s = String::with_capacity(2 * bytes.len());
    push_hex(&mut s, bytes);
    f.write_str(&s)
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        hex(&self.0, f)
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        hex(&self.0, f)
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        hex(&self.0, f)
    }
}

impl fmt::Debug for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        hex(&self.0, f)
    }
}

impl TraceId {
    /// A random trace id.
    pub fn random() -> TraceId {
        loop {
            let mut id = [0; 16];
            id[..8].copy_from_slice(&next_u64().to_be_bytes());
            id[8..].copy_from_slice(&next_u64().to_be_bytes());
            if id != [0; 16] {
                return TraceId(id);
            }
        }
    }

    /// 32 lower-case hex digits, not all zero (what a trace route takes).
    pub fn parse(s: &str) -> Option<TraceId> {
        let mut id = [0; 16];
        (s.len() == 32 && unhex(s.as_bytes(), &mut id) && id != [0; 16]).then_some(TraceId(id))
    }
}

impl SpanId {
    /// A random span id.
    pub fn random() -> SpanId {
        loop {
            let id = next_u64();
            if id != 0 {
                return SpanId(id.to_be_bytes());
            }
        }
    }
}

/// Where a request stands in a trace: the trace, the span that is the parent of what
/// happens next, whether the trace is recorded, and the vendors' `tracestate` passed on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Context {
    /// The trace.
    pub trace_id: TraceId,
    /// The current span (the caller's, for a context read off a request).
    pub span_id: SpanId,
    /// The `sampled` flag: whether spans of this trace are recorded.
    pub sampled: bool,
    /// `tracestate` as received (already checked), passed on unchanged.
    pub state: Option<Arc<str>>,
}

impl Context {
    /// The `traceparent` header that continues this context (version 00).
    pub fn traceparent(&self) -> String {
        let mut s = String::with_capacity(55);
        s.push_str("00-");
        push_hex(&mut s, &self.trace_id.0);
        s.push('-');
        push_hex(&mut s, &self.span_id.0);
        s.push_str(if self.sampled { "-01" } else { "-00" });
        s
    }

    /// Reads the headers of a request; `None` when `traceparent` is missing or malformed
    /// (a new trace starts then). A bad `tracestate` is dropped alone.
    pub fn from_headers(traceparent: Option<&str>, tracestate: Option<&str>) -> Option<Context> {
        let (trace_id, span_id, flags) = parse_traceparent(traceparent?)?;
        let state = tracestate.filter(|s| valid_tracestate(s)).map(Arc::from);
        Some(Context { trace_id, span_id, sampled: flags & 1 == 1, state })
    }
}

/// Parses a `traceparent`: `version-trace_id-parent_id-flags`, lower-case hex. Version
/// 00 is exactly 55 characters; a later version (not `ff`) may add fields after a `-`,
/// which are ignored. All-zero ids are invalid.
pub fn parse_traceparent(s: &str) -> Option<(TraceId, SpanId, u8)> {
    let b = s.as_bytes();
    if b.len() < 55 || b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
        return None;
    }
    let mut version = [0u8; 1];
    if !unhex(&b[0..2], &mut version) || version[0] == 0xff {
        return None;
    }
    // Version 00 is exactly this long; a later one may go on after a '-'.
    if (version[0] == 0 && b.len() != 55) || (b.len() > 55 && b[55] != b'-') {
        return None;
    }
    let (mut trace, mut span, mut flags) = ([0u8; 16], [0u8; 8], [0u8; 1]);
    let well_formed = unhex(&b[3..35], &mut trace) && unhex(&b[36..52], &mut span) && unhex(&b[53..55], &mut flags);
    (well_formed && trace != [0; 16] && span != [0; 8]).then_some((TraceId(trace), SpanId(span), flags[0]))
}

/// Whether a `tracestate` may be passed on: at most [`MAX_TRACESTATE`] bytes and
/// [`MAX_STATE_MEMBERS`] members, each empty or `key=value` with a key of lower-case
/// letters, digits and `_-*/@` and a value of printable ASCII without `,` or `=`.
pub fn valid_tracestate(s: &str) -> bool {
    if s.len() > MAX_TRACESTATE {
        return false;
    }
    let members: Vec<&str> = s.split(',').map(|m| m.trim_matches([' ', '\t'])).filter(|m| !m.is_empty()).collect();
    !members.is_empty()
        && members.len() <= MAX_STATE_MEMBERS
        && members.iter().all(|m| match m.split_once('=') {
            Some((key, value)) => {
                !key.is_empty()
                    && key.bytes().all(|c| matches!(c, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'*' | b'/' | b'@'))
                    && !value.is_empty()
                    && value.bytes().all(|c| (0x20..=0x7e).contains(&c) && c != b',' && c != b'=')
            }
            None => false,
        })
}

/// Lower-case hex digits into `out` (exactly twice its length); false for anything else.
fn unhex(digits: &[u8], out: &mut [u8]) -> bool {
    let value = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    if digits.len() != 2 * out.len() {
        return false;
    }
    for (byte, pair) in out.iter_mut().zip(digits.chunks(2)) {
        match (value(pair[0]), value(pair[1])) {
            (Some(hi), Some(lo)) => *byte = hi << 4 | lo,
            _ => return false,
        }
    }
    true
}

/// 64 random bits, cheaply: splitmix64 over a per-thread state seeded once from std's
/// `RandomState` (the kernel's randomness, drawn per process) and the thread's start
/// time. Ids only need to be unique, not secret; `crate::ids::random_hex` reads
/// `/dev/urandom`, a system call too many for every span.
pub fn next_u64() -> u64 {
    thread_local! {
        static STATE: Cell<u64> = Cell::new(seed());
    }
    STATE.with(|state| {
        let x = state.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
        state.set(x);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    })
}

fn seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    h.write(format!("{:?}", std::thread::current().id()).as_bytes());
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    /// A traceparent's trace id, span id and flags, as text.
    type Parsed<'a> = Option<(&'a str, &'a str, u8)>;

    fn check(header: &str, want: Parsed) {
        let got = parse_traceparent(header).map(|(t, s, f)| (t.to_string(), s.to_string(), f));
        let want = want.map(|(t, s, f)| (t.to_string(), s.to_string(), f));
        assert_eq!(got, want, "{header:?}");
    }

    #[test]
    fn traceparents() {
        let (t, s) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
        let cases: Vec<(String, Parsed)> = vec![
            (GOOD.into(), Some((t, s, 1))),
            (GOOD.replace("-01", "-00"), Some((t, s, 0))),
            (GOOD.replace("-01", "-03"), Some((t, s, 3))),
            // A later version: its extra fields are ignored, its first four read.
            (GOOD.replacen("00", "cc", 1), Some((t, s, 1))),
            (format!("{}-what-comes-next", GOOD.replacen("00", "cc", 1)), Some((t, s, 1))),
            // Version 00 is exactly 55 characters.
            (format!("{GOOD}-extra"), None),
            (format!("{GOOD} "), None),
            (GOOD[..54].into(), None),
            (String::new(), None),
            ("00".into(), None),
            // Version ff is invalid, and so is a version that is not hex.
            (GOOD.replacen("00", "ff", 1), None),
            (GOOD.replacen("00", "0g", 1), None),
            // Upper case, bad hex, wrong separators.
            (GOOD.to_uppercase(), None),
            (GOOD.replace("4bf9", "4BF9"), None),
            (GOOD.replace("4bf9", "4bz9"), None),
            (GOOD.replace("00f0", "00F0"), None),
            (GOOD.replace("-01", "-0x"), None),
            (GOOD.replace('-', "_"), None),
            (GOOD.replacen('-', "", 1) + "0", None),
            // All-zero ids.
            (format!("00-{}-{s}-01", "0".repeat(32)), None),
            (format!("00-{t}-{}-01", "0".repeat(16)), None),
            // Not ASCII: same length in bytes, never a panic on a char boundary.
            (GOOD.replacen("4b", "é", 1), None),
            ("é".repeat(28), None),
        ];
        for (header, want) in cases {
            check(&header, want);
        }
    }

    #[test]
    fn tracestates() {
        let long_member = format!("k={}", "v".repeat(MAX_TRACESTATE - 2));
        let too_many: Vec<String> = (0..=MAX_STATE_MEMBERS).map(|i| format!("k{i}=v")).collect();
        let just_enough: Vec<String> = (0..MAX_STATE_MEMBERS).map(|i| format!("k{i}=v")).collect();
        let cases: Vec<(String, bool)> = vec![
            ("congo=t61rcWkgMzE".into(), true),
            ("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE".into(), true),
            ("rojo=1, congo=2 ,".into(), true),
            ("tenant@vendor=x".into(), true),
            (long_member.clone(), true),
            (format!("{long_member}x"), false),
            (just_enough.join(","), true),
            (too_many.join(","), false),
            ("".into(), false),
            (",".into(), false),
            ("novalue".into(), false),
            ("=v".into(), false),
            ("k=".into(), false),
            ("Upper=v".into(), false),
            ("k=a=b".into(), false),
            ("k=\u{7f}".into(), false),
            ("k=é".into(), false),
        ];
        for (state, want) in cases {
            assert_eq!(valid_tracestate(&state), want, "{state:?}");
        }
    }

    #[test]
    fn contexts_from_headers() {
        let ctx = Context::from_headers(Some(GOOD), Some("a=b")).unwrap();
        assert!(ctx.sampled);
        assert_eq!(ctx.traceparent(), GOOD);
        assert_eq!(ctx.state.as_deref(), Some("a=b"));
        // A bad tracestate is dropped alone; a bad traceparent drops both.
        assert_eq!(Context::from_headers(Some(GOOD), Some(&"a=b,".repeat(300))).unwrap().state, None);
        assert_eq!(Context::from_headers(Some("00-xyz"), Some("a=b")), None);
        assert_eq!(Context::from_headers(None, Some("a=b")), None);
        let unsampled = Context::from_headers(Some(&GOOD.replace("-01", "-00")), None).unwrap();
        assert!(!unsampled.sampled);
        assert!(unsampled.traceparent().ends_with("-00"));
    }

    #[test]
    fn ids_are_well_formed_and_distinct() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            let (t, s) = (TraceId::random(), SpanId::random());
            assert!(seen.insert(t));
            assert_eq!(TraceId::parse(&t.to_string()), Some(t));
            assert_eq!(s.to_string().len(), 16);
            let ctx = Context { trace_id: t, span_id: s, sampled: true, state: None };
            assert_eq!(parse_traceparent(&ctx.traceparent()), Some((t, s, 1)));
        }
        assert_eq!(TraceId::parse(&"0".repeat(32)), None);
        assert_eq!(TraceId::parse(&"A".repeat(32)), None);
        assert_eq!(TraceId::parse("abc"), None);
    }
}
