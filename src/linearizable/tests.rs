//! The checker's own tests: small hand-made histories whose verdict is known, written as
//! tables, and generated histories that are linearizable by construction.

use super::checker::{self, check_book, check_book_within, step, Call, History, Initial, Op, Ret, State, Verdict};
use super::explain::{explain, shrink};

const START: State = State { price: 1000, quantity: 2 };

/// An operation on book 1; times in microseconds, `None`: outcome unknown.
fn op(client: usize, call: Call, ret: Ret, inv: u64, resp: Option<u64>) -> Op {
    Op { client, book: 1, via: "test".into(), call, ret, inv, resp }
}

fn seen(price: i64, quantity: i64) -> Ret {
    Ret::Seen { price: Some(price), quantity: Some(quantity) }
}

fn read(client: usize, price: i64, quantity: i64, inv: u64, resp: u64) -> Op {
    op(client, Call::Read, seen(price, quantity), inv, Some(resp))
}

fn set_price(client: usize, p: i64, inv: u64, resp: Option<u64>) -> Op {
    let ret = if resp.is_some() { Ret::Seen { price: Some(p), quantity: None } } else { Ret::Unknown };
    op(client, Call::SetPrice(p), ret, inv, resp)
}

/// `check(initial, history, linearizable?)`, as a table row.
fn check(name: &str, initial: State, ops: &[Op], linearizable: bool) {
    let verdict = check_book(initial, ops);
    match (&verdict, linearizable) {
        (Verdict::Linearizable, true) | (Verdict::NotLinearizable(_), false) => {}
        _ => panic!("{name}: expected linearizable={linearizable}, got {verdict:?}"),
    }
}

#[test]
fn the_model_steps_as_the_api_says() {
    let s = State { price: 500, quantity: 1 };
    let rows: &[(Call, Ret, Option<State>)] = &[
        (Call::Read, seen(500, 1), Some(s)),
        (Call::Read, seen(500, 2), None),
        (Call::SetPrice(700), Ret::Seen { price: Some(700), quantity: Some(1) }, Some(State { price: 700, ..s })),
        (Call::SetPrice(700), Ret::Seen { price: Some(700), quantity: Some(2) }, None),
        (Call::SetQuantity(9), Ret::Refused, None),
        (Call::Delta(-1), seen(500, 0), Some(State { quantity: 0, ..s })),
        (Call::Delta(-2), Ret::Refused, Some(s)),
        (Call::Delta(-2), seen(500, -1), None),
        (Call::Purchase, Ret::Seen { price: Some(500), quantity: None }, Some(State { quantity: 0, ..s })),
        (Call::Purchase, Ret::Refused, None),
        (Call::Purchase, Ret::Unknown, Some(State { quantity: 0, ..s })),
        (Call::SetPrice(1), Ret::Unknown, Some(State { price: 1, ..s })),
    ];
    for (call, ret, expected) in rows {
        assert_eq!(step(s, *call, *ret), *expected, "{call:?} -> {ret:?}");
    }
    let empty = State { price: 500, quantity: 0 };
    assert_eq!(step(empty, Call::Purchase, Ret::Refused), Some(empty));
    assert_eq!(step(empty, Call::Purchase, Ret::Unknown), Some(empty), "an unknown purchase at 0 changes nothing");
}

#[test]
fn small_histories_get_the_verdicts_they_deserve() {
    let (p0, q0) = (START.price, START.quantity);
    let rows: Vec<(&str, Vec<Op>, bool)> = vec![
        ("empty", vec![], true),
        ("a write then a read that sees it", vec![set_price(0, 1100, 0, Some(10)), read(1, 1100, q0, 20, 30)], true),
        (
            "a read concurrent with a write sees the old value",
            vec![set_price(0, 1100, 0, Some(50)), read(1, p0, q0, 10, 20)],
            true,
        ),
        (
            "a read concurrent with a write sees the new value",
            vec![set_price(0, 1100, 0, Some(50)), read(1, 1100, q0, 10, 20)],
            true,
        ),
        (
            "a stale read: after the write's acknowledgement, the old value",
            vec![set_price(0, 1100, 0, Some(10)), read(1, p0, q0, 20, 30)],
            false,
        ),
        ("a value nobody wrote", vec![read(1, 4242, q0, 20, 30)], false),
        (
            "new-old inversion: while the write is in flight, new then old",
            vec![set_price(0, 1100, 0, Some(100)), read(1, 1100, q0, 10, 20), read(2, p0, q0, 30, 40)],
            false,
        ),
        (
            "old then new while the write is in flight",
            vec![set_price(0, 1100, 0, Some(100)), read(1, p0, q0, 10, 20), read(2, 1100, q0, 30, 40)],
            true,
        ),
        (
            "the inversion by one client, as in the issue (primary then replica)",
            vec![set_price(0, 1064, 0, Some(100)), read(1, 1064, q0, 10, 20), read(1, p0, q0, 21, 40)],
            false,
        ),
        ("an unknown write that happened", vec![set_price(0, 1100, 0, None), read(1, 1100, q0, 50, 60)], true),
        ("an unknown write that did not happen", vec![set_price(0, 1100, 0, None), read(1, p0, q0, 50, 60)], true),
        (
            "an unknown write seen, then not seen",
            vec![set_price(0, 1100, 0, None), read(1, 1100, q0, 50, 60), read(1, p0, q0, 70, 80)],
            false,
        ),
        (
            "an unknown write seen before it was invoked",
            vec![read(1, 1100, q0, 0, 10), set_price(0, 1100, 20, None)],
            false,
        ),
        (
            "a purchase at 0 is refused",
            vec![
                op(0, Call::SetQuantity(0), seen(p0, 0), 0, Some(10)),
                op(1, Call::Purchase, Ret::Refused, 20, Some(30)),
            ],
            true,
        ),
        ("a purchase refused while copies are left", vec![op(1, Call::Purchase, Ret::Refused, 20, Some(30))], false),
        (
            "a purchase refused while a restock to 0 is in flight",
            vec![
                op(0, Call::SetQuantity(0), seen(p0, 0), 0, Some(50)),
                op(1, Call::Purchase, Ret::Refused, 10, Some(20)),
            ],
            true,
        ),
        (
            "a purchase that succeeds at 0",
            vec![
                op(0, Call::SetQuantity(0), seen(p0, 0), 0, Some(10)),
                op(1, Call::Purchase, Ret::Seen { price: Some(p0), quantity: None }, 20, Some(30)),
            ],
            false,
        ),
        (
            "three purchases on two copies: one refused, in any place",
            vec![
                op(0, Call::Purchase, Ret::Refused, 0, Some(100)),
                op(1, Call::Purchase, Ret::Seen { price: Some(p0), quantity: None }, 5, Some(90)),
                op(2, Call::Purchase, Ret::Seen { price: Some(p0), quantity: None }, 10, Some(80)),
                read(3, p0, 0, 120, 130),
            ],
            true,
        ),
        (
            "a purchase answers the price it was taken at",
            vec![
                set_price(0, 900, 0, Some(10)),
                op(1, Call::Purchase, Ret::Seen { price: Some(p0), quantity: None }, 20, Some(30)),
            ],
            false,
        ),
        (
            "a PATCH's answer shows the quantity at that moment",
            vec![
                op(0, Call::Delta(3), seen(p0, 5), 0, Some(10)),
                op(1, Call::Delta(-1), seen(p0, 4), 20, Some(30)),
                op(2, Call::Delta(-9), Ret::Refused, 40, Some(50)),
            ],
            true,
        ),
        ("a delta refused although stock allows it", vec![op(2, Call::Delta(-1), Ret::Refused, 40, Some(50))], false),
        (
            "concurrent writes, A last",
            vec![set_price(0, 1111, 0, Some(50)), set_price(1, 2222, 5, Some(45)), read(2, 1111, q0, 60, 70)],
            true,
        ),
        (
            "concurrent writes, B last",
            vec![set_price(0, 1111, 0, Some(50)), set_price(1, 2222, 5, Some(45)), read(2, 2222, q0, 60, 70)],
            true,
        ),
        (
            "concurrent writes seen in both orders after both answered",
            vec![
                set_price(0, 1111, 0, Some(50)),
                set_price(1, 2222, 5, Some(45)),
                read(2, 2222, q0, 60, 70),
                read(2, 1111, q0, 80, 90),
            ],
            false,
        ),
    ];
    for (name, ops, linearizable) in &rows {
        check(name, START, ops, *linearizable);
    }
}

#[test]
fn a_failing_book_is_named_and_explained_by_the_operations_involved() {
    // Book 2 holds an inversion among unrelated traffic; book 1 is fine.
    let mut ops = vec![set_price(0, 1100, 0, Some(10)), read(1, 1100, 2, 20, 30)];
    let mut bad = vec![set_price(3, 1500, 100, Some(400)), read(4, 1500, 2, 150, 160), read(5, 1000, 2, 170, 180)];
    for k in 0..20u64 {
        bad.push(read(6, 1000, 2, 10 + k, 10 + k));
        bad.push(read(7, 1500, 2, 500 + k, 500 + k));
    }
    for o in &mut bad {
        o.book = 2;
    }
    ops.extend(bad);
    let h = History {
        name: "two books".into(),
        note: String::new(),
        expect: None,
        initial: vec![Initial { book: 1, state: START }, Initial { book: 2, state: START }],
        ops,
    };
    let verdicts = checker::check(&h);
    assert_eq!(verdicts[0], (1, Verdict::Linearizable));
    let (book, Verdict::NotLinearizable(stuck)) = &verdicts[1] else { panic!("{verdicts:?}") };
    assert_eq!(*book, 2);
    let book_ops = checker::book_ops(&h, 2);
    let w = explain(2, START, &book_ops, stuck);
    // The witness: exactly the two inverted reads answered; the write's answer forgotten.
    let known: Vec<&Op> = w.ops.iter().filter(|o| o.resp.is_some()).collect();
    assert_eq!(known.len(), 2, "{}", w.text);
    assert_eq!((known[0].client, known[1].client), (4, 5), "{}", w.text);
    assert!(matches!(check_book(START, &w.ops), Verdict::NotLinearizable(_)));
    assert!(w.text.contains("book 2") && w.text.contains("set price 15.00"), "{}", w.text);
    // Deterministic: the same answer every time.
    assert_eq!(checker::check(&h), verdicts);
    assert_eq!(shrink(START, &book_ops, Some(stuck.blocked)), w.ops);
}

#[test]
fn the_search_is_bounded() {
    let many: Vec<Op> = (0..checker::MAX_OPS as u64 + 1).map(|k| read(0, 1000, 2, 2 * k, 2 * k + 1)).collect();
    assert!(matches!(check_book(START, &many), Verdict::Unknown(_)));
    let some = &many[..50];
    assert_eq!(check_book(START, some), Verdict::Linearizable);
    assert!(matches!(check_book_within(START, some, 10), Verdict::Unknown(_)));
}

/// xorshift64*: a small deterministic generator for the generated histories.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

/// A history of `n` operations by `clients` concurrent clients that is linearizable by
/// construction: each operation takes effect at a point inside its interval, and its
/// answer is what the model gives at that point; some writes' outcomes are unknown (they
/// took effect or not, at random).
fn generated(seed: u64, n: usize, clients: usize, unknown_one_in: u64) -> Vec<Op> {
    let mut rng = Rng(seed | 1);
    let mut free = vec![0u64; clients];
    let mut planned: Vec<(u64, Op, bool)> = Vec::new();
    for k in 0..n {
        let c = (rng.below(clients as u64)) as usize;
        let inv = free[c] + rng.below(30);
        let at = inv + rng.below(200);
        let resp = at + rng.below(200);
        let call = match rng.below(10) {
            0..=4 => Call::Read,
            5 => Call::SetPrice(1000 + k as i64),
            6 => Call::SetQuantity(rng.below(4) as i64),
            7 => Call::Delta(rng.below(5) as i64 - 2),
            _ => Call::Purchase,
        };
        let unknown = call != Call::Read && unknown_one_in > 0 && rng.below(unknown_one_in) == 0;
        let happened = !unknown || rng.below(2) == 0;
        free[c] = if unknown { inv + 400 } else { resp };
        let o = op(c, call, Ret::Unknown, inv, (!unknown).then_some(resp));
        planned.push((at * 64 + k as u64 % 64, o, happened));
    }
    planned.sort_by_key(|p| p.0);
    let mut s = START;
    let mut ops = Vec::new();
    for (_, mut o, happened) in planned {
        if o.resp.is_some() {
            o.ret = match checker::effect(s, o.call) {
                None => Ret::Refused,
                Some(next) if o.call == Call::Purchase => Ret::Seen { price: Some(next.price), quantity: None },
                Some(next) => seen(next.price, next.quantity),
            };
        }
        if happened {
            s = checker::effect(s, o.call).unwrap_or(s);
        }
        ops.push(o);
    }
    ops.sort_by_key(|o| (o.inv, o.client));
    ops
}

#[test]
fn generated_linearizable_histories_pass_and_a_planted_stale_read_fails() {
    for seed in 1..=12u64 {
        // Half of them without unknown outcomes, half with one write in 25 unknown.
        let ops = generated(seed * 7919, 300, 8, if seed % 2 == 0 { 0 } else { 25 });
        assert_eq!(check_book(START, &ops), Verdict::Linearizable, "seed {seed}");
        // A read after everything answered, showing a price no one wrote last.
        let end = ops.iter().filter_map(|o| o.resp.or(Some(o.inv + 400))).max().unwrap();
        let mut stale = ops.clone();
        stale.push(read(9, 1, 0, end + 10, end + 20));
        assert!(matches!(check_book(START, &stale), Verdict::NotLinearizable(_)), "seed {seed}");
    }
}
