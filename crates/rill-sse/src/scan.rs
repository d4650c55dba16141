//! Byte searches tuned for SSE's short lines.
//!
//! `memchr` is the fastest search over long haystacks, but each call pays a fixed cost (runtime
//! CPU dispatch, vector setup) that dominates on a few bytes. Where the haystack is usually
//! tiny (a field name, an id, the unterminated end of a chunk), bytes are searched eight at a
//! time in a `u64` (SWAR, no `unsafe`) instead.

use memchr::{memchr2, memrchr2};

/// How many bytes at the end are searched word by word before handing over to `memchr`.
const SHORT: usize = 32;

const LOW7: u64 = 0x7F7F_7F7F_7F7F_7F7F;
const ONES: u64 = 0x0101_0101_0101_0101;

/// A mask with the high bit set in exactly the bytes of `word` that equal `byte`.
#[inline]
fn eq_mask(word: u64, byte: u8) -> u64 {
    let x = word ^ (ONES * u64::from(byte));
    // Exact zero-byte test (no false positives, unlike the shorter borrow-based one, so the
    // highest set bit is as trustworthy as the lowest).
    !(((x & LOW7) + LOW7) | x | LOW7)
}

#[inline]
fn line_end_mask(word: u64) -> u64 {
    eq_mask(word, b'\n') | eq_mask(word, b'\r')
}

/// The 8 bytes at `at` (fewer at the end of `bytes`, padded with zeros, which match nothing
/// searched for here) as a little-endian word.
#[inline]
fn word_at(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    if let Some(full) = bytes.get(at..at + 8) {
        word.copy_from_slice(full);
    } else {
        // The last few bytes, one at a time: a variable-length copy would call `memcpy`.
        for (slot, &byte) in word.iter_mut().zip(&bytes[at.min(bytes.len())..]) {
            *slot = byte;
        }
    }
    u64::from_le_bytes(word)
}

/// The position of the first CR or LF in `bytes`. (`memchr` here: field values are often long
/// enough for its vector loop to win, which measured faster than a word loop.)
#[inline]
pub(crate) fn find_line_end(bytes: &[u8]) -> Option<usize> {
    memchr2(b'\n', b'\r', bytes)
}

/// Whether `bytes` contains a NUL byte (ids are short: a word loop beats a call).
#[inline]
pub(crate) fn has_nul(bytes: &[u8]) -> bool {
    let mut at = 0;
    while at < bytes.len() {
        if eq_mask(word_at(bytes, at), 0) != 0 {
            // Padding bytes past the end are zeros too: only a NUL inside counts.
            let word_end = (at + 8).min(bytes.len());
            return bytes[at..word_end].contains(&0);
        }
        at += 8;
    }
    false
}

/// The position of the last CR or LF in `bytes`.
#[inline]
pub(crate) fn rfind_line_end(bytes: &[u8]) -> Option<usize> {
    // The unterminated tail of a chunk is usually short: look at its last words directly.
    let mut end = bytes.len();
    let stop = end.saturating_sub(SHORT);
    while end > stop {
        let start = end.saturating_sub(8);
        // The word holds bytes[start..end] in its low bytes.
        let mask = line_end_mask(word_at(&bytes[..end], start));
        if mask != 0 {
            return Some(start + 7 - (mask.leading_zeros() / 8) as usize);
        }
        end = start;
    }
    memrchr2(b'\n', b'\r', &bytes[..end])
}

/// The position of the first `:`, CR or LF in `bytes` (the end of a field name), or its length.
#[inline]
pub(crate) fn find_name_end(bytes: &[u8]) -> usize {
    let mut at = 0;
    while at < bytes.len() {
        let word = word_at(bytes, at);
        let mask = line_end_mask(word) | eq_mask(word, b':');
        if mask != 0 {
            return (at + (mask.trailing_zeros() / 8) as usize).min(bytes.len());
        }
        at += 8;
    }
    bytes.len()
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
        let fillers = [b'a', 0x0B, 0x0C, 0x8A, 0x8D, 0x00, 0xFF, 0x01, b';', 0x0E];
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
                            bytes[at] = [b'\n', b'\r', b':'][(at + i) % 3];
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
