//! etcd v3 through its JSON gateway: the client of the configuration manager that failover
//! stands on (leader key, in-sync record, epochs; see the failover issue and API.md).
//!
//! etcd 3.4 serves its gRPC API as JSON over HTTP/1.1: `POST /v3/kv/range`, `/v3/kv/put`,
//! `/v3/kv/txn`, `/v3/kv/deleterange`, `/v3/lease/grant`, `/v3/lease/keepalive`,
//! `/v3/lease/revoke`. Keys and values travel base64-encoded, 64-bit numbers as strings, and
//! fields equal to their default (false, 0, empty) are left out of answers. There is no
//! maintained blocking etcd v3 crate; Patroni's own etcd3 client is a blocking client of
//! this same gateway. This one runs over the store's one configured ureq agent
//! ([`crate::client::Http`]), so its timeouts are the caller's.
//!
//! Every key is named relative to a prefix (`BAZAR_ETCD_PREFIX`, default `/bazar`), so
//! several stores can share one etcd. A call goes to the endpoint that answered last and
//! moves on to the next only when that one could not be reached; an answer of etcd's,
//! even a refusal, is final. The request encoding and answer decoding are plain functions
//! over JSON values, unit-tested without a socket.

use crate::client::Http;
use base64::prelude::{Engine as _, BASE64_STANDARD};
use serde::Deserialize;
use serde_json::{json, Value};
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use ureq::http::Method;

/// An etcd lease: keys put with it are deleted when it expires or is revoked.
pub type LeaseId = i64;

/// What can go wrong talking to etcd.
#[derive(Debug)]
pub enum EtcdError {
    /// No endpoint could be reached (each one's failure, in the order tried). The request
    /// may have reached one of them: a write's outcome is then unknown.
    Unreachable(String),
    /// etcd answered with an error (its HTTP status and message), e.g. an unknown lease.
    Refused {
        /// The gateway's HTTP status.
        status: u16,
        /// etcd's message.
        message: String,
    },
    /// etcd's answer was not what its API describes.
    Malformed(String),
}

impl fmt::Display for EtcdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EtcdError::Unreachable(why) => write!(f, "etcd unreachable: {why}"),
            EtcdError::Refused { status, message } => write!(f, "etcd refused the request ({status}): {message}"),
            EtcdError::Malformed(why) => write!(f, "etcd answered something unexpected: {why}"),
        }
    }
}

impl std::error::Error for EtcdError {}

/// Results of etcd calls.
pub type Result<T> = std::result::Result<T, EtcdError>;

/// One key as etcd holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kv {
    /// The key, relative to the client's prefix.
    pub key: String,
    /// The value's bytes.
    pub value: Vec<u8>,
    /// The revision at which the key was created (since it last did not exist).
    pub create_revision: i64,
    /// The revision of its last change: what a compare-and-swap compares.
    pub mod_revision: i64,
    /// The lease it is bound to, 0 for none.
    pub lease: LeaseId,
}

/// A condition of a transaction.
#[derive(Clone, Debug)]
pub enum Compare {
    /// The key does not exist.
    Absent(String),
    /// The key was last changed at this revision (0: it does not exist).
    ModRevision(String, i64),
    /// The key holds exactly this value.
    Value(String, Vec<u8>),
}

/// An operation of a transaction.
#[derive(Clone, Debug)]
pub enum Op {
    /// Sets a key, bound to a lease or not.
    Put {
        /// The key, relative to the prefix.
        key: String,
        /// The value.
        value: Vec<u8>,
        /// The lease to bind it to.
        lease: Option<LeaseId>,
    },
    /// Reads a key.
    Get(String),
    /// Deletes a key.
    Delete(String),
}

/// What a transaction did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnOutcome {
    /// Whether every condition held (so the success operations ran, else the failure ones).
    pub succeeded: bool,
    /// etcd's revision after the transaction.
    pub revision: i64,
    /// The keys the operations that ran read, in order.
    pub kvs: Vec<Kv>,
}

/// A client of one etcd cluster (any of its endpoints), under one key prefix.
pub struct Etcd {
    http: Http,
    endpoints: Vec<String>,
    prefix: String,
    /// The endpoint that answered last: calls start there.
    current: AtomicUsize,
}

impl Etcd {
    /// A client of `endpoints` (base URLs such as `http://127.0.0.1:2379`, at least one) for
    /// the keys under `prefix`, calling through `http`.
    pub fn new(http: Http, endpoints: Vec<String>, prefix: &str) -> Etcd {
        assert!(!endpoints.is_empty(), "etcd needs at least one endpoint");
        let endpoints = endpoints.into_iter().map(|e| e.trim_end_matches('/').to_string()).collect();
        Etcd { http, endpoints, prefix: prefix.trim_end_matches('/').to_string(), current: AtomicUsize::new(0) }
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// A new lease of `ttl` (whole seconds, at least 1).
    pub fn grant(&self, ttl: Duration) -> Result<LeaseId> {
        let answer = self.call("/v3/lease/grant", &json!({ "TTL": ttl.as_secs().max(1) }))?;
        match number(&answer["ID"]) {
            id if id != 0 => Ok(id),
            _ => Err(EtcdError::Malformed(format!("a grant without an ID: {answer}"))),
        }
    }

    /// Renews `lease` to its full TTL; the TTL it now has, or None when the lease no
    /// longer exists (it expired or was revoked: the keys bound to it are gone).
    pub fn keep_alive(&self, lease: LeaseId) -> Result<Option<Duration>> {
        let answer = self.call("/v3/lease/keepalive", &json!({ "ID": lease.to_string() }))?;
        let result = answer.get("result").ok_or_else(|| EtcdError::Malformed(format!("no result: {answer}")))?;
        Ok(match number(&result["TTL"]) {
            ttl if ttl > 0 => Some(Duration::from_secs(ttl as u64)),
            _ => None,
        })
    }

    /// Ends `lease` now, deleting the keys bound to it. Revoking a lease that is already
    /// gone is not an error.
    pub fn revoke(&self, lease: LeaseId) -> Result<()> {
        match self.call("/v3/lease/revoke", &json!({ "ID": lease.to_string() })) {
            Err(EtcdError::Refused { message, .. }) if message.contains("not found") => Ok(()),
            other => other.map(drop),
        }
    }

    /// One key, if it exists.
    pub fn get(&self, key: &str) -> Result<Option<Kv>> {
        let answer = self.call("/v3/kv/range", &json!({ "key": self.encode_key(key) }))?;
        Ok(self.kvs(&answer)?.into_iter().next())
    }

    /// Every key under `dir` (`members/` lists `members/a`, `members/b`, ...), in key order.
    pub fn list(&self, dir: &str) -> Result<Vec<Kv>> {
        let start = format!("{}/{dir}", self.prefix).into_bytes();
        let answer = self.call(
            "/v3/kv/range",
            &json!({ "key": BASE64_STANDARD.encode(&start), "range_end": BASE64_STANDARD.encode(range_end(&start)) }),
        )?;
        self.kvs(&answer)
    }

    /// Sets a key, bound to `lease` when given.
    pub fn put(&self, key: &str, value: &[u8], lease: Option<LeaseId>) -> Result<()> {
        self.call("/v3/kv/put", &self.put_body(key, value, lease)).map(drop)
    }

    /// Deletes a key (nothing when it does not exist).
    pub fn delete(&self, key: &str) -> Result<()> {
        self.call("/v3/kv/deleterange", &json!({ "key": self.encode_key(key) })).map(drop)
    }

    /// Runs `success` if every condition in `when` holds, else `failure`, atomically.
    pub fn txn(&self, when: &[Compare], success: &[Op], failure: &[Op]) -> Result<TxnOutcome> {
        let answer = self.call("/v3/kv/txn", &self.txn_body(when, success, failure))?;
        let mut kvs = Vec::new();
        for response in answer["responses"].as_array().into_iter().flatten() {
            if let Some(range) = response.get("response_range") {
                kvs.extend(self.kvs(range)?);
            }
        }
        Ok(TxnOutcome {
            succeeded: answer["succeeded"].as_bool().unwrap_or(false),
            revision: number(&answer["header"]["revision"]),
            kvs,
        })
    }

    /// Creates `key` with `value` (bound to `lease`) if it does not exist: Ok(None) when
    /// it was created, else Ok(Some(what it holds)).
    pub fn create(&self, key: &str, value: &[u8], lease: Option<LeaseId>) -> Result<Option<Kv>> {
        let put = Op::Put { key: key.into(), value: value.to_vec(), lease };
        let outcome = self.txn(&[Compare::Absent(key.into())], &[put], &[Op::Get(key.into())])?;
        match (outcome.succeeded, outcome.kvs.into_iter().next()) {
            (true, _) => Ok(None),
            (false, Some(kv)) => Ok(Some(kv)),
            // Deleted between the compare and the read cannot happen (one transaction).
            (false, None) => Err(EtcdError::Malformed("a failed create read no key".into())),
        }
    }

    fn encode_key(&self, key: &str) -> String {
        BASE64_STANDARD.encode(format!("{}/{key}", self.prefix))
    }

    fn put_body(&self, key: &str, value: &[u8], lease: Option<LeaseId>) -> Value {
        let mut body = json!({ "key": self.encode_key(key), "value": BASE64_STANDARD.encode(value) });
        if let Some(lease) = lease {
            body["lease"] = json!(lease.to_string());
        }
        body
    }

    fn txn_body(&self, when: &[Compare], success: &[Op], failure: &[Op]) -> Value {
        let compare: Vec<Value> = when
            .iter()
            .map(|c| match c {
                Compare::Absent(k) => {
                    json!({ "key": self.encode_key(k), "result": "EQUAL", "target": "CREATE", "createRevision": "0" })
                }
                Compare::ModRevision(k, rev) => {
                    json!({ "key": self.encode_key(k), "result": "EQUAL", "target": "MOD", "modRevision": rev.to_string() })
                }
                Compare::Value(k, v) => json!({
                    "key": self.encode_key(k), "result": "EQUAL", "target": "VALUE", "value": BASE64_STANDARD.encode(v)
                }),
            })
            .collect();
        let ops = |ops: &[Op]| -> Vec<Value> {
            ops.iter()
                .map(|op| match op {
                    Op::Put { key, value, lease } => json!({ "requestPut": self.put_body(key, value, *lease) }),
                    Op::Get(k) => json!({ "requestRange": { "key": self.encode_key(k) } }),
                    Op::Delete(k) => json!({ "requestDeleteRange": { "key": self.encode_key(k) } }),
                })
                .collect()
        };
        json!({ "compare": compare, "success": ops(success), "failure": ops(failure) })
    }

    /// The keys of a range answer, named relative to the prefix.
    fn kvs(&self, answer: &Value) -> Result<Vec<Kv>> {
        #[derive(Deserialize)]
        struct Raw {
            key: String,
            #[serde(default)]
            value: String,
            #[serde(default)]
            create_revision: Value,
            #[serde(default)]
            mod_revision: Value,
            #[serde(default)]
            lease: Value,
        }
        let raw: Vec<Raw> = match answer.get("kvs") {
            None => Vec::new(),
            Some(kvs) => serde_json::from_value(kvs.clone()).map_err(|e| EtcdError::Malformed(e.to_string()))?,
        };
        let decode = |s: &str| BASE64_STANDARD.decode(s).map_err(|e| EtcdError::Malformed(format!("base64: {e}")));
        raw.into_iter()
            .map(|r| {
                let key = String::from_utf8(decode(&r.key)?).map_err(|e| EtcdError::Malformed(e.to_string()))?;
                let key = key.strip_prefix(&format!("{}/", self.prefix)).unwrap_or(&key).to_string();
                Ok(Kv {
                    key,
                    value: decode(&r.value)?,
                    create_revision: number(&r.create_revision),
                    mod_revision: number(&r.mod_revision),
                    lease: number(&r.lease),
                })
            })
            .collect()
    }

    /// POSTs `body` to `path` on the endpoint that answered last, then on the others.
    fn call(&self, path: &str, body: &Value) -> Result<Value> {
        let bytes = serde_json::to_vec(body).expect("JSON values serialize");
        let first = self.current.load(Ordering::Relaxed);
        let mut failures = Vec::new();
        for k in 0..self.endpoints.len() {
            let i = (first + k) % self.endpoints.len();
            let endpoint = &self.endpoints[i];
            let answer = match self.http.call(Method::POST, endpoint, path, Some(bytes.clone())) {
                Ok(a) => a,
                Err(e) => {
                    failures.push(format!("{endpoint}: {e}"));
                    continue;
                }
            };
            self.current.store(i, Ordering::Relaxed);
            let value: Value = serde_json::from_slice(&answer.body)
                .map_err(|e| EtcdError::Malformed(format!("{endpoint}{path}: {e}")))?;
            if answer.status != 200 {
                let message = value["message"].as_str().or(value["error"].as_str()).unwrap_or("").to_string();
                return Err(EtcdError::Refused { status: answer.status, message });
            }
            return Ok(value);
        }
        Err(EtcdError::Unreachable(failures.join("; ")))
    }
}

/// The end of the range of every key that begins with `prefix`: the prefix with its last
/// byte below 0xff raised by one (etcd's own `clientv3.GetPrefixRangeEnd`).
fn range_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// A 64-bit number as the gateway writes it: a string, a number, or left out (0).
fn number(v: &Value) -> i64 {
    match v {
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Number(n) => n.as_i64().unwrap_or(0),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> Etcd {
        Etcd::new(Http::new(Duration::from_secs(1), 1, None), vec!["http://127.0.0.1:1/".into()], "/bazar/")
    }

    #[test]
    fn keys_are_named_under_the_prefix_and_base64_encoded() {
        let etcd = client();
        assert_eq!(etcd.prefix(), "/bazar");
        assert_eq!(etcd.encode_key("leader"), BASE64_STANDARD.encode("/bazar/leader"));
        let put = etcd.put_body("leader", b"http://a:9000", Some(7));
        assert_eq!(put["value"], BASE64_STANDARD.encode("http://a:9000"));
        assert_eq!(put["lease"], "7", "64-bit numbers go as strings");
        assert!(etcd.put_body("k", b"", None).get("lease").is_none());
    }

    #[test]
    fn a_transaction_encodes_each_condition_and_operation() {
        let etcd = client();
        let body = etcd.txn_body(
            &[
                Compare::Absent("a".into()),
                Compare::ModRevision("b".into(), 12),
                Compare::Value("c".into(), b"v".to_vec()),
            ],
            &[Op::Put { key: "a".into(), value: b"x".to_vec(), lease: None }],
            &[Op::Get("a".into()), Op::Delete("b".into())],
        );
        let compare = &body["compare"];
        assert_eq!((compare[0]["target"].as_str(), compare[0]["createRevision"].as_str()), (Some("CREATE"), Some("0")));
        assert_eq!((compare[1]["target"].as_str(), compare[1]["modRevision"].as_str()), (Some("MOD"), Some("12")));
        assert_eq!(compare[2]["value"], BASE64_STANDARD.encode("v"));
        assert!(body["success"][0]["requestPut"].is_object());
        assert_eq!(body["failure"][0]["requestRange"]["key"], etcd.encode_key("a"));
        assert_eq!(body["failure"][1]["requestDeleteRange"]["key"], etcd.encode_key("b"));
    }

    #[test]
    fn range_answers_decode_with_defaults_left_out() {
        // As etcd 3.4's gateway answers: numbers as strings, a zero lease left out.
        let answer = json!({
            "header": {"revision": "9"},
            "kvs": [{"key": BASE64_STANDARD.encode("/bazar/leader"), "create_revision": "2", "mod_revision": "9",
                     "version": "1", "value": BASE64_STANDARD.encode("me")}],
            "count": "1"
        });
        let kvs = client().kvs(&answer).unwrap();
        assert_eq!(
            kvs,
            vec![Kv { key: "leader".into(), value: b"me".to_vec(), create_revision: 2, mod_revision: 9, lease: 0 }]
        );
        assert!(client().kvs(&json!({"header": {}})).unwrap().is_empty(), "no kvs: no key");
        assert!(client().kvs(&json!({"kvs": [{"key": "%%%"}]})).is_err(), "bad base64 is refused");
    }

    #[test]
    fn numbers_come_as_strings_numbers_or_not_at_all() {
        for (v, n) in [(json!("42"), 42), (json!(42), 42), (Value::Null, 0), (json!("x"), 0)] {
            assert_eq!(number(&v), n, "{v}");
        }
    }

    #[test]
    fn a_prefix_range_ends_past_every_key_under_it() {
        assert_eq!(range_end(b"/bazar/members/"), b"/bazar/members0");
        assert_eq!(range_end(b"a\xff"), b"b");
        assert_eq!(range_end(b"\xff"), b"\0");
    }

    #[test]
    fn no_endpoint_reachable_is_unreachable() {
        assert!(matches!(client().get("k"), Err(EtcdError::Unreachable(_))));
    }
}
