//! Output masking: every occurrence of a secret's value, or of one of its common
//! encodings, is replaced by `[taskcell:NAME]`.
//!
//! A [`Redactor`] is built once per cell from the secrets' values. It derives every
//! pattern (see [`encodings`]) and compiles them into one Aho-Corasick automaton with
//! leftmost-longest semantics, ignoring ASCII case (`%2f` = `%2F`, mixed-case hex).
//! The data is searched in three views (see [`View`]): as it is; base64/hex runs read
//! across their line breaks (every wrapping width, `\n` or `\r\n`: one matcher that
//! skips the breaks, not a pattern per width); and hex dumps (`xxd`, `hexdump -C`)
//! decoded. Each output stream gets its own [`Masker`], which is fed whatever the child
//! wrote, in whatever chunks the reads produced: a match that spans two chunks is
//! caught, because the masker holds back the shortest tail that could still become a
//! match (a possible prefix of a pattern: at most the longest pattern minus one byte,
//! spread over line breaks or dump lines). Apart from the replacements, output is
//! byte-exact; the result equals masking the whole stream at once as long as
//! [`Masker::flush`] is only called when the stream is idle. The leak scan
//! (`scan.rs`) uses the same [`Redactor::hits`].
//!
//! Values and the patterns derived from them live in [`Zeroizing`] buffers, and no
//! `Debug` output or error names anything but the secret's name. (The automaton's own
//! tables, built by the `aho-corasick` crate, are not zeroized when dropped.)

use std::fmt;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, Anchored, Input, MatchKind, StartKind};
use zeroize::Zeroizing;

use newlines::Newlines;

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
    /// The same for the patterns' last 4 bytes (see [`Redactor::may_cross`]).
    suffix4: Box<[u64; 1024]>,
    /// Hashed 4-byte windows of every pattern: a match that crosses a line break
    /// contains one of the three windows around it, so a break whose windows are all
    /// absent needs no look (most breaks in ordinary text).
    quads: Box<[u64]>,
    ac: Option<AhoCorasick>,
    /// Skip table in front of the automaton (None when the shortest pattern is tiny).
    skip: Option<Skip>,
    max_len: usize,
    /// Length of the shortest pattern.
    min_len: usize,
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

/// 32 KiB of shifts, which stay in the first-level cache (a 64 KiB table measured 1–3%
/// slower: more of its loads, each on a lane's critical path, missed).
const SKIP_BITS: u32 = 15;
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
        Self::mix(fold(w, block == 4))
    }

    /// The skip table's key for a window ending at `e`: its last 4 bytes, or 3 when the
    /// table was built on 3-byte blocks.
    #[inline(always)]
    fn word<const BLOCK4: bool>(data: &[u8], e: usize) -> u32 {
        let b = &data[e - 3..=e];
        let w = if BLOCK4 {
            u32::from_le_bytes([b[0], b[1], b[2], b[3]])
        } else {
            u32::from_le_bytes([b[1], b[2], b[3], 0])
        };
        fold(w, BLOCK4)
    }

    /// [`Skip::word`] without the bounds check, for the scan's hot loop (one unaligned
    /// 4-byte load).
    ///
    /// # Safety
    /// `3 <= e < data.len()`.
    #[inline(always)]
    unsafe fn word_unchecked<const BLOCK4: bool>(data: &[u8], e: usize) -> u32 {
        debug_assert!(e >= 3 && e < data.len());
        // SAFETY: the caller guarantees that data[e - 3..=e] is in bounds; the read has
        // no alignment requirement.
        let w = u32::from_le(unsafe { data.as_ptr().add(e - 3).cast::<u32>().read_unaligned() });
        fold(if BLOCK4 { w } else { w >> 8 }, BLOCK4)
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
        // While every lane has a step to take, all of them take one: one test for all
        // lanes, and each step is a load, a hash, a table load and an add.
        while e
            .iter()
            .zip(&end)
            .fold(true, |all, (at, end)| all & (at < end))
        {
            for k in 0..LANES {
                let at = e[k];
                // SAFETY: first <= at < end[k] <= n, and first = from + m - 1 >= 3
                // (m >= 4: the table exists only then), so data[at - 3..=at] is in bounds.
                let sh = table[Self::mix(unsafe { Self::word_unchecked::<BLOCK4>(data, at) })];
                if sh == 0 {
                    lanes[k].push(at + 1 - m);
                    e[k] = at + 1;
                } else {
                    e[k] = at + sh as usize;
                }
            }
        }
        // The lanes' last steps, one lane at a time.
        for k in 0..LANES {
            let mut at = e[k];
            while at < end[k] {
                let sh = table[Self::mix(Self::word::<BLOCK4>(data, at))];
                if sh == 0 {
                    lanes[k].push(at + 1 - m);
                    at += 1;
                } else {
                    at += sh as usize;
                }
            }
        }
        for lane in lanes.iter() {
            out.extend_from_slice(lane);
        }
    }
}

/// Matching ignores ASCII case, so the skip table hashes every window with bit 5 of each
/// byte set: bytes that differ only in case (and a few other pairs, which only costs a
/// candidate now and then) hash alike.
#[inline(always)]
fn fold(w: u32, block4: bool) -> u32 {
    if block4 {
        w | 0x2020_2020
    } else {
        w | 0x0020_2020
    }
}

/// Lanes of [`Skip::candidates`]: 8 measured 5% faster than 4 on text (with the bounds
/// check out of the hot loop; before, 8 lanes spilled registers), 16 spill again.
const LANES: usize = 8;

/// Reusable buffers for [`Redactor::for_each_match`] and [`Redactor::hits`].
#[derive(Default)]
pub(crate) struct MatchScratch {
    skip: SkipScratch,
    /// The bytes of a derived view (a wrapped run without its line breaks, or the bytes
    /// a hex dump shows): secret material, zeroized.
    view: Zeroizing<Vec<u8>>,
    /// For each byte of `view`: where it starts in the data.
    map: Vec<usize>,
    /// Hex dumps: for each byte of `view`, the end of its line in the data (the ASCII
    /// column is masked with the hex).
    ends: Vec<usize>,
}

#[derive(Default)]
struct SkipScratch {
    candidates: Vec<usize>,
    lanes: [Vec<usize>; LANES],
}

/// taskcell's own words about the cell are masked with the same patterns.
impl crate::display::Mask for Redactor {
    fn mask(&self, text: &[u8]) -> Vec<u8> {
        self.mask_all(text)
    }
}

/// Which view of the data a match was found in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum View {
    /// The bytes as they are.
    Plain,
    /// A base64/hex run read across its line breaks (`\n`, `\r\n`): `base64`,
    /// `openssl base64`, PEM, `xxd -p` and the like wrap their output.
    Wrapped,
    /// The bytes a hex dump shows (`xxd`, `hexdump -C`: offsets, hex groups and an ASCII
    /// column), decoded; the match covers the hex and the ASCII columns.
    Dump,
}

/// One match: `data[start..end]` is to be masked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    pub start: usize,
    pub end: usize,
    pub(crate) pattern: usize,
    pub view: View,
}

/// Bytes that make up base64 (standard and URL-safe, with padding) and hex runs: a line
/// break between two of them may be a wrap.
const WRAP: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'-' | b'_');
        i += 1;
    }
    t
};

/// Hex digits, either case.
const HEX: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = (i as u8).is_ascii_hexdigit();
        i += 1;
    }
    t
};

/// Longest line read as a hex dump line (`xxd -c 64` makes lines of about 240 bytes).
const DUMP_LINE_MAX: usize = 512;

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
            for (encoding, mut bytes) in encodings(value) {
                // Matching ignores ASCII case: patterns are kept in lowercase.
                bytes.make_ascii_lowercase();
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
        let min_len = patterns.iter().map(|p| p.bytes.len()).min().unwrap_or(0);
        let mut sorted: Vec<u32> = (0..patterns.len() as u32).collect();
        sorted.sort_by(|&a, &b| patterns[a as usize].bytes.cmp(&patterns[b as usize].bytes));
        let mut first = [false; 256];
        let mut prefix2 = Box::new([0u64; 1024]);
        let mut prefix4 = Box::new([0u64; 1024]);
        let mut suffix4 = Box::new([0u64; 1024]);
        // On the heap directly: a 64 KiB array built on the stack first would overflow
        // the small stacks of the proxy's threads (debug builds).
        let mut quads = vec![0u64; QUAD_WORDS].into_boxed_slice();
        for p in &patterns {
            for w in p.bytes.windows(4) {
                let (i, bits) = quad_slot(w);
                quads[i] |= bits;
            }
            first[p.bytes[0] as usize] = true;
            if p.bytes.len() >= 2 {
                set_bit(&mut prefix2, bigram(&p.bytes));
            }
            if p.bytes.len() >= 4 {
                set_bit(&mut prefix4, quad_hash(&p.bytes));
                set_bit(&mut suffix4, quad_hash(&p.bytes[p.bytes.len() - 4..]));
            }
        }
        let ac = if patterns.is_empty() {
            None
        } else {
            let built = AhoCorasickBuilder::new()
                .match_kind(MatchKind::LeftmostLongest)
                .start_kind(StartKind::Both)
                .ascii_case_insensitive(true)
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
            suffix4,
            ac,
            skip,
            max_len,
            min_len,
            quads,
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
            hits: Vec::new(),
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

    /// The most bytes a [`Masker`] ever holds back: a possible match prefix is at most
    /// the longest pattern - 1 bytes, but spread over line breaks (at most 3 bytes per
    /// character) or over the lines of a hex dump (at most one line per byte) it covers
    /// more of the output.
    pub fn max_hold(&self) -> usize {
        self.max_len.saturating_mul(DUMP_LINE_MAX) + DUMP_LINE_MAX
    }

    /// The secret a hit belongs to (an index into [`Redactor::names`]).
    pub fn secret_of(&self, hit: &Hit) -> usize {
        self.patterns[hit.pattern].secret
    }

    /// How the value appeared, for a report: the encoding, and how it was spread out
    /// (`base64, line-wrapped`, `raw, in a hex dump`).
    pub fn describe(&self, hit: &Hit) -> &'static str {
        let enc = self.patterns[hit.pattern].encoding;
        match hit.view {
            View::Plain => enc,
            View::Wrapped => match enc {
                "base64" => "base64, line-wrapped",
                "base64url" => "base64url, line-wrapped",
                "hex" => "hex, line-wrapped",
                _ => "line-wrapped",
            },
            View::Dump => match enc {
                "raw" | "line" | "trimmed" => "hex dump",
                _ => "hex dump of an encoding",
            },
        }
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
            if self.may_head(data, s) {
                let input = Input::new(data).range(s..).anchored(Anchored::Yes);
                if let Some(m) = ac.find(input) {
                    return Some((m.start(), m.end(), m.pattern().as_usize()));
                }
            }
            e += 1;
        }
    }

    /// Call `f(start, end, pattern)` for each leftmost-longest match in `data` that
    /// starts at or after `from`, in order, until `f` returns false. Same matches as
    /// repeated [`Redactor::find`], but the skip scan runs once, over the whole buffer.
    fn for_each_match(
        &self,
        data: &[u8],
        from: usize,
        scratch: &mut SkipScratch,
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
            if s < p || !self.may_head(data, s) {
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

    /// Every match in `data` that starts at or after `from`, in all three views (see
    /// [`View`]), sorted by start (longest first); matches may overlap (mask their union).
    /// Returns `hold`: with `eof` false, `data[hold..]` may still start a match that more
    /// data would complete, so it must be presented again with what follows; every
    /// returned hit starts before `hold` and is final. With `eof`, `hold` is `data.len()`.
    pub(crate) fn hits(
        &self,
        data: &[u8],
        from: usize,
        eof: bool,
        scratch: &mut MatchScratch,
        out: &mut Vec<Hit>,
    ) -> usize {
        out.clear();
        let n = data.len();
        if self.ac.is_none() || from >= n {
            return n;
        }
        // A match starting at `s` cannot grow past the end of `data` (and no earlier
        // match could overtake it) iff s + max_len <= n.
        let final_limit = if eof {
            usize::MAX
        } else {
            (n + 1).saturating_sub(self.max_len)
        };
        let mut hold = n;
        self.for_each_match(data, from, &mut scratch.skip, |start, end, pattern| {
            if start >= final_limit {
                hold = start;
                return false;
            }
            out.push(Hit {
                start,
                end,
                pattern,
                view: View::Plain,
            });
            true
        });
        if !eof {
            // Before `hold` no match starts that lies wholly inside `data`; hold back from
            // the first position whose suffix is still a proper prefix of some pattern.
            for x in from.max(final_limit)..hold {
                if self.may_start(&data[x..]) {
                    hold = x;
                    break;
                }
            }
        }
        self.views(data, from, eof, scratch, out, &mut hold);
        out.retain(|h| h.start < hold);
        out.sort_unstable_by(|a, b| a.start.cmp(&b.start).then(b.end.cmp(&a.end)));
        if eof {
            n
        } else {
            hold
        }
    }

    /// The wrapped and hex-dump views: one pass over the line breaks of `data[from..]`.
    fn views(
        &self,
        data: &[u8],
        from: usize,
        eof: bool,
        s: &mut MatchScratch,
        out: &mut Vec<Hit>,
        hold: &mut usize,
    ) {
        let n = data.len();
        // Positions before which the wrapped / dump views are done.
        let mut wrap_done = from;
        let mut dump_done = from;
        // The first line (data may start mid-line, e.g. a held tail: a dump is only
        // recognized from its offset column, so that is harmless).
        dump_done = dump_done.max(self.dump_region(data, from, eof, s, out, hold));
        for nl in Newlines::new(data, from) {
            // Most breaks in ordinary output neither join a base64/hex run nor start a
            // dump line: rule them out with one branch, the tests below combined without
            // short-circuits.
            if nl >= from + 2 && nl + 5 <= n {
                let (p1, p2) = (data[nl - 1], data[nl - 2]);
                let q = [data[nl + 1], data[nl + 2], data[nl + 3], data[nl + 4]];
                let joins =
                    (WRAP[p1 as usize] | (p1 == b'\r') & WRAP[p2 as usize]) & WRAP[q[0] as usize];
                let dump = HEX[q[0] as usize]
                    & HEX[q[1] as usize]
                    & HEX[q[2] as usize]
                    & HEX[q[3] as usize];
                if !(joins | dump) {
                    continue;
                }
            }
            if nl >= wrap_done {
                let brk = if nl > from && data[nl - 1] == b'\r' {
                    nl - 1
                } else {
                    nl
                };
                if brk > from
                    && WRAP[data[brk - 1] as usize]
                    && (if nl + 1 < n {
                        WRAP[data[nl + 1] as usize]
                    } else {
                        !eof
                    })
                    && self.may_cross(data, from, brk, nl, eof)
                {
                    wrap_done = self.wrapped_run(data, from, brk, eof, s, out, hold);
                }
            }
            if nl + 1 >= dump_done && nl < n && may_dump(data, nl + 1) {
                dump_done = dump_done.max(self.dump_region(data, nl + 1, eof, s, out, hold));
            }
        }
        // A run the data ends in may go on in what comes next: hold back what could
        // start a match across a break that is still to come (or one the filter above
        // let pass).
        if !eof && wrap_done < n {
            let lowest = from.max(wrap_done).max(n.saturating_sub(3 * self.max_len));
            let mut a = n;
            while a > lowest && matches!(data[a - 1], b'\n' | b'\r') {
                a -= 1;
            }
            if a < n && a > lowest && WRAP[data[a - 1] as usize] {
                // Ends in a break after a run character: the run goes on after it.
                self.open_run(data, lowest, a, s, hold);
            }
        }
    }

    /// Could a match cross the break `data[brk..=nl]` (`\n` or `\r\n`, a run character
    /// on both sides)? The match lies in the joined run that [`Redactor::wrapped_run`]
    /// reads: it starts on this line (a match that starts on an earlier line crosses an
    /// earlier break first, and that break's run covers it) and may go on across later
    /// breaks. Every pattern has at least 4 bytes, so the match contains one of the joined
    /// run's 4-byte windows that span the break (3 + 1, 2 + 2, 1 + 3 bytes); if none of
    /// them is a window of some pattern, no match crosses here. Most breaks in ordinary
    /// text are ruled out without building the run.
    #[inline]
    fn may_cross(&self, data: &[u8], from: usize, brk: usize, nl: usize, eof: bool) -> bool {
        if self.min_len < 4 {
            return true;
        }
        let n = data.len();
        // The common case first, without a loop: 3 run characters on both sides.
        if brk >= from + 3 && nl + 4 <= n {
            let (b, a) = (&data[brk - 3..brk], &data[nl + 1..nl + 4]);
            if WRAP[b[0] as usize]
                & WRAP[b[1] as usize]
                & WRAP[b[2] as usize]
                & WRAP[a[0] as usize]
                & WRAP[a[1] as usize]
                & WRAP[a[2] as usize]
            {
                return self.windows_present(&[b[0], b[1], b[2], a[0], a[1], a[2]], 3, 3);
            }
        }
        // Up to 3 run characters before the break (this line only, not before `from`)
        // and up to 3 after it (across further breaks), joined: w[3 - nb..3 + na].
        let mut w = [0u8; 6];
        let mut nb = 0;
        while nb < 3 && brk > from + nb && WRAP[data[brk - 1 - nb] as usize] {
            w[2 - nb] = data[brk - 1 - nb];
            nb += 1;
        }
        let mut na = 0;
        let mut p = nl + 1;
        while na < 3 {
            if p >= n {
                if !eof {
                    // The run may go on in data still to come.
                    return true;
                }
                break;
            }
            let b = data[p];
            if WRAP[b as usize] {
                w[3 + na] = b;
                na += 1;
                p += 1;
                continue;
            }
            // A further break continues the run when a run character follows it.
            let bl = match b {
                b'\n' => 1,
                b'\r' if p + 1 < n && data[p + 1] == b'\n' => 2,
                b'\r' if p + 1 == n && !eof => return true,
                _ => break,
            };
            if p + bl >= n {
                if !eof {
                    return true;
                }
                break;
            }
            if !WRAP[data[p + bl] as usize] {
                break;
            }
            p += bl;
        }
        self.windows_present(&w, nb, na)
    }

    /// The test of [`Redactor::may_cross`] on the joined characters `w[3 - nb..3 + na]`
    /// around a break (between `w[2]` and `w[3]`). A match with 2 or more characters on
    /// each side of the break contains the window w[1..5], which is then one of a
    /// pattern's 4-byte windows; one with 1 character before it starts with w[2..6] (a
    /// pattern's first 4 bytes); one with 1 character after it ends with w[0..4] (a
    /// pattern's last 4 bytes).
    #[inline(always)]
    fn windows_present(&self, w: &[u8; 6], nb: usize, na: usize) -> bool {
        let lower = |k: usize| {
            let mut q = [w[k], w[k + 1], w[k + 2], w[k + 3]];
            q.make_ascii_lowercase();
            q
        };
        if nb >= 2 && na >= 2 {
            let (i, bits) = quad_slot(&w[1..5]);
            if self.quads[i] & bits == bits {
                return true;
            }
        }
        (na == 3 && get_bit(&self.prefix4, quad_hash(&lower(2))))
            || (nb == 3 && get_bit(&self.suffix4, quad_hash(&lower(0))))
    }

    /// The data ends in a run and a line break (`data[..end]` is the run's last
    /// character, at or after `lowest`): hold back from the first position whose
    /// joined rest could start a pattern that the next line completes.
    fn open_run(
        &self,
        data: &[u8],
        lowest: usize,
        end: usize,
        s: &mut MatchScratch,
        hold: &mut usize,
    ) {
        let mut a = end;
        while a > lowest && (WRAP[data[a - 1] as usize] || matches!(data[a - 1], b'\n' | b'\r')) {
            a -= 1;
        }
        s.view.clear();
        s.map.clear();
        for (k, &b) in data[a..end].iter().enumerate() {
            if WRAP[b as usize] {
                s.view.push(b);
                s.map.push(a + k);
            }
        }
        let j = s.view.len();
        for x in (j + 1).saturating_sub(self.max_len)..j {
            if self.may_start(&s.view[x..]) {
                *hold = (*hold).min(s.map[x]);
                break;
            }
        }
    }

    /// The run of base64/hex characters and line breaks around the break at `brk` (a
    /// `\n` or `\r\n` with a run character before it). Matches that cross a break are
    /// added; returns the end of the run (where the search for breaks resumes).
    #[allow(clippy::too_many_arguments)]
    fn wrapped_run(
        &self,
        data: &[u8],
        from: usize,
        brk: usize,
        eof: bool,
        s: &mut MatchScratch,
        out: &mut Vec<Hit>,
        hold: &mut usize,
    ) -> usize {
        let n = data.len();
        // Only the last max_len - 1 characters before the first break can be part of a
        // match that crosses it.
        let lowest = from.max(brk.saturating_sub(self.max_len.saturating_sub(1)));
        let mut a = brk;
        while a > lowest && WRAP[data[a - 1] as usize] {
            a -= 1;
        }
        // Walk forward: characters, and breaks that have a run character on both sides.
        let view = &mut s.view;
        let map = &mut s.map;
        view.clear();
        map.clear();
        let mut p = a;
        let mut open = false;
        loop {
            // One line's characters, appended at once.
            let q = p;
            while p < n && WRAP[data[p] as usize] {
                p += 1;
            }
            view.extend_from_slice(&data[q..p]);
            map.extend(q..p);
            if p == n {
                open = !eof;
                break;
            }
            let bl = match data[p] {
                b'\n' => 1,
                b'\r' if p + 1 < n && data[p + 1] == b'\n' => 2,
                b'\r' if p + 1 == n => {
                    open = !eof;
                    break;
                }
                _ => break,
            };
            if p + bl == n {
                open = !eof;
                break;
            }
            if !WRAP[data[p + bl] as usize] {
                break;
            }
            p += bl;
        }
        let end = p;
        let j = view.len();
        if j < self.min_len && !open {
            return end;
        }
        let limit = if open {
            (j + 1).saturating_sub(self.max_len)
        } else {
            usize::MAX
        };
        let mut hold_j = j;
        let (view, map) = (&s.view, &s.map);
        self.for_each_match(view, 0, &mut s.skip, |js, je, pattern| {
            if js >= limit {
                hold_j = js;
                return false;
            }
            // Only matches that cross a break: the others are plain matches.
            if map[je - 1] - map[js] != je - 1 - js {
                out.push(Hit {
                    start: map[js],
                    end: map[je - 1] + 1,
                    pattern,
                    view: View::Wrapped,
                });
            }
            true
        });
        if open {
            hold_j = self.first_start(view, limit, hold_j);
            if hold_j < j {
                *hold = (*hold).min(map[hold_j]);
            }
        }
        end
    }

    /// A hex dump starting at line start `ls`: its consecutive dump lines are decoded
    /// and searched. Returns where the region ends (`ls` when the line is no dump line).
    fn dump_region(
        &self,
        data: &[u8],
        ls: usize,
        eof: bool,
        s: &mut MatchScratch,
        out: &mut Vec<Hit>,
        hold: &mut usize,
    ) -> usize {
        let n = data.len();
        if ls >= n || !data[ls].is_ascii_hexdigit() {
            return ls;
        }
        s.view.clear();
        s.map.clear();
        s.ends.clear();
        let mut line = ls;
        // Some(start of a line the data ends in, still being written)
        let mut partial: Option<usize> = None;
        let mut lines = 0usize;
        loop {
            match dump_line(data, line, &mut s.view, &mut s.map, &mut s.ends) {
                DumpLine::Line(next) => {
                    lines += 1;
                    line = next;
                    if line >= n {
                        break;
                    }
                }
                DumpLine::Partial if !eof => {
                    partial = Some(line);
                    break;
                }
                _ => break,
            }
        }
        if lines == 0 && partial.is_none() {
            return ls;
        }
        let open = !eof && line >= n || partial.is_some();
        let d = s.view.len();
        let limit = if open {
            (d + 1).saturating_sub(self.max_len)
        } else {
            usize::MAX
        };
        let mut hold_d = d;
        let (view, map, ends) = (&s.view, &s.map, &s.ends);
        self.for_each_match(view, 0, &mut s.skip, |ds, de, pattern| {
            if ds >= limit {
                hold_d = ds;
                return false;
            }
            out.push(Hit {
                start: map[ds],
                end: ends[de - 1],
                pattern,
                view: View::Dump,
            });
            true
        });
        if open {
            hold_d = self.first_start(view, limit, hold_d);
            if hold_d < d {
                // Again from the start of that byte's line, so it is read as a dump line.
                let at = map[hold_d];
                let start = memchr::memrchr(b'\n', &data[ls..at]).map_or(ls, |k| ls + k + 1);
                *hold = (*hold).min(start);
            }
            if let Some(p) = partial {
                *hold = (*hold).min(p);
            }
        }
        line.min(n)
    }

    /// Could a pattern start at `data[s..]`, which holds at least the skip table's `m`
    /// (>= 4) bytes? Its first 4 bytes (ignoring case) must be some pattern's first 4: a
    /// bit test that spares the automaton most of the skip table's candidates.
    #[inline(always)]
    fn may_head(&self, data: &[u8], s: usize) -> bool {
        let mut head = [data[s], data[s + 1], data[s + 2], data[s + 3]];
        head.make_ascii_lowercase();
        get_bit(&self.prefix4, quad_hash(&head))
    }

    /// The first position in `from..to` of `view` where a pattern may start (`to` if none):
    /// where a held tail begins.
    fn first_start(&self, view: &[u8], from: usize, to: usize) -> usize {
        (from..to)
            .find(|&x| self.may_start(&view[x..]))
            .unwrap_or(to)
    }

    /// Could `s` (shorter than the longest pattern) be the start of some pattern?
    /// (Ignoring ASCII case, as all matching does.) Runs at each of the last positions
    /// of every masked piece: the common case (4 bytes or more, not a pattern's head)
    /// is one inlined bit test.
    #[inline(always)]
    fn may_start(&self, s: &[u8]) -> bool {
        if let [a, b, c, d, ..] = *s {
            let mut head = [a, b, c, d];
            head.make_ascii_lowercase();
            get_bit(&self.prefix4, quad_hash(&head)) && self.is_prefix(s)
        } else {
            self.may_start_short(s)
        }
    }

    /// [`Redactor::may_start`] for fewer than 4 bytes.
    #[cold]
    fn may_start_short(&self, s: &[u8]) -> bool {
        let Some(&b0) = s.first() else {
            return false;
        };
        if !self.first[b0.to_ascii_lowercase() as usize] {
            return false;
        }
        if let [a, b, ..] = *s {
            if !get_bit(
                &self.prefix2,
                bigram(&[a.to_ascii_lowercase(), b.to_ascii_lowercase()]),
            ) {
                return false;
            }
        }
        self.is_prefix(s)
    }

    #[inline(never)]
    fn is_prefix(&self, s: &[u8]) -> bool {
        let pat = |i: u32| self.patterns[i as usize].bytes.as_slice();
        let lower = || s.iter().map(u8::to_ascii_lowercase);
        let at = self
            .sorted
            .partition_point(|&i| pat(i).iter().copied().lt(lower()));
        at < self.sorted.len() && {
            let p = pat(self.sorted[at]);
            p.len() >= s.len() && p.iter().copied().zip(lower()).all(|(a, b)| a == b)
        }
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
    hits: Vec<Hit>,
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
    /// only a tail that could be the start of a match: at most the longest pattern - 1
    /// bytes, more inside a line-wrapped run or a hex dump (see [`Redactor::max_hold`]).
    pub fn push(&mut self, input: &[u8], out: &mut Vec<u8>) {
        if self.r.ac.is_none() {
            out.extend_from_slice(input);
            return;
        }
        let rest = self.join(input, out);
        if !rest.is_empty() {
            self.process(rest, out, false);
        }
    }

    /// Mask a held-back tail together with the start of `input`, in pieces of 4 KiB,
    /// 8 KiB, ... until nothing is held back any more; returns the rest of `input`, to
    /// be masked in place (not copied behind the tail). Cutting a push into pieces does
    /// not change the result (the masker does not depend on how the stream is cut).
    fn join<'i>(&mut self, input: &'i [u8], out: &mut Vec<u8>) -> &'i [u8] {
        let mut rest = input;
        let mut step = 4096usize;
        while !self.tail.is_empty() && !rest.is_empty() {
            let k = rest.len().min(step);
            let mut data = std::mem::take(&mut self.scratch);
            data.clear();
            data.extend_from_slice(&self.tail);
            data.extend_from_slice(&rest[..k]);
            self.process(&data, out, false);
            self.scratch = data;
            rest = &rest[k..];
            // What is held now may lie wholly in this piece of the input (the old tail
            // was emitted): then it is presented again in place, as the start of the
            // rest, instead of being copied behind a tail once more. (Output often ends
            // in a byte that may start a pattern, so otherwise nearly every read was
            // copied whole, piece by piece.)
            let held = self.tail.len();
            if held <= k {
                let at = input.len() - rest.len() - held;
                rest = &input[at..];
                self.tail.clear();
            }
            step = step.saturating_mul(2);
        }
        rest
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
        self.process(&data, out, true);
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

    /// Mask `data` (a held tail followed by new input); at `eof` every match is final
    /// and nothing is held back. Leaves the new held-back tail in `self.tail`.
    fn process(&mut self, data: &[u8], out: &mut Vec<u8>, eof: bool) {
        let mut hits = std::mem::take(&mut self.hits);
        let hold = self.r.hits(data, 0, eof, &mut self.matches, &mut hits);
        self.emit(data, hold, &hits, out);
        self.hits = hits;
    }

    /// Like [`Masker::push`], but without copying what passes unchanged: what is safe
    /// to emit now is the first slice (in `out`) followed by the second (a part of
    /// `input`, most of it for bulk output without matches).
    pub fn push_split<'a>(
        &mut self,
        input: &'a [u8],
        out: &'a mut Vec<u8>,
    ) -> (&'a [u8], &'a [u8]) {
        if self.r.ac.is_none() {
            return (&[], input);
        }
        let rest = self.join(input, out);
        if rest.is_empty() {
            return (out, &[]);
        }
        let mut hits = std::mem::take(&mut self.hits);
        let hold = self.r.hits(rest, 0, false, &mut self.matches, &mut hits);
        let clean = hits.is_empty();
        if clean {
            self.tail.clear();
            self.tail.extend_from_slice(&rest[hold..]);
        } else {
            self.emit(rest, hold, &hits, out);
        }
        self.hits = hits;
        if clean {
            (out, &rest[..hold])
        } else {
            (out, &[])
        }
    }

    /// Append `data[..hold]` with the `hits` replaced to `out`; keep `data[hold..]` (or
    /// what remains after the last hit) as the new held-back tail.
    fn emit(&mut self, data: &[u8], hold: usize, hits: &[Hit], out: &mut Vec<u8>) {
        // Hits may overlap (a plain match inside a dump's): mask their union, counted
        // once, under the first one's name.
        let mut p = 0;
        for h in hits {
            if h.start < p {
                p = p.max(h.end);
                continue;
            }
            out.extend_from_slice(&data[p..h.start]);
            self.replace(h.pattern, out);
            p = h.end;
        }
        let keep = hold.max(p);
        out.extend_from_slice(&data[p..keep]);
        self.tail.clear();
        self.tail.extend_from_slice(&data[keep..]);
    }
}

/// Could a hex dump line start at `ls`? Its offset column is 4 to 16 hex digits followed
/// by `: ` (xxd) or two spaces (hexdump -C); a line the data ends in may still become one.
/// The cheap test in front of [`Redactor::dump_region`], run at every line start.
#[inline(always)]
fn may_dump(data: &[u8], ls: usize) -> bool {
    if let Some(q) = data.get(ls..ls + 4) {
        if !(HEX[q[0] as usize] & HEX[q[1] as usize] & HEX[q[2] as usize] & HEX[q[3] as usize]) {
            return false;
        }
    }
    // A table, not `is_ascii_hexdigit`: its two ranges make a branch per byte that
    // mispredicts on every hex line.
    let lim = data.len().min(ls + 17);
    let h = data[ls..lim]
        .iter()
        .take_while(|&&b| HEX[b as usize])
        .count();
    let p = ls + h;
    if p == data.len() {
        return true;
    }
    if !(4..=16).contains(&h) {
        return false;
    }
    matches!(data[p], b':' | b' ')
}

/// What [`dump_line`] found at a line start.
enum DumpLine {
    /// A complete dump line; the next line starts here.
    Line(usize),
    /// The data ends inside a line that may become a dump line.
    Partial,
    /// Not a dump line.
    No,
}

fn hexval(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        _ => b.wrapping_sub(b'A').wrapping_add(10),
    }
}

/// Parse one hex dump line at `ls`: `xxd` (`OFFSET: 6865 6c6c  ASCII`, groups of any even
/// width) or `hexdump -C` (`OFFSET  68 65 6c 6c  6f ...  |ASCII|`). Its bytes go to
/// `view`, where each starts to `map`, and the end of the line to `ends`.
fn dump_line(
    data: &[u8],
    ls: usize,
    view: &mut Vec<u8>,
    map: &mut Vec<usize>,
    ends: &mut Vec<usize>,
) -> DumpLine {
    let n = data.len();
    let hex = |b: u8| b.is_ascii_hexdigit();
    // The offset column first (most lines fail here, before their end is looked for).
    let h = data[ls..n.min(ls + 17)]
        .iter()
        .take_while(|&&b| hex(b))
        .count();
    if ls + h == n {
        return if h <= 16 {
            DumpLine::Partial
        } else {
            DumpLine::No
        };
    }
    if !(4..=16).contains(&h) {
        return DumpLine::No;
    }
    match &data[ls + h..n.min(ls + h + 2)] {
        b": " | b"  " => {}
        b":" | b" " => return DumpLine::Partial,
        _ => return DumpLine::No,
    }
    let lim = n.min(ls + DUMP_LINE_MAX);
    let (e, next) = match memchr::memchr(b'\n', &data[ls..lim]) {
        Some(k) => (ls + k, ls + k + 1),
        None if lim == n => return DumpLine::Partial,
        None => return DumpLine::No,
    };
    let e = if e > ls && data[e - 1] == b'\r' {
        e - 1
    } else {
        e
    };
    let line = &data[ls..e];
    let mut p = h;
    let mark = view.len();
    let mut push = |k: usize, view: &mut Vec<u8>| {
        view.push((hexval(line[k]) << 4) | hexval(line[k + 1]));
        map.push(ls + k);
        ends.push(e);
    };
    if line[p..].starts_with(b": ") {
        // xxd: groups of an even number of digits, one space apart; two spaces end them.
        p += 2;
        loop {
            let q = p;
            while p < line.len() && hex(line[p]) {
                p += 1;
            }
            if p == q || (p - q) % 2 == 1 {
                break;
            }
            for k in (q..p).step_by(2) {
                push(k, view);
            }
            if p + 1 < line.len() && line[p] == b' ' && hex(line[p + 1]) {
                p += 1;
            } else {
                break;
            }
        }
    } else if line[p..].starts_with(b"  ") {
        // hexdump -C: two digits a byte, one space apart (two in the middle); the ASCII
        // column starts with `|`.
        p += 2;
        while p + 2 <= line.len()
            && hex(line[p])
            && hex(line[p + 1])
            && (p + 2 == line.len() || line[p + 2] == b' ')
        {
            push(p, view);
            p += 2;
            if line[p..].starts_with(b"  ") {
                p += 2;
            } else if line[p..].starts_with(b" ") {
                p += 1;
            } else {
                break;
            }
        }
    } else {
        return DumpLine::No;
    }
    if view.len() == mark {
        return DumpLine::No;
    }
    DumpLine::Line(next)
}

/// The window set: 8192 words (64 KiB), two bits of one word per window (a blocked
/// Bloom filter: about 1 window in 60 absent from every pattern tests present for 512
/// patterns, about half as many as with one bit in a set twice the size).
const QUAD_WORDS: usize = 1 << 13;

/// The word and the two bits of a 4-byte window, ignoring ASCII case (patterns are
/// stored in lowercase).
#[inline(always)]
fn quad_slot(w: &[u8]) -> (usize, u64) {
    let x = u32::from_le_bytes([
        w[0].to_ascii_lowercase(),
        w[1].to_ascii_lowercase(),
        w[2].to_ascii_lowercase(),
        w[3].to_ascii_lowercase(),
    ]);
    // The high bits of a 64-bit product: the word from the top 13, the bits from the
    // next 12 (the low bits of a product depend on the low bits of the window only).
    let h = u64::from(x).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let i = (h >> 51) as usize;
    (i, (1u64 << ((h >> 45) & 63)) | (1u64 << ((h >> 39) & 63)))
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
/// - `hex`: hex (matching ignores case, so upper- and mixed-case hex too).
/// - `percent`: every byte as `%XX`; `percent-reserved`: only bytes outside
///   `A-Za-z0-9-._~` encoded (also with `+` for space, with `/` kept as Python's
///   `quote` does, with `!*'()` kept as `encodeURIComponent` does).
/// - `json`: JSON string escaping (also with `\/`, and with non-ASCII as `\uXXXX`).
/// - `backslash`: C-style escaping, shell-style (backslash before specials), and only
///   backslashes doubled.
/// - `trimmed`: a value that starts or ends in whitespace, without some or all of it
///   (each with all the encodings above).
///
/// Line-wrapped base64/hex and hex dumps are not patterns: [`Redactor::hits`] reads the
/// data across line breaks and decodes dumps, and looks for these patterns there.
pub(crate) fn encodings(value: &[u8]) -> Vec<(&'static str, Zeroizing<Vec<u8>>)> {
    let mut v: Vec<(&'static str, Zeroizing<Vec<u8>>)> = Vec::new();
    encodings_of(value, "raw", value.len().min(MIN_LEN), &mut v);
    for t in trimmed(value) {
        encodings_of(&t, "trimmed", MIN_LEN, &mut v);
    }
    v
}

/// A value that starts or ends in whitespace, as tools print it after stripping some or
/// all of it (`$(cat f)` drops trailing newlines, `echo $(cat f)` all the blanks around):
/// each trailing whitespace byte stripped in turn (up to 8, then all), with and without
/// the leading whitespace. Only variants of at least [`MIN_LEN`] bytes.
fn trimmed(value: &[u8]) -> Vec<Zeroizing<Vec<u8>>> {
    let lead = value.len() - value.trim_ascii_start().len();
    let trail = value.len() - value.trim_ascii_end().len();
    if lead == 0 && trail == 0 || lead == value.len() {
        return Vec::new();
    }
    let mut ends: Vec<usize> = (0..=trail.min(8)).map(|k| value.len() - k).collect();
    ends.push(value.len() - trail);
    let mut out: Vec<Zeroizing<Vec<u8>>> = Vec::new();
    for start in [0, lead] {
        for &end in &ends {
            if (start, end) == (0, value.len()) || end < start + MIN_LEN {
                continue;
            }
            let t = &value[start..end];
            if !out.iter().any(|o| o.as_slice() == t) {
                out.push(Zeroizing::new(t.to_vec()));
            }
        }
    }
    out
}

/// The patterns of one value; `raw` names the value itself.
fn encodings_of(
    value: &[u8],
    raw: &'static str,
    min_derived: usize,
    v: &mut Vec<(&'static str, Zeroizing<Vec<u8>>)>,
) {
    let mut add = |enc: &'static str, b: Zeroizing<Vec<u8>>| {
        if b.len() >= min_derived && !b.is_empty() {
            v.push((enc, b));
        }
    };
    add(raw, Zeroizing::new(value.to_vec()));
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
    // Matching ignores case: one hex pattern covers lower, upper and mixed case.
    add("hex", hex(value, HEX_LOWER));
    add("percent", percent(value, HEX_UPPER, |_| false, false));
    add(
        "percent-reserved",
        percent(value, HEX_UPPER, unreserved, false),
    );
    add(
        "percent-reserved",
        percent(value, HEX_UPPER, unreserved, true),
    );
    // Python's urllib.parse.quote (keeps `/` by default), JavaScript's
    // encodeURIComponent (keeps `!*'()` too).
    add(
        "percent-reserved",
        percent(value, HEX_UPPER, |b| unreserved(b) || b == b'/', false),
    );
    add(
        "percent-reserved",
        percent(
            value,
            HEX_UPPER,
            |b| unreserved(b) || matches!(b, b'!' | b'*' | b'\'' | b'(' | b')'),
            false,
        ),
    );
    add("json", json(value, false));
    add("json", json(value, true));
    if let Some(ascii) = json_ascii(value) {
        add("json", ascii);
    }
    add("backslash", c_escape(value));
    add("backslash", shell_escape(value));
    add("backslash", double_backslashes(value));
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

mod newlines;
#[cfg(test)]
mod tests;
