//! Property test of the routers: random methods, paths, queries, headers and bodies given
//! to the real handlers in-process. Whatever the request, the answer is a JSON status the
//! service could mean (never 500) and nothing panics.

mod common;

use bazar::catalog::{CatalogConfig, CatalogNode};
use bazar::config::Vars;
use bazar::frontend::{Frontend, FrontendConfig};
use bazar::http::Request;
use bazar::metrics::Metrics;
use bazar::order::{OrderConfig, OrderNode};
use std::sync::Arc;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
}

fn random_request(rng: &mut Rng) -> Request {
    let methods = ["GET", "HEAD", "POST", "PATCH", "PUT", "DELETE", "OPTIONS", "TRACE"];
    let segments = [
        "books",
        "book",
        "purchase",
        "info",
        "search",
        "orders",
        "internal",
        "snapshot",
        "replicate",
        "purchases",
        "health",
        "ready",
        "metrics",
        "cluster",
        "dashboard",
        "assets",
        "store.js",
        "1",
        "7",
        "0",
        "-1",
        "1.5",
        "99999999999",
        "%20",
        "%ff",
        "%zz",
        "distributed%20systems",
        "",
        "..",
        "%2F",
        "+",
    ];
    let queries = [
        "",
        "?topic=distributed+systems",
        "?topic=%ff",
        "?after=-1",
        "?after=5",
        "?from=x",
        "?from=3",
        "?limit=2&after=2026-11-24T13:55:06.123Z~x-1",
        "?limit=0",
        "?after=2026-02-30T00:00:00.000Z~x-1",
        "?topic",
        "?=&&=",
    ];
    let bodies = [
        "",
        "{}",
        "{\"quantity\": 5}",
        "{\"quantity_delta\": -9999}",
        "{\"price\": 1e308}",
        "{\"price\": 1.234}",
        "[]",
        "null",
        "{\"order_id\": \"a b\"}",
        "{\"order_id\": \"abc-1\", \"at\": \"2026-11-24T13:55:06.123Z\"}",
        "[{\"seq\": 1, \"book\": {\"id\": 1, \"title\": \"t\", \"topic\": \"x\", \"price\": 1, \"quantity\": 1}}]",
        "{\"seq\": 18446744073709551615, \"books\": []}",
        "[{\"order_id\": \"x-1\", \"id\": 1, \"title\": \"t\", \"price\": 1.5, \"at\": \"2026-11-24T13:55:06.123Z\"}]",
        "\u{0}\u{1}",
    ];
    let n = 1 + rng.next() % 4;
    let path: String = (0..n).map(|_| format!("/{}", rng.pick(&segments))).collect();
    let mut r = Request::new(rng.pick(&methods), &format!("{path}{}", rng.pick(&queries)));
    r.body = rng.pick(&bodies).as_bytes().to_vec();
    r
}

fn check(name: &str, handle: impl Fn(&Request) -> bazar::http::Response, cases: usize, allowed: &[u16]) {
    let mut rng = Rng(0xD1B5_4A32_D192_ED03);
    for _ in 0..cases {
        let r = random_request(&mut rng);
        let answer = handle(&r);
        assert!(
            allowed.contains(&answer.status),
            "{name}: {} {}?{:?} {:?} -> {} {}",
            r.method,
            r.path,
            r.query,
            String::from_utf8_lossy(&r.body),
            answer.status,
            String::from_utf8_lossy(&answer.body)
        );
        if answer.content_type == "application/json" {
            assert!(serde_json::from_slice::<serde_json::Value>(&answer.body).is_ok(), "{name}: JSON body");
        }
    }
}

#[test]
fn routers_answer_every_request_with_a_meaningful_status() {
    let dir = common::TempDir::new("routing");
    let data = dir.0.join("catalog").display().to_string();
    let dead = "http://127.0.0.1:1";
    // A primary without replicas or cache: everything is local.
    let cfg = CatalogConfig::from_source(&Vars(&[("BAZAR_ROLE", "primary"), ("BAZAR_DATA_DIR", &data)])).unwrap();
    let catalog = CatalogNode::open(cfg, Arc::new(Metrics::new())).unwrap();
    check("catalog primary", |r| catalog.handle(r), 6000, &[200, 400, 404, 405, 409]);
    // A replica whose primary is unreachable: reads 503 (catching up), writes 503.
    let data = dir.0.join("replica").display().to_string();
    let cfg = CatalogConfig::from_source(&Vars(&[
        ("BAZAR_ROLE", "replica"),
        ("BAZAR_PRIMARY", dead),
        ("BAZAR_DATA_DIR", &data),
    ]))
    .unwrap();
    let replica = CatalogNode::open(cfg, Arc::new(Metrics::new())).unwrap();
    check("catalog replica", |r| replica.handle(r), 3000, &[200, 400, 404, 405, 409, 503]);
    // An order server and a front end whose back ends are unreachable.
    let data = dir.0.join("order").display().to_string();
    let cfg = OrderConfig::from_source(&Vars(&[("BAZAR_CATALOG", dead), ("BAZAR_DATA_DIR", &data)])).unwrap();
    let order = OrderNode::open(cfg, Arc::new(Metrics::new())).unwrap();
    check("order", |r| order.handle(r), 3000, &[200, 400, 404, 405, 503]);
    let cfg = FrontendConfig::from_source(&Vars(&[("BAZAR_CATALOG", dead), ("BAZAR_ORDER", dead)])).unwrap();
    let frontend = Frontend::new(cfg, Arc::new(Metrics::new()));
    check("frontend", |r| frontend.handle(r), 3000, &[200, 400, 404, 405, 503]);
}
