//! The leak scan: after the cell ends, search every file created or changed during the
//! cell under the writable paths for the same patterns, in the same views, as the
//! output masker ([`Redactor::hits`]: plain, line-wrapped base64/hex, hex dumps).
//!
//! The cell wrote these files, so every name is hostile. The walk holds a directory fd
//! and opens each entry beneath it with `openat(O_NOFOLLOW)`: no path is resolved
//! twice, no symlink is followed (git's object directories included: `objects/ab ->
//! /proc/self` is skipped, not read), only regular files are opened (checked before and
//! after the open, never blocking on a FIFO), and other filesystems mounted below a root
//! are not entered. Files are selected by mtime or ctime at/after the cell's start
//! (ctime catches a file whose mtime was set back).
//!
//! Memory stays fixed whatever the files hold: contents are streamed in chunks, the
//! holes of sparse files are skipped (`SEEK_DATA`/`SEEK_HOLE`), packs are read with
//! `pread`. gzip and zlib files and the deflated members of zip files are decompressed
//! and searched too (nested up to [`MAX_DEPTH`] layers), bounded in size and ratio. Git
//! repositories found under the roots get their loose objects and packfiles (`.idx` v1
//! and v2, OFS/REF deltas) decompressed and searched, parsed here: git itself is never
//! run on a repository the cell could have prepared.
//!
//! The scan is bounded by bytes searched, files opened and wall time, and per file and
//! per decompressed stream. It fails closed: whatever a bound or an error kept from
//! being searched is listed in [`ScanReport::skipped`] or [`ScanReport::truncated`], and
//! [`ScanReport::complete`] is false (with `on_leak = "fail"` that fails the run).
//! Findings name the path, line (for text), secret and encoding, never the value.

use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::ffi::{CStr, OsStr};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use flate2::bufread::{DeflateDecoder, MultiGzDecoder, ZlibDecoder};
use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{fstat, fstatat, FileStat, Mode, SFlag};
use zeroize::Zeroizing;

use super::redact::{Hit, MatchScratch, Redactor};

/// One occurrence of a secret in a file or git object. Never holds the value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Finding {
    pub path: PathBuf,
    /// 1-based line, for text content (no NUL byte in its first 8 KiB).
    pub line: Option<u64>,
    pub secret: String,
    pub encoding: &'static str,
    /// The object id when the value was found inside a git object.
    pub in_git_object: Option<String>,
    /// The member of a zip file, or `gzip`/`zlib` for a compressed file, the value was
    /// found in once decompressed.
    pub member: Option<String>,
}

impl std::fmt::Display for Finding {
    /// `PATH[ (MEMBER)][:LINE]: secret NAME (ENCODING)[ in git object ID]`
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(m) = &self.member {
            write!(f, " ({m})")?;
        }
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
        }
        write!(f, ": secret {} ({})", self.secret, self.encoding)?;
        if let Some(id) = &self.in_git_object {
            write!(f, " in git object {id}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Default)]
pub struct ScanReport {
    pub findings: Vec<Finding>,
    pub files_scanned: u64,
    pub bytes_scanned: u64,
    /// Why a bound cut the whole scan short (None: it ran to the end).
    pub truncated: Option<String>,
    /// What was not searched, wholly or in part, and why (the first [`MAX_SKIPPED`]).
    pub skipped: Vec<(PathBuf, String)>,
    /// How many entries `skipped` would have without its cap.
    pub skipped_count: u64,
}

impl ScanReport {
    /// Everything the scan selected was searched: no bound cut it short, nothing was
    /// skipped. A scan that is not complete cannot say that no secret was written.
    pub fn complete(&self) -> bool {
        self.truncated.is_none() && self.skipped_count == 0
    }
}

#[derive(Debug, Clone, Copy)]
pub struct ScanLimits {
    /// Bytes searched in all (file contents and decompressed data).
    pub max_bytes: u64,
    /// Files opened (regular files, loose objects, packs).
    pub max_files: u64,
    pub deadline: Duration,
    /// Bytes searched in one file or one decompressed stream; the rest is skipped (so
    /// one huge file cannot use up the whole budget).
    pub max_file_bytes: u64,
}

impl Default for ScanLimits {
    fn default() -> Self {
        ScanLimits {
            max_bytes: 1 << 30,
            max_files: 100_000,
            deadline: Duration::from_secs(30),
            max_file_bytes: 256 << 20,
        }
    }
}

/// At most this many findings are kept (then the report says it was cut short).
pub const MAX_FINDINGS: usize = 1000;
/// At most this many skipped entries are listed.
pub const MAX_SKIPPED: usize = 100;
/// Compression layers decompressed (a gzip in a zip in a gzip is 3).
pub const MAX_DEPTH: u32 = 3;
/// A decompressed stream may grow to this many times its compressed size (past its
/// first MiB); beyond, the rest is skipped as a likely decompression bomb.
pub const MAX_RATIO: u64 = 250;
const CHUNK: usize = 1 << 20;
/// Largest git object (or delta result) held in memory to resolve deltas; larger
/// non-delta objects are streamed.
const MAX_OBJECT: u64 = 64 << 20;
/// Bytes of resolved pack objects kept for delta bases.
const CACHE_BYTES: usize = 64 << 20;
const MAX_DELTA_DEPTH: u32 = 128;
/// Largest pack index read.
const MAX_IDX: u64 = 64 << 20;

/// Search files under `roots` modified at/after `since` for `redactor`'s patterns.
pub fn scan(
    redactor: &Redactor,
    roots: &[PathBuf],
    since: SystemTime,
    limits: ScanLimits,
) -> ScanReport {
    if redactor.is_empty() {
        return ScanReport::default();
    }
    let mut s = Scanner {
        r: redactor,
        since,
        limits,
        start: Instant::now(),
        report: ScanReport::default(),
        seen_dirs: HashSet::new(),
        seen: HashSet::new(),
        scratch: MatchScratch::default(),
        hits: Vec::new(),
        chunk: Zeroizing::new(Vec::new()),
        stop: false,
    };
    for root in roots {
        if s.stop {
            break;
        }
        // The root itself is the plan's path (not the cell's choice); only its last
        // component could have been replaced, so it is opened without following it,
        // and only if it is a directory or a regular file (never a device or a FIFO).
        match std::fs::symlink_metadata(root) {
            Ok(md) if md.is_dir() || md.is_file() => {}
            Ok(md) if md.file_type().is_symlink() => {
                s.skip(root, "is a symlink; not followed");
                continue;
            }
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => {
                s.skip(root, &format!("cannot stat: {e}"));
                continue;
            }
        }
        let fd = match nix::fcntl::open(
            root.as_path(),
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
            Mode::empty(),
        ) {
            // SAFETY: open returned a new fd that nothing else owns.
            Ok(fd) => unsafe { OwnedFd::from_raw_fd(fd) },
            Err(Errno::ENOENT) => continue,
            Err(Errno::ELOOP) => {
                s.skip(root, "is a symlink; not followed");
                continue;
            }
            Err(e) => {
                s.skip(root, &format!("cannot open: {e}"));
                continue;
            }
        };
        match fstat(fd.as_raw_fd()) {
            Ok(st) if is_dir(&st) => s.walk(fd, root, st),
            Ok(st) if is_reg(&st) => {
                if changed_since(&st, since) {
                    s.file(File::from(fd), &st, root, None);
                }
            }
            Ok(_) => {}
            Err(e) => s.skip(root, &format!("cannot stat: {e}")),
        }
    }
    s.report
}

fn is_dir(st: &FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR
}

fn is_reg(st: &FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFREG
}

fn changed_since(st: &FileStat, since: SystemTime) -> bool {
    let t = |secs: i64, nsecs: i64| -> SystemTime {
        if secs >= 0 {
            UNIX_EPOCH + Duration::new(secs as u64, nsecs.clamp(0, 999_999_999) as u32)
        } else {
            UNIX_EPOCH
        }
    };
    t(st.st_mtime, st.st_mtime_nsec) >= since || t(st.st_ctime, st.st_ctime_nsec) >= since
}

/// What a directory is to git.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Plain,
    /// `<git dir>/objects`
    Objects,
    /// `<git dir>/objects/XX`: loose objects named by the rest of their id.
    Loose,
    /// `<git dir>/objects/pack`
    Packs,
}

/// A directory waiting to be walked: opened beneath `parent` when its turn comes (so
/// only the directories on the way hold an fd, however wide the tree).
struct Pending {
    parent: Rc<OwnedFd>,
    name: Vec<u8>,
    path: PathBuf,
    kind: Kind,
    /// (dev, ino) from the parent's listing: what is opened must be this directory.
    id: (u64, u64),
}

/// Where bytes come from, for findings and skip notes.
#[derive(Clone)]
struct At<'p> {
    path: &'p Path,
    object: Option<String>,
    member: Option<String>,
}

/// The search state of one stream (a file, a decompressed stream, an object).
struct Stream {
    buf: Zeroizing<Vec<u8>>,
    /// Newlines before `buf[0]`.
    lines: u64,
    text: Option<bool>,
    /// Bytes fed.
    fed: u64,
}

impl Stream {
    fn new() -> Stream {
        Stream {
            buf: Zeroizing::new(Vec::new()),
            lines: 0,
            text: None,
            fed: 0,
        }
    }
}

/// Counts the bytes a decoder consumed from its compressed input.
struct Counted<R> {
    inner: R,
    n: Rc<Cell<u64>>,
}

impl<R: BufRead> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let k = self.inner.read(buf)?;
        self.n.set(self.n.get() + k as u64);
        Ok(k)
    }
}

impl<R: BufRead> BufRead for Counted<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.inner.fill_buf()
    }
    fn consume(&mut self, amt: usize) {
        self.n.set(self.n.get() + amt as u64);
        self.inner.consume(amt);
    }
}

/// Reads a file from `pos` with `pread` (the file's own offset is never used).
struct Pread<'f> {
    file: &'f File,
    pos: u64,
}

impl Read for Pread<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let k = self.file.read_at(buf, self.pos)?;
        self.pos += k as u64;
        Ok(k)
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Compression {
    Gzip,
    Zlib,
    Zip,
}

impl Compression {
    fn name(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Zlib => "zlib",
            Compression::Zip => "zip",
        }
    }
}

/// The compression a stream starts with, by its magic bytes.
fn magic(head: &[u8]) -> Option<Compression> {
    match head {
        [0x1f, 0x8b, 8, ..] => Some(Compression::Gzip),
        [b'P', b'K', 3, 4, ..] => Some(Compression::Zip),
        [0x78, f, ..] if (0x7800u16 | u16::from(*f)).is_multiple_of(31) && f & 0x20 == 0 => {
            Some(Compression::Zlib)
        }
        _ => None,
    }
}

/// Why a stream stopped before its end.
#[derive(Debug)]
enum Cut {
    /// A global bound: the whole scan stops (`truncated` says which).
    Stop,
    /// This stream's own bound; the rest of it is skipped (already noted).
    Skipped,
}

struct Scanner<'a> {
    r: &'a Redactor,
    since: SystemTime,
    limits: ScanLimits,
    start: Instant,
    report: ScanReport,
    seen_dirs: HashSet<(u64, u64)>,
    seen: HashSet<Finding>,
    scratch: MatchScratch,
    hits: Vec<Hit>,
    /// The read buffer, reused for every file (zeroized when the scan ends).
    chunk: Zeroizing<Vec<u8>>,
    stop: bool,
}

impl Scanner<'_> {
    /// Check the bounds before more work; false (and `stop`) once one is exceeded.
    fn within_bounds(&mut self, next_file: bool) -> bool {
        if self.stop {
            return false;
        }
        let why = if self.start.elapsed() >= self.limits.deadline {
            Some(format!(
                "deadline of {} ms reached",
                self.limits.deadline.as_millis()
            ))
        } else if next_file && self.report.files_scanned >= self.limits.max_files {
            Some(format!("file limit of {} reached", self.limits.max_files))
        } else if self.report.bytes_scanned >= self.limits.max_bytes {
            Some(format!("byte limit of {} reached", self.limits.max_bytes))
        } else if self.report.findings.len() >= MAX_FINDINGS {
            Some(format!("{MAX_FINDINGS} findings reached"))
        } else {
            None
        };
        if let Some(why) = why {
            self.report.truncated = Some(format!(
                "{why} after {} files and {} bytes; files not yet searched may hold a secret",
                self.report.files_scanned, self.report.bytes_scanned
            ));
            self.stop = true;
            return false;
        }
        true
    }

    /// Note something that was not searched (wholly or in part).
    fn skip(&mut self, path: &Path, why: &str) {
        self.report.skipped_count += 1;
        if self.report.skipped.len() < MAX_SKIPPED {
            self.report
                .skipped
                .push((path.to_path_buf(), why.to_string()));
        }
    }

    fn skip_at(&mut self, at: &At, why: &str) {
        let mut what = String::new();
        if let Some(m) = &at.member {
            what.push_str(&format!("{m}: "));
        }
        if let Some(o) = &at.object {
            what.push_str(&format!("git object {o}: "));
        }
        what.push_str(why);
        self.skip(at.path, &what);
    }

    /// Depth-first walk beneath `root` (an open directory) with an explicit stack (a
    /// cell can nest directories deeper than any call stack), entries in sorted order.
    fn walk(&mut self, root: OwnedFd, root_path: &Path, st: FileStat) {
        let dev = st.st_dev;
        let mut current = Some((root, root_path.to_path_buf(), Kind::Plain, st));
        let mut stack: Vec<Pending> = Vec::new();
        loop {
            if !self.within_bounds(false) {
                return;
            }
            let (dir, path, kind, st) = match current.take() {
                Some(c) => c,
                None => {
                    let Some(p) = stack.pop() else { return };
                    match self.open_dir(&p) {
                        Some((fd, st)) => (fd, p.path, p.kind, st),
                        None => continue,
                    }
                }
            };
            if st.st_dev != dev || !self.seen_dirs.insert((st.st_dev, st.st_ino)) {
                continue;
            }
            let names = match list(&dir) {
                Ok(n) => n,
                Err(e) => {
                    self.skip(&path, &format!("cannot list the directory: {e}"));
                    continue;
                }
            };
            let dir = Rc::new(dir);
            let git = kind == Kind::Plain && is_git_dir(&dir);
            let mut subdirs = Vec::new();
            for name in names {
                if !self.within_bounds(false) {
                    return;
                }
                let child = path.join(OsStr::from_bytes(&name));
                let Ok(cst) = fstatat(
                    Some(dir.as_raw_fd()),
                    name.as_slice(),
                    AtFlags::AT_SYMLINK_NOFOLLOW,
                ) else {
                    continue;
                };
                if is_dir(&cst) {
                    if cst.st_dev != dev {
                        continue;
                    }
                    let sub = match (kind, name.as_slice()) {
                        (Kind::Plain, b"objects") if git => Kind::Objects,
                        (Kind::Objects, b"pack") => Kind::Packs,
                        (Kind::Objects, n)
                            if n.len() == 2 && n.iter().all(u8::is_ascii_hexdigit) =>
                        {
                            Kind::Loose
                        }
                        _ => Kind::Plain,
                    };
                    subdirs.push(Pending {
                        parent: dir.clone(),
                        name,
                        path: child,
                        kind: sub,
                        id: (cst.st_dev, cst.st_ino),
                    });
                } else if is_reg(&cst) && changed_since(&cst, self.since) {
                    // Symlinks, FIFOs, sockets and devices are never opened.
                    self.entry(&dir, &name, &child, kind, &path);
                }
            }
            stack.extend(subdirs.into_iter().rev());
        }
    }

    /// Open a pending directory beneath its parent; it must still be the directory
    /// that was listed (not swapped for a symlink or another directory since).
    fn open_dir(&mut self, p: &Pending) -> Option<(OwnedFd, FileStat)> {
        let fd = match openat(
            Some(p.parent.as_raw_fd()),
            p.name.as_slice(),
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            // SAFETY: openat returned a new fd that nothing else owns.
            Ok(fd) => unsafe { OwnedFd::from_raw_fd(fd) },
            Err(Errno::ENOENT) => return None,
            Err(e) => {
                self.skip(&p.path, &format!("cannot open the directory: {e}"));
                return None;
            }
        };
        match fstat(fd.as_raw_fd()) {
            Ok(st) if (st.st_dev, st.st_ino) == p.id => Some((fd, st)),
            Ok(_) => {
                self.skip(&p.path, "replaced while the scan ran; not searched");
                None
            }
            Err(e) => {
                self.skip(&p.path, &format!("cannot stat: {e}"));
                None
            }
        }
    }

    /// A changed regular file in a directory of `kind`.
    fn entry(&mut self, dir: &OwnedFd, name: &[u8], path: &Path, kind: Kind, dir_path: &Path) {
        if !self.within_bounds(true) {
            return;
        }
        let (file, st) = match open_file(dir, name) {
            Ok(f) => f,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return,
            Err(e) => return self.skip(path, &e.to_string()),
        };
        if !changed_since(&st, self.since) {
            return;
        }
        match kind {
            Kind::Loose => {
                let prefix = dir_path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let id = format!("{prefix}{}", String::from_utf8_lossy(name));
                self.file(file, &st, path, Some(id));
            }
            Kind::Packs if name.ends_with(b".pack") => {
                self.report.files_scanned += 1;
                if let Err(e) = self.pack(dir, name, &file, &st, path) {
                    self.skip(path, &format!("pack: {e}"));
                    // What could not be parsed is at least searched as it is.
                    let _ = self.raw(
                        &file,
                        &st,
                        &At {
                            path,
                            object: None,
                            member: None,
                        },
                    );
                }
            }
            _ => self.file(file, &st, path, None),
        }
    }

    /// A regular file: its bytes as they are, then, if it is compressed, what it holds.
    fn file(&mut self, file: File, st: &FileStat, path: &Path, object: Option<String>) {
        if !self.within_bounds(true) {
            return;
        }
        self.report.files_scanned += 1;
        let at = At {
            path,
            object,
            member: None,
        };
        if let Err(Cut::Stop) = self.raw(&file, st, &at) {
            return;
        }
        let mut head = [0u8; 4];
        let k = file.read_at(&mut head, 0).unwrap_or(0);
        let Some(c) = magic(&head[..k]) else { return };
        let loose = at.object.is_some();
        let at = At {
            member: (!loose).then(|| c.name().to_string()),
            ..at
        };
        let mut input = BufReader::with_capacity(
            64 << 10,
            Pread {
                file: &file,
                pos: 0,
            },
        );
        if loose && c == Compression::Zlib {
            let _ = self.loose_object(&mut input, &at);
        } else {
            let _ = self.decompress(c, &mut input, &at, 1, true);
        }
    }

    /// Search a file's bytes as they are, skipping its holes, at most `max_file_bytes`.
    fn raw(&mut self, file: &File, st: &FileStat, at: &At) -> Result<(), Cut> {
        let mut chunk = std::mem::take(&mut self.chunk);
        chunk.resize(CHUNK, 0);
        let mut s = Stream::new();
        let r = self.raw_into(file, st, at, &mut s, &mut chunk);
        self.feed(&mut s, &[], true, at);
        self.chunk = chunk;
        r
    }

    fn raw_into(
        &mut self,
        file: &File,
        st: &FileStat,
        at: &At,
        s: &mut Stream,
        chunk: &mut [u8],
    ) -> Result<(), Cut> {
        let fd = file.as_raw_fd();
        let size = u64::try_from(st.st_size).unwrap_or(0);
        let mut pos = 0u64;
        let mut read = 0u64;
        // A hole reads as zeros: a match can reach at most max_len bytes into it from
        // either side, so a long hole is searched as 2 * max_len zeros.
        let zeros = vec![0u8; 2 * self.r.max_pattern_len()];
        while pos < size {
            let data = match nix::unistd::lseek(fd, pos as i64, nix::unistd::Whence::SeekData) {
                Ok(o) => o as u64,
                Err(Errno::ENXIO) => size,
                Err(_) => pos,
            };
            if data > pos {
                let z = (data - pos).min(zeros.len() as u64) as usize;
                self.feed(s, &zeros[..z], false, at);
            }
            if data >= size {
                break;
            }
            let hole = nix::unistd::lseek(fd, data as i64, nix::unistd::Whence::SeekHole)
                .map(|o| o as u64)
                .unwrap_or(size)
                .max(data + 1);
            pos = data;
            while pos < hole {
                if !self.within_bounds(false) {
                    return Err(Cut::Stop);
                }
                if read >= self.limits.max_file_bytes {
                    self.skip_at(
                        at,
                        &format!(
                            "only the first {} bytes of data were searched (file limit)",
                            self.limits.max_file_bytes
                        ),
                    );
                    return Err(Cut::Skipped);
                }
                let room = (self.limits.max_bytes - self.report.bytes_scanned)
                    .min(self.limits.max_file_bytes - read)
                    .min(hole - pos)
                    .min(chunk.len() as u64) as usize;
                let k = match file.read_at(&mut chunk[..room], pos) {
                    Ok(0) => return Ok(()),
                    Ok(k) => k,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        self.skip_at(at, &format!("read error: {e}"));
                        return Err(Cut::Skipped);
                    }
                };
                self.report.bytes_scanned += k as u64;
                read += k as u64;
                pos += k as u64;
                self.feed(s, &chunk[..k], false, at);
            }
        }
        Ok(())
    }

    /// Feed bytes of one stream to the matcher (`eof`: the stream ended) and record
    /// what it found. Only what may still start a match is kept between calls.
    fn feed(&mut self, s: &mut Stream, data: &[u8], eof: bool, at: &At) {
        s.fed += data.len() as u64;
        let direct = s.buf.is_empty();
        if !direct {
            s.buf.extend_from_slice(data);
        }
        let buf: &[u8] = if direct { data } else { &s.buf };
        if buf.is_empty() {
            return;
        }
        let text = *s
            .text
            .get_or_insert_with(|| !buf[..buf.len().min(8192)].contains(&0));
        let mut hits = std::mem::take(&mut self.hits);
        let hold = self.r.hits(buf, 0, eof, &mut self.scratch, &mut hits);
        let mut pos = 0;
        let mut line = s.lines + 1;
        for h in &hits {
            if text {
                line += count_nl(&buf[pos..h.start]);
                pos = h.start;
            }
            let f = Finding {
                path: at.path.to_path_buf(),
                line: text.then_some(line),
                secret: self.r.names()[self.r.secret_of(h)].clone(),
                encoding: self.r.describe(h),
                in_git_object: at.object.clone(),
                member: at.member.clone(),
            };
            if self.report.findings.len() < MAX_FINDINGS && self.seen.insert(f.clone()) {
                self.report.findings.push(f);
            }
        }
        self.hits = hits;
        s.lines += count_nl(&buf[..hold]);
        if direct {
            s.buf.extend_from_slice(&data[hold..]);
        } else {
            s.buf.drain(..hold);
        }
    }

    /// Search what `rd` yields (decompressed data), at most `max_file_bytes`, and no
    /// more than [`MAX_RATIO`] times what the decoder consumed (`consumed`). `lenient`:
    /// a stream that fails before its first byte only looked compressed (its bytes were
    /// searched as they are), which is not an error.
    fn search_decoded(
        &mut self,
        rd: &mut dyn Read,
        at: &At,
        depth: u32,
        consumed: &Rc<Cell<u64>>,
        lenient: bool,
    ) -> Result<(), Cut> {
        let mut br = BufReader::with_capacity(CHUNK, rd);
        let head = match br.fill_buf() {
            Ok(h) => h.get(..4).unwrap_or(h).to_vec(),
            // Only looked compressed (and was searched as it is).
            Err(_) if lenient => return Ok(()),
            Err(e) => {
                self.skip_at(at, &format!("cannot decompress: {e}"));
                return Err(Cut::Skipped);
            }
        };
        if let Some(c) = magic(&head) {
            if depth < MAX_DEPTH {
                let at = At {
                    member: Some(match &at.member {
                        Some(m) => format!("{m} > {}", c.name()),
                        None => c.name().to_string(),
                    }),
                    ..at.clone()
                };
                return self.decompress(c, &mut br, &at, depth + 1, false);
            }
            self.skip_at(
                at,
                &format!("compressed more than {MAX_DEPTH} layers deep; not decompressed"),
            );
            return Err(Cut::Skipped);
        }
        let mut s = Stream::new();
        loop {
            if !self.within_bounds(false) {
                return Err(Cut::Stop);
            }
            let (k, done) = {
                let buf = match br.fill_buf() {
                    Ok(b) => b,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        self.feed(&mut s, &[], true, at);
                        self.skip_at(at, &format!("cannot decompress: {e}"));
                        return Err(Cut::Skipped);
                    }
                };
                if buf.is_empty() {
                    (0, true)
                } else {
                    let room = (self.limits.max_bytes - self.report.bytes_scanned)
                        .min(self.limits.max_file_bytes.saturating_sub(s.fed))
                        as usize;
                    let k = buf.len().min(room);
                    self.report.bytes_scanned += k as u64;
                    self.feed(&mut s, &buf[..k], false, at);
                    (k, false)
                }
            };
            if done {
                break;
            }
            br.consume(k);
            if s.fed >= self.limits.max_file_bytes {
                self.feed(&mut s, &[], true, at);
                self.skip_at(
                    at,
                    &format!(
                        "decompressed data past {} bytes not searched (size limit)",
                        self.limits.max_file_bytes
                    ),
                );
                return Err(Cut::Skipped);
            }
            if s.fed > 1 << 20 && s.fed > consumed.get().max(1).saturating_mul(MAX_RATIO) {
                self.feed(&mut s, &[], true, at);
                self.skip_at(
                    at,
                    &format!(
                        "decompresses more than {MAX_RATIO} times its size (a likely bomb); \
                         the rest was not searched"
                    ),
                );
                return Err(Cut::Skipped);
            }
        }
        self.feed(&mut s, &[], true, at);
        Ok(())
    }

    /// Decompress `input` (which starts with `c`'s magic) and search the result.
    /// `raw_searched`: the compressed bytes were searched as they are (a file), so a
    /// stream that fails before yielding anything was just not compressed.
    fn decompress(
        &mut self,
        c: Compression,
        input: &mut dyn BufRead,
        at: &At,
        depth: u32,
        raw_searched: bool,
    ) -> Result<(), Cut> {
        let consumed = Rc::new(Cell::new(0u64));
        let counted = Counted {
            inner: input,
            n: consumed.clone(),
        };
        match c {
            Compression::Gzip => self.search_decoded(
                &mut MultiGzDecoder::new(counted),
                at,
                depth,
                &consumed,
                raw_searched,
            ),
            Compression::Zlib => self.search_decoded(
                &mut ZlibDecoder::new(counted),
                at,
                depth,
                &consumed,
                raw_searched,
            ),
            Compression::Zip => self.zip(counted.inner, at, depth, raw_searched),
        }
    }

    /// The local file entries of a zip archive, read in order: deflated members are
    /// decompressed and searched; stored ones are searched as they are unless the raw
    /// pass already did.
    fn zip(
        &mut self,
        input: &mut dyn BufRead,
        at: &At,
        depth: u32,
        raw_searched: bool,
    ) -> Result<(), Cut> {
        let mut members = 0u32;
        loop {
            if !self.within_bounds(false) {
                return Err(Cut::Stop);
            }
            let mut sig = [0u8; 4];
            match read_exact_or_eof(input, &mut sig) {
                Ok(true) => {}
                Ok(false) => return Ok(()),
                Err(e) => {
                    self.skip_at(at, &format!("zip: {e}"));
                    return Err(Cut::Skipped);
                }
            }
            if sig != *b"PK\x03\x04" {
                // The central directory (or anything else): no more local entries.
                return Ok(());
            }
            let mut h = [0u8; 26];
            let mut name = Vec::new();
            let header = (|| -> io::Result<(u16, u16, u64, Vec<u8>)> {
                input.read_exact(&mut h)?;
                let le16 = |i: usize| u16::from_le_bytes([h[i], h[i + 1]]);
                let le32 = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
                let (flags, method) = (le16(2), le16(4));
                let mut csize = u64::from(le32(14));
                let (nlen, xlen) = (le16(22) as usize, le16(24) as usize);
                name.resize(nlen, 0);
                input.read_exact(&mut name)?;
                let mut extra = vec![0u8; xlen];
                input.read_exact(&mut extra)?;
                if csize == 0xffff_ffff {
                    csize = zip64_csize(&extra).unwrap_or(u64::MAX);
                }
                Ok((flags, method, csize, name.clone()))
            })();
            let (flags, method, csize, name) = match header {
                Ok(x) => x,
                Err(e) => {
                    self.skip_at(at, &format!("zip entry header: {e}"));
                    return Err(Cut::Skipped);
                }
            };
            members += 1;
            let member_name = String::from_utf8_lossy(&name).into_owned();
            let mat = At {
                member: Some(match &at.member {
                    Some(m) if m != "zip" => format!("{m} > {member_name}"),
                    _ => member_name,
                }),
                ..at.clone()
            };
            let descriptor = flags & 8 != 0;
            let consumed = Rc::new(Cell::new(0u64));
            match method {
                8 => {
                    let r = {
                        let mut dec = DeflateDecoder::new(Counted {
                            inner: &mut *input,
                            n: consumed.clone(),
                        });
                        self.search_decoded(&mut dec, &mat, depth, &consumed, false)
                    };
                    match r {
                        Ok(()) => {}
                        Err(Cut::Stop) => return Err(Cut::Stop),
                        Err(Cut::Skipped) => {
                            // Skip to the next entry when its size is known.
                            if descriptor || csize == u64::MAX {
                                self.skip_at(at, "the entries after a skipped one");
                                return Err(Cut::Skipped);
                            }
                            let left = csize.saturating_sub(consumed.get());
                            if skip_bytes(input, left).is_err() {
                                return Err(Cut::Skipped);
                            }
                            continue;
                        }
                    }
                    if !descriptor {
                        // The decoder stops at the end of the deflate stream, which
                        // should be the entry's end.
                        let left = csize.saturating_sub(consumed.get());
                        if skip_bytes(input, left).is_err() {
                            return Ok(());
                        }
                    } else if skip_descriptor(input).is_err() {
                        return Ok(());
                    }
                }
                0 if !descriptor && csize != u64::MAX => {
                    if raw_searched {
                        if skip_bytes(input, csize).is_err() {
                            return Ok(());
                        }
                    } else {
                        let mut take = (&mut *input).take(csize);
                        if let Err(Cut::Stop) =
                            self.search_decoded(&mut take, &mat, depth, &unbounded(), false)
                        {
                            return Err(Cut::Stop);
                        }
                    }
                }
                _ => {
                    self.skip_at(
                        &mat,
                        &format!("zip compression method {method} is not supported; not searched"),
                    );
                    if descriptor || csize == u64::MAX || skip_bytes(input, csize).is_err() {
                        if members > 0 {
                            self.skip_at(at, "the entries after it");
                        }
                        return Err(Cut::Skipped);
                    }
                }
            }
        }
    }

    // -----------------------------------------------------------------------------
    // git

    /// A loose object: zlib("TYPE SIZE\0" + content); the content is searched.
    fn loose_object(&mut self, input: &mut dyn BufRead, at: &At) -> Result<(), Cut> {
        let consumed = Rc::new(Cell::new(0u64));
        let mut dec = ZlibDecoder::new(Counted {
            inner: input,
            n: consumed.clone(),
        });
        let mut header = Vec::new();
        let mut b = [0u8; 1];
        loop {
            match dec.read(&mut b) {
                Ok(1) if b[0] == 0 => break,
                Ok(1) if header.len() < 64 => header.push(b[0]),
                Ok(_) => {
                    // Not a git object after all: the raw pass searched the file.
                    return Ok(());
                }
                Err(_) => return Ok(()),
            }
        }
        self.search_decoded(&mut dec, at, 1, &consumed, true)
    }

    fn pack(
        &mut self,
        dir: &OwnedFd,
        name: &[u8],
        file: &File,
        st: &FileStat,
        path: &Path,
    ) -> io::Result<()> {
        let size = u64::try_from(st.st_size).unwrap_or(0);
        let mut head = [0u8; 12];
        file.read_exact_at(&mut head, 0)
            .map_err(|_| bad("not a pack file"))?;
        if &head[..4] != b"PACK" {
            return Err(bad("not a pack file"));
        }
        let count = u32::from_be_bytes([head[8], head[9], head[10], head[11]]);
        let mut idx_name = name[..name.len() - 5].to_vec();
        idx_name.extend_from_slice(b".idx");
        let idx_path = path.with_extension("idx");
        // Without a usable .idx (missing, corrupt, or removed by the cell), walk the
        // pack's entries in order: REF_DELTA objects then cannot be resolved, everything
        // else can; objects are named by their offset in the pack.
        let entries: Vec<([u8; 20], Option<u64>, u64)> = match open_file(dir, &idx_name)
            .and_then(|(f, _)| read_bounded(&f, MAX_IDX))
            .and_then(|i| parse_idx(&i))
        {
            Ok(e) => e.into_iter().map(|(id, off)| (id, None, off)).collect(),
            Err(e) => {
                self.skip(
                    &idx_path,
                    &format!("pack index: {e}; walking the pack without it"),
                );
                walk_pack(file, count, size)?
                    .into_iter()
                    .map(|off| ([0u8; 20], Some(off), off))
                    .collect()
            }
        };
        let ids: Vec<([u8; 20], u64)> = entries
            .iter()
            .filter(|e| e.1.is_none())
            .map(|e| (e.0, e.2))
            .collect();
        let objects = match openat(
            Some(dir.as_raw_fd()),
            "..",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            // SAFETY: openat returned a new fd that nothing else owns.
            Ok(fd) => Some(unsafe { OwnedFd::from_raw_fd(fd) }),
            Err(_) => None,
        };
        let mut pack = Pack {
            file,
            by_id: ids.iter().copied().collect(),
            objects: objects.as_ref(),
            cache: HashMap::new(),
            cached: 0,
            cap: MAX_OBJECT,
        };
        let mut by_offset: Vec<&([u8; 20], Option<u64>, u64)> = entries.iter().collect();
        by_offset.sort_by_key(|e| e.2);
        for (sha, unnamed, off) in by_offset {
            if !self.within_bounds(false) {
                return Ok(());
            }
            let id = match unnamed {
                None => to_hex(sha),
                Some(o) => format!("pack offset {o}"),
            };
            let at = At {
                path,
                object: Some(id.clone()),
                member: None,
            };
            let none = unbounded();
            // Large plain objects are streamed; deltas (and what they need) are
            // resolved in memory, up to MAX_OBJECT.
            match pack.header(*off) {
                Ok(h) if (1..=4).contains(&h.kind) && h.size > MAX_OBJECT => {
                    let mut dec = ZlibDecoder::new(BufReader::new(Pread { file, pos: h.data }));
                    if let Err(Cut::Stop) = self.search_decoded(&mut dec, &at, 1, &none, false) {
                        return Ok(());
                    }
                }
                Ok(_) => match pack.object_at(*off, 0) {
                    Ok((_, content)) => {
                        if let Err(Cut::Stop) =
                            self.search_decoded(&mut content.as_slice(), &at, 1, &none, false)
                        {
                            return Ok(());
                        }
                    }
                    Err(e) => self.skip(path, &format!("git object {id}: {e}")),
                },
                Err(e) => self.skip(path, &format!("git object {id}: {e}")),
            }
        }
        Ok(())
    }
}

/// The names in a directory (not `.`/`..`), sorted.
fn list(dir: &OwnedFd) -> nix::Result<Vec<Vec<u8>>> {
    let dup = nix::unistd::dup(dir.as_raw_fd())?;
    let mut d = nix::dir::Dir::from_fd(dup).inspect_err(|_| {
        let _ = nix::unistd::close(dup);
    })?;
    let mut names = Vec::new();
    for e in d.iter() {
        let e = e?;
        let n: &CStr = e.file_name();
        let b = n.to_bytes();
        if b != b"." && b != b".." {
            names.push(b.to_vec());
        }
    }
    names.sort();
    Ok(names)
}

/// Open a regular file beneath `dir` without following a symlink or blocking on a FIFO
/// (it was checked with fstatat, but it could have been replaced since).
fn open_file(dir: &OwnedFd, name: &[u8]) -> io::Result<(File, FileStat)> {
    let fd = openat(
        Some(dir.as_raw_fd()),
        name,
        OFlag::O_RDONLY
            | OFlag::O_NOFOLLOW
            | OFlag::O_NONBLOCK
            | OFlag::O_NOCTTY
            | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    // SAFETY: openat returned a new fd that nothing else owns.
    let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let st = fstat(file.as_raw_fd())?;
    if !is_reg(&st) {
        return Err(io::Error::other("not a regular file"));
    }
    Ok((file, st))
}

/// The whole of a small file, refusing one larger than `cap`.
fn read_bounded(file: &File, cap: u64) -> io::Result<Vec<u8>> {
    let mut data = Vec::new();
    Pread { file, pos: 0 }
        .take(cap + 1)
        .read_to_end(&mut data)?;
    if data.len() as u64 > cap {
        return Err(bad(&format!("larger than {cap} bytes")));
    }
    Ok(data)
}

/// A directory that looks like a git directory (HEAD, objects/, refs/), checked
/// beneath its fd without following symlinks.
fn is_git_dir(dir: &OwnedFd) -> bool {
    let st = |n: &str| fstatat(Some(dir.as_raw_fd()), n, AtFlags::AT_SYMLINK_NOFOLLOW).ok();
    st("HEAD").is_some_and(|s| is_reg(&s))
        && st("objects").is_some_and(|s| is_dir(&s))
        && st("refs").is_some_and(|s| is_dir(&s))
}

fn read_exact_or_eof(r: &mut dyn BufRead, buf: &mut [u8]) -> io::Result<bool> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) if n == 0 => return Ok(false),
            Ok(0) => return Err(bad("truncated")),
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

fn skip_bytes(r: &mut dyn BufRead, n: u64) -> io::Result<()> {
    let got = io::copy(&mut r.take(n), &mut io::sink())?;
    if got < n {
        return Err(bad("truncated"));
    }
    Ok(())
}

/// A data descriptor after an entry: an optional signature, the CRC, and the sizes (4
/// or 8 bytes each, zip64).
fn skip_descriptor(r: &mut dyn BufRead) -> io::Result<()> {
    let head = r.fill_buf()?;
    if head.starts_with(b"PK\x07\x08") {
        r.consume(4);
    }
    skip_bytes(r, 12)?;
    let head = r.fill_buf()?;
    if !head.is_empty() && !head.starts_with(b"PK") && head.len() >= 8 {
        skip_bytes(r, 8)?;
    }
    Ok(())
}

/// The compressed size from a zip64 extra field (id 1: uncompressed, compressed, ...).
fn zip64_csize(extra: &[u8]) -> Option<u64> {
    let mut p = 0;
    while p + 4 <= extra.len() {
        let id = u16::from_le_bytes([extra[p], extra[p + 1]]);
        let len = u16::from_le_bytes([extra[p + 2], extra[p + 3]]) as usize;
        let body = extra.get(p + 4..p + 4 + len)?;
        if id == 1 && body.len() >= 16 {
            return Some(u64::from_le_bytes(body[8..16].try_into().ok()?));
        }
        p += 4 + len;
    }
    None
}

/// A "consumed" count for data that is not decompressed here (no ratio bound).
fn unbounded() -> Rc<Cell<u64>> {
    Rc::new(Cell::new(u64::MAX / MAX_RATIO))
}

fn count_nl(b: &[u8]) -> u64 {
    memchr::memchr_iter(b'\n', b).count() as u64
}

fn to_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// Inflate a zlib stream from `rd`, refusing more than `cap` bytes of output.
fn inflate(rd: impl BufRead, cap: u64) -> io::Result<Zeroizing<Vec<u8>>> {
    let mut out = Zeroizing::new(Vec::new());
    ZlibDecoder::new(rd).take(cap + 1).read_to_end(&mut out)?;
    if out.len() as u64 > cap {
        return Err(bad("object larger than the size limit"));
    }
    Ok(out)
}

/// A loose object beneath the objects directory, by id: (type, content).
fn read_loose(objects: &OwnedFd, hex: &str, cap: u64) -> io::Result<(String, Zeroizing<Vec<u8>>)> {
    let dir = openat(
        Some(objects.as_raw_fd()),
        &hex[..2],
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    // SAFETY: openat returned a new fd that nothing else owns.
    let dir = unsafe { OwnedFd::from_raw_fd(dir) };
    let (f, _) = open_file(&dir, &hex.as_bytes()[2..])?;
    let all = inflate(BufReader::new(Pread { file: &f, pos: 0 }), cap + 64)?;
    let nul = all
        .iter()
        .position(|&b| b == 0)
        .ok_or_else(|| bad("no header"))?;
    let header = std::str::from_utf8(&all[..nul]).map_err(|_| bad("bad header"))?;
    let (kind, _size) = header.split_once(' ').ok_or_else(|| bad("bad header"))?;
    Ok((kind.to_string(), Zeroizing::new(all[nul + 1..].to_vec())))
}

/// Parse a pack index (v1 or v2): (object id, offset in the pack) pairs.
fn parse_idx(idx: &[u8]) -> io::Result<Vec<([u8; 20], u64)>> {
    let be32 = |at: usize| -> io::Result<u32> {
        idx.get(at..at + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or_else(|| bad("index truncated"))
    };
    let sha = |at: usize| -> io::Result<[u8; 20]> {
        let mut s = [0u8; 20];
        s.copy_from_slice(idx.get(at..at + 20).ok_or_else(|| bad("index truncated"))?);
        Ok(s)
    };
    let mut out = Vec::new();
    if idx.starts_with(b"\xfftOc") {
        if be32(4)? != 2 {
            return Err(bad("unsupported index version"));
        }
        let n = be32(8 + 255 * 4)? as usize;
        let shas = 8 + 256 * 4;
        let offs = shas + n * 24; // past the names and the CRCs
        let large = offs + n * 4;
        if idx.len() < large {
            return Err(bad("index truncated"));
        }
        for i in 0..n {
            let o = be32(offs + i * 4)?;
            let off = if o & 0x8000_0000 != 0 {
                let at = large + (o & 0x7fff_ffff) as usize * 8;
                let b = idx.get(at..at + 8).ok_or_else(|| bad("index truncated"))?;
                u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
            } else {
                u64::from(o)
            };
            out.push((sha(shas + i * 20)?, off));
        }
    } else {
        let n = be32(255 * 4)? as usize;
        for i in 0..n {
            let at = 256 * 4 + i * 24;
            out.push((sha(at + 4)?, u64::from(be32(at)?)));
        }
    }
    Ok(out)
}

/// Offsets of the `count` entries of a pack, found by walking it from the start (each
/// entry's compressed length is only known by inflating it).
fn walk_pack(file: &File, count: u32, size: u64) -> io::Result<Vec<u64>> {
    let mut offs = Vec::new();
    let mut pos = 12u64;
    for _ in 0..count {
        if pos >= size {
            return Err(bad("pack truncated"));
        }
        offs.push(pos);
        let h = pack_header(file, pos)?;
        let consumed = Rc::new(Cell::new(0u64));
        let mut dec = ZlibDecoder::new(Counted {
            inner: BufReader::with_capacity(64 << 10, Pread { file, pos: h.data }),
            n: consumed.clone(),
        });
        let out = io::copy(&mut (&mut dec).take(MAX_OBJECT + 1), &mut io::sink())
            .map_err(|e| bad(&format!("inflating: {e}")))?;
        if out > MAX_OBJECT {
            return Err(bad("object larger than the size limit"));
        }
        // The decoder consumed exactly its stream (a BufRead decoder reads no further).
        pos = h.data + consumed.get();
    }
    Ok(offs)
}

/// A pack entry's header.
struct PackHeader {
    kind: u8,
    size: u64,
    /// Where the entry's zlib data starts.
    data: u64,
    base: Base,
}

enum Base {
    None,
    /// OFS_DELTA: the base's offset.
    Offset(u64),
    /// REF_DELTA: the base's id.
    Id([u8; 20]),
}

fn pack_header(file: &File, off: u64) -> io::Result<PackHeader> {
    let mut b = [0u8; 40];
    let k = file.read_at(&mut b, off)?;
    let b = &b[..k];
    let byte = |p: usize| b.get(p).copied().ok_or_else(|| bad("pack truncated"));
    let mut pos = 0usize;
    let mut c = byte(pos)?;
    let kind = (c >> 4) & 7;
    let mut size = u64::from(c & 15);
    let mut shift = 4;
    while c & 0x80 != 0 {
        pos += 1;
        c = byte(pos)?;
        if shift > 57 {
            return Err(bad("object size too large"));
        }
        size |= u64::from(c & 0x7f) << shift;
        shift += 7;
    }
    pos += 1;
    let base = match kind {
        1..=4 => Base::None,
        6 => {
            let mut c = byte(pos)?;
            let mut rel = u64::from(c & 0x7f);
            while c & 0x80 != 0 {
                pos += 1;
                c = byte(pos)?;
                rel = rel
                    .checked_add(1)
                    .and_then(|r| r.checked_mul(128))
                    .ok_or_else(|| bad("delta offset"))?
                    | u64::from(c & 0x7f);
            }
            pos += 1;
            let base = off.checked_sub(rel).ok_or_else(|| bad("delta offset"))?;
            if base >= off {
                return Err(bad("delta offset"));
            }
            Base::Offset(base)
        }
        7 => {
            let id: [u8; 20] = b
                .get(pos..pos + 20)
                .ok_or_else(|| bad("pack truncated"))?
                .try_into()
                .map_err(|_| bad("pack truncated"))?;
            pos += 20;
            Base::Id(id)
        }
        _ => return Err(bad("unknown object type")),
    };
    Ok(PackHeader {
        kind,
        size,
        data: off + pos as u64,
        base,
    })
}

type Object = (u8, Rc<Zeroizing<Vec<u8>>>);

/// A packfile being resolved (read with pread), with a small cache of resolved objects
/// (delta bases).
struct Pack<'a> {
    file: &'a File,
    by_id: HashMap<[u8; 20], u64>,
    /// The objects directory, for REF_DELTA bases stored as loose objects.
    objects: Option<&'a OwnedFd>,
    cache: HashMap<u64, Object>,
    cached: usize,
    cap: u64,
}

impl Pack<'_> {
    fn header(&self, off: u64) -> io::Result<PackHeader> {
        pack_header(self.file, off)
    }

    fn inflate_at(&self, pos: u64, size: u64) -> io::Result<Zeroizing<Vec<u8>>> {
        inflate(
            BufReader::with_capacity(
                64 << 10,
                Pread {
                    file: self.file,
                    pos,
                },
            ),
            size,
        )
    }

    /// The resolved object at `off`: (type 1..=4, content).
    fn object_at(&mut self, off: u64, depth: u32) -> io::Result<Object> {
        if let Some(o) = self.cache.get(&off) {
            return Ok(o.clone());
        }
        if depth > MAX_DELTA_DEPTH {
            return Err(bad("delta chain too deep"));
        }
        let h = self.header(off)?;
        if h.size > self.cap {
            return Err(bad("object larger than the size limit"));
        }
        let obj: Object = match h.base {
            Base::None => (h.kind, Rc::new(self.inflate_at(h.data, h.size)?)),
            Base::Offset(base_off) => {
                let (bk, base) = self.object_at(base_off, depth + 1)?;
                let delta = self.inflate_at(h.data, h.size)?;
                (bk, Rc::new(apply_delta(&base, &delta, self.cap)?))
            }
            Base::Id(id) => {
                let (bk, base) = match self.by_id.get(&id) {
                    Some(&base_off) if base_off != off => self.object_at(base_off, depth + 1)?,
                    _ => {
                        let objects = self.objects.ok_or_else(|| bad("delta base not found"))?;
                        let (k, content) = read_loose(objects, &to_hex(&id), self.cap)
                            .map_err(|_| bad("delta base not found"))?;
                        let k = match k.as_str() {
                            "commit" => 1,
                            "tree" => 2,
                            "blob" => 3,
                            _ => 4,
                        };
                        (k, Rc::new(content))
                    }
                };
                let delta = self.inflate_at(h.data, h.size)?;
                (bk, Rc::new(apply_delta(&base, &delta, self.cap)?))
            }
        };
        if self.cached + obj.1.len() > CACHE_BYTES {
            self.cache.clear();
            self.cached = 0;
        }
        if obj.1.len() <= CACHE_BYTES {
            self.cached += obj.1.len();
            self.cache.insert(off, obj.clone());
        }
        Ok(obj)
    }
}

/// Apply a git delta to `base`.
fn apply_delta(base: &[u8], delta: &[u8], cap: u64) -> io::Result<Zeroizing<Vec<u8>>> {
    let mut pos = 0usize;
    let mut varint = || -> io::Result<u64> {
        let mut v = 0u64;
        let mut shift = 0;
        loop {
            let c = *delta.get(pos).ok_or_else(|| bad("delta truncated"))?;
            pos += 1;
            if shift > 63 {
                return Err(bad("delta size"));
            }
            v |= u64::from(c & 0x7f) << shift;
            shift += 7;
            if c & 0x80 == 0 {
                return Ok(v);
            }
        }
    };
    let base_size = varint()?;
    let result_size = varint()?;
    if base_size != base.len() as u64 {
        return Err(bad("delta base size mismatch"));
    }
    if result_size > cap {
        return Err(bad("object larger than the size limit"));
    }
    let mut out = Zeroizing::new(Vec::with_capacity(result_size as usize));
    while pos < delta.len() {
        let op = delta[pos];
        pos += 1;
        if op & 0x80 != 0 {
            let mut arg = |bits: u8, n: usize| -> io::Result<u64> {
                let mut v = 0u64;
                for i in 0..n {
                    if bits & (1 << i) != 0 {
                        let b = *delta.get(pos).ok_or_else(|| bad("delta truncated"))?;
                        pos += 1;
                        v |= u64::from(b) << (8 * i);
                    }
                }
                Ok(v)
            };
            let offset = arg(op & 0x0f, 4)?;
            let mut len = arg((op >> 4) & 0x07, 3)?;
            if len == 0 {
                len = 0x10000;
            }
            let end = offset.checked_add(len).ok_or_else(|| bad("delta copy"))?;
            if end > base.len() as u64 {
                return Err(bad("delta copy out of range"));
            }
            out.extend_from_slice(&base[offset as usize..end as usize]);
        } else if op != 0 {
            let n = op as usize;
            let ins = delta
                .get(pos..pos + n)
                .ok_or_else(|| bad("delta truncated"))?;
            out.extend_from_slice(ins);
            pos += n;
        } else {
            return Err(bad("delta opcode 0"));
        }
        if out.len() as u64 > result_size {
            return Err(bad("delta result too large"));
        }
    }
    if out.len() as u64 != result_size {
        return Err(bad("delta result size mismatch"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
