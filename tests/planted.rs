//! No one can plant an order (issue 19): a copy taken for an order is an internal act of
//! the store, so a client that reaches a catalog or an order server cannot make the order
//! servers adopt an order they did not make, and nothing of a refused request is taken or
//! journaled.

mod common;

use common::*;
use std::io::Write;
use std::time::Duration;
use ureq::http::Method;

/// The request of issue 19, which once took a copy that both order servers then adopted.
const PLANTED: &str = r#"{"at": null, "order_id": "0"}"#;

fn stock(base: &str, id: u32) -> u64 {
    json(&get(base, &format!("/books/{id}")))["quantity"].as_u64().unwrap()
}

fn journal(base: &str, token: Option<&str>) -> Vec<serde_json::Value> {
    let http = token.map_or_else(client, client_with_token);
    let a = http.call(Method::GET, base, "/internal/purchases", None).unwrap();
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    json(&a)["purchases"].as_array().unwrap().clone()
}

/// An order id as an order server draws it, and a time close to now.
fn real_order(counter: u64) -> String {
    format!(r#"{{"order_id": "0a1b2c3d4e5f-{counter}", "at": "{}"}}"#, bazar::ids::timestamp_now())
}

#[test]
fn a_store_without_token_refuses_orders_no_order_server_made() {
    let s = Store::start(Opts::default()).unwrap();
    let (p, r) = (s.primary(), s.replica());
    let stock0 = stock(&p, 1);
    let far = bazar::ids::timestamp(bazar::ids::now_ms() - 6 * 60 * 1000);
    let refused = [
        PLANTED.to_string(),
        r#"{"order_id": "0"}"#.into(),
        r#"{"order_id": "x-1"}"#.into(),
        r#"{"order_id": "0A1B2C3D4E5F-1"}"#.into(),
        r#"{"order_id": "0a1b2c3d4e5f-0"}"#.into(),
        r#"{"order_id": null}"#.into(),
        r#"{"order_id": "0a1b2c3d4e5f-1", "at": null}"#.into(),
        r#"{"order_id": "0a1b2c3d4e5f-1", "at": "2026-11-24T13:55:06Z"}"#.into(),
        format!(r#"{{"order_id": "0a1b2c3d4e5f-1", "at": "{far}"}}"#),
        r#"{"order_id": "0a1b2c3d4e5f-1", "at": "9999-12-31T23:59:59.999Z"}"#.into(),
        format!(r#"{{"at": "{}"}}"#, bazar::ids::timestamp_now()),
    ];
    for body in &refused {
        for base in [&p, &r] {
            let a = call("POST", base, "/books/1/purchase", Some(body));
            assert_eq!(a.status, 400, "{base} {body}: {}", String::from_utf8_lossy(&a.body));
        }
    }
    assert_eq!(stock(&p, 1), stock0, "no copy was taken");
    assert!(journal(&p, None).is_empty(), "nothing was journaled");
    // Nor can an order server be handed one.
    let order = |id: &str| {
        format!(
            r#"[{{"order_id": "{id}", "id": 1, "title": "t", "price": 1, "at": "{}"}}]"#,
            bazar::ids::timestamp_now()
        )
    };
    for id in ["0", "x-1", "0a1b2c3d4e5f-01"] {
        assert_eq!(call("POST", &s.order(0), "/internal/orders", Some(&order(id))).status, 400, "{id}");
    }

    // A plain purchase is still anyone's, and so is (without a token) a copy taken for an
    // order of the servers' shape, with its time or the catalog's.
    assert_eq!(call("POST", &p, "/books/1/purchase", None).status, 200);
    assert_eq!(call("POST", &p, "/books/1/purchase", Some("{}")).status, 200);
    assert_eq!(call("POST", &r, "/books/1/purchase", Some(&real_order(1))).status, 200);
    assert_eq!(call("POST", &p, "/books/1/purchase", Some(r#"{"order_id": "0a1b2c3d4e5f-2"}"#)).status, 200);
    assert_eq!(call("POST", &p, "/books/1/purchase", Some(&real_order(1))).status, 200, "the same order again");
    assert_eq!(stock(&p, 1), stock0 - 4, "two plain copies and one for each order");
    let journaled: Vec<String> =
        journal(&p, None).iter().map(|p| p["order"]["order_id"].as_str().unwrap().to_string()).collect();
    assert_eq!(journaled, ["0a1b2c3d4e5f-1", "0a1b2c3d4e5f-2"]);
    // Those orders are adopted by both order servers (their server "died"); no other.
    for i in 0..2 {
        eventually(Duration::from_secs(15), "the orders are adopted", || s.orders_on(&s.order(i)).len() == 2);
        assert_eq!(get(&s.order(i), "/orders/0").status, 404);
    }
}

#[test]
fn with_a_token_a_copy_for_an_order_needs_it() {
    let s = Store::start(Opts { token: Some("t0ken-0123456789abcdef".into()), ..Opts::default() }).unwrap();
    let (p, r) = (s.primary(), s.replica());
    let with = client_with_token("t0ken-0123456789abcdef");
    let stock0 = stock(&p, 1);
    for base in [&p, &r] {
        // The request of issue 19: refused whoever sends it.
        assert_eq!(call("POST", base, "/books/1/purchase", Some(PLANTED)).status, 400);
        let a = with.call(Method::POST, base, "/books/1/purchase", Some(PLANTED.as_bytes().to_vec())).unwrap();
        assert_eq!(a.status, 400);
        // A well-formed order without the token (or with a wrong one).
        assert_eq!(call("POST", base, "/books/1/purchase", Some(&real_order(1))).status, 401);
        let wrong = client_with_token("t0ke");
        let a = wrong.call(Method::POST, base, "/books/1/purchase", Some(real_order(1).into_bytes())).unwrap();
        assert_eq!(a.status, 401);
    }
    assert_eq!(stock(&p, 1), stock0, "no copy was taken");
    assert!(journal(&p, Some("t0ken-0123456789abcdef")).is_empty(), "nothing was journaled");
    // A plain purchase needs no token; an order with it goes through (as order servers do).
    assert_eq!(call("POST", &r, "/books/1/purchase", None).status, 200);
    let a = with.call(Method::POST, &r, "/books/1/purchase", Some(real_order(7).into_bytes())).unwrap();
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    assert_eq!(call("POST", &s.fe(), "/purchase/1", None).status, 200);
    assert_eq!(stock(&p, 1), stock0 - 3);
    assert_eq!(journal(&p, Some("t0ken-0123456789abcdef")).len(), 2, "the order's and the front end's");
}

/// A catalog's journal from before the rule may hold a planted order: the order servers
/// never adopt it, and it holds up no later copy's reconciliation.
#[test]
fn a_planted_order_left_in_an_old_journal_is_never_adopted() {
    let mut s = Store::start(Opts::default()).unwrap();
    let p = s.primary();
    let book = json(&get(&p, "/books/1"));
    let seq = json(&get(&p, "/health"))["seq"].as_u64().unwrap();
    s.catalogs[0].kill9();
    // Two copies taken for orders, as an older catalog journaled them (today's rows, the
    // last column the epoch of static roles): the planted one
    // first, then one of an order server that died before it logged its order.
    let row = |seq: u64, quantity: u64, order_id: &str| {
        let (seq, quantity, price) = (seq.to_string(), quantity.to_string(), book["price"].to_string());
        let (title, topic, at) =
            (book["title"].as_str().unwrap(), book["topic"].as_str().unwrap(), bazar::ids::timestamp_now());
        files::log_row(&[&seq, "1", title, topic, &price, &quantity, order_id, &at, "0"])
    };
    let stock0 = book["quantity"].as_u64().unwrap();
    let rows = row(seq + 1, stock0 - 1, "0") + &row(seq + 2, stock0 - 2, "0a1b2c3d4e5f-5");
    let log = s.dir.0.join("catalog-1").join("catalog.log");
    std::fs::OpenOptions::new().append(true).open(&log).unwrap().write_all(rows.as_bytes()).unwrap();
    s.catalogs[0].restart();
    wait_ready(&p);
    assert_eq!(json(&get(&p, "/books/1"))["quantity"].as_u64(), Some(stock0 - 2), "the log was read");
    for i in 0..2 {
        let o = s.order(i);
        eventually(Duration::from_secs(20), "the real order is adopted", || {
            get(&o, "/orders/0a1b2c3d4e5f-5").status == 200
        });
        assert_eq!(get(&o, "/orders/0").status, 404, "the planted one is not");
        assert_eq!(s.orders_on(&o).len(), 1);
    }
    let text = std::fs::read_to_string(&s.orders[0].spec.log).unwrap();
    assert!(text.contains("no order server could have made"), "the planted order is reported: {text}");
}
