//! The leak scan: after the cell ends, search every file created or changed during the
//! cell under the writable paths for the same patterns the output masker uses.
//!
//! Files are selected by mtime or ctime at/after the cell's start (ctime catches a file
//! whose mtime was set back). Git repositories found under the roots (a `.git` directory
//! or a bare repository) get their objects decompressed and searched: loose objects
//! (zlib) and packfiles (`.pack` + `.idx`, with OFS_DELTA/REF_DELTA resolution), parsed
//! here — git itself is never run on a repository the cell could have prepared.
//!
//! The scan is bounded by bytes searched, files opened and wall time; when a bound cuts
//! it short, [`ScanReport::truncated`] says which. Findings name the path, line (for text),
//! secret and encoding, never the value. Symlinks are not followed and other
//! filesystems mounted below a root are not entered.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use flate2::read::ZlibDecoder;
use zeroize::Zeroizing;

use super::redact::{MatchScratch, Redactor};

/// One occurrence of a secret in a file or git object. Never holds the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub path: PathBuf,
    /// 1-based line, for text content (no NUL byte in its first 8 KiB).
    pub line: Option<u64>,
    pub secret: String,
    pub encoding: &'static str,
    /// The object id when the value was found inside a git object.
    pub in_git_object: Option<String>,
}

impl std::fmt::Display for Finding {
    /// `PATH[:LINE]: secret NAME (ENCODING)[ in git object ID]`
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.path.display())?;
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
    /// Why a bound cut the scan short (None: everything selected was searched).
    pub truncated: Option<String>,
    /// Paths that could not be read or parsed, and why (at most 100).
    pub unreadable: Vec<(PathBuf, String)>,
}

#[derive(Debug, Clone, Copy)]
pub struct ScanLimits {
    /// Bytes searched (file contents and decompressed git objects).
    pub max_bytes: u64,
    /// Files opened (regular files, loose objects, packs).
    pub max_files: u64,
    pub deadline: Duration,
}

impl Default for ScanLimits {
    fn default() -> Self {
        ScanLimits {
            max_bytes: 1 << 30,
            max_files: 100_000,
            deadline: Duration::from_secs(30),
        }
    }
}

/// At most this many findings are kept (then the report says it was cut short).
pub const MAX_FINDINGS: usize = 1000;
const MAX_UNREADABLE: usize = 100;
const CHUNK: usize = 1 << 20;
/// Largest git object (or delta result) decompressed.
const MAX_OBJECT: u64 = 256 << 20;
/// Bytes of resolved pack objects kept for delta bases.
const CACHE_BYTES: usize = 64 << 20;
const MAX_DELTA_DEPTH: u32 = 128;

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
        overlap: redactor.max_pattern_len().saturating_sub(1),
        since,
        limits,
        start: Instant::now(),
        report: ScanReport::default(),
        seen_dirs: HashSet::new(),
        seen: HashSet::new(),
        matches: MatchScratch::default(),
        stop: false,
    };
    for root in roots {
        if s.stop {
            break;
        }
        match fs::symlink_metadata(root) {
            Ok(md) if md.is_dir() => s.walk(root, md.dev()),
            Ok(md) if md.is_file() => s.maybe_file(root, &md),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => s.unreadable(root, &e.to_string()),
        }
    }
    s.report
}

struct Scanner<'a> {
    r: &'a Redactor,
    overlap: usize,
    since: SystemTime,
    limits: ScanLimits,
    start: Instant,
    report: ScanReport,
    seen_dirs: HashSet<(u64, u64)>,
    seen: HashSet<Finding>,
    matches: MatchScratch,
    stop: bool,
}

impl std::hash::Hash for Finding {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.path.hash(h);
        self.line.hash(h);
        self.secret.hash(h);
        self.encoding.hash(h);
        self.in_git_object.hash(h);
    }
}

fn changed_since(md: &fs::Metadata, since: SystemTime) -> bool {
    let t = |secs: i64, nsecs: i64| -> SystemTime {
        if secs >= 0 {
            UNIX_EPOCH + Duration::new(secs as u64, nsecs.clamp(0, 999_999_999) as u32)
        } else {
            UNIX_EPOCH
        }
    };
    t(md.mtime(), md.mtime_nsec()) >= since || t(md.ctime(), md.ctime_nsec()) >= since
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

    fn unreadable(&mut self, path: &Path, why: &str) {
        if self.report.unreadable.len() < MAX_UNREADABLE {
            self.report
                .unreadable
                .push((path.to_path_buf(), why.to_string()));
        }
    }

    /// Depth-first walk of `root` with an explicit stack (a cell can nest directories
    /// deeper than any call stack), entries in sorted order.
    fn walk(&mut self, root: &Path, dev: u64) {
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            if !self.within_bounds(false) {
                return;
            }
            let Ok(md) = fs::symlink_metadata(&dir) else {
                continue;
            };
            if !self.seen_dirs.insert((md.dev(), md.ino())) {
                continue;
            }
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) => {
                    self.unreadable(&dir, &e.to_string());
                    continue;
                }
            };
            let mut names: Vec<PathBuf> =
                entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
            names.sort();
            let git = is_git_dir(&dir);
            if git {
                self.git_objects(&dir.join("objects"));
            }
            let mut subdirs = Vec::new();
            for path in names {
                if !self.within_bounds(false) {
                    return;
                }
                let Ok(md) = fs::symlink_metadata(&path) else {
                    continue;
                };
                if md.is_dir() {
                    if md.dev() == dev && !(git && path.file_name() == Some("objects".as_ref())) {
                        subdirs.push(path);
                    }
                } else if md.is_file() {
                    self.maybe_file(&path, &md);
                }
            }
            stack.extend(subdirs.into_iter().rev());
        }
    }

    fn maybe_file(&mut self, path: &Path, md: &fs::Metadata) {
        if !changed_since(md, self.since) || !self.within_bounds(true) {
            return;
        }
        self.report.files_scanned += 1;
        let mut f = match open_regular(path) {
            Ok(f) => f,
            Err(e) => return self.unreadable(path, &e.to_string()),
        };
        if let Err(e) = self.search_reader(&mut f, path, None) {
            self.unreadable(path, &e.to_string());
        }
    }

    /// Search a stream in chunks, keeping `overlap` bytes between chunks so that a
    /// match across a chunk boundary is found.
    fn search_reader(
        &mut self,
        rd: &mut dyn Read,
        path: &Path,
        object: Option<&str>,
    ) -> io::Result<()> {
        let mut buf = Zeroizing::new(Vec::with_capacity(CHUNK + self.overlap));
        let mut carried = 0usize; // bytes at the front of buf already searched
        let mut lines_before = 0u64; // newlines before buf[0]
        let mut text: Option<bool> = None;
        loop {
            if !self.within_bounds(false) {
                return Ok(());
            }
            let room = (self.limits.max_bytes - self.report.bytes_scanned).min(CHUNK as u64);
            let old = buf.len();
            buf.resize(old + room as usize, 0);
            let n = read_full(rd, &mut buf[old..])?;
            buf.truncate(old + n);
            if n == 0 {
                return Ok(());
            }
            self.report.bytes_scanned += n as u64;
            let is_text = *text.get_or_insert_with(|| !buf[..buf.len().min(8192)].contains(&0));
            self.search(&buf, carried, path, object, is_text, lines_before);
            // Keep the last `overlap` bytes for the next round.
            let keep = self.overlap.min(buf.len());
            let cut = buf.len() - keep;
            lines_before += count_nl(&buf[..cut]);
            buf.drain(..cut);
            carried = keep;
        }
    }

    /// Record matches in `data` that end after `carried` (the part searched before).
    fn search(
        &mut self,
        data: &[u8],
        carried: usize,
        path: &Path,
        object: Option<&str>,
        text: bool,
        lines_before: u64,
    ) {
        let mut pos = 0;
        let mut line = lines_before + 1;
        let mut hits = Vec::new();
        self.r
            .for_each_match(data, 0, &mut self.matches, |start, end, pid| {
                if end > carried {
                    hits.push((start, pid));
                }
                hits.len() < MAX_FINDINGS
            });
        for (start, pid) in hits {
            if text {
                line += count_nl(&data[pos..start]);
                pos = start;
            }
            let p = self.r.pattern(pid);
            let f = Finding {
                path: path.to_path_buf(),
                line: text.then_some(line),
                secret: self.r.names()[p.secret].clone(),
                encoding: p.encoding,
                in_git_object: object.map(str::to_string),
            };
            if self.seen.insert(f.clone()) {
                self.report.findings.push(f);
                if self.report.findings.len() >= MAX_FINDINGS {
                    return;
                }
            }
        }
    }

    fn search_object(&mut self, path: &Path, id: &str, content: &[u8]) {
        if !self.within_bounds(false) {
            return;
        }
        let room = (self.limits.max_bytes - self.report.bytes_scanned) as usize;
        let content = &content[..content.len().min(room)];
        self.report.bytes_scanned += content.len() as u64;
        let text = !content[..content.len().min(8192)].contains(&0);
        self.search(content, 0, path, Some(id), text, 0);
    }

    // -----------------------------------------------------------------------------
    // git

    fn git_objects(&mut self, objects: &Path) {
        let Ok(entries) = fs::read_dir(objects) else {
            return;
        };
        let mut dirs: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        dirs.sort();
        for d in dirs {
            let Some(name) = d.file_name().and_then(|n| n.to_str()).map(str::to_string) else {
                continue;
            };
            if name.len() == 2 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
                self.loose_dir(&d, &name);
            } else if name == "pack" {
                self.pack_dir(&d, objects);
            }
            if self.stop {
                return;
            }
        }
    }

    fn loose_dir(&mut self, dir: &Path, prefix: &str) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        files.sort();
        for path in files {
            let Ok(md) = fs::symlink_metadata(&path) else {
                continue;
            };
            if !md.is_file() || !changed_since(&md, self.since) {
                continue;
            }
            let Some(rest) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if !self.within_bounds(true) {
                return;
            }
            self.report.files_scanned += 1;
            let id = format!("{prefix}{rest}");
            match read_loose(&path, self.object_cap()) {
                Ok((_, content)) => self.search_object(&path, &id, &content),
                Err(e) => self.unreadable(&path, &format!("git object: {e}")),
            }
        }
    }

    fn object_cap(&self) -> u64 {
        MAX_OBJECT.min(
            self.limits
                .max_bytes
                .saturating_sub(self.report.bytes_scanned),
        )
    }

    fn pack_dir(&mut self, dir: &Path, objects: &Path) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        let mut packs: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension() == Some("pack".as_ref()))
            .collect();
        packs.sort();
        for pack in packs {
            let Ok(md) = fs::symlink_metadata(&pack) else {
                continue;
            };
            if !md.is_file() || !changed_since(&md, self.since) {
                continue;
            }
            if !self.within_bounds(true) {
                return;
            }
            self.report.files_scanned += 1;
            if let Err(e) = self.scan_pack(&pack, objects) {
                self.unreadable(&pack, &format!("git pack: {e}"));
            }
        }
    }

    fn scan_pack(&mut self, pack_path: &Path, objects: &Path) -> io::Result<()> {
        let size = fs::metadata(pack_path)?.len();
        if size > self.limits.max_bytes {
            self.report.truncated = Some(format!(
                "pack {} ({size} bytes) is larger than the byte limit of {}; it was not searched",
                pack_path.display(),
                self.limits.max_bytes
            ));
            return Ok(());
        }
        let data = read_regular(pack_path)?;
        // Without a usable .idx (missing, corrupt, or removed by the cell), walk the
        // pack's entries in order: REF_DELTA objects then cannot be resolved, everything
        // else can; objects are named by their offset in the pack.
        let entries: Vec<([u8; 20], Option<u64>, u64)> =
            match read_regular(&pack_path.with_extension("idx")).and_then(|i| parse_idx(&i)) {
                Ok(e) => e.into_iter().map(|(id, off)| (id, None, off)).collect(),
                Err(e) => {
                    self.unreadable(
                        &pack_path.with_extension("idx"),
                        &format!("pack index: {e}; walking the pack without it"),
                    );
                    walk_pack(&data)?
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
        let mut pack = Pack::new(&data, &ids, objects)?;
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
            pack.cap = self.object_cap();
            match pack.object_at(*off, 0) {
                Ok((_, content)) => self.search_object(pack_path, &id, &content),
                Err(e) => self.unreadable(pack_path, &format!("object {id}: {e}")),
            }
        }
        Ok(())
    }
}

/// Open a regular file without following a symlink or blocking on a FIFO (the path was
/// checked with lstat, but it could have been replaced since).
fn open_regular(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    if !f.metadata()?.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    Ok(f)
}

fn read_regular(path: &Path) -> io::Result<Vec<u8>> {
    let mut data = Vec::new();
    open_regular(path)?.read_to_end(&mut data)?;
    Ok(data)
}

fn is_git_dir(dir: &Path) -> bool {
    dir.join("HEAD").is_file() && dir.join("objects").is_dir() && dir.join("refs").is_dir()
}

fn read_full(rd: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match rd.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn count_nl(b: &[u8]) -> u64 {
    b.iter().filter(|&&c| c == b'\n').count() as u64
}

fn to_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// Inflate a zlib stream, refusing more than `cap` bytes of output.
fn inflate(data: &[u8], cap: u64) -> io::Result<Zeroizing<Vec<u8>>> {
    let mut out = Zeroizing::new(Vec::new());
    ZlibDecoder::new(data).take(cap + 1).read_to_end(&mut out)?;
    if out.len() as u64 > cap {
        return Err(bad("object larger than the size limit"));
    }
    Ok(out)
}

/// A loose object: zlib("TYPE SIZE\0" + content). Returns (type, content).
fn read_loose(path: &Path, cap: u64) -> io::Result<(String, Zeroizing<Vec<u8>>)> {
    let raw = read_regular(path)?;
    let all = inflate(&raw, cap + 64)?;
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

/// Offsets of the entries of a pack, found by walking it from the start (each entry's
/// compressed length is only known by inflating it).
fn walk_pack(data: &[u8]) -> io::Result<Vec<u64>> {
    if data.len() < 12 || &data[..4] != b"PACK" {
        return Err(bad("not a pack file"));
    }
    let count = u32::from_be_bytes([data[8], data[9], data[10], data[11]]);
    let mut offs = Vec::new();
    let mut pos = 12usize;
    let byte = |p: usize| data.get(p).copied().ok_or_else(|| bad("pack truncated"));
    for _ in 0..count {
        offs.push(pos as u64);
        let mut c = byte(pos)?;
        let kind = (c >> 4) & 7;
        while c & 0x80 != 0 {
            pos += 1;
            c = byte(pos)?;
        }
        pos += 1;
        match kind {
            6 => {
                while byte(pos)? & 0x80 != 0 {
                    pos += 1;
                }
                pos += 1;
            }
            7 => pos += 20,
            _ => {}
        }
        let rest = data.get(pos..).ok_or_else(|| bad("pack truncated"))?;
        let mut z = flate2::Decompress::new(true);
        let mut sink = vec![0u8; 64 << 10];
        loop {
            let (in0, out0) = (z.total_in(), z.total_out());
            let st = z
                .decompress(
                    &rest[in0 as usize..],
                    &mut sink,
                    flate2::FlushDecompress::None,
                )
                .map_err(|e| bad(&format!("inflating: {e}")))?;
            if st == flate2::Status::StreamEnd {
                break;
            }
            if z.total_in() == in0 && z.total_out() == out0 {
                return Err(bad("pack truncated"));
            }
            if z.total_out() > MAX_OBJECT {
                return Err(bad("object larger than the size limit"));
            }
        }
        pos += z.total_in() as usize;
    }
    Ok(offs)
}

type Object = (u8, Rc<Zeroizing<Vec<u8>>>);

/// A packfile being resolved, with a small cache of resolved objects (delta bases).
struct Pack<'a> {
    data: &'a [u8],
    by_id: HashMap<[u8; 20], u64>,
    objects: &'a Path,
    cache: HashMap<u64, Object>,
    cached: usize,
    cap: u64,
}

impl<'a> Pack<'a> {
    fn new(data: &'a [u8], entries: &[([u8; 20], u64)], objects: &'a Path) -> io::Result<Pack<'a>> {
        if data.len() < 12 || &data[..4] != b"PACK" {
            return Err(bad("not a pack file"));
        }
        Ok(Pack {
            data,
            by_id: entries.iter().copied().collect(),
            objects,
            cache: HashMap::new(),
            cached: 0,
            cap: MAX_OBJECT,
        })
    }

    /// The resolved object at `off`: (type 1..=4, content).
    fn object_at(&mut self, off: u64, depth: u32) -> io::Result<Object> {
        if let Some(o) = self.cache.get(&off) {
            return Ok(o.clone());
        }
        if depth > MAX_DELTA_DEPTH {
            return Err(bad("delta chain too deep"));
        }
        let d = self.data;
        let mut pos = usize::try_from(off).map_err(|_| bad("offset"))?;
        let byte = |p: usize| d.get(p).copied().ok_or_else(|| bad("pack truncated"));
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
        if size > self.cap {
            return Err(bad("object larger than the size limit"));
        }
        let obj: Object = match kind {
            1..=4 => (kind, Rc::new(inflate(&d[pos..], size)?)),
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
                let base_off = off.checked_sub(rel).ok_or_else(|| bad("delta offset"))?;
                if base_off >= off {
                    return Err(bad("delta offset"));
                }
                let (bk, base) = self.object_at(base_off, depth + 1)?;
                let delta = inflate(&d[pos..], size)?;
                (bk, Rc::new(apply_delta(&base, &delta, self.cap)?))
            }
            7 => {
                let id: [u8; 20] = d
                    .get(pos..pos + 20)
                    .ok_or_else(|| bad("pack truncated"))?
                    .try_into()
                    .map_err(|_| bad("pack truncated"))?;
                pos += 20;
                let (bk, base) = match self.by_id.get(&id) {
                    Some(&base_off) if base_off != off => self.object_at(base_off, depth + 1)?,
                    _ => {
                        let hex = to_hex(&id);
                        let p = self.objects.join(&hex[..2]).join(&hex[2..]);
                        let (k, content) =
                            read_loose(&p, self.cap).map_err(|_| bad("delta base not found"))?;
                        let k = match k.as_str() {
                            "commit" => 1,
                            "tree" => 2,
                            "blob" => 3,
                            _ => 4,
                        };
                        (k, Rc::new(content))
                    }
                };
                let delta = inflate(&d[pos..], size)?;
                (bk, Rc::new(apply_delta(&base, &delta, self.cap)?))
            }
            _ => return Err(bad("unknown object type")),
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
