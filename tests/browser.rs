//! The storefront and the dashboard in a real browser: headless Chromium driven by
//! chromedriver over WebDriver (JSON over HTTP, through the project's own client).
//!
//! Skipped (with a note) where `chromium` or `chromedriver` is not installed, unless
//! `BAZAR_REQUIRE_BROWSER=1` (CI), which makes the skip a failure. Each step leaves a
//! screenshot in `target/screenshots/` (or `$BAZAR_SCREENSHOTS`): look at them.

mod common;

use bazar::client::Http;
use common::*;
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use ureq::http::Method;

/// The WebDriver element reference key (W3C).
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
/// Longest wait for something to show on a page (the machine is shared and slow).
const SHOW: Duration = Duration::from_secs(20);

/// Prints past the test harness's capture, so measurements and skips are seen.
fn say(text: &str) {
    let _ = std::io::stderr().write_all(format!("{text}\n").as_bytes());
}

fn screenshot_dir() -> PathBuf {
    std::env::var_os("BAZAR_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).parent().expect("target dir").join("screenshots"))
}

/// A chromedriver on a free loopback port with one headless Chromium session.
struct Browser {
    http: Http,
    base: String,
    session: String,
    shots: PathBuf,
    // Dropped last: killed after the session is closed.
    _driver: Proc,
}

impl Browser {
    /// Starts chromedriver and a session, or None (with a note) when either is missing.
    fn start(dir: &Path) -> Option<Browser> {
        let chromium =
            ["chromium", "chromium-browser", "google-chrome"].iter().find_map(|n| bazar::cluster::find_program(n));
        let driver = bazar::cluster::find_program("chromedriver");
        let (Some(chromium), Some(driver)) = (chromium, driver) else {
            if std::env::var("BAZAR_REQUIRE_BROWSER").as_deref() == Ok("1") {
                panic!("chromium and chromedriver are required (BAZAR_REQUIRE_BROWSER=1) but not installed");
            }
            say("SKIPPED browser test: chromium or chromedriver is not installed (apt-get install chromium chromium-driver)");
            return None;
        };
        let port = free_port();
        let proc = Proc::start(Spec {
            name: "chromedriver".into(),
            program: driver,
            args: vec![format!("--port={port}")],
            env: vec![],
            log: dir.join("chromedriver.log"),
        });
        let base = format!("http://127.0.0.1:{port}");
        let http = Http::new(Duration::from_secs(60), 2, None);
        eventually(Duration::from_secs(20), "chromedriver answers", || {
            http.call(Method::GET, &base, "/status", None).is_ok_and(|a| a.status == 200)
        });
        let profile = dir.join("chromium-profile");
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1280,1000", format!("--user-data-dir={}", profile.display())],
            },
        }}});
        let answer = http
            .call(Method::POST, &base, "/session", Some(capabilities.to_string().into_bytes()))
            .expect("chromedriver answers POST /session");
        let body: Value = serde_json::from_slice(&answer.body).expect("JSON from chromedriver");
        let session = body["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {body}")).to_string();
        let shots = screenshot_dir();
        std::fs::create_dir_all(&shots).expect("screenshot directory");
        Some(Browser { http, base, session, shots, _driver: proc })
    }

    /// One WebDriver command; its `value` (or its error, with the HTTP status).
    fn command(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value, (u16, Value)> {
        let target = format!("/session/{}{path}", self.session);
        let a = self
            .http
            .call(method, &self.base, &target, body.map(|b| b.to_string().into_bytes()))
            .unwrap_or_else(|e| panic!("chromedriver {target}: {e}"));
        let v: Value = serde_json::from_slice(&a.body).unwrap_or(Value::Null);
        match a.status {
            200 => Ok(v["value"].clone()),
            s => Err((s, v["value"].clone())),
        }
    }

    fn must(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        self.command(method, path, body).unwrap_or_else(|(s, e)| panic!("WebDriver {path}: {s} {e}"))
    }

    fn goto(&self, url: &str) {
        self.must(Method::POST, "/url", Some(json!({ "url": url })));
    }

    /// The element that `css` selects, if there is one now.
    fn find(&self, css: &str) -> Option<String> {
        let v = self.command(Method::POST, "/element", Some(json!({"using": "css selector", "value": css}))).ok()?;
        v[ELEMENT].as_str().map(str::to_string)
    }

    /// The visible text of what `css` selects ("" when it is not there).
    fn text(&self, css: &str) -> String {
        let Some(id) = self.find(css) else { return String::new() };
        self.command(Method::GET, &format!("/element/{id}/text"), None)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    }

    /// Waits until the text of `css` satisfies `ok`, and returns it.
    fn wait_text(&self, css: &str, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + SHOW;
        loop {
            let t = self.text(css);
            if ok(&t) {
                return t;
            }
            if Instant::now() > deadline {
                self.shot("failed");
                panic!("{what}: {css} says {t:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn click(&self, css: &str) {
        let id = self.find(css).unwrap_or_else(|| panic!("nothing to click at {css}"));
        self.must(Method::POST, &format!("/element/{id}/click"), Some(json!({})));
    }

    fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css).unwrap_or_else(|| panic!("no field at {css}"));
        self.must(Method::POST, &format!("/element/{id}/clear"), Some(json!({})));
        self.must(Method::POST, &format!("/element/{id}/value"), Some(json!({ "text": text })));
    }

    /// Focuses what `css` selects and presses Enter there, as a keyboard user would.
    fn press_enter(&self, css: &str) {
        let id = self.find(css).unwrap_or_else(|| panic!("nothing to press at {css}"));
        self.must(Method::POST, &format!("/element/{id}/value"), Some(json!({ "text": "\u{E007}" })));
    }

    fn script(&self, js: &str) -> Value {
        self.must(Method::POST, "/execute/sync", Some(json!({"script": js, "args": []})))
    }

    /// Saves a screenshot as `<name>.png` and returns its path.
    fn shot(&self, name: &str) -> PathBuf {
        let v = self.must(Method::GET, "/screenshot", None);
        let png = base64_decode(v.as_str().expect("base64 text"));
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        let path = self.shots.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("screenshot written");
        say(&format!("screenshot: {}", path.display()));
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Closes Chromium; chromedriver itself is killed when `_driver` drops.
        let _ = self.http.call(Method::DELETE, &self.base, &format!("/session/{}", self.session), None);
    }
}

/// Standard base64 (RFC 4648, with padding), as WebDriver sends screenshots.
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let bytes: Vec<u8> = text.bytes().filter(|c| !c.is_ascii_whitespace() && *c != b'=').collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, &c)| acc | u32::from(value(c)) << (18 - 6 * i));
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

#[test]
fn base64_decodes() {
    for (text, want) in [("", ""), ("Zg==", "f"), ("Zm8=", "fo"), ("Zm9v", "foo"), ("Zm9vYmFy", "foobar")] {
        assert_eq!(base64_decode(text), want.as_bytes(), "{text}");
    }
}

/// The number in "<n> in stock".
fn stock(text: &str) -> Option<u64> {
    text.strip_suffix(" in stock")?.parse().ok()
}

#[test]
fn storefront_and_dashboard_in_a_browser() {
    let profile = TempDir::new("browser");
    let Some(b) = Browser::start(&profile.0) else { return };
    // With memcached where it is installed, so the dashboard shows it; the pages need none.
    let with_cache = bazar::cluster::find_program("memcached").is_some();
    let mut s = Store::start(Opts { memcached: with_cache, ..Opts::default() }).expect("a store");
    let fe = s.fe();

    // The pages' weight and headers.
    let files =
        ["/", "/dashboard", "/assets/bazar.css", "/assets/store.js", "/assets/dashboard.js", "/assets/icon.svg"];
    let weight: usize = files.iter().map(|f| get(&fe, f).body.len()).sum();
    say(&format!("page weight: {weight} bytes (html, css, js and icon of both pages)"));
    assert!(weight < 200_000, "{weight} bytes");
    let page = ureq::get(format!("{fe}/")).call().expect("GET /");
    let header = |n: &str| page.headers().get(n).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    assert!(header("content-type").starts_with("text/html"));
    assert!(header("content-security-policy").contains("script-src 'self'"));
    assert_eq!(header("x-content-type-options"), "nosniff");

    // The storefront: search a topic.
    b.goto(&format!("{fe}/"));
    b.wait_text("#topics", "topic chips", |t| t.contains("distributed systems"));
    b.shot("01-storefront");
    // With the keyboard: the topic and Enter in the search field.
    b.type_into("#topic", "distributed systems\u{E007}");
    let before = b.wait_text("#book-1 .stock", "book 1's stock", |t| stock(t).is_some());
    assert_eq!(b.text("#book-1 .title"), "How to get a good grade in DOS in 40 minutes a day");
    assert_eq!(b.text("#book-1 .buy"), "Buy");
    b.wait_text("#book-2 .price", "book 2's price", |t| t == "$19.50");
    b.shot("02-search");

    // Buy a book: the order id shows and the stock goes down by one.
    let before = stock(&before).unwrap();
    b.press_enter("#book-1 .buy"); // the keyboard again: Enter on the focused button
    let order_id = b.wait_text("#receipt .order-id", "the order id", |t| !t.is_empty());
    let after = format!("{} in stock", before - 1);
    b.wait_text("#book-1 .stock", "the stock one lower", |t| t == after);
    eventually(Duration::from_secs(5), "the order is on both order servers", || {
        (0..2).all(|i| get(&s.order(i), &format!("/orders/{order_id}")).status == 200)
    });
    b.shot("03-bought");

    // A sold-out book says so; so does a purchase of a copy someone else took meanwhile.
    s.set_stock(2, 0);
    b.click("#search button[type=submit]");
    b.wait_text("#book-2 .stock", "book 2 sold out", |t| t.eq_ignore_ascii_case("sold out"));
    assert_eq!(b.text("#book-2 .buy"), "Sold out");
    s.set_stock(2, 1);
    b.click("#search button[type=submit]");
    b.wait_text("#book-2 .stock", "book 2 back in stock", |t| t == "1 in stock");
    s.set_stock(2, 0);
    b.click("#book-2 .buy");
    b.wait_text("#book-2 .note", "the 409 said", |t| t.contains("sold out"));
    b.wait_text("#book-2 .stock", "book 2 sold out after the 409", |t| t.eq_ignore_ascii_case("sold out"));
    b.shot("04-sold-out");

    // Both order servers down: the page says so in words.
    for o in &mut s.orders {
        o.kill9();
    }
    b.click("#book-1 .buy");
    let said = b.wait_text("#book-1 .note", "the back end down said", |t| t.contains("down"));
    say(&format!("with the order servers down the page says: {said}"));
    b.shot("05-order-servers-down");
    for o in &mut s.orders {
        o.restart();
    }
    for i in 0..2 {
        wait_ready(&s.order(i));
    }
    wait_ready(&fe);

    // Hostile titles show as text and run nothing.
    let hostile = [
        "<img src=x onerror=alert(1)>",
        "<img src=x onerror=\"window.__pwned=true\">",
        "<script>window.__pwned=true</script>",
    ];
    let mut ids = Vec::new();
    for title in hostile {
        let book = json!({"title": title, "topic": "distributed systems", "price": 6.66, "quantity": 3});
        let a = call("POST", &s.primary(), "/books", Some(&book.to_string()));
        assert_eq!(a.status, 201, "{}", String::from_utf8_lossy(&a.body));
        ids.push(json(&a)["id"].as_u64().unwrap());
    }
    b.click("#search button[type=submit]");
    for (id, title) in ids.iter().zip(hostile) {
        b.wait_text(&format!("#book-{id} .title"), "a hostile title as text", |t| t == title);
        b.wait_text(&format!("#book-{id} .stock"), "a hostile book's stock", |t| t == "3 in stock");
    }
    let seen = b.script(
        "return {pwned: window.__pwned === true, imgs: document.querySelectorAll('#books img, #books script').length};",
    );
    assert_eq!(seen, json!({"pwned": false, "imgs": 0}), "a title became code");
    match b.command(Method::GET, "/alert/text", None) {
        Err((404, e)) => assert_eq!(e["error"], "no such alert"),
        other => panic!("an alert is open: {other:?}"),
    }
    b.shot("06-hostile-titles");

    // The dashboard: a replica killed is shown down, then back.
    let replica = s.replica();
    let cell = format!("#catalogs tbody tr[data-url=\"{replica}\"] td.state");
    // Tall enough for every panel in one screenshot.
    b.must(Method::POST, "/window/rect", Some(json!({"width": 1280, "height": 1320})));
    b.goto(&format!("{fe}/dashboard"));
    b.wait_text(&cell, "the replica ready", |t| t == "ready");
    b.wait_text("#summary", "all ready", |t| t.contains("services ready") && !t.contains("down"));
    // A front end that bazar-cluster did not start has no lab: no buttons.
    assert_eq!(b.script("return document.getElementById('lab').hidden;"), json!(true));
    std::thread::sleep(Duration::from_millis(1500)); // two answers: rates and p99 show
    b.shot("07-dashboard");
    s.catalogs[1].kill9();
    let killed = Instant::now();
    b.wait_text(&cell, "the killed replica shown down", |t| t == "down");
    let shown_down = killed.elapsed();
    say(&format!("the dashboard showed the killed replica down after {} ms", shown_down.as_millis()));
    b.wait_text("#timeline", "the timeline says it", |t| t.contains(&format!("catalog {replica} is down")));
    b.shot("08-replica-down");
    s.catalogs[1].restart();
    let restarted = Instant::now();
    b.wait_text(&cell, "the replica back", |t| t == "ready");
    say(&format!("the dashboard showed the restarted replica ready after {} ms", restarted.elapsed().as_millis()));
    // Back at once, or first up but not ready (catching up, no lease yet) on a busy machine.
    b.wait_text("#timeline", "the timeline says it is back", |t| {
        t.contains(&format!("catalog {replica} is back")) || t.contains(&format!("catalog {replica} is ready again"))
    });
    b.shot("09-replica-back");
    let c = json(&get(&fe, "/cluster"));
    assert_eq!(c["catalogs"].as_array().unwrap().len(), 2);
    std::fs::write(
        b.shots.join("measurements.txt"),
        format!("page weight: {weight} bytes\nkilled replica shown down after: {} ms\n", shown_down.as_millis()),
    )
    .unwrap();
}

/// The storefront opens on its books, lists every topic with its count, has a page of its
/// own for each book (a shareable address), and keeps the orders bought from this browser
/// across visits, each looked up again in the store.
#[test]
fn storefront_opens_on_books_with_topics_book_pages_and_kept_orders() {
    let profile = TempDir::new("browser-store");
    let Some(b) = Browser::start(&profile.0) else { return };
    let s = Store::start(Opts::default()).expect("a store");
    let fe = s.fe();
    // 20 books over 7 topics: two pages of books (12 a page), topics the seed never had.
    for i in 0..13 {
        let topic = ["Cooking", "Poetry", "rust programming", "Gardening", "Chess"][i % 5];
        let book = json!({"title": format!("{topic} volume {i}"), "topic": topic, "price": 7.25, "quantity": 4});
        assert_eq!(call("POST", &s.primary(), "/books", Some(&book.to_string())).status, 201);
    }
    let topics = json(&get(&fe, "/topics"));
    assert_eq!(topics.as_array().unwrap().len(), 7);

    // On load: the first page of every book, with topic, price, stock and Buy.
    b.goto(&format!("{fe}/"));
    b.wait_text("#book-1 .stock", "book 1's stock on load", |t| stock(t).is_some());
    assert_eq!(b.text("#results-title"), "All books");
    assert_eq!(b.text("#book-2 .price"), "$19.50");
    assert_eq!(b.text("#book-2 .topic").to_lowercase(), "distributed systems");
    assert_eq!(b.text("#book-2 .buy"), "Buy");
    b.wait_text("#results-note", "the count of books shown", |t| t == "12 books so far.");
    assert_eq!(b.script("return document.querySelectorAll('#books .card').length;"), json!(12));
    // Every topic as a chip with its number of books.
    for t in topics.as_array().unwrap() {
        let label = format!("{}{}", t["topic"].as_str().unwrap(), t["books"]);
        b.wait_text("#topics", "every topic", |text| text.replace(['\n', ' '], "").contains(&label.replace(' ', "")));
    }
    b.shot("10-storefront-on-load");
    b.click("#more");
    b.wait_text("#book-20 .stock", "the second page of books", |t| t == "4 in stock");
    b.wait_text("#results-note", "every book shown", |t| t == "20 books.");
    assert!(b.find("#more").is_some_and(|_| b.script("return document.getElementById('more').hidden;") == json!(true)));

    // A topic's chip: the books of that topic.
    b.click("#topics li:nth-child(2) button"); // the first topic after "All books": Chess
    b.wait_text("#results-title", "the topic's books", |t| t == "Books on \u{201c}Chess\u{201d}");
    b.wait_text("#results-note", "Chess's books", |t| t == "2 books.");
    b.shot("11-topic");

    // A book's own page, at a shareable address.
    b.goto(&format!("{fe}/?book=3"));
    b.wait_text("#book-view-title", "the book's page", |t| t == "Xen and the Art of Surviving Undergraduate School");
    let before = stock(&b.wait_text("#book-view .stock", "its stock", |t| stock(t).is_some())).unwrap();
    let price = json(&get(&fe, "/info/3"))["price"].as_f64().unwrap();
    assert_eq!(b.text("#book-view .price"), format!("${price:.2}"));
    assert!(b.text("#book-view-link").ends_with("/?book=3"));
    b.shot("12-book-page");
    b.click("#book-view .buy");
    let order_id = b.wait_text("#receipt .order-id", "the order id", |t| !t.is_empty());
    let after = format!("{} in stock", before - 1);
    b.wait_text("#book-view .stock", "the stock one lower", |t| t == after);

    // After a reload the order is still listed, and the store is asked about it again.
    // One more, made up, shows what a lost order would look like.
    b.script(
        "const o = JSON.parse(localStorage.getItem('bazar.orders'));
         o.push({order_id: '0123456789ab-999', id: 1, title: 'A made-up order', price: 1});
         localStorage.setItem('bazar.orders', JSON.stringify(o)); return o.length;",
    );
    b.goto(&format!("{fe}/"));
    let state = format!("#order-list li[data-order=\"{order_id}\"] .order-state");
    b.wait_text(&state, "the order found again after a reload", |t| t.starts_with("in the store's order log"));
    b.wait_text("#order-list li[data-order=\"0123456789ab-999\"] .order-state", "an unknown order said", |t| {
        t.starts_with("NOT FOUND")
    });
    b.shot("13-orders-after-reload");
    // A book number that names nothing says so in words.
    b.goto(&format!("{fe}/?book=999"));
    b.wait_text("#results-note", "an unknown book", |t| t.starts_with("There is no book with that number"));
}

/// The lab console of a store started as `bazar-cluster` starts one (with etcd where it is
/// installed): a replica killed from its button (the dashboard shows it down, the verdict
/// stays green), the primary frozen and thawed (with etcd a failover on the timeline),
/// both started again, and how long each took to show.
#[test]
fn the_lab_console_breaks_the_store_from_the_dashboard() {
    let profile = TempDir::new("browser-lab");
    let Some(b) = Browser::start(&profile.0) else { return };
    let s = LabStore::start(None, true);
    let fe = s.fe();
    let etcd = s.layout.etcd.is_some();
    s.lab.probe.set_on(true);
    b.must(Method::POST, "/window/rect", Some(json!({"width": 1280, "height": 1900})));
    b.goto(&format!("{fe}/dashboard"));
    b.wait_text("#lab-title", "the lab panel", |t| t.starts_with("Lab"));
    let started = Instant::now();
    let green = |t: &str| t.starts_with("Every guarantee held");
    b.wait_text("#verdict-status", "a first verdict", green);
    let mut measured = vec![format!("first verdict shown after {} ms", started.elapsed().as_millis())];
    b.shot("20-console");

    let catalogs: Vec<(String, String)> = ["catalog-1", "catalog-2"]
        .iter()
        .enumerate()
        .map(|(i, n)| (n.to_string(), format!("http://127.0.0.1:{}", s.layout.catalogs[i])))
        .collect();
    let role = |url: &str| json(&get(url, "/health"))["role"].as_str().unwrap_or("").to_string();
    let primary = catalogs.iter().position(|(_, u)| role(u) == "primary").expect("a primary");
    let (replica_name, replica_url) = catalogs[1 - primary].clone();
    let (primary_name, primary_url) = catalogs[primary].clone();
    let windows = |s: &LabStore| s.verdict()["since_start"]["windows"].as_u64().unwrap();

    // Kill the replica from its button.
    let row = |name: &str| format!("#lab-services tr[data-name=\"{name}\"]");
    b.click(&format!("{} button[data-action=kill]", row(&replica_name)));
    let killed = Instant::now();
    b.wait_text(&format!("{} td.lab-state", row(&replica_name)), "the replica stopped", |t| t == "stopped");
    let cell = format!("#catalogs tbody tr[data-url=\"{replica_url}\"] td.state");
    b.wait_text(&cell, "the killed replica shown down", |t| t == "down");
    measured.push(format!("killed replica shown down after {} ms", killed.elapsed().as_millis()));
    let before = windows(&s);
    eventually(Duration::from_secs(60), "a window checked with the replica down", || windows(&s) > before);
    b.wait_text("#verdict-status", "the verdict green with a replica down", green);
    measured.push(format!("a verdict over the replica's death after {} ms", killed.elapsed().as_millis()));
    b.shot("21-replica-killed");
    b.click(&format!("{} button[data-action=start]", row(&replica_name)));
    b.wait_text(&format!("{} td.lab-state", row(&replica_name)), "the replica running", |t| t == "running");
    b.wait_text(&cell, "the restarted replica ready", |t| t == "ready");

    // Freeze the primary, then thaw it.
    b.click(&format!("{} button[data-action=freeze]", row(&primary_name)));
    let frozen = Instant::now();
    b.wait_text(&format!("{} td.lab-state", row(&primary_name)), "the primary frozen", |t| t == "frozen");
    if etcd {
        let took_over = format!("catalog {replica_url} is primary (epoch");
        b.wait_text("#timeline", "the failover on the timeline", |t| t.contains(&took_over));
        measured.push(format!("failover on the timeline {} ms after the freeze", frozen.elapsed().as_millis()));
    } else {
        say("no etcd: static roles, no failover to see");
    }
    b.shot("22-primary-frozen");
    std::thread::sleep(Duration::from_secs(3));
    b.click(&format!("{} button[data-action=thaw]", row(&primary_name)));
    b.wait_text(&format!("{} td.lab-state", row(&primary_name)), "the primary thawed", |t| t == "running");
    let thawed = Instant::now();
    let primary_cell = format!("#catalogs tbody tr[data-url=\"{primary_url}\"] td.state");
    b.wait_text(&primary_cell, "the thawed catalog ready again", |t| t == "ready");
    let before = windows(&s);
    eventually(Duration::from_secs(90), "two windows checked after the thaw", || windows(&s) >= before + 2);
    b.wait_text("#verdict-status", "the verdict green after the freeze", green);
    measured
        .push(format!("verdict after the freeze and thaw shown {} ms after the thaw", thawed.elapsed().as_millis()));
    let v = s.verdict();
    assert_eq!(v["held"], true, "{v:#}");
    b.shot("23-verdict-after-faults");
    for m in &measured {
        say(m);
    }
    std::fs::write(b.shots.join("lab-measurements.txt"), measured.join("\n") + "\n").unwrap();
}

/// A purchase in the storefront links to the view of its trace; the dashboard opens it as a
/// waterfall with the spans of every service it crossed, and lists it among the last
/// purchases and writes.
#[test]
fn a_purchase_opens_as_a_waterfall_on_the_dashboard() {
    let profile = TempDir::new("browser-trace");
    let Some(b) = Browser::start(&profile.0) else { return };
    let with_cache = bazar::cluster::find_program("memcached").is_some();
    let s = Store::start(Opts { memcached: with_cache, ..Opts::default() }).expect("a store");
    let fe = s.fe();
    b.goto(&format!("{fe}/"));
    b.wait_text("#topics", "topic chips", |t| t.contains("distributed systems"));
    b.type_into("#topic", "distributed systems\u{E007}");
    b.wait_text("#book-1 .stock", "book 1's stock", |t| stock(t).is_some());
    b.click("#book-1 .buy");
    b.wait_text("#receipt .order-id", "the order id", |t| !t.is_empty());
    let link = b.wait_text("#receipt .trace-link", "the link to the order's trace", |t| !t.is_empty());
    assert_eq!(link, "how this order went through the store");
    let href = b.script("return document.querySelector('#receipt .trace-link').getAttribute('href');");
    let trace = href.as_str().unwrap().strip_prefix("/dashboard#trace=").expect("a link to the dashboard").to_string();
    assert_eq!(trace.len(), 32);
    b.wait_text("#order-list", "the kept order links to its trace too", |t| t.contains("how this order went"));
    b.shot("10-bought-with-trace-link");

    b.must(Method::POST, "/window/rect", Some(json!({"width": 1280, "height": 1600})));
    b.click("#receipt .trace-link");
    let title = b.wait_text("#waterfall h3", "the waterfall", |t| t.contains("spans in"));
    say(&format!("the dashboard's trace view: {title}"));
    assert!(title.contains(&trace), "{title}");
    let table = b.wait_text("#waterfall .wf-table", "every service's spans", |t| {
        ["POST /purchase/{id}", "order.take", "order.log", "catalog.batch", "catalog.append", "catalog.apply"]
            .iter()
            .all(|step| t.contains(step))
    });
    assert!(table.contains("frontend") && table.contains("order") && table.contains("catalog"), "{table}");
    let bars = b.script("return document.querySelectorAll('#waterfall rect.wf-bar').length;");
    assert!(bars.as_u64().unwrap() >= 15, "{bars}");
    b.wait_text("#trace-list", "the purchase among the last writes", |t| t.contains("POST /purchase/{id}"));
    b.script("document.getElementById('traces').scrollIntoView();");
    b.shot("11-trace-waterfall");
}
