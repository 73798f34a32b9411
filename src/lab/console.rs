//! The lab API that `bazar-cluster` serves on `BAZAR_LAB_LISTEN` (loopback only): its
//! services and their states, the faults it can inject into them (SIGTERM, SIGKILL,
//! SIGSTOP, SIGCONT, a start), a switchover of the store, the probe's verdict, and a
//! timeline of what happened (faults, exits, failovers).
//!
//! Only `bazar-cluster` has this: it started the processes, so it may signal them. A front
//! end started by it gets `BAZAR_LAB` and relays the routes for its dashboard; any other
//! front end has none. With `BAZAR_TOKEN` set every route needs it.
//!
//! Which action applies in which state is a pure decision ([`plan`]), tested below; the
//! signals and starts are the launcher's ([`Processes`], which `bazar-cluster`'s
//! `cluster::Running` implements: the lab depends on no launcher type).

use super::probe::Probe;
use crate::client::Http;
use crate::error::{Error, Result};
use crate::http::{self, check_token, Request, Response};
use crate::shutdown::Shutdown;
use serde::Serialize;
use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use ureq::http::Method;

/// Where the lab API listens unless `BAZAR_LAB_LISTEN` says otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:4299";
/// How long a service may take to stop after SIGTERM before it is killed.
pub const STOP_WAIT: Duration = Duration::from_secs(8);
/// How often the catalogs' roles are asked (failovers on the timeline).
pub const WATCH_INTERVAL: Duration = Duration::from_millis(500);
/// Most timeline entries kept.
pub const TIMELINE: usize = 200;

/// The processes of a store, as the lab acts on them: `bazar-cluster`'s children.
pub trait Processes: Send {
    /// The services' names, in the order they started.
    fn names(&self) -> Vec<&'static str>;
    /// A running service's process id.
    fn pid(&mut self, name: &str) -> Option<u32>;
    /// Sends signal `sig` to a running service; false when it is not running.
    fn signal(&mut self, name: &str, sig: i32) -> bool;
    /// Waits up to `within` for a service to exit; true when it is not running.
    fn wait_exit(&mut self, name: &str, within: Duration) -> bool;
    /// Starts a service that is not running, with its settings; false when it runs.
    fn start_again(&mut self, name: &str) -> std::io::Result<bool>;
    /// The services that exited since last asked, with their status.
    fn exited(&mut self) -> Vec<(&'static str, std::process::ExitStatus)>;
    /// Stops every service.
    fn stop(&mut self);
}

/// A service's state as the lab sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Its process runs.
    Running,
    /// Its process is stopped by SIGSTOP.
    Frozen,
    /// No process.
    Stopped,
}

/// An action on a service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// SIGTERM, and SIGKILL if it has not exited after [`STOP_WAIT`].
    Stop,
    /// SIGKILL.
    Kill,
    /// SIGSTOP.
    Freeze,
    /// SIGCONT.
    Thaw,
    /// Start it again, with the same settings.
    Start,
}

impl Action {
    /// The action a path segment names.
    pub fn parse(s: &str) -> Option<Action> {
        Some(match s {
            "stop" => Action::Stop,
            "kill" => Action::Kill,
            "freeze" => Action::Freeze,
            "thaw" => Action::Thaw,
            "start" => Action::Start,
            _ => return None,
        })
    }
}

/// Whether `action` applies to a service in `state`: Ok, or why not (a 409).
pub fn plan(state: State, action: Action) -> std::result::Result<(), &'static str> {
    match (action, state) {
        (Action::Stop | Action::Kill, State::Running | State::Frozen) => Ok(()),
        (Action::Freeze, State::Running) => Ok(()),
        (Action::Thaw, State::Frozen) => Ok(()),
        (Action::Start, State::Stopped) => Ok(()),
        (Action::Stop | Action::Kill, State::Stopped) => Err("it is not running"),
        (Action::Freeze, State::Frozen) => Err("it is frozen already"),
        (Action::Freeze, State::Stopped) => Err("it is not running"),
        (Action::Thaw, _) => Err("it is not frozen"),
        (Action::Start, _) => Err("it is running already"),
    }
}

/// One service of the store, as `GET /lab` lists it.
#[derive(Clone, Debug, Serialize)]
pub struct Entry {
    /// Its name (`catalog-1`, `order-2`, `frontend`, `memcached`, `etcd`).
    pub name: &'static str,
    /// `catalog`, `order`, `frontend`, `memcached` or `etcd`.
    pub kind: &'static str,
    /// Where it answers.
    pub url: String,
    /// Its process id (None when stopped).
    pub pid: Option<u32>,
    /// Its state.
    pub state: State,
}

/// The lab of one store: its processes, the probe, the timeline.
pub struct Lab {
    /// The store's processes (held for one action at a time).
    store: Mutex<Box<dyn Processes>>,
    /// Names of the services frozen by the lab.
    frozen: Mutex<HashSet<&'static str>>,
    /// Each service's URL (as the other services reach it).
    urls: Vec<(&'static str, String)>,
    /// The catalogs' base URLs (switchover, failover watch).
    catalogs: Vec<String>,
    /// The probe and its verdict.
    pub probe: Arc<Probe>,
    /// What happened, newest last: (Unix ms, text).
    timeline: Mutex<VecDeque<(u64, String)>>,
    token: Option<String>,
    http: Http,
}

impl Lab {
    /// The lab of a running store.
    pub fn new(
        store: Box<dyn Processes>,
        urls: Vec<(&'static str, String)>,
        catalogs: Vec<String>,
        probe: Arc<Probe>,
        token: Option<String>,
    ) -> Arc<Lab> {
        Arc::new(Lab {
            store: Mutex::new(store),
            frozen: Mutex::default(),
            urls,
            catalogs,
            probe,
            timeline: Mutex::default(),
            http: Http::new(Duration::from_secs(15), 4, token.clone()),
            token,
        })
    }

    fn store(&self) -> std::sync::MutexGuard<'_, Box<dyn Processes>> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn frozen(&self) -> std::sync::MutexGuard<'_, HashSet<&'static str>> {
        self.frozen.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a line to the timeline (and the launcher's output).
    pub fn event(&self, text: String) {
        eprintln!("bazar-cluster: lab: {text}");
        let mut t = self.timeline.lock().unwrap_or_else(|e| e.into_inner());
        t.push_back((crate::ids::now_ms(), text));
        while t.len() > TIMELINE {
            t.pop_front();
        }
    }

    /// Children that exited by themselves since last asked (each reported once).
    pub fn reap(&self) {
        let exited = self.store().exited();
        for (name, status) in exited {
            self.frozen().remove(name);
            self.event(format!("{name} exited ({status})"));
        }
    }

    /// Stops every service (the launcher's end).
    pub fn stop_all(&self) {
        for name in self.frozen().drain() {
            self.store().signal(name, libc::SIGCONT);
        }
        self.store().stop();
    }

    fn entry(&self, store: &mut Box<dyn Processes>, name: &'static str) -> Entry {
        let pid = store.pid(name);
        let state = match pid {
            None => State::Stopped,
            Some(_) if self.frozen().contains(name) => State::Frozen,
            Some(_) => State::Running,
        };
        let url = self.urls.iter().find(|(n, _)| *n == name).map(|(_, u)| u.clone()).unwrap_or_default();
        let kind = match name {
            n if n.starts_with("catalog") => "catalog",
            n if n.starts_with("order") => "order",
            "frontend" => "frontend",
            "memcached" => "memcached",
            _ => "etcd",
        };
        Entry { name, kind, url, pid, state }
    }

    /// `GET /lab`.
    pub fn entries(&self) -> Vec<Entry> {
        let mut store = self.store();
        store.names().into_iter().map(|n| self.entry(&mut store, n)).collect()
    }

    /// `POST /lab/{name}/{action}`: the service's new entry; 404 unknown name or action,
    /// 409 an action that does not apply now.
    pub fn act(&self, name: &str, action: &str) -> Result<Entry> {
        let mut store = self.store();
        let Some(name) = store.names().into_iter().find(|n| *n == name) else {
            return Err(Error::NotFound(format!("no service {name:?} in this store")));
        };
        let Some(act) = Action::parse(action) else {
            return Err(Error::NotFound(format!("no action {action:?} (stop, kill, freeze, thaw, start)")));
        };
        let state = self.entry(&mut store, name).state;
        plan(state, act).map_err(|why| Error::Conflict(format!("cannot {action} {name}: {why}")))?;
        let what = match act {
            Action::Freeze => {
                store.signal(name, libc::SIGSTOP);
                self.frozen().insert(name);
                "frozen (SIGSTOP)"
            }
            Action::Thaw => {
                store.signal(name, libc::SIGCONT);
                self.frozen().remove(name);
                "thawed (SIGCONT)"
            }
            Action::Kill => {
                store.signal(name, libc::SIGKILL);
                store.wait_exit(name, Duration::from_secs(5));
                self.frozen().remove(name);
                "killed (SIGKILL)"
            }
            Action::Stop => {
                store.signal(name, libc::SIGTERM);
                // A frozen process handles SIGTERM only once it runs again.
                if self.frozen().remove(name) {
                    store.signal(name, libc::SIGCONT);
                }
                if store.wait_exit(name, STOP_WAIT) {
                    "stopped (SIGTERM)"
                } else {
                    store.signal(name, libc::SIGKILL);
                    store.wait_exit(name, Duration::from_secs(5));
                    "stopped (SIGTERM, then SIGKILL: it did not exit in time)"
                }
            }
            Action::Start => {
                store.start_again(name).map_err(|e| Error::Unavailable(format!("cannot start {name}: {e}")))?;
                "started"
            }
        };
        let entry = self.entry(&mut store, name);
        drop(store);
        self.event(format!("{name} {what} from the lab"));
        Ok(entry)
    }

    /// `POST /lab/store/switchover`: the store's `POST /admin/switchover` (body passed on),
    /// asked of each catalog until one answers other than 503.
    fn switchover(&self, body: &[u8]) -> Result<Response> {
        let mut last = String::from("no catalog");
        for c in &self.catalogs {
            match self.http.call(Method::POST, c, "/admin/switchover", Some(body.to_vec())) {
                Ok(a) if a.status == 503 => last = format!("{c}: {}", a.error()),
                Ok(a) => {
                    self.event(format!("switchover asked of {c}: {} {}", a.status, String::from_utf8_lossy(&a.body)));
                    return Ok(Response::raw_json(a.status, a.body));
                }
                Err(e) => last = e.to_string(),
            }
        }
        Err(Error::Unavailable(format!("no catalog took the switchover: {last}")))
    }

    /// The verdict, with the timeline.
    fn verdict(&self) -> Response {
        let mut v = serde_json::to_value(self.probe.verdict()).expect("serializes");
        let timeline: Vec<serde_json::Value> = self
            .timeline
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(at, what)| serde_json::json!({"at_ms": at, "what": what}))
            .collect();
        v["timeline"] = timeline.into();
        Response::json(&v)
    }

    /// Answers one request of the lab API.
    pub fn handle(&self, request: &Request) -> Response {
        // The lab listens on loopback only; with the store's token set it needs it too.
        let admission = match self.token.as_deref() {
            Some(t) => crate::config::Admission::Token(t),
            None => crate::config::Admission::LoopbackOnly,
        };
        if let Err(e) = check_token(request, admission) {
            return Response::error(&e);
        }
        let post = request.method == "POST";
        http::route(request, |segs, get| match segs {
            ["lab"] if get => http::respond(Ok(Response::json(&self.entries())), "/lab"),
            ["lab", "verdict"] if get => self.verdict().at("/lab/verdict"),
            ["lab", "probe"] if post => {
                #[derive(serde::Deserialize)]
                #[serde(deny_unknown_fields)]
                struct On {
                    on: bool,
                }
                match http::json_body::<On>(request) {
                    Ok(On { on }) => {
                        if on != self.probe.is_on() {
                            self.probe.set_on(on);
                            self.event(format!("probe turned {}", if on { "on" } else { "off" }));
                        }
                        self.verdict().at("/lab/probe")
                    }
                    Err(e) => http::respond(Err(e), "/lab/probe"),
                }
            }
            ["lab", "store", "switchover"] if post => {
                http::respond(self.switchover(&request.body), "/lab/store/switchover")
            }
            ["lab", name, action] if post => {
                http::respond(self.act(name, action).map(|e| Response::json(&e)), "/lab/{name}/{action}")
            }
            ["lab"] | ["lab", "verdict"] => http::respond(Err(Error::MethodNotAllowed("GET, HEAD")), "invalid"),
            ["lab", _] | ["lab", _, _] => http::respond(Err(Error::MethodNotAllowed("POST")), "invalid"),
            _ => http::respond(Err(Error::NotFound(format!("no route {}", request.path))), "unknown"),
        })
    }

    /// Background: puts changes of the catalogs' roles (a failover, a switchover, a
    /// catalog that stops answering) on the timeline.
    pub fn watch(self: &Arc<Self>, shutdown: &Shutdown) {
        let (lab, stop) = (Arc::clone(self), shutdown.clone());
        std::thread::spawn(move || {
            let http = Http::new(Duration::from_millis(400), 2, None);
            let mut last: Vec<Option<String>> = lab.catalogs.iter().map(|_| None).collect();
            while !stop.sleep(WATCH_INTERVAL) {
                for (i, c) in lab.catalogs.iter().enumerate() {
                    let now = match http.get::<serde_json::Value>(c, "/health") {
                        Ok(h) => {
                            let role = h["role"].as_str().unwrap_or("?").to_string();
                            match h["epoch"].as_u64() {
                                Some(e) => format!("{role} (epoch {e})"),
                                None => role,
                            }
                        }
                        Err(_) => "not answering".into(),
                    };
                    if last[i].as_deref() != Some(now.as_str()) {
                        if last[i].is_some() || now != "not answering" {
                            lab.event(format!("catalog {c} is {now}"));
                        }
                        last[i] = Some(now);
                    }
                }
                lab.reap();
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_action_applies_in_which_state() {
        use Action::*;
        use State::*;
        let cases = [
            (Running, Stop, true),
            (Frozen, Stop, true),
            (Stopped, Stop, false),
            (Running, Kill, true),
            (Frozen, Kill, true),
            (Stopped, Kill, false),
            (Running, Freeze, true),
            (Frozen, Freeze, false),
            (Stopped, Freeze, false),
            (Running, Thaw, false),
            (Frozen, Thaw, true),
            (Stopped, Thaw, false),
            (Running, Start, false),
            (Frozen, Start, false),
            (Stopped, Start, true),
        ];
        for (state, action, ok) in cases {
            assert_eq!(plan(state, action).is_ok(), ok, "{action:?} when {state:?}");
        }
        assert_eq!(Action::parse("freeze"), Some(Freeze));
        assert_eq!(Action::parse("reboot"), None);
    }
}
