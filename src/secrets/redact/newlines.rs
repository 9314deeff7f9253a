//! The line breaks (`\n`) of a buffer, found 128 bytes at a time: a bit mask of the
//! block's `\n` bytes (64 at a time), then its set bits in order. On text with short lines this costs
//! a fraction of one `memchr` call per line (each call pays its setup again), and the
//! masker's views visit every line break.

/// The positions of `\n` in `data[from..]`, ascending.
pub(super) struct Newlines<'a> {
    data: &'a [u8],
    /// Start of the block `mask` describes.
    base: usize,
    /// Bit k: `data[base + k]` is a `\n` not yet returned.
    mask: u128,
}

impl<'a> Newlines<'a> {
    pub(super) fn new(data: &'a [u8], from: usize) -> Newlines<'a> {
        let from = from.min(data.len());
        Newlines {
            data,
            base: from,
            mask: block_mask(&data[from..]),
        }
    }
}

impl Iterator for Newlines<'_> {
    type Item = usize;

    #[inline]
    fn next(&mut self) -> Option<usize> {
        while self.mask == 0 {
            self.base += 128;
            if self.base >= self.data.len() {
                self.base = self.data.len();
                return None;
            }
            self.mask = block_mask(&self.data[self.base..]);
        }
        let k = self.mask.trailing_zeros() as usize;
        self.mask &= self.mask - 1;
        Some(self.base + k)
    }
}

/// The `\n` mask of the first 128 bytes of `data` (fewer at its end). Two 64-byte
/// blocks at once: on short lines a block without a break is common, and each is a
/// mispredicted branch of the iterator.
#[inline(always)]
fn block_mask(data: &[u8]) -> u128 {
    match data.first_chunk::<128>() {
        Some(block) => {
            let (lo, hi) = block.split_at(64);
            let lo = lo.first_chunk::<64>().map_or(0, mask64);
            let hi = hi.first_chunk::<64>().map_or(0, mask64);
            u128::from(lo) | u128::from(hi) << 64
        }
        None => data
            .iter()
            .enumerate()
            .fold(0, |m, (k, &b)| m | (u128::from(b == b'\n') << k)),
    }
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn mask64(block: &[u8; 64]) -> u64 {
    use std::arch::x86_64::{_mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_set1_epi8};
    let mut m = 0u64;
    for (k, q) in block.chunks_exact(16).enumerate() {
        // SAFETY: SSE2 is part of the x86_64 baseline (every x86_64 CPU has it, and the
        // target enables it), so these intrinsics may run without a runtime check. `q`
        // is 16 readable bytes (a chunk of `block`), and `_mm_loadu_si128` reads exactly
        // 16 bytes from its pointer with no alignment requirement.
        let bits = unsafe {
            let v = _mm_loadu_si128(q.as_ptr().cast());
            _mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8(b'\n' as i8)))
        };
        m |= u64::from(bits as u32 & 0xffff) << (16 * k);
    }
    m
}

#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn mask64(block: &[u8; 64]) -> u64 {
    mask64_portable(block)
}

/// Elsewhere: 8 bytes at a time; the lowest set high bit of `(x - 0x01..) & !x & 0x80..`
/// marks the first zero byte of `x` exactly, the bits above it may be false, so only
/// the lowest one is taken, and the word is tested again past it.
#[cfg_attr(all(target_arch = "x86_64", not(test)), allow(dead_code))]
#[inline(always)]
fn mask64_portable(block: &[u8; 64]) -> u64 {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let mut m = 0u64;
    for (k, q) in block.chunks_exact(8).enumerate() {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(q);
        let mut x = u64::from_le_bytes(bytes) ^ (LO * u64::from(b'\n'));
        loop {
            let z = x.wrapping_sub(LO) & !x & HI;
            if z == 0 {
                break;
            }
            let at = z.trailing_zeros() / 8;
            m |= 1 << (8 * k as u32 + at);
            // Make that byte non-zero and look again.
            x |= 0xff << (8 * at);
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(data: &[u8], from: usize) -> Vec<usize> {
        (from..data.len()).filter(|&i| data[i] == b'\n').collect()
    }

    #[test]
    fn every_line_break_is_found_once_in_order_from_any_start() {
        // Breaks at block edges, runs of breaks, bytes that differ from `\n` by one bit
        // (0x0b, 0x8a, 0x09) and 0x00/0xff next to them.
        let mut data = Vec::new();
        for i in 0..700usize {
            data.push(match i % 67 {
                0 | 1 | 63 | 64 => b'\n',
                5 => 0x0b,
                6 => 0x8a,
                7 => 0x09,
                8 => 0x00,
                9 => 0xff,
                _ if i % 13 == 0 => b'\n',
                _ => b'a' + (i % 26) as u8,
            });
        }
        for len in [0, 1, 63, 64, 65, 127, 128, 129, 255, 256, 257, 700] {
            for from in [0, 1, 2, 31, 63, 64, 65, 100, 127, 128, 129, 699, 700] {
                let d = &data[..len];
                let got: Vec<usize> = Newlines::new(d, from).collect();
                assert_eq!(got, reference(d, from.min(len)), "len {len} from {from}");
            }
        }
    }

    #[test]
    fn the_block_mask_marks_exactly_the_line_breaks() {
        for at in 0..64 {
            let mut block = [b'\n' ^ 0x80; 64];
            block[at] = b'\n';
            assert_eq!(mask64(&block), 1 << at);
            assert_eq!(mask64_portable(&block), 1 << at);
            let mut block = [b'\n'; 64];
            block[at] = 0;
            assert_eq!(mask64(&block), !(1u64 << at));
            assert_eq!(mask64_portable(&block), !(1u64 << at));
        }
    }
}
