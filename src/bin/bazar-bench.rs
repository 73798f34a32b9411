//! The load generator: see `bazar::bench`.

use bazar::bench::{self, Kind, LabConfig, Load};
use bazar::shutdown::Shutdown;
use std::process::ExitCode;
use std::time::Duration;

const HELP: &str = "\
bazar-bench: load generator for Bazar, and the lab's experiments.

  bazar-bench lab [--url URL --primary URL] [--csv FILE] [--svg FILE] [--duration S] [--clients N] [--threads N]
                  [--experiments 1,2,3]
      Starts its own stores (with and without memcached and the near cache), runs the three
      experiments and prints a Markdown report: response times with the near cache, through
      memcached only and without cache (with the machine's limit measured in the same run),
      purchases through the front end at 16, 64 and 256 clients (beside the limit), the cost
      of cache consistency (writes with a front end attached and none), and a replica failing
      and coming back under an open loop. --url aims at a running front end instead
      (experiment 1 only; --primary lets it raise stock for purchases). --csv writes every
      sample, --svg a chart of the query latencies with and without the cache.
  bazar-bench scale [--stores 7x0,10000x0,...] [--samples N] [--svg FILE]
      How each cost grows with the data: for each store (BOOKSxORDERS; default
      7x0,10000x0,100000x0,1000000x0,7x100000,7x1000000) builds it in a temporary directory
      (bazar-catalog import, an order log) and prints import and start-up times, a new
      replica's join time, PATCH, purchase, search, info and order-page latencies (p50/p99,
      with and without the cache), every process's memory and the files' sizes.
      --svg writes a chart of the p50 latencies.
  bazar-bench overload [--duration S] [--step S] [--apart N]
      Starts its own store (etcd and memcached when installed, a token) and loads it with
      users on keep-alive connections, half on the front end, half straight at the catalog
      replica: finds the peak (8 to 128 users, --step seconds each, default 5), then runs
      1x, 5x and 20x the users of the peak (1x and 5x for 3 steps, 20x for --duration,
      default 60, with the lab's probe checking writes and orders). Prints goodput against
      the peak, latency, 503s, the replica's lease lapses, failovers, and how soon the store
      answers again once the load stops. A 503 makes a user wait its Retry-After.
      --apart N keeps N cores for the generator and the others for the store (default 0:
      they share every core, and the generator's cost, which grows with its connections,
      is taken from the store's).
  bazar-bench load --url URL [--kind info|search|purchase|write] [--clients N | --rate R] [--duration S]
      One closed loop (N clients) or open loop (R requests per second) against URL.
  bazar-bench check --url URL [--catalog URL ...] [--order URL ...] [--seconds N]
      The lab's probe against any running store (systemd, Docker, Swarm, bazar-cluster):
      a few clients read and write a handful of probe books (topic \"lab probe\", added
      once) through the front end and straight at each catalog, and buy copies of one, for
      N seconds (default 30); every window of their history is checked for
      linearizability, every acknowledged order looked up on every order server, copies
      taken counted against orders logged. Prints the verdict (JSON) and exits 0 when
      every guarantee held, 1 when one broke. The catalogs and order servers are the front
      end's unless given; BAZAR_TOKEN is sent (its PATCHes are admin calls).
  bazar-bench limit [--clients N] [--threads N] [--duration S] [--listen HOST:PORT]
      The bare limit server (info JSON from memory, same HTTP layer), loaded as above;
      with --listen it only serves (until Ctrl-C), for another load generator such as wrk.

Defaults: 32 clients, 10 s per run, 64 worker threads (the services' default).

Admin requests (raising stock, --kind write) carry the token of BAZAR_TOKEN or of the file
BAZAR_TOKEN_FILE names, as the services read them: for a bazar-cluster store,
BAZAR_TOKEN_FILE=run/token (the stores the bench starts itself inherit the same setting).
";

struct Args(Vec<String>);

impl Args {
    fn value(&self, flag: &str) -> Option<&str> {
        self.0.iter().position(|a| a == flag).and_then(|i| self.0.get(i + 1)).map(String::as_str)
    }

    /// Checks that after the command come only `flags`, each with a value.
    fn only(&self, flags: &[&str]) -> Result<(), String> {
        let mut rest = self.0.iter().skip(1);
        while let Some(flag) = rest.next() {
            if !flags.contains(&flag.as_str()) {
                return Err(format!("{} does not take {flag:?}; try --help", self.0[0]));
            }
            if rest.next().is_none() {
                return Err(format!("{flag} needs a value"));
            }
        }
        Ok(())
    }

    fn number<T: std::str::FromStr>(&self, flag: &str, default: T) -> Result<T, String> {
        match self.value(flag) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| format!("{flag} {v:?} is not a number")),
        }
    }
}

impl Args {
    /// Every value of a flag that may be given more than once.
    fn values(&self, flag: &str) -> Vec<String> {
        self.0.windows(2).filter(|w| w[0] == flag).map(|w| w[1].clone()).collect()
    }
}

/// `bazar-bench check`: exit 0 when every guarantee held, 1 when one broke, 2 when it
/// could not run.
fn check(args: &Args) -> ExitCode {
    let run = || -> Result<bazar::lab::probe::Verdict, String> {
        args.only(&["--url", "--catalog", "--order", "--seconds"])?;
        let url = args.value("--url").ok_or("check needs --url (the front end)")?;
        let seconds = args.number("--seconds", 30u64)?;
        if seconds == 0 {
            return Err("--seconds must be at least 1".into());
        }
        let token = bazar::config::token(&bazar::config::Env).map_err(|e| format!("bad setting {e}"))?;
        bazar::lab::probe::check(url, args.values("--catalog"), args.values("--order"), token, seconds)
    };
    match run() {
        Ok(v) => {
            println!("{}", serde_json::to_string_pretty(&v).expect("serializes"));
            let s = &v.since_start;
            println!(
                "{}: {} operations checked in {} windows, linearizable: {}, acknowledged writes lost: {}, \
                 orders missing: {}, copies taken {} / orders logged {}",
                if v.held { "every guarantee held" } else { "A GUARANTEE BROKE" },
                s.ops,
                s.windows,
                s.linearizable,
                s.acked_writes_lost,
                v.orders_missing,
                v.copies_taken,
                v.orders_logged
            );
            if v.held {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("bazar-bench: {e}");
            ExitCode::from(2)
        }
    }
}

fn main() -> ExitCode {
    let args = Args(std::env::args().skip(1).collect());
    if args.0.first().map(String::as_str) == Some("check") && !args.0.iter().any(|a| a == "-h" || a == "--help") {
        return check(&args);
    }
    match go(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bazar-bench: {e}");
            ExitCode::from(2)
        }
    }
}

fn go(args: &Args) -> Result<(), String> {
    if args.0.iter().any(|a| a == "-h" || a == "--help") {
        println!("{HELP}");
        return Ok(());
    }
    let flags: &[&str] = match args.0.first().map(String::as_str) {
        Some("lab") => {
            &["--url", "--primary", "--csv", "--svg", "--duration", "--clients", "--threads", "--experiments"]
        }
        Some("load") => &["--url", "--kind", "--clients", "--rate", "--duration"],
        Some("overload") => &["--duration", "--step", "--apart"],
        Some("scale") => &["--stores", "--samples", "--svg"],
        Some("limit") => &["--clients", "--threads", "--duration", "--listen"],
        _ => &[],
    };
    args.only(flags)?;
    // The token for admin requests (see `bazar::bench::admin_token`): a bad one stops here.
    bazar::config::token(&bazar::config::Env).map_err(|e| format!("bad setting {e}"))?;
    let clients = args.number("--clients", 32usize)?;
    let duration = Duration::from_secs(args.number("--duration", 10u64)?);
    let threads = args.number("--threads", 64usize)?;
    match args.0.first().map(String::as_str) {
        None => {
            println!("{HELP}");
            Ok(())
        }
        Some("lab") => {
            let cfg = LabConfig {
                url: args.value("--url").map(str::to_string),
                primary: args.value("--primary").map(str::to_string),
                clients,
                duration,
                threads,
                csv: args.value("--csv").map(Into::into),
                svg: args.value("--svg").map(Into::into),
                experiments: match args.value("--experiments") {
                    None => vec![1, 2, 3],
                    Some(list) => list
                        .split(',')
                        .map(|e| e.trim().parse().map_err(|_| format!("--experiments {list:?}: give numbers like 1,3")))
                        .collect::<Result<_, _>>()?,
                },
            };
            let report = bench::lab(&cfg).map_err(|e| e.to_string())?;
            println!("{report}");
            Ok(())
        }
        Some("overload") => {
            let cfg = bench::OverloadConfig {
                duration: Duration::from_secs(args.number("--duration", 60u64)?),
                step: Duration::from_secs(args.number("--step", 5u64)?),
                apart: args.number("--apart", 0usize)?,
            };
            println!("{}", bench::overload(&cfg)?);
            Ok(())
        }
        Some("scale") => {
            let cfg = bench::scale::ScaleConfig {
                stores: bench::scale::parse_stores(args.value("--stores").unwrap_or(bench::scale::DEFAULT_STORES))?,
                samples: args.number("--samples", 500)?,
                svg: args.value("--svg").map(Into::into),
            };
            println!("{}", bench::scale::scale(&cfg).map_err(|e| e.to_string())?);
            Ok(())
        }
        Some("load") => {
            let url = args.value("--url").ok_or("load needs --url")?;
            let kind = match args.value("--kind").unwrap_or("info") {
                "info" => Kind::Info,
                "search" => Kind::Search,
                "purchase" => Kind::Purchase,
                "write" => Kind::Write,
                other => return Err(format!("unknown --kind {other:?}")),
            };
            let load = match args.value("--rate") {
                Some(r) => Load::Open(r.parse().map_err(|_| format!("--rate {r:?} is not a number"))?),
                None => Load::Closed(clients),
            };
            let (samples, elapsed) = bench::run(url, kind, load, duration, "load");
            print_summary(&bench::summarize(&samples, elapsed));
            Ok(())
        }
        Some("limit") if args.value("--listen").is_some() => {
            let listen = args.value("--listen").unwrap_or_default();
            let listener = std::net::TcpListener::bind(listen).map_err(|e| format!("--listen {listen}: {e}"))?;
            let stop = Shutdown::on_signals().map_err(|e| e.to_string())?;
            eprintln!("limit server on http://{listen}; Ctrl-C stops it");
            bench::serve_limit(listener, threads, stop).map_err(|e| e.to_string())
        }
        Some("limit") => {
            let stop = Shutdown::new();
            let url = bench::start_limit_server(threads, &stop).map_err(|e| e.to_string())?;
            let (samples, elapsed) = bench::run(&url, Kind::Info, Load::Closed(clients), duration, "limit");
            stop.trigger();
            print_summary(&bench::summarize(&samples, elapsed));
            Ok(())
        }
        Some(other) => Err(format!("unknown command {other:?}; try --help")),
    }
}

fn print_summary(s: &bench::Summary) {
    let [mean, p50, p90, p99, max] = s.millis();
    println!(
        "{} requests, {:.0} req/s, mean {mean:.2} ms, p50 {p50:.2} ms, p90 {p90:.2} ms, p99 {p99:.2} ms, max {max:.2} ms, {} non-2xx",
        s.count, s.rps, s.errors
    );
}
