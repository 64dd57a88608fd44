//! A faster exact token count for `o200k_base`.
//!
//! tiktoken splits text into pieces with a regular expression, then runs byte-pair encoding on
//! each piece. Both steps dominate a count, and both repeat work on ordinary text:
//!
//! - **Splitting.** o200k's expression is evaluated here by a hand-written matcher over ASCII
//!   bytes, one alternative at a time in the expression's own priority order, with the same
//!   greedy and backtracking results (the `(?!\S)` look-ahead included). The first time the
//!   matcher would have to look at a non-ASCII byte it stops. The text from the start of that
//!   piece to the next *safe boundary* is then counted by the `bpe` crate's regex splitter
//!   ([`bpe_openai`]), so non-ASCII text costs what it cost before.
//! - **Encoding.** A piece's count depends only on its bytes. Short pieces (up to 30 bytes, which
//!   is nearly every word) are remembered in a small direct-mapped table per thread, so a word
//!   seen before costs one hash and one compare. Others are encoded by the `bpe` crate.
//!
//! A safe boundary is a position where the expression must start a new piece whatever comes
//! before it and where a piece ending there ends the same whether the text goes on or stops:
//!
//! - a space after an ASCII character that is not whitespace (no alternative can take a space
//!   after a non-space: spaces only start pieces or sit in all-whitespace pieces);
//! - an ASCII character that is neither whitespace nor `/` after a `\n` (a piece can only carry
//!   on past a newline with `\r`, `\n`, `/` or more whitespace).
//!
//! The counts equal tiktoken-rs's on the LoCoMo corpus and on random Unicode (the crate's tests).

use std::cell::RefCell;

/// Byte classes of the o200k expression, for ASCII. `X` is any byte of a non-ASCII character.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    /// `A-Z`: `\p{Lu}`.
    Upper,
    /// `a-z`: `\p{Ll}`.
    Lower,
    /// `0-9`: `\p{N}`.
    Digit,
    /// `\r` or `\n`.
    Newline,
    /// Space, tab, vertical tab, form feed: `\s` but not `[\r\n]`.
    Space,
    /// Every other ASCII byte (punctuation, symbols, control characters): `[^\s\p{L}\p{N}]`.
    Punct,
    /// A byte of a non-ASCII character: the matcher stops.
    X,
}

const fn class_of(b: u8) -> Class {
    match b {
        b'A'..=b'Z' => Class::Upper,
        b'a'..=b'z' => Class::Lower,
        b'0'..=b'9' => Class::Digit,
        b'\r' | b'\n' => Class::Newline,
        b' ' | b'\t' | 0x0B | 0x0C => Class::Space,
        0x80..=0xFF => Class::X,
        _ => Class::Punct,
    }
}

const CLASSES: [Class; 256] = {
    let mut t = [Class::Punct; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = class_of(i as u8);
        i += 1;
    }
    t
};

/// The matcher met a non-ASCII byte: this stretch goes to the exact regex splitter.
struct NonAscii;

struct Text<'a> {
    b: &'a [u8],
}

impl Text<'_> {
    /// The class at `i`, `None` past the end.
    #[inline]
    fn class(&self, i: usize) -> Option<Class> {
        self.b.get(i).map(|&c| CLASSES[c as usize])
    }

    /// The end of the run of `class` from `i`; a non-ASCII byte right after the run stops the
    /// matcher (it could be a character of the same class).
    #[inline]
    fn run(&self, mut i: usize, class: Class) -> Result<usize, NonAscii> {
        loop {
            match self.class(i) {
                Some(c) if c == class => i += 1,
                Some(Class::X) => return Err(NonAscii),
                _ => return Ok(i),
            }
        }
    }

    /// `[Lu…]*[Ll…]+` or else `[Lu…]+[Ll…]*` from `j` (a letter), then the optional contraction.
    #[inline]
    fn letters(&self, j: usize) -> Result<usize, NonAscii> {
        let k = self.run(j, Class::Upper)?;
        let m = self.run(k, Class::Lower)?;
        // With ASCII letters the two alternatives meet: if lower case follows the capitals the
        // first takes them all, else the second takes the capitals alone. Either way the piece
        // ends at `m` (`m == k` when no lower case follows).
        self.contraction(m)
    }

    /// `(?i:'s|'t|'re|'ve|'m|'ll|'d)?` at `i`.
    #[inline]
    fn contraction(&self, i: usize) -> Result<usize, NonAscii> {
        if self.b.get(i) != Some(&b'\'') {
            return Ok(i);
        }
        let lower = |k: usize| -> Result<Option<u8>, NonAscii> {
            match self.b.get(k) {
                // Case-insensitive matching folds some non-ASCII letters onto ASCII ones
                // (U+017F onto `s`): let the exact splitter decide.
                Some(&c) if c >= 0x80 => Err(NonAscii),
                Some(&c) => Ok(Some(c.to_ascii_lowercase())),
                None => Ok(None),
            }
        };
        Ok(match lower(i + 1)? {
            Some(b's' | b't' | b'm' | b'd') => i + 2,
            Some(b'r') if lower(i + 2)? == Some(b'e') => i + 3,
            Some(b'v') if lower(i + 2)? == Some(b'e') => i + 3,
            Some(b'l') if lower(i + 2)? == Some(b'l') => i + 3,
            _ => i,
        })
    }

    /// ` ?[^\s\p{L}\p{N}]+[\r\n/]*` with the punctuation starting at `j`.
    #[inline]
    fn punctuation(&self, j: usize) -> Result<usize, NonAscii> {
        let mut e = self.run(j, Class::Punct)?;
        while matches!(self.b.get(e), Some(b'\r' | b'\n' | b'/')) {
            e += 1;
        }
        Ok(e)
    }

    /// The end of the piece starting at `i` (`i < len`).
    fn piece(&self, i: usize) -> Result<usize, NonAscii> {
        let Some(c) = self.class(i) else {
            return Ok(i);
        };
        match c {
            Class::X => Err(NonAscii),
            Class::Upper | Class::Lower => self.letters(i),
            Class::Digit => {
                // `\p{N}{1,3}`
                let mut e = i + 1;
                while e < i + 3 {
                    match self.class(e) {
                        Some(Class::Digit) => e += 1,
                        Some(Class::X) => return Err(NonAscii),
                        _ => break,
                    }
                }
                Ok(e)
            }
            Class::Punct => match self.class(i + 1) {
                // `[^\r\n\p{L}\p{N}]?` taking the punctuation as the letters' prefix.
                Some(Class::Upper | Class::Lower) => self.letters(i + 1),
                Some(Class::X) => Err(NonAscii),
                _ => self.punctuation(i),
            },
            Class::Space | Class::Newline => {
                let next = self.class(i + 1);
                if next == Some(Class::X) {
                    return Err(NonAscii);
                }
                if c == Class::Space && matches!(next, Some(Class::Upper | Class::Lower)) {
                    // A space, tab, … is `[^\r\n\p{L}\p{N}]`: the letters' prefix.
                    return self.letters(i + 1);
                }
                if self.b[i] == b' ' && next == Some(Class::Punct) {
                    return self.punctuation(i + 1);
                }
                self.whitespace(i)
            }
        }
    }

    /// `\s*[\r\n]+`, else `\s+(?!\S)`, else `\s+`, at `i` (whitespace).
    fn whitespace(&self, i: usize) -> Result<usize, NonAscii> {
        let mut e = i;
        let mut last_newline = None;
        loop {
            match self.class(e) {
                Some(Class::Space) => e += 1,
                Some(Class::Newline) => {
                    last_newline = Some(e);
                    e += 1;
                }
                // U+00A0 and others are whitespace too.
                Some(Class::X) => return Err(NonAscii),
                _ => break,
            }
        }
        Ok(match last_newline {
            Some(n) => n + 1,
            // The run ends the text: `\s+(?!\S)` takes it all.
            None if e == self.b.len() => e,
            // Followed by a non-space: `\s+(?!\S)` gives the last one back, unless it is alone.
            None if e - i >= 2 => e - 1,
            None => e,
        })
    }

    /// Is `p` a safe boundary (see the module documentation)?
    fn safe(&self, p: usize) -> bool {
        if p >= self.b.len() {
            return true;
        }
        let (before, at) = (self.b[p - 1], self.b[p]);
        let non_space = |c: u8| {
            matches!(
                CLASSES[c as usize],
                Class::Upper | Class::Lower | Class::Digit | Class::Punct
            )
        };
        (at == b' ' && non_space(before)) || (before == b'\n' && at != b'/' && non_space(at))
    }
}

/// The per-thread table of short pieces' counts.
const SLOTS: usize = 8192;
const KEY: usize = 30;

#[derive(Clone, Copy)]
struct Slot {
    len: u8,
    count: u8,
    bytes: [u8; KEY],
}

const EMPTY: Slot = Slot {
    len: 0,
    count: 0,
    bytes: [0; KEY],
};

thread_local! {
    static PIECES: RefCell<Box<[Slot]>> = RefCell::new(vec![EMPTY; SLOTS].into_boxed_slice());
}

/// Empties this thread's table of pieces (for benchmarks of a cold start).
pub fn clear_cache() {
    PIECES.with(|table| table.borrow_mut().fill(EMPTY));
}

#[inline]
fn slot_of(piece: &[u8]) -> usize {
    // FNV-1a: short keys, no allocation.
    let mut h: u32 = 0x811c_9dc5;
    for &b in piece {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    (h as usize ^ (h as usize >> 13)) & (SLOTS - 1)
}

#[inline]
fn piece_count(table: &mut [Slot], piece: &[u8]) -> usize {
    let bpe = &bpe_openai::o200k_base().bpe;
    if piece.len() > KEY {
        return bpe.count(piece);
    }
    let slot = &mut table[slot_of(piece)];
    let len = piece.len();
    if usize::from(slot.len) == len && &slot.bytes[..len] == piece {
        return usize::from(slot.count);
    }
    let count = bpe.count(piece);
    // A piece of at most 30 bytes has at most 30 tokens.
    if let Ok(c) = u8::try_from(count) {
        slot.len = len as u8;
        slot.count = c;
        slot.bytes[..len].copy_from_slice(piece);
    }
    count
}

/// The exact `o200k_base` token count of `text` (what tiktoken's `encode_ordinary` returns).
pub fn count(text: &str) -> usize {
    let t = Text { b: text.as_bytes() };
    let len = t.b.len();
    PIECES.with(|table| {
        let mut table = table.borrow_mut();
        let (mut total, mut i) = (0, 0);
        // Every `i` here starts a piece of the whole text: the matcher only ever stops at the
        // end of one, and the exact splitter hands back at a safe boundary.
        while i < len {
            match t.piece(i) {
                Ok(e) => {
                    total += piece_count(&mut table, &t.b[i..e]);
                    i = e;
                }
                Err(NonAscii) => {
                    let mut q = t.b[i..]
                        .iter()
                        .position(|&c| c >= 0x80)
                        .map_or(len, |x| i + x + 1);
                    while !t.safe(q) {
                        q += 1;
                    }
                    total += bpe_openai::o200k_base().count(&text[i..q]);
                    i = q;
                }
            }
        }
        total
    })
}
