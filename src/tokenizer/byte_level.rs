//! GPT-2's reversible byte <-> character alphabet: byte-level BPE vocabularies
//! store every token as a string over 256 printable characters, one per byte.
//!
//! Bytes that are printable and not whitespace (`!`..=`~`, `¡`..=`¬`,
//! `®`..=`ÿ`) stand for themselves; the other 68 bytes (controls, space, DEL,
//! NBSP, soft hyphen) are given the characters U+0100, U+0101, ... in byte
//! order. So a space becomes `Ġ` (U+0120) and a newline `Ċ` (U+010A).

use std::sync::LazyLock;

/// Whether a byte is printed as the character with its own code.
fn is_self_mapped(b: u8) -> bool {
    matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF)
}

/// One past the highest character code in the alphabet (0x100 + 68).
const CODE_END: usize = 0x144;

struct Tables {
    /// byte -> its character.
    to_char: [char; 256],
    /// character code -> byte, for codes below `CODE_END`.
    from_code: [Option<u8>; CODE_END],
}

static TABLES: LazyLock<Tables> = LazyLock::new(|| {
    let mut to_char = ['\0'; 256];
    let mut from_code = [None; CODE_END];
    let mut next_free = 0x100u32;
    for b in 0..=255u8 {
        let code = if is_self_mapped(b) {
            u32::from(b)
        } else {
            let c = next_free;
            next_free += 1;
            c
        };
        // Every code here is below U+0200, so it is a valid scalar value.
        to_char[usize::from(b)] = char::from_u32(code).unwrap_or('\u{FFFD}');
        from_code[code as usize] = Some(b);
    }
    Tables { to_char, from_code }
});

/// The character that stands for `b`.
pub fn byte_to_char(b: u8) -> char {
    TABLES.to_char[usize::from(b)]
}

/// The byte a character stands for, if it is one of the 256.
pub fn char_to_byte(c: char) -> Option<u8> {
    TABLES
        .from_code
        .get(u32::from(c) as usize)
        .copied()
        .flatten()
}

/// Encodes raw text bytes as a byte-level string.
pub fn encode(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| byte_to_char(b)).collect()
}

/// Decodes a byte-level string; `None` if a character is outside the alphabet.
pub fn decode(s: &str) -> Option<Vec<u8>> {
    s.chars().map(char_to_byte).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_characters() {
        // Values fixed by GPT-2's published encoder.py table.
        assert_eq!(byte_to_char(b' '), 'Ġ');
        assert_eq!(byte_to_char(b'\n'), 'Ċ');
        assert_eq!(byte_to_char(b'\t'), 'ĉ');
        assert_eq!(byte_to_char(0), 'Ā');
        assert_eq!(byte_to_char(0x7F), 'ġ');
        assert_eq!(byte_to_char(0xAD), '\u{143}');
        assert_eq!(byte_to_char(b'a'), 'a');
        assert_eq!(byte_to_char(0xE9), 'é');
    }

    #[test]
    fn round_trip_all_bytes() {
        let all: Vec<u8> = (0..=255u8).collect();
        let s = encode(&all);
        assert_eq!(s.chars().count(), 256);
        assert_eq!(decode(&s), Some(all));
        assert_eq!(decode("€"), None);
        assert_eq!(char_to_byte('ń'), None); // U+0144, just past the alphabet
        assert_eq!(char_to_byte('Ń'), Some(0xAD)); // U+0143, the last one handed out
    }
}
