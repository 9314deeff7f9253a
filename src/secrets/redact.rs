//! Output masking: every occurrence of a secret's value, or of one of its common
//! encodings, is replaced by `[taskcell:NAME]`.
//!
//! A [`Redactor`] is built once per cell from the secrets' values. It derives every
//! pattern (see [`encodings`]) and compiles them into one Aho-Corasick automaton with
//! leftmost-longest semantics. Each output stream gets its own [`Masker`], which is fed
//! whatever the child wrote, in whatever chunks the reads produced: a match that spans
//! two chunks is caught, because the masker holds back the shortest tail that could
//! still become a match (never more than the longest pattern minus one byte). Apart
//! from the replacements, output is byte-exact; the result equals masking the whole
//! stream at once as long as [`Masker::flush`] is only called when the stream is idle.
//!
//! Values and the patterns derived from them live in [`Zeroizing`] buffers, and no
//! `Debug` output or error names anything but the secret's name. (The automaton's own
//! tables, built by the `aho-corasick` crate, are not zeroized when dropped.)

use std::fmt;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, Anchored, Input, MatchKind, StartKind};
use zeroize::Zeroizing;

/// Values shorter than this are refused for masking (too many false positives).
pub const MIN_LEN: usize = 6;

/// Why a [`Redactor`] could not be built. Never contains a value.
#[derive(Debug, thiserror::Error)]
pub enum RedactError {
    #[error(
        "secret {name}: its value is shorter than {MIN_LEN} bytes, too short to mask without \
         hiding ordinary output; use a longer value or turn masking off for this secret"
    )]
    TooShort { name: String },
    #[error("building the output masker for {patterns} patterns failed: {reason}")]
    Build { patterns: usize, reason: String },
}

/// One derived pattern: which secret it belongs to and how it was encoded.
pub(crate) struct Pattern {
    pub(crate) bytes: Zeroizing<Vec<u8>>,
    pub(crate) secret: usize,
    pub(crate) encoding: &'static str,
}

/// The compiled patterns of all the secrets of one cell.
pub struct Redactor {
    names: Vec<String>,
    replacements: Vec<Vec<u8>>,
    patterns: Vec<Pattern>,
    /// Pattern indices sorted by pattern bytes, for "is this a prefix of a pattern?".
    sorted: Vec<u32>,
    /// `first[b]`: some pattern starts with byte `b`.
    first: [bool; 256],
    /// Bit sets of the patterns' first 2 bytes and (hashed) first 4 bytes, to rule out
    /// most positions before the binary search of [`Redactor::is_prefix`].
    prefix2: Box<[u64; 1024]>,
    prefix4: Box<[u64; 1024]>,
    ac: Option<AhoCorasick>,
    /// Skip table in front of the automaton (None when the shortest pattern is tiny).
    skip: Option<Skip>,
    max_len: usize,
}

/// A Wu-Manber shift table over hashed `block`-byte windows: for a window of the
/// shortest pattern length `m` ending at `e`, `shift[hash(block ending at e)]` is how far
/// the window can move before a pattern's first `m` bytes could end in it. Only where
/// it is 0 does the automaton run, anchored at `e + 1 - m`. On ordinary output most
/// windows shift by about `m - block + 1` bytes, so the automaton rarely runs.
struct Skip {
    m: usize,
    block: usize,
    shift: Box<[u8; SKIP_SIZE]>,
}

const SKIP_BITS: u32 = 16;
const SKIP_SIZE: usize = 1 << SKIP_BITS;

impl Skip {
    fn new(patterns: &[Pattern]) -> Option<Skip> {
        let min = patterns.iter().map(|p| p.bytes.len()).min()?;
        let m = min.min(255);
        let block = match m {
            0..=3 => return None,
            4..=5 => 3,
            _ => 4,
        };
        let max_shift = (m - block + 1) as u8;
        let mut shift = Box::new([max_shift; SKIP_SIZE]);
        for p in patterns {
            for j in block - 1..m {
                let h = Self::hash(&p.bytes, j, block);
                let s = (m - 1 - j) as u8;
                if s < shift[h] {
                    shift[h] = s;
                }
            }
        }
        Some(Skip { m, block, shift })
    }

    #[inline(always)]
    fn hash(data: &[u8], end: usize, block: usize) -> usize {
        let w = if block == 4 {
            u32::from_le_bytes([data[end - 3], data[end - 2], data[end - 1], data[end]])
        } else {
            u32::from_le_bytes([data[end - 2], data[end - 1], data[end], 0])
        };
        Self::mix(w)
    }

    /// The skip table's key for a window ending at `e`: its last 4 bytes, or 3 when the
    /// table was built on 3-byte blocks.
    #[inline(always)]
    fn word<const BLOCK4: bool>(data: &[u8], e: usize) -> u32 {
        let b = &data[e - 3..=e];
        if BLOCK4 {
            u32::from_le_bytes([b[0], b[1], b[2], b[3]])
        } else {
            u32::from_le_bytes([b[1], b[2], b[3], 0])
        }
    }

    #[inline(always)]
    fn mix(w: u32) -> usize {
        (w.wrapping_mul(0x9E37_79B1) >> (32 - SKIP_BITS)) as usize
    }

    /// Advance the window end `e` until the table says a pattern may end its first `m`
    /// bytes there (returns that `e`), or `e` reaches `n` (returns None).
    #[inline(always)]
    fn next_candidate<const BLOCK4: bool>(&self, data: &[u8], mut e: usize) -> Option<usize> {
        let n = data.len();
        let table: &[u8; SKIP_SIZE] = &self.shift;
        while e < n {
            let sh = table[Self::mix(Self::word::<BLOCK4>(data, e))];
            if sh == 0 {
                return Some(e);
            }
            e += sh as usize;
        }
        None
    }

    /// Every candidate window start at or after `from`, ascending, into `out`. The data
    /// is cut into `LANES` stretches scanned in one interleaved loop: each lane's steps
    /// depend on its previous step (a load, a hash, a table load), so interleaving
    /// independent lanes keeps the CPU busy while each waits.
    fn candidates<const BLOCK4: bool>(
        &self,
        data: &[u8],
        from: usize,
        out: &mut Vec<usize>,
        lanes: &mut [Vec<usize>; LANES],
    ) {
        out.clear();
        let n = data.len();
        let m = self.m;
        let first = from + m - 1;
        if first >= n {
            return;
        }
        let span = n - first;
        if span < 1024 {
            let mut e = first;
            while let Some(c) = self.next_candidate::<BLOCK4>(data, e) {
                out.push(c + 1 - m);
                e = c + 1;
            }
            return;
        }
        let table: &[u8; SKIP_SIZE] = &self.shift;
        let mut e = [0usize; LANES];
        let mut end = [0usize; LANES];
        for k in 0..LANES {
            e[k] = first + span * k / LANES;
            end[k] = first + span * (k + 1) / LANES;
            lanes[k].clear();
        }
        loop {
            let mut active = false;
            for k in 0..LANES {
                if e[k] < end[k] {
                    active = true;
                    let at = e[k];
                    let sh = table[Self::mix(Self::word::<BLOCK4>(data, at))];
                    if sh == 0 {
                        lanes[k].push(at + 1 - m);
                        e[k] = at + 1;
                    } else {
                        e[k] = at + sh as usize;
                    }
                }
            }
            if !active {
                break;
            }
        }
        for lane in lanes.iter() {
            out.extend_from_slice(lane);
        }
    }
}

const LANES: usize = 4;

/// Reusable buffers for [`Redactor::for_each_match`].
#[derive(Default)]
pub(crate) struct MatchScratch {
    candidates: Vec<usize>,
    lanes: [Vec<usize>; LANES],
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redactor")
            .field("secrets", &self.names)
            .field("patterns", &self.patterns.len())
            .finish_non_exhaustive()
    }
}

impl Redactor {
    /// Build the masker for `secrets` (NAME, value). A value shorter than [`MIN_LEN`]
    /// bytes is an error naming the secret.
    pub fn new(secrets: &[(String, &[u8])]) -> Result<Redactor, RedactError> {
        Self::with_options(secrets, false)
    }

    /// Like [`Redactor::new`]; with `allow_short`, short values are masked anyway
    /// (empty values are skipped: there is nothing to mask).
    pub fn with_options(
        secrets: &[(String, &[u8])],
        allow_short: bool,
    ) -> Result<Redactor, RedactError> {
        let mut names = Vec::with_capacity(secrets.len());
        let mut replacements = Vec::with_capacity(secrets.len());
        let mut patterns: Vec<Pattern> = Vec::new();
        for (idx, (name, value)) in secrets.iter().enumerate() {
            if value.is_empty() && allow_short {
                // Nothing to mask, but the name still gets a (zero) count.
                names.push(name.clone());
                replacements.push(format!("[taskcell:{name}]").into_bytes());
                continue;
            }
            if value.len() < MIN_LEN && !allow_short || value.is_empty() {
                return Err(RedactError::TooShort { name: name.clone() });
            }
            names.push(name.clone());
            replacements.push(format!("[taskcell:{name}]").into_bytes());
            for (encoding, bytes) in encodings(value) {
                if !bytes.is_empty() {
                    patterns.push(Pattern {
                        bytes,
                        secret: idx,
                        encoding,
                    });
                }
            }
        }
        // The same bytes registered twice (by one secret's encodings or by two secrets):
        // the first registration wins.
        let mut order: Vec<usize> = (0..patterns.len()).collect();
        order.sort_by(|&a, &b| patterns[a].bytes.cmp(&patterns[b].bytes).then(a.cmp(&b)));
        let mut keep = vec![false; patterns.len()];
        for (i, &at) in order.iter().enumerate() {
            keep[at] = i == 0 || patterns[order[i - 1]].bytes != patterns[at].bytes;
        }
        let mut k = keep.iter();
        patterns.retain(|_| k.next().copied().unwrap_or(false));
        let max_len = patterns.iter().map(|p| p.bytes.len()).max().unwrap_or(0);
        let mut sorted: Vec<u32> = (0..patterns.len() as u32).collect();
        sorted.sort_by(|&a, &b| patterns[a as usize].bytes.cmp(&patterns[b as usize].bytes));
        let mut first = [false; 256];
        let mut prefix2 = Box::new([0u64; 1024]);
        let mut prefix4 = Box::new([0u64; 1024]);
        for p in &patterns {
            first[p.bytes[0] as usize] = true;
            if p.bytes.len() >= 2 {
                set_bit(&mut prefix2, bigram(&p.bytes));
            }
            if p.bytes.len() >= 4 {
                set_bit(&mut prefix4, quad_hash(&p.bytes));
            }
        }
        let ac = if patterns.is_empty() {
            None
        } else {
            let built = AhoCorasickBuilder::new()
                .match_kind(MatchKind::LeftmostLongest)
                .start_kind(StartKind::Both)
                .build(patterns.iter().map(|p| p.bytes.as_slice()))
                .map_err(|e| RedactError::Build {
                    patterns: patterns.len(),
                    reason: e.to_string(),
                })?;
            Some(built)
        };
        let skip = Skip::new(&patterns);
        Ok(Redactor {
            names,
            replacements,
            patterns,
            sorted,
            first,
            prefix2,
            prefix4,
            ac,
            skip,
            max_len,
        })
    }

    /// Replace what each secret's matches become (default `[taskcell:NAME]`); the
    /// proxy's secret firewall writes `[secret NAME removed]`.
    pub fn with_replacement(mut self, f: impl Fn(&str) -> String) -> Redactor {
        self.replacements = self.names.iter().map(|n| f(n).into_bytes()).collect();
        self
    }

    /// A masker for one output stream.
    pub fn stream(&self) -> Masker<'_> {
        Masker {
            r: self,
            tail: Zeroizing::new(Vec::new()),
            scratch: Zeroizing::new(Vec::new()),
            matches: MatchScratch::default(),
            counts: vec![0; self.names.len()],
        }
    }

    /// Number of patterns in the automaton (for audit and benchmarks).
    pub fn patterns_for(&self) -> usize {
        self.patterns.len()
    }

    /// Names of the secrets, in the order given to [`Redactor::new`].
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Length of the longest pattern (0 without patterns).
    pub fn max_pattern_len(&self) -> usize {
        self.max_len
    }

    /// Mask a complete buffer at once (the reference the streaming masker must equal).
    pub fn mask_all(&self, data: &[u8]) -> Vec<u8> {
        let mut m = self.stream();
        let mut out = Vec::with_capacity(data.len());
        m.push(data, &mut out);
        m.flush(&mut out);
        out
    }

    /// Whether there is anything to search for.
    pub(crate) fn is_empty(&self) -> bool {
        self.ac.is_none()
    }

    /// The leftmost-longest match in `data` starting at or after `from`:
    /// (start, end, pattern index).
    #[inline]
    pub(crate) fn find(&self, data: &[u8], from: usize) -> Option<(usize, usize, usize)> {
        let ac = self.ac.as_ref()?;
        let Some(sk) = &self.skip else {
            let m = ac.find(Input::new(data).range(from..))?;
            return Some((m.start(), m.end(), m.pattern().as_usize()));
        };
        let mut e = from + sk.m - 1;
        loop {
            e = if sk.block == 4 {
                sk.next_candidate::<true>(data, e)?
            } else {
                sk.next_candidate::<false>(data, e)?
            };
            let s = e + 1 - sk.m;
            let input = Input::new(data).range(s..).anchored(Anchored::Yes);
            if let Some(m) = ac.find(input) {
                return Some((m.start(), m.end(), m.pattern().as_usize()));
            }
            e += 1;
        }
    }

    /// Call `f(start, end, pattern)` for each leftmost-longest match in `data` that
    /// starts at or after `from`, in order, until `f` returns false. Same matches as
    /// repeated [`Redactor::find`], but the skip scan runs once, over the whole buffer.
    pub(crate) fn for_each_match(
        &self,
        data: &[u8],
        from: usize,
        scratch: &mut MatchScratch,
        mut f: impl FnMut(usize, usize, usize) -> bool,
    ) {
        let Some(ac) = self.ac.as_ref() else {
            return;
        };
        let Some(sk) = &self.skip else {
            let mut p = from;
            while let Some((s, e, pid)) = self.find(data, p) {
                if !f(s, e, pid) {
                    return;
                }
                p = e;
            }
            return;
        };
        if sk.block == 4 {
            sk.candidates::<true>(data, from, &mut scratch.candidates, &mut scratch.lanes);
        } else {
            sk.candidates::<false>(data, from, &mut scratch.candidates, &mut scratch.lanes);
        }
        let mut p = from;
        for &s in &scratch.candidates {
            if s < p {
                continue;
            }
            let input = Input::new(data).range(s..).anchored(Anchored::Yes);
            if let Some(m) = ac.find(input) {
                if !f(m.start(), m.end(), m.pattern().as_usize()) {
                    return;
                }
                p = m.end();
            }
        }
    }

    pub(crate) fn pattern(&self, id: usize) -> &Pattern {
        &self.patterns[id]
    }

    /// Could `s` (shorter than the longest pattern) be the start of some pattern?
    #[inline]
    fn may_start(&self, s: &[u8]) -> bool {
        if !self.first[s[0] as usize] {
            return false;
        }
        if s.len() >= 2 && !get_bit(&self.prefix2, bigram(s)) {
            return false;
        }
        if s.len() >= 4 && !get_bit(&self.prefix4, quad_hash(s)) {
            return false;
        }
        self.is_prefix(s)
    }

    fn is_prefix(&self, s: &[u8]) -> bool {
        let pat = |i: u32| self.patterns[i as usize].bytes.as_slice();
        let at = self.sorted.partition_point(|&i| pat(i) < s);
        at < self.sorted.len() && pat(self.sorted[at]).starts_with(s)
    }
}

/// Masks one output stream. Feed it with [`Masker::push`]; call [`Masker::flush`] when
/// the stream has been idle for a short while or has ended.
pub struct Masker<'a> {
    r: &'a Redactor,
    /// Held-back bytes: a suffix of what was pushed that could start a match.
    tail: Zeroizing<Vec<u8>>,
    scratch: Zeroizing<Vec<u8>>,
    matches: MatchScratch,
    counts: Vec<u64>,
}

impl fmt::Debug for Masker<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Masker")
            .field("held_back", &self.tail.len())
            .field("counts", &self.counts)
            .finish_non_exhaustive()
    }
}

impl Masker<'_> {
    /// Feed `input`; append to `out` everything that is safe to emit now. Holds back
    /// only a tail that could be the start of a match (at most longest pattern - 1 bytes).
    pub fn push(&mut self, input: &[u8], out: &mut Vec<u8>) {
        if self.r.ac.is_none() {
            out.extend_from_slice(input);
            return;
        }
        if self.tail.is_empty() {
            self.process(input, 0, out, false);
        } else if input.len() < self.r.max_len {
            // Short input: mask tail + input together.
            let mut data = std::mem::take(&mut self.scratch);
            data.clear();
            data.extend_from_slice(&self.tail);
            data.extend_from_slice(input);
            self.process(&data, 0, out, false);
            self.scratch = data;
        } else {
            // Only the seam (tail + the next max_len bytes) is copied: every match that
            // starts in the tail ends inside it, and is final there.
            let t = self.tail.len();
            let mut seam = std::mem::take(&mut self.scratch);
            seam.clear();
            seam.extend_from_slice(&self.tail);
            seam.extend_from_slice(&input[..self.r.max_len]);
            let mut p = 0;
            while let Some((start, end, pid)) = self.r.find(&seam, p) {
                if start >= t {
                    break;
                }
                out.extend_from_slice(&seam[p..start]);
                self.replace(pid, out);
                p = end;
            }
            if p < t {
                out.extend_from_slice(&seam[p..t]);
            }
            self.scratch = seam;
            self.process(input, p.saturating_sub(t), out, false);
        }
    }

    #[inline]
    fn replace(&mut self, pid: usize, out: &mut Vec<u8>) {
        let secret = self.r.patterns[pid].secret;
        out.extend_from_slice(&self.r.replacements[secret]);
        self.counts[secret] += 1;
    }

    /// Emit the held-back tail (masking any match inside it). A match spanning the
    /// flush point is not caught, so call this only when the stream is idle or ended.
    pub fn flush(&mut self, out: &mut Vec<u8>) {
        if self.tail.is_empty() {
            return;
        }
        let data = std::mem::take(&mut self.tail);
        self.process(&data, 0, out, true);
    }

    /// Bytes currently held back.
    pub fn pending(&self) -> usize {
        self.tail.len()
    }

    /// Masked occurrences per secret name (every secret listed, zero included).
    pub fn counts(&self) -> Vec<(String, u64)> {
        self.r
            .names
            .iter()
            .cloned()
            .zip(self.counts.iter().copied())
            .collect()
    }

    /// Mask `data` from `p` on (what came before, including any held tail, is dealt
    /// with); at `eof` every match is final and nothing is held back. Leaves the new
    /// held-back tail in `self.tail`.
    fn process(&mut self, data: &[u8], mut p: usize, out: &mut Vec<u8>, eof: bool) {
        let r = self.r;
        if r.is_empty() {
            out.extend_from_slice(data);
            return;
        }
        let n = data.len();
        // A match starting at `s` cannot grow past the end of `data` (and no earlier
        // match could overtake it) iff s + max_len <= n.
        let final_limit = if eof {
            usize::MAX
        } else {
            (n + 1).saturating_sub(r.max_len)
        };
        let mut hold = n;
        let mut scratch = std::mem::take(&mut self.matches);
        r.for_each_match(data, p, &mut scratch, |start, end, pid| {
            if start >= final_limit {
                hold = start;
                return false;
            }
            out.extend_from_slice(&data[p..start]);
            let secret = r.patterns[pid].secret;
            out.extend_from_slice(&r.replacements[secret]);
            self.counts[secret] += 1;
            p = end;
            true
        });
        self.matches = scratch;
        if !eof {
            // Before `hold` no match starts that lies wholly inside `data`; hold back from
            // the first position whose suffix is still a proper prefix of some pattern.
            for x in p.max(final_limit)..hold {
                if r.may_start(&data[x..]) {
                    hold = x;
                    break;
                }
            }
        } else {
            hold = n;
        }
        out.extend_from_slice(&data[p..hold]);
        self.tail.clear();
        self.tail.extend_from_slice(&data[hold..]);
    }
}

#[inline(always)]
fn bigram(s: &[u8]) -> usize {
    (usize::from(s[0]) << 8) | usize::from(s[1])
}

#[inline(always)]
fn quad_hash(s: &[u8]) -> usize {
    let w = u32::from_le_bytes([s[0], s[1], s[2], s[3]]);
    (w.wrapping_mul(0x85EB_CA6B) >> 16) as usize
}

#[inline(always)]
fn set_bit(set: &mut [u64; 1024], i: usize) {
    set[(i >> 6) & 1023] |= 1 << (i & 63);
}

#[inline(always)]
fn get_bit(set: &[u64; 1024], i: usize) -> bool {
    set[(i >> 6) & 1023] & (1 << (i & 63)) != 0
}

// ---------------------------------------------------------------------------------
// Encodings

const B64_STD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const B64_URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
const HEX_LOWER: &[u8; 16] = b"0123456789abcdef";
const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// Every pattern masked for `value`, with the name of its encoding. May contain
/// duplicates (e.g. hex of a value that is the same in JSON); the caller dedupes.
///
/// - `raw`: the value itself; `line`: for a multi-line value, each line of at least
///   [`MIN_LEN`] bytes (catches a pty's `\r\n` and line-by-line printing).
/// - `base64`, `base64url`: the value at each of the three byte offsets (mod 3) inside a
///   longer base64 stream; only the characters that depend on the value's bits alone.
/// - `hex`, `HEX`: lower- and uppercase hex.
/// - `percent`: every byte as `%XX` (upper and lower hex); `percent-reserved`: only
///   bytes outside `A-Za-z0-9-._~` encoded (upper and lower hex, and `+` for space).
/// - `json`: JSON string escaping (also with `\/`, and with non-ASCII as `\uXXXX`).
/// - `backslash`: C-style escaping, shell-style (backslash before specials), and only
///   backslashes doubled.
pub(crate) fn encodings(value: &[u8]) -> Vec<(&'static str, Zeroizing<Vec<u8>>)> {
    let mut v: Vec<(&'static str, Zeroizing<Vec<u8>>)> = Vec::new();
    let raw = Zeroizing::new(value.to_vec());
    let min_derived = value.len().min(MIN_LEN);
    let mut add = |enc: &'static str, b: Zeroizing<Vec<u8>>| {
        if b.len() >= min_derived && !b.is_empty() {
            v.push((enc, b));
        }
    };
    add("raw", raw);
    if value.contains(&b'\n') {
        for line in value.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.len() >= MIN_LEN {
                add("line", Zeroizing::new(line.to_vec()));
            }
        }
    }
    for align in 0..3 {
        add("base64", base64_inner(value, B64_STD, align));
        add("base64url", base64_inner(value, B64_URL, align));
    }
    add("hex", hex(value, HEX_LOWER));
    add("HEX", hex(value, HEX_UPPER));
    add("percent", percent(value, HEX_UPPER, |_| false, false));
    add("percent", percent(value, HEX_LOWER, |_| false, false));
    add(
        "percent-reserved",
        percent(value, HEX_UPPER, unreserved, false),
    );
    add(
        "percent-reserved",
        percent(value, HEX_LOWER, unreserved, false),
    );
    add(
        "percent-reserved",
        percent(value, HEX_UPPER, unreserved, true),
    );
    add("json", json(value, false));
    add("json", json(value, true));
    if let Some(ascii) = json_ascii(value) {
        add("json", ascii);
    }
    add("backslash", c_escape(value));
    add("backslash", shell_escape(value));
    add("backslash", double_backslashes(value));
    v
}

/// The characters of the base64 encoding of `value` placed at byte offset `align`
/// (0..3) of a 3-byte group that depend only on the value's own bits.
fn base64_inner(value: &[u8], alphabet: &[u8; 64], align: usize) -> Zeroizing<Vec<u8>> {
    let mut buf = Zeroizing::new(vec![0u8; align]);
    buf.extend_from_slice(value);
    while !buf.len().is_multiple_of(3) {
        buf.push(0);
    }
    let mut chars = Zeroizing::new(Vec::with_capacity(buf.len() / 3 * 4));
    for g in buf.chunks_exact(3) {
        let n = (u32::from(g[0]) << 16) | (u32::from(g[1]) << 8) | u32::from(g[2]);
        for shift in [18, 12, 6, 0] {
            chars.push(alphabet[((n >> shift) & 63) as usize]);
        }
    }
    // Char j covers bits [6j, 6j+6); the value covers bits [8*align, 8*(align+len)).
    let start = (8 * align).div_ceil(6);
    let end = (8 * (align + value.len())) / 6;
    if end <= start {
        return Zeroizing::new(Vec::new());
    }
    Zeroizing::new(chars[start..end].to_vec())
}

fn hex(value: &[u8], digits: &[u8; 16]) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(value.len() * 2));
    for &b in value {
        out.push(digits[(b >> 4) as usize]);
        out.push(digits[(b & 15) as usize]);
    }
    out
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn percent(
    value: &[u8],
    digits: &[u8; 16],
    keep: impl Fn(u8) -> bool,
    plus_for_space: bool,
) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(value.len() * 3));
    for &b in value {
        if keep(b) {
            out.push(b);
        } else if plus_for_space && b == b' ' {
            out.push(b'+');
        } else {
            out.push(b'%');
            out.push(digits[(b >> 4) as usize]);
            out.push(digits[(b & 15) as usize]);
        }
    }
    out
}

/// JSON string escaping as serde_json / JSON.stringify do it (`slash`: also `\/`).
fn json(value: &[u8], slash: bool) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(value.len() + 8));
    for &b in value {
        json_byte(&mut out, b, slash);
    }
    out
}

fn json_byte(out: &mut Vec<u8>, b: u8, slash: bool) {
    match b {
        b'"' => out.extend_from_slice(b"\\\""),
        b'\\' => out.extend_from_slice(b"\\\\"),
        b'/' if slash => out.extend_from_slice(b"\\/"),
        b'\n' => out.extend_from_slice(b"\\n"),
        b'\r' => out.extend_from_slice(b"\\r"),
        b'\t' => out.extend_from_slice(b"\\t"),
        0x08 => out.extend_from_slice(b"\\b"),
        0x0c => out.extend_from_slice(b"\\f"),
        0..=0x1f => {
            out.extend_from_slice(b"\\u00");
            out.push(HEX_LOWER[(b >> 4) as usize]);
            out.push(HEX_LOWER[(b & 15) as usize]);
        }
        _ => out.push(b),
    }
}

/// JSON with every non-ASCII character as `\uXXXX` (Python's `ensure_ascii`); None when
/// the value is not UTF-8 or is all ASCII (then it equals [`json`]).
fn json_ascii(value: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let s = std::str::from_utf8(value).ok()?;
    if s.is_ascii() {
        return None;
    }
    let mut out = Zeroizing::new(Vec::with_capacity(value.len() * 2));
    for c in s.chars() {
        if c.is_ascii() {
            json_byte(&mut out, c as u8, false);
        } else {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.extend_from_slice(b"\\u");
                for shift in [12, 8, 4, 0] {
                    out.push(HEX_LOWER[((*u >> shift) & 15) as usize]);
                }
            }
        }
    }
    Some(out)
}

/// C-style string escaping: `\\ \" \' \n \r \t`, other non-printable bytes as `\xNN`.
fn c_escape(value: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(value.len() + 8));
    for &b in value {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'"' => out.extend_from_slice(b"\\\""),
            b'\'' => out.extend_from_slice(b"\\'"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x20..=0x7e => out.push(b),
            _ => {
                out.extend_from_slice(b"\\x");
                out.push(HEX_LOWER[(b >> 4) as usize]);
                out.push(HEX_LOWER[(b & 15) as usize]);
            }
        }
    }
    out
}

/// Shell-style: a backslash before every printable ASCII byte a shell treats specially.
fn shell_escape(value: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(value.len() + 8));
    for &b in value {
        let plain = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'_' | b'-' | b'.' | b'/' | b',' | b':' | b'=' | b'@' | b'+' | b'%'
            )
            || !(0x20..=0x7e).contains(&b);
        if !plain {
            out.push(b'\\');
        }
        out.push(b);
    }
    out
}

fn double_backslashes(value: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(value.len() + 8));
    for &b in value {
        if b == b'\\' {
            out.push(b'\\');
        }
        out.push(b);
    }
    out
}

#[cfg(test)]
mod tests;
