//! Incremental detokenizing for streaming output.

use super::Tokenizer;

/// Turns ids into text one at a time. Bytes that might still start a valid
/// multi-byte character are held back until the next token completes it (or
/// proves it invalid, which then shows as U+FFFD); the concatenation of all
/// [`push`](Self::push) results and a final [`flush`](Self::flush) equals
/// [`Tokenizer::decode`] of the same ids for byte-level tokenizers.
#[derive(Debug, Default, Clone)]
pub struct StreamDecoder {
    pending: Vec<u8>,
}

impl StreamDecoder {
    pub fn new() -> Self {
        StreamDecoder::default()
    }

    /// Adds one token and returns the text it completes (possibly empty).
    pub fn push(&mut self, tok: &Tokenizer, id: u32) -> String {
        self.pending.extend_from_slice(&tok.token_bytes(id));
        let mut out = String::new();
        let mut start = 0;
        loop {
            match std::str::from_utf8(&self.pending[start..]) {
                Ok(s) => {
                    out.push_str(s);
                    start = self.pending.len();
                    break;
                }
                Err(e) => {
                    let valid = start + e.valid_up_to();
                    // The prefix up to `valid` was just checked to be UTF-8.
                    out.push_str(&String::from_utf8_lossy(&self.pending[start..valid]));
                    match e.error_len() {
                        // Incomplete character at the end: wait for more.
                        None => {
                            start = valid;
                            break;
                        }
                        Some(n) => {
                            out.push('\u{FFFD}');
                            start = valid + n;
                        }
                    }
                }
            }
        }
        self.pending.drain(..start);
        out
    }

    /// Returns whatever is held back (an unfinished character as U+FFFD).
    pub fn flush(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        out
    }

    /// Whether bytes are held back.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer::{byte_level, PreKind, SpecialIds, VocabParts};

    /// The 256 byte tokens, one merged token "Ġ" + first byte of "😀", and a
    /// control token.
    fn byte_tokenizer() -> Tokenizer {
        let mut tokens: Vec<String> = (0..=255u8)
            .map(|b| byte_level::byte_to_char(b).to_string())
            .collect();
        let mut types = vec![1; 256];
        tokens.push(byte_level::encode(&[b' ', 0xF0]));
        types.push(1);
        tokens.push("<|endoftext|>".into());
        types.push(3);
        Tokenizer::from_vocab_parts(
            VocabParts {
                tokens,
                token_types: types,
                merges: vec![],
            },
            PreKind::Gpt2,
            SpecialIds::default(),
        )
        .expect("valid")
    }

    fn stream(t: &Tokenizer, ids: &[u32]) -> Vec<String> {
        let mut d = StreamDecoder::new();
        let mut parts: Vec<String> = ids.iter().map(|&id| d.push(t, id)).collect();
        parts.push(d.flush());
        parts
    }

    #[test]
    fn emoji_split_over_byte_tokens() {
        let t = byte_tokenizer();
        // "😀" = F0 9F 98 80; nothing comes out until the fourth byte.
        let parts = stream(&t, &[0xF0, 0x9F, 0x98, 0x80]);
        assert_eq!(parts, ["", "", "", "😀", ""]);
        // A merged token carrying a space and the emoji's first byte: the
        // space comes out at once, the byte waits.
        let parts = stream(&t, &[256, 0x9F, 0x98, 0x80]);
        assert_eq!(parts, [" ", "", "", "😀", ""]);
    }

    #[test]
    fn cjk_and_specials() {
        let t = byte_tokenizer();
        // "中" = E4 B8 AD, then a control token, then "a".
        let ids = [0xE4, 0xB8, 0xAD, 257, u32::from(b'a')];
        let parts = stream(&t, &ids);
        assert_eq!(parts, ["", "", "中", "<|endoftext|>", "a", ""]);
        assert_eq!(parts.concat(), t.decode(&ids));
    }

    #[test]
    fn invalid_and_unfinished_bytes() {
        let t = byte_tokenizer();
        // A lone continuation byte is invalid at once; an unfinished lead
        // byte becomes U+FFFD only at flush.
        let parts = stream(&t, &[u32::from(b'x'), 0x80, 0xE4]);
        assert_eq!(parts, ["x", "\u{FFFD}", "", "\u{FFFD}"]);
        // A lead byte followed by ASCII: the lead is invalid, the ASCII kept.
        let parts = stream(&t, &[0xE4, u32::from(b'y')]);
        assert_eq!(parts, ["", "\u{FFFD}y", ""]);
    }

    #[test]
    fn empty_stream() {
        let t = byte_tokenizer();
        let mut d = StreamDecoder::new();
        assert_eq!(d.flush(), "");
        assert!(!d.has_pending());
        assert_eq!(t.encode("", false).expect("encodes"), Vec::<u32>::new());
    }
}
