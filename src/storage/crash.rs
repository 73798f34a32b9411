//! Test only: the file operations of this thread, recorded, and the images a crash could
//! leave at each point, as Jepsen's LazyFS makes them.
//!
//! Every change the store makes to its files goes through the seam in `storage`
//! ([`super::create`], [`super::append`], [`super::sync_file`], ...). While a test records
//! ([`start`]), each is kept as an [`Op`]; a test may also make the next matching operation
//! fail ([`fail`]: a full disk keeps half of an append, as a real one can).
//!
//! [`Disk`] replays the operations of one directory over a model of what is durable: a
//! file's data is durable once fsynced, a name (a new file, a rename, a removal) once its
//! directory is fsynced. [`Disk::images`] gives the directory a crash would leave now: the
//! durable state alone (un-fsynced writes lost), the same with each file's un-fsynced
//! append kept in part (a torn write: a prefix), and everything (the system flushed it all).
//! Recording is per thread, so tests running in parallel do not see each other's files.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

/// One operation on a file or a directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// A file created or truncated.
    Create(PathBuf),
    /// Bytes appended to a file (written at its end).
    Write(PathBuf, Vec<u8>),
    /// A file's data fsynced.
    Sync(PathBuf),
    /// A file cut (or extended) to a length.
    SetLen(PathBuf, u64),
    /// A rename (replacing the target).
    Rename(PathBuf, PathBuf),
    /// The directory holding this path fsynced.
    SyncDir(PathBuf),
    /// A file removed.
    Remove(PathBuf),
}

/// A failure a test asked for: the next `times` operations that `matches` accepts fail.
struct Failure {
    matches: Box<dyn Fn(&Op) -> bool>,
    times: usize,
    kind: io::ErrorKind,
}

thread_local! {
    static OPS: RefCell<Option<Vec<Op>>> = const { RefCell::new(None) };
    static FAIL: RefCell<Option<Failure>> = const { RefCell::new(None) };
}

/// Starts recording this thread's operations (forgetting any recorded before).
pub fn start() {
    OPS.with(|o| *o.borrow_mut() = Some(Vec::new()));
}

/// The operations recorded so far (recording goes on).
pub fn ops() -> Vec<Op> {
    OPS.with(|o| o.borrow().clone().unwrap_or_default())
}

/// Stops recording and failing.
pub fn stop() {
    OPS.with(|o| *o.borrow_mut() = None);
    FAIL.with(|f| *f.borrow_mut() = None);
}

/// Makes the next `times` operations of this thread that `matches` accepts fail with
/// `kind` (an append that fails writes half its bytes first).
pub fn fail(times: usize, kind: io::ErrorKind, matches: impl Fn(&Op) -> bool + 'static) {
    FAIL.with(|f| *f.borrow_mut() = Some(Failure { matches: Box::new(matches), times, kind }));
}

/// Whether `op` is to fail now (and the error it fails with).
pub(super) fn failure(op: &Op) -> Option<io::Error> {
    FAIL.with(|f| {
        let mut f = f.borrow_mut();
        let failure = f.as_mut().filter(|x| x.times > 0 && (x.matches)(op))?;
        failure.times -= 1;
        Some(io::Error::new(failure.kind, "injected by the test"))
    })
}

/// Records `op` if this thread records.
pub(super) fn record(op: Op) {
    OPS.with(|o| {
        if let Some(ops) = o.borrow_mut().as_mut() {
            ops.push(op);
        }
    });
}

/// Whether an operation is on a file named `name`.
pub fn on(op: &Op, name: &str) -> bool {
    let is = |p: &Path| p.file_name().is_some_and(|n| n == name);
    match op {
        Op::Create(p) | Op::Write(p, _) | Op::Sync(p) | Op::SetLen(p, _) | Op::Remove(p) | Op::SyncDir(p) => is(p),
        Op::Rename(a, b) => is(a) || is(b),
    }
}

/// One file's contents: what the system holds now, and what is on the disk for sure.
#[derive(Clone, Debug, Default)]
struct Inode {
    data: Vec<u8>,
    durable: Vec<u8>,
}

/// The model of one directory: its files by name, now and durably.
#[derive(Clone, Debug)]
pub struct Disk {
    dir: PathBuf,
    inodes: Vec<Inode>,
    names: BTreeMap<String, usize>,
    durable_names: BTreeMap<String, usize>,
}

/// A directory a crash could leave: file name → contents.
pub type Image = BTreeMap<String, Vec<u8>>;

impl Disk {
    /// An empty directory `dir` (operations elsewhere are ignored).
    pub fn new(dir: &Path) -> Disk {
        Disk { dir: dir.to_path_buf(), inodes: Vec::new(), names: BTreeMap::new(), durable_names: BTreeMap::new() }
    }

    /// The name of `path` in this directory, if it is in it.
    fn name(&self, path: &Path) -> Option<String> {
        (path.parent() == Some(&self.dir)).then(|| path.file_name()?.to_str().map(str::to_string)).flatten()
    }

    fn inode(&mut self, path: &Path) -> Option<&mut Inode> {
        let i = *self.names.get(&self.name(path)?)?;
        Some(&mut self.inodes[i])
    }

    /// Applies one operation.
    pub fn apply(&mut self, op: &Op) {
        match op {
            Op::Create(p) => {
                let Some(name) = self.name(p) else { return };
                match self.names.get(&name) {
                    Some(&i) => self.inodes[i].data.clear(),
                    None => {
                        self.inodes.push(Inode::default());
                        self.names.insert(name, self.inodes.len() - 1);
                    }
                }
            }
            Op::Write(p, bytes) => {
                if let Some(f) = self.inode(p) {
                    f.data.extend_from_slice(bytes);
                }
            }
            Op::Sync(p) => {
                if let Some(f) = self.inode(p) {
                    f.durable = f.data.clone();
                }
            }
            Op::SetLen(p, len) => {
                if let Some(f) = self.inode(p) {
                    f.data.resize(*len as usize, 0);
                }
            }
            Op::Rename(a, b) => {
                if let (Some(a), Some(b)) = (self.name(a), self.name(b)) {
                    if let Some(i) = self.names.remove(&a) {
                        self.names.insert(b, i);
                    }
                }
            }
            Op::SyncDir(p) => {
                if self.name(p).is_some() {
                    self.durable_names = self.names.clone();
                }
            }
            Op::Remove(p) => {
                if let Some(name) = self.name(p) {
                    self.names.remove(&name);
                }
            }
        }
    }

    /// The directories a crash now could leave: the durable state, the durable state with
    /// each file's un-fsynced append kept in part (torn: one byte, half, all but one byte),
    /// and everything the system holds.
    pub fn images(&self) -> Vec<(String, Image)> {
        let durable: Image =
            self.durable_names.iter().map(|(n, &i)| (n.clone(), self.inodes[i].durable.clone())).collect();
        let mut images = vec![("durable only".to_string(), durable.clone())];
        for (name, &i) in &self.durable_names {
            let f = &self.inodes[i];
            let Some(extra) = f.data.strip_prefix(&f.durable[..]).filter(|e| !e.is_empty()) else { continue };
            let mut cuts = vec![1, extra.len() / 2, extra.len() - 1];
            cuts.retain(|&c| c > 0 && c < extra.len());
            cuts.dedup();
            for cut in cuts {
                let mut image = durable.clone();
                image.insert(name.clone(), [&f.durable[..], &extra[..cut]].concat());
                images.push((format!("{name} torn after {cut} of {} bytes not fsynced", extra.len()), image));
            }
        }
        let all: Image = self.names.iter().map(|(n, &i)| (n.clone(), self.inodes[i].data.clone())).collect();
        images.push(("everything".to_string(), all));
        images
    }
}

/// Writes `image` into the empty directory `dir`.
pub fn materialize(image: &Image, dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).expect("a temporary directory");
    for (name, data) in image {
        std::fs::write(dir.join(name), data).expect("a file of the image");
    }
}
