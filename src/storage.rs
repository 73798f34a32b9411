//! Durable files: atomic replacement and fsynced appends.
//!
//! Architecture invariant: a file is replaced by writing a temporary file beside it,
//! fsyncing it, renaming it over the old one and fsyncing the directory, so a crash at any
//! instant leaves either the old or the new file, never a torn one. Appends are fsynced
//! before the caller acknowledges anything that depends on them.
//!
//! A failure is a [`StorageError`]: which file, and the `io::Error` or `csv::Error` behind
//! it as its [`source`](std::error::Error::source) (or what the file holds that the store
//! never writes). [`At::at`] names the file of an `io` or `csv` result.
//!
//! The catalog's store changes its files only through the functions here ([`create`],
//! [`Tracked`], [`append`], [`sync_file`], [`set_len`], [`rename`], [`sync_dir`],
//! [`remove`]): in production each is the plain `std::fs` call; in unit tests each is
//! also recorded (and can be made to fail) by `storage::crash` (tests only), which builds the images a crash
//! could leave at every point, as LazyFS does (what was not fsynced is lost, an append not
//! fsynced may be kept in part).

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// A file could not be read or written, or holds what the store never writes.
#[derive(Debug)]
pub enum StorageError {
    /// A system call on `path` failed.
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// A CSV row of `path` could not be read or written.
    Csv {
        /// The file.
        path: PathBuf,
        /// What the CSV reader or writer said (its line, its field).
        source: csv::Error,
    },
    /// `path` holds a row the store never writes (a bad price, a book id twice, a row not
    /// where the index says): the file was changed by hand or damaged.
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A write to `path` failed (a full disk, an I/O error, a failed fsync): what was being
    /// written was not made durable and is not acknowledged, and the file takes no write
    /// until it has been re-opened from disk (a failed fsync is never retried as if it
    /// could have succeeded). Answered 503: writes resume by themselves once the disk takes
    /// them again.
    Unwritable {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// The data directory `dir` is held by another running process (`what` names its kind).
    InUse {
        /// The data directory.
        dir: PathBuf,
        /// The kind of process that holds it ("catalog").
        what: &'static str,
    },
}

impl StorageError {
    /// The same error again, for each of several answers: an `io::Error` is not `Clone`,
    /// so its kind and message are kept (a CSV error becomes an I/O error of its message).
    pub fn copy(&self) -> StorageError {
        let io = |e: &dyn std::error::Error, kind| io::Error::new(kind, e.to_string());
        match self {
            StorageError::Io { path, source } => {
                StorageError::Io { path: path.clone(), source: io(source, source.kind()) }
            }
            StorageError::Unwritable { path, source } => {
                StorageError::Unwritable { path: path.clone(), source: io(source, source.kind()) }
            }
            StorageError::Csv { path, source } => {
                StorageError::Io { path: path.clone(), source: io(source, io::ErrorKind::Other) }
            }
            StorageError::Corrupt { path, reason } => {
                StorageError::Corrupt { path: path.clone(), reason: reason.clone() }
            }
            StorageError::InUse { dir, what } => StorageError::InUse { dir: dir.clone(), what },
        }
    }

    /// A file that holds what the store never writes.
    pub fn corrupt(path: &Path, reason: impl fmt::Display) -> StorageError {
        StorageError::Corrupt { path: path.to_path_buf(), reason: reason.to_string() }
    }
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            StorageError::Csv { path, source } => write!(f, "{}: {source}", path.display()),
            StorageError::Corrupt { path, reason } => write!(f, "{}: {reason}", path.display()),
            StorageError::Unwritable { path, source } => write!(
                f,
                "{} cannot be written now ({source}): the write was not made; writes resume by themselves once the disk takes them again",
                path.display()
            ),
            StorageError::InUse { dir, what } => {
                write!(f, "{} is in use by a running {what}; stop it first", dir.display())
            }
        }
    }
}

impl std::error::Error for StorageError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StorageError::Io { source, .. } | StorageError::Unwritable { source, .. } => Some(source),
            StorageError::Csv { source, .. } => Some(source),
            StorageError::Corrupt { .. } | StorageError::InUse { .. } => None,
        }
    }
}

/// Names the file of a failed `io` or `csv` call: `File::open(&p).at(&p)?`.
pub trait At<T> {
    /// The result, its error a [`StorageError`] about `path`.
    fn at(self, path: &Path) -> Result<T, StorageError>;
}

impl<T> At<T> for io::Result<T> {
    fn at(self, path: &Path) -> Result<T, StorageError> {
        self.map_err(|source| StorageError::Io { path: path.to_path_buf(), source })
    }
}

impl<T> At<T> for csv::Result<T> {
    fn at(self, path: &Path) -> Result<T, StorageError> {
        self.map_err(|source| StorageError::Csv { path: path.to_path_buf(), source })
    }
}

/// Takes the writer out of a CSV writer (flushing it), naming `path` if that fails.
pub fn csv_inner<W: Write>(w: csv::Writer<W>, path: &Path) -> Result<W, StorageError> {
    w.into_inner().map_err(|e| e.into_error()).at(path)
}

/// Takes the file out of a buffered writer (flushing it), naming `path` if that fails.
pub fn buffer_inner<W: Write>(w: io::BufWriter<W>, path: &Path) -> Result<W, StorageError> {
    w.into_inner().map_err(|e| e.into_error()).at(path)
}

/// Replaces `path` with `contents` atomically and durably.
pub fn replace_file(path: &Path, contents: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = File::create(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    sync_dir(path)
}

/// Replaces `path` with `contents` atomically but without fsync: for files that a durable
/// log can rebuild (a crash may leave the old contents, never torn ones).
pub fn replace_file_fast(path: &Path, contents: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, contents)?;
    fs::rename(&tmp, path)
}

/// Fsyncs the directory that holds `path`, so a rename or a new file survives a crash.
pub fn sync_dir(path: &Path) -> io::Result<()> {
    traced(
        || crash::Op::SyncDir(path.into()),
        || {
            let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
            File::open(dir)?.sync_all()
        },
    )
}

/// Creates (or truncates) `path` for writing.
pub fn create(path: &Path) -> io::Result<File> {
    traced(|| crash::Op::Create(path.into()), || File::create(path))
}

/// Appends `bytes` to `file` (opened for appending) at `path`.
pub fn append(file: &mut File, path: &Path, bytes: &[u8]) -> io::Result<()> {
    #[cfg(test)]
    if let Some(e) = crash::failure(&crash::Op::Write(path.into(), bytes.to_vec())) {
        // A full disk takes part of the row before it refuses the rest.
        let part = &bytes[..bytes.len() / 2];
        file.write_all(part)?;
        crash::record(crash::Op::Write(path.into(), part.to_vec()));
        return Err(e);
    }
    file.write_all(bytes)?;
    #[cfg(test)]
    crash::record(crash::Op::Write(path.into(), bytes.to_vec()));
    #[cfg(not(test))]
    let _ = path;
    Ok(())
}

/// Fsyncs the data of `file` at `path`.
pub fn sync_file(file: &File, path: &Path) -> io::Result<()> {
    traced(|| crash::Op::Sync(path.into()), || file.sync_all())
}

/// Cuts (or extends) `file` at `path` to `len` bytes.
pub fn set_len(file: &File, path: &Path, len: u64) -> io::Result<()> {
    traced(|| crash::Op::SetLen(path.into(), len), || file.set_len(len))
}

/// Renames `from` to `to` (atomically replacing `to`).
pub fn rename(from: &Path, to: &Path) -> io::Result<()> {
    traced(|| crash::Op::Rename(from.into(), to.into()), || fs::rename(from, to))
}

/// Removes `path`.
pub fn remove(path: &Path) -> io::Result<()> {
    traced(|| crash::Op::Remove(path.into()), || fs::remove_file(path))
}

/// A file being written from the start (a temporary file before its rename), each write
/// passing through the same seam as [`append`].
pub struct Tracked {
    file: File,
    path: PathBuf,
}

impl Tracked {
    /// Creates (or truncates) `path`.
    pub fn create(path: &Path) -> io::Result<Tracked> {
        Ok(Tracked { file: create(path)?, path: path.to_path_buf() })
    }

    /// Fsyncs what was written and gives the file back.
    pub fn sync(self) -> io::Result<File> {
        sync_file(&self.file, &self.path)?;
        Ok(self.file)
    }
}

impl Write for Tracked {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        append(&mut self.file, &self.path, buf).map(|()| buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Runs a file operation; in unit tests, records it (or fails it, when a test asked). In
/// production `op` is never called: the plain call is all that runs.
#[inline(always)]
fn traced<T>(op: impl FnOnce() -> crash::Op, f: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
    #[cfg(test)]
    {
        let op = op();
        if let Some(e) = crash::failure(&op) {
            return Err(e);
        }
        let done = f()?;
        crash::record(op);
        Ok(done)
    }
    #[cfg(not(test))]
    {
        let _ = op;
        f()
    }
}

/// In production, operations are not recorded: an `Op` is never built.
#[cfg(not(test))]
mod crash {
    use std::path::PathBuf;

    /// An operation on a file (not recorded outside unit tests).
    #[allow(dead_code)]
    pub enum Op {
        SyncDir(PathBuf),
        Create(PathBuf),
        Sync(PathBuf),
        SetLen(PathBuf, u64),
        Rename(PathBuf, PathBuf),
        Remove(PathBuf),
    }
}

#[cfg(test)]
pub mod crash;

/// Opens `path` for appending, creating it with `header` (and fsyncing its directory) if new.
pub fn open_append(path: &Path, header: &[u8]) -> io::Result<File> {
    let open = || OpenOptions::new().create(true).append(true).read(true).open(path);
    let mut f = if path.exists() { open()? } else { traced(|| crash::Op::Create(path.into()), open)? };
    if f.metadata()?.len() == 0 {
        append(&mut f, path, header)?;
        sync_file(&f, path)?;
        sync_dir(path)?;
    }
    Ok(f)
}

/// Whether the file at `path` begins with `prefix`.
pub fn starts_with(path: &Path, prefix: &[u8]) -> io::Result<bool> {
    use std::io::Read;
    let mut head = vec![0; prefix.len()];
    match File::open(path) {
        Ok(f) => {
            let n = f.take(prefix.len() as u64).read(&mut head)?;
            Ok(n == prefix.len() && head == prefix)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Creates the data directory (and its parents) if it is missing, durably: each directory
/// created is fsynced into its parent, so a crash right after start cannot take away a
/// directory (and the files in it) that the process already relied on.
pub fn ensure_dir(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        ensure_dir(parent)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => sync_dir(dir),
        // Made meanwhile by someone else: there, and made durable by whoever made it.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Locks the file `name` in `dir` (`flock`, exclusive, not waiting) for as long as the
/// returned file is open, or says which kind of process (`what`) holds it: no two processes
/// ever write one data directory.
pub fn lock_dir(dir: &Path, name: &str, what: &'static str) -> Result<File, StorageError> {
    use std::os::fd::AsRawFd;
    let path = dir.join(name);
    let file = OpenOptions::new().create(true).truncate(false).write(true).open(&path).at(&path)?;
    // SAFETY: flock on a descriptor this function owns.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(StorageError::InUse { dir: dir.to_path_buf(), what });
    }
    Ok(file)
}

/// The checksum of a row: CRC-32 (crc32fast) over each field's length (4 bytes, little
/// endian) and bytes, so that it depends on the fields' values and never on how CSV quoted
/// them. Stored as [`checksum_text`] in the row's last column.
pub fn checksum<'a>(fields: impl IntoIterator<Item = &'a [u8]>) -> u32 {
    let mut h = crc32fast::Hasher::new();
    for f in fields {
        h.update(&(f.len() as u32).to_le_bytes());
        h.update(f);
    }
    h.finalize()
}

/// A checksum as it is written in a file: 8 lower-case hex digits.
pub fn checksum_text(sum: u32) -> String {
    format!("{sum:08x}")
}

/// A checksum read back from its text: exactly 8 hex digits (no sign, no spaces), as
/// [`checksum_text`] writes it (either case).
pub fn checksum_from_text(text: &[u8]) -> Option<u32> {
    let hex = text.len() == 8 && text.iter().all(u8::is_ascii_hexdigit);
    hex.then(|| u32::from_str_radix(std::str::from_utf8(text).ok()?, 16).ok()).flatten()
}

/// Cuts a torn last line (a crash in the middle of an append) off a line-oriented file.
///
/// Returns how many bytes were cut. Only a last line without its newline can be torn:
/// every acknowledged append was complete and fsynced, so nothing acknowledged is lost.
pub fn cut_torn_tail(path: &Path) -> io::Result<u64> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = OpenOptions::new().read(true).write(true).open(path)?;
    let len = f.metadata()?.len();
    // Read backwards in chunks until a newline: only the last line is looked at.
    let mut end = len;
    let mut chunk = vec![0u8; 64 * 1024];
    let keep = loop {
        let start = end.saturating_sub(chunk.len() as u64);
        let n = (end - start) as usize;
        f.seek(SeekFrom::Start(start))?;
        f.read_exact(&mut chunk[..n])?;
        if let Some(i) = chunk[..n].iter().rposition(|&b| b == b'\n') {
            break start + i as u64 + 1;
        }
        if start == 0 {
            break 0;
        }
        end = start;
    };
    let cut = len - keep;
    if cut > 0 {
        set_len(&f, path, keep)?;
        sync_file(&f, path)?;
    }
    Ok(cut)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_and_cut() {
        let dir = std::env::temp_dir().join(format!("bazar-storage-{}", std::process::id()));
        ensure_dir(&dir).unwrap();
        let p = dir.join("a.csv");
        replace_file(&p, b"one\n").unwrap();
        replace_file(&p, b"two\n").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two\n");
        assert!(!p.with_extension("tmp").exists());
        let mut f = open_append(&p, b"h\n").unwrap();
        f.write_all(b"three\nfou").unwrap();
        assert_eq!(cut_torn_tail(&p).unwrap(), 3);
        assert_eq!(fs::read(&p).unwrap(), b"two\nthree\n");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn checksums_see_values_not_quoting() {
        let a = checksum([&b"1"[..], b"a,b"]);
        assert_eq!(a, checksum([&b"1"[..], b"a,b"]));
        // Field boundaries count: "1a" + "" differs from "1" + "a".
        assert_ne!(checksum([&b"1a"[..], b""]), checksum([&b"1"[..], b"a"]));
        // One flipped digit changes it.
        assert_ne!(checksum([&b"12.50"[..]]), checksum([&b"12.51"[..]]));
        assert_eq!(checksum_text(0xab), "000000ab");
        // Read back: its own text, either case; nothing else (no sign, no other length).
        assert_eq!(checksum_from_text(checksum_text(0xdead_beef).as_bytes()), Some(0xdead_beef));
        assert_eq!(checksum_from_text(b"DEADBEEF"), Some(0xdead_beef));
        for bad in [&b""[..], b"+1234567", b"0000000g", b"123456789", b" 1234567"] {
            assert_eq!(checksum_from_text(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn directories_are_made_durably_and_locked_once() {
        let dir = std::env::temp_dir().join(format!("bazar-storage-dir-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let deep = dir.join("a/b");
        ensure_dir(&deep).unwrap();
        ensure_dir(&deep).unwrap();
        assert!(deep.is_dir());
        let held = lock_dir(&deep, "x.lock", "test").unwrap();
        assert!(lock_dir(&deep, "x.lock", "test").unwrap_err().to_string().contains("in use by a running test"));
        drop(held);
        assert!(lock_dir(&deep, "x.lock", "test").is_ok());
        fs::remove_dir_all(&dir).unwrap();
    }
}
