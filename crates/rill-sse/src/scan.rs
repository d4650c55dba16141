//! Byte searches tuned for SSE's short lines.
//!
//! `memchr` is the fastest search over long haystacks, but each call pays a fixed cost (runtime
//! CPU dispatch, vector setup, about 60-80 instructions) that dominates on the few dozen bytes of
//! a typical field value. So the first bytes are searched eight at a time in a `u64` (SWAR, no
//! `unsafe`), and `memchr` takes over only for long haystacks. Words are read with fixed-size
//! copies, and the last few bytes of a haystack by re-reading its last full word (never a
//! variable-length copy, which would be a `memcpy` call).

use memchr::{memchr2, memrchr2};

/// How many bytes are searched word by word before handing over to `memchr`.
const SHORT: usize = 64;

const LOW7: u64 = 0x7F7F_7F7F_7F7F_7F7F;
const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// A mask with the high bit set in exactly the bytes of `word` that equal `byte`.
#[inline]
fn eq_mask(word: u64, byte: u8) -> u64 {
    let x = word ^ (ONES * u64::from(byte));
    // Exact zero-byte test (no false positives, unlike the shorter borrow-based one, so the
    // highest set bit is as trustworthy as the lowest).
    !(((x & LOW7) + LOW7) | x | LOW7)
}

/// A mask with the high bit set in exactly the CR and LF bytes of `word`.
#[inline]
fn line_end_mask(word: u64) -> u64 {
    // A cheap filter first: CR and LF are below 0x0E, and text rarely has such bytes, so most
    // words are done after four operations (the borrow-based test may flag extra bytes, but
    // never misses one).
    if word.wrapping_sub(ONES * 0x0E) & !word & HIGH == 0 {
        return 0;
    }
    eq_mask(word, b'\n') | eq_mask(word, b'\r')
}

/// The 8 bytes at `at` as a little-endian word; `at + 8` must be within `bytes`.
#[inline]
pub(crate) fn load(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

/// A mask with the high bit set in every byte of `word` below 0x0E (so every CR and LF), and
/// maybe in a 0x0E byte right above one (the borrow of the subtraction): a filter, exact at its
/// lowest set bit only, whose flagged bytes the caller checks one by one (in text, few are).
#[inline]
pub(crate) fn control_bytes(word: u64) -> u64 {
    word.wrapping_sub(ONES * 0x0E) & !word & HIGH
}

/// [`control_bytes`] for fewer than 8 bytes (the zero bytes above them are not flagged).
#[inline(never)]
pub(crate) fn short_control_bytes(bytes: &[u8]) -> u64 {
    let mut mask = 0;
    for (i, &byte) in bytes.iter().enumerate().take(8) {
        if byte < 0x0E {
            mask |= 0x80 << (8 * i);
        }
    }
    mask
}

/// The position of the first CR or LF in `bytes`. Always inlined: it runs once per line, and a
/// call costs more than the search on a short line.
#[inline(always)]
pub(crate) fn find_line_end(bytes: &[u8]) -> Option<usize> {
    let len = bytes.len();
    let mut at = 0;
    while at + 8 <= len {
        let mask = line_end_mask(load(bytes, at));
        if mask != 0 {
            return Some(at + (mask.trailing_zeros() / 8) as usize);
        }
        at += 8;
        if at >= SHORT {
            return memchr2(b'\n', b'\r', &bytes[at..]).map(|offset| at + offset);
        }
    }
    if at == len {
        return None;
    }
    if len >= 8 {
        // The last word again, without the bytes already searched (shifted out: the zeros
        // shifted in match neither CR nor LF).
        let seen = 8 - (len - at);
        let mask = line_end_mask(load(bytes, len - 8) >> (8 * seen));
        return (mask != 0).then(|| at + (mask.trailing_zeros() / 8) as usize);
    }
    bytes[at..]
        .iter()
        .position(|&b| b == b'\n' || b == b'\r')
        .map(|offset| at + offset)
}

/// The position of the last CR or LF in `bytes`.
#[inline]
pub(crate) fn rfind_line_end(bytes: &[u8]) -> Option<usize> {
    // The unterminated tail of a chunk is usually short: look at its last words directly.
    let mut end = bytes.len();
    let stop = end.saturating_sub(SHORT);
    while end >= 8 && end > stop {
        // The word holds bytes[end - 8..end].
        let mask = line_end_mask(load(bytes, end - 8));
        if mask != 0 {
            return Some(end - 1 - (mask.leading_zeros() / 8) as usize);
        }
        end -= 8;
    }
    if end < 8 {
        return bytes[..end].iter().rposition(|&b| b == b'\n' || b == b'\r');
    }
    memrchr2(b'\n', b'\r', &bytes[..end])
}

/// Whether `bytes` contains a NUL byte (ids are short: a word loop beats a call).
#[inline]
pub(crate) fn has_nul(bytes: &[u8]) -> bool {
    let len = bytes.len();
    if len < 8 {
        return bytes.contains(&0);
    }
    let mut at = 0;
    while at + 8 <= len {
        if eq_mask(load(bytes, at), 0) != 0 {
            return true;
        }
        at += 8;
    }
    // The last word overlaps bytes already seen, which is harmless for a yes/no answer.
    at < len && eq_mask(load(bytes, len - 8), 0) != 0
}

/// The position of the first `:`, CR or LF in `bytes` (the end of a field name), or its length.
#[inline]
pub(crate) fn find_name_end(bytes: &[u8]) -> usize {
    let len = bytes.len();
    let name_end = |word: u64| line_end_mask(word) | eq_mask(word, b':');
    let mut at = 0;
    while at + 8 <= len {
        let mask = name_end(load(bytes, at));
        if mask != 0 {
            return at + (mask.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    if at < len && len >= 8 {
        let seen = 8 - (len - at);
        let mask = name_end(load(bytes, len - 8) >> (8 * seen));
        if mask != 0 {
            return at + (mask.trailing_zeros() / 8) as usize;
        }
        return len;
    }
    bytes[at..]
        .iter()
        .position(|&b| b == b'\n' || b == b'\r' || b == b':')
        .map_or(len, |offset| at + offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Compares the word-wise searches with plain ones on inputs around every word boundary,
    /// with bytes one bit away from the searched ones nearby.
    #[test]
    fn finds_the_same_as_a_plain_search() {
        let is_end = |c: &u8| *c == b'\n' || *c == b'\r';
        let is_name_end = |c: &u8| *c == b'\n' || *c == b'\r' || *c == b':';
        let fillers = [
            b'a', 0x0B, 0x0C, 0x8A, 0x8D, 0x00, 0xFF, 0x01, b';', 0x0E, 0x09,
        ];
        for filler in fillers {
            for len in 0..150 {
                for (first, second) in [
                    (None, None),
                    (Some(0), None),
                    (Some(len / 3), Some(len / 2)),
                ]
                .into_iter()
                .chain(
                    (0..len)
                        .step_by(7)
                        .map(|i| (Some(i), Some((i + 9).min(len)))),
                ) {
                    let mut bytes = vec![filler; len];
                    for (i, at) in [first, second].into_iter().enumerate() {
                        if let Some(at) = at.filter(|&at| at < len) {
                            bytes[at] = [b'\n', b'\r', b':', 0][(at + i) % 4];
                        }
                    }
                    assert_eq!(
                        find_line_end(&bytes),
                        bytes.iter().position(is_end),
                        "{bytes:?}"
                    );
                    assert_eq!(
                        rfind_line_end(&bytes),
                        bytes.iter().rposition(is_end),
                        "{bytes:?}"
                    );
                    assert_eq!(has_nul(&bytes), bytes.contains(&0), "{bytes:?}");
                    let mut each = Vec::new();
                    let mut at = 0;
                    while at < len {
                        let (word_at, mut mask) = if at + 8 <= len {
                            (at, control_bytes(load(&bytes, at)))
                        } else {
                            (at, short_control_bytes(&bytes[at..]))
                        };
                        while mask != 0 {
                            let found = word_at + (mask.trailing_zeros() / 8) as usize;
                            if is_end(&bytes[found]) {
                                each.push(found);
                            }
                            mask &= mask - 1;
                        }
                        at += 8;
                    }
                    let plain: Vec<usize> = (0..len).filter(|&i| is_end(&bytes[i])).collect();
                    assert_eq!(each, plain, "{bytes:?}");
                    assert_eq!(
                        find_name_end(&bytes),
                        bytes.iter().position(is_name_end).unwrap_or(len),
                        "{bytes:?}"
                    );
                }
            }
        }
    }
}
