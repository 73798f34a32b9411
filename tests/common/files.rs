//! Data files in tests: rows written by hand in today's form (with their checksum), a bit
//! flipped in a file, and a small real disk (a tmpfs the test mounts, when run as root).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// One `catalog.log` row in today's form: `fields` (seq, id, title, topic, price,
/// quantity, order_id, at, epoch), CSV-quoted where needed, then their checksum.
pub fn log_row(fields: &[&str]) -> String {
    assert_eq!(fields.len(), 9, "a log row has 9 fields before its checksum");
    let sum = bazar::storage::checksum_text(bazar::storage::checksum(fields.iter().map(|f| f.as_bytes())));
    let mut w = csv::WriterBuilder::new().has_headers(false).from_writer(Vec::new());
    w.write_record(fields.iter().copied().chain([sum.as_str()])).unwrap();
    String::from_utf8(w.into_inner().unwrap()).unwrap()
}

/// Flips one bit of the byte in the middle of `path` (not in its first line: the header; a
/// letter or a digit), and says which line it was in.
pub fn flip_middle_bit(path: &Path) -> usize {
    let mut bytes = fs::read(path).unwrap();
    let header = bytes.iter().position(|&b| b == b'\n').unwrap() + 1;
    let mut at = header + (bytes.len() - header) / 2;
    // A letter or a digit, whose flipped bit is neither a separator nor a quote: the row
    // keeps its shape and only its values change.
    while !bytes[at].is_ascii_alphanumeric() {
        at += 1;
    }
    bytes[at] ^= 0x01;
    fs::write(path, &bytes).unwrap();
    1 + bytes[..at].iter().filter(|&&b| b == b'\n').count()
}

/// A tmpfs of a given size mounted by the test (root only), unmounted on drop. Declare it
/// before the processes that use it, so that they are killed before it is unmounted.
pub struct Tmpfs {
    pub dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (as `mount -o size=`, e.g. "600k") at `dir`; None (with a
    /// SKIPPED note) when not root, unless `BAZAR_REQUIRE_ROOT=1` (then it fails).
    pub fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            assert!(
                std::env::var("BAZAR_REQUIRE_ROOT").as_deref() != Ok("1"),
                "BAZAR_REQUIRE_ROOT=1 but the test does not run as root: it cannot mount a tmpfs"
            );
            eprintln!("SKIPPED: mounting a small tmpfs needs root (run as root, or set BAZAR_REQUIRE_ROOT=1 in CI)");
            return None;
        }
        fs::create_dir_all(dir).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .expect("mount runs");
        assert!(status.success(), "mount -t tmpfs -o size={size} at {} failed", dir.display());
        Some(Tmpfs { dir: dir.to_path_buf() })
    }

    /// Fills it to the last byte with the file `name`; returns its path.
    pub fn fill(&self, name: &str) -> PathBuf {
        let path = self.dir.join(name);
        let mut f = fs::File::create(&path).unwrap();
        for chunk in [64 * 1024, 4096, 1] {
            let bytes = vec![0u8; chunk];
            while std::io::Write::write_all(&mut f, &bytes).is_ok() {}
        }
        path
    }

    /// Changes its size (`mount -o remount,size=...`).
    pub fn resize(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.dir)
            .status()
            .expect("mount runs");
        assert!(status.success(), "remount of {} to size={size} failed", self.dir.display());
    }

    /// Bytes free on it.
    pub fn free(&self) -> u64 {
        let path = std::ffi::CString::new(self.dir.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: statvfs into a zeroed struct, with a valid C string.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::statvfs(path.as_ptr(), &mut st) }, 0);
        st.f_bavail as u64 * st.f_frsize as u64
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let status = Command::new("umount").arg(&self.dir).status();
        if !matches!(status, Ok(s) if s.success()) {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}
