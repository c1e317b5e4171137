//! Byte-level BPE over a GGUF vocabulary (`tokenizer.ggml.model = "gpt2"`),
//! following llama.cpp's algorithm so ids agree with it token for token:
//!
//! 1. special tokens (control, user-defined, unknown; longest text first) are
//!    cut out of the text;
//! 2. each remaining stretch is pre-split into words ([`PreSplitter`]);
//! 3. each word is mapped to the byte-level alphabet and merged pairwise,
//!    always taking the lowest-ranked adjacent pair (leftmost on ties);
//! 4. each final symbol becomes its vocabulary id; a symbol missing from the
//!    vocabulary falls back to the ids of its single ASCII characters.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use super::byte_level;
use super::pre_split::PreSplitter;
use super::TokenizerError;

/// `tokenizer.ggml.token_type` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenType {
    Undefined,
    Normal,
    Unknown,
    Control,
    UserDefined,
    Unused,
    Byte,
}

impl TokenType {
    /// Maps a stored type; values outside 1..=6 count as undefined (as in llama.cpp).
    pub fn from_i32(v: i32) -> TokenType {
        match v {
            1 => TokenType::Normal,
            2 => TokenType::Unknown,
            3 => TokenType::Control,
            4 => TokenType::UserDefined,
            5 => TokenType::Unused,
            6 => TokenType::Byte,
            _ => TokenType::Undefined,
        }
    }
}

/// The plain inputs a GGUF vocabulary provides.
#[derive(Clone, Debug, Default)]
pub struct VocabParts {
    /// `tokenizer.ggml.tokens`: byte-level strings (special tokens verbatim).
    pub tokens: Vec<String>,
    /// `tokenizer.ggml.token_type`, one per token; empty means all normal.
    pub token_types: Vec<i32>,
    /// `tokenizer.ggml.merges`: "left right", best (rank 0) first.
    pub merges: Vec<String>,
}

pub struct BpeVocab {
    tokens: Vec<String>,
    types: Vec<TokenType>,
    /// Vocabulary text -> id (a later duplicate wins, as in llama.cpp).
    token_to_id: HashMap<String, u32>,
    /// Every string that is a token or half of a merge -> a piece number.
    piece_ids: HashMap<String, u32>,
    /// (left piece, right piece) -> merge rank.
    ranks: HashMap<(u32, u32), u32>,
    /// Ids matched verbatim in the text, longest text first.
    specials: Vec<u32>,
    splitter: PreSplitter,
}

impl std::fmt::Debug for BpeVocab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BpeVocab")
            .field("tokens", &self.tokens.len())
            .field("merges", &self.ranks.len())
            .field("specials", &self.specials.len())
            .field("splitter", &self.splitter)
            .finish()
    }
}

/// A piece of text waiting to be tokenized, or a special token already found.
enum Fragment {
    Text { start: usize, end: usize },
    Token(u32),
}

#[derive(Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

impl BpeVocab {
    pub fn new(parts: VocabParts, splitter: PreSplitter) -> Result<BpeVocab, TokenizerError> {
        let VocabParts {
            mut tokens,
            token_types,
            merges,
        } = parts;
        if tokens.is_empty() {
            return Err(TokenizerError::EmptyVocab);
        }
        if u32::try_from(tokens.len()).is_err() {
            return Err(TokenizerError::VocabTooLarge { n: tokens.len() });
        }
        if !token_types.is_empty() && token_types.len() != tokens.len() {
            return Err(TokenizerError::LengthMismatch {
                key: "tokenizer.ggml.token_type".into(),
                len: token_types.len(),
                expected: tokens.len(),
            });
        }
        let types: Vec<TokenType> = if token_types.is_empty() {
            vec![TokenType::Normal; tokens.len()]
        } else {
            token_types
                .iter()
                .map(|&t| TokenType::from_i32(t))
                .collect()
        };
        // llama.cpp gives empty entries a placeholder so each text is unique.
        for (i, t) in tokens.iter_mut().enumerate() {
            if t.is_empty() {
                *t = format!("[EMPTY_{i}]");
            }
        }
        let mut token_to_id = HashMap::with_capacity(tokens.len());
        let mut piece_ids = HashMap::with_capacity(tokens.len());
        for (i, t) in tokens.iter().enumerate() {
            token_to_id.insert(t.clone(), i as u32);
            piece_ids.entry(t.clone()).or_insert(i as u32);
        }
        let mut ranks = HashMap::with_capacity(merges.len());
        for (rank, m) in merges.iter().enumerate() {
            // Split at the first space after the first character, as llama.cpp.
            let split = m
                .char_indices()
                .skip(1)
                .find(|&(_, c)| c == ' ')
                .map(|(i, _)| i)
                .ok_or_else(|| TokenizerError::BadMerge {
                    index: rank,
                    merge: m.clone(),
                })?;
            let (left, right) = (&m[..split], &m[split + 1..]);
            let mut piece = |s: &str| -> u32 {
                let n = piece_ids.len() as u32;
                *piece_ids.entry(s.to_string()).or_insert(n)
            };
            let key = (piece(left), piece(right));
            ranks.entry(key).or_insert(rank as u32);
        }
        let mut specials: Vec<u32> = (0..tokens.len() as u32)
            .filter(|&id| {
                matches!(
                    types[id as usize],
                    TokenType::Control | TokenType::UserDefined | TokenType::Unknown
                )
            })
            .collect();
        specials.sort_by_key(|&id| Reverse(tokens[id as usize].len()));
        Ok(BpeVocab {
            tokens,
            types,
            token_to_id,
            piece_ids,
            ranks,
            specials,
            splitter,
        })
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn token_text(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    pub fn token_type(&self, id: u32) -> Option<TokenType> {
        self.types.get(id as usize).copied()
    }

    /// The raw bytes a token stands for; empty for an unknown id or an unused
    /// or undefined token (llama.cpp prints nothing for those).
    pub fn token_bytes(&self, id: u32) -> Vec<u8> {
        let (Some(text), Some(ty)) = (self.token_text(id), self.token_type(id)) else {
            return Vec::new();
        };
        match ty {
            TokenType::Control | TokenType::UserDefined | TokenType::Unknown => {
                text.as_bytes().to_vec()
            }
            TokenType::Normal => {
                // A character outside the byte alphabet keeps its own UTF-8.
                let mut out = Vec::with_capacity(text.len());
                for c in text.chars() {
                    match byte_level::char_to_byte(c) {
                        Some(b) => out.push(b),
                        None => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
                    }
                }
                out
            }
            TokenType::Byte => parse_byte_token(text)
                .or_else(|| byte_level::decode(text).filter(|b| b.len() == 1))
                .unwrap_or_default(),
            TokenType::Unused | TokenType::Undefined => Vec::new(),
        }
    }

    /// Tokenizes `text`; `parse_special` also matches control and unknown
    /// tokens (user-defined ones are always matched, as in llama.cpp).
    pub fn encode(&self, text: &str, parse_special: bool, out: &mut Vec<u32>) {
        for frag in self.partition(text, parse_special) {
            match frag {
                Fragment::Token(id) => out.push(id),
                Fragment::Text { start, end } => self.encode_plain(&text[start..end], out),
            }
        }
    }

    fn partition(&self, text: &str, parse_special: bool) -> Vec<Fragment> {
        let mut frags = Vec::new();
        if text.is_empty() {
            return frags;
        }
        frags.push(Fragment::Text {
            start: 0,
            end: text.len(),
        });
        for &id in &self.specials {
            let ty = self.types[id as usize];
            if !parse_special && matches!(ty, TokenType::Control | TokenType::Unknown) {
                continue;
            }
            let needle = self.tokens[id as usize].as_str();
            let mut next = Vec::with_capacity(frags.len());
            for frag in frags {
                let Fragment::Text { start, end } = frag else {
                    next.push(frag);
                    continue;
                };
                let mut pos = start;
                while let Some(off) = text[pos..end].find(needle) {
                    let at = pos + off;
                    if at > pos {
                        next.push(Fragment::Text {
                            start: pos,
                            end: at,
                        });
                    }
                    next.push(Fragment::Token(id));
                    pos = at + needle.len();
                }
                if pos < end {
                    next.push(Fragment::Text { start: pos, end });
                }
            }
            frags = next;
        }
        frags
    }

    /// Pre-splits and BPE-encodes text that holds no special token.
    fn encode_plain(&self, text: &str, out: &mut Vec<u32>) {
        for word in self.splitter.split(text) {
            let encoded = byte_level::encode(word.as_bytes());
            self.encode_word(&encoded, out);
        }
    }

    fn piece(&self, s: &str) -> Option<u32> {
        self.piece_ids.get(s).copied()
    }

    fn rank(&self, word: &str, left: &Symbol, right: &Symbol) -> Option<u32> {
        let l = self.piece(&word[left.start..left.start + left.len])?;
        let r = self.piece(&word[right.start..right.start + right.len])?;
        self.ranks.get(&(l, r)).copied()
    }

    /// Merges one byte-level word and appends its ids.
    fn encode_word(&self, word: &str, out: &mut Vec<u32>) {
        let mut syms: Vec<Symbol> = Vec::with_capacity(word.len());
        for (i, (start, c)) in word.char_indices().enumerate() {
            syms.push(Symbol {
                start,
                len: c.len_utf8(),
                prev: i.checked_sub(1),
                next: None,
            });
            if let Some(p) = i.checked_sub(1) {
                syms[p].next = Some(i);
            }
        }
        // Entries: (rank, left index, right index, left len, right len). An
        // entry is stale once either side has changed length or vanished.
        type Entry = Reverse<(u32, usize, usize, usize, usize)>;
        let mut heap: BinaryHeap<Entry> = BinaryHeap::new();
        let push = |heap: &mut BinaryHeap<Entry>, syms: &[Symbol], l: usize, r: usize| {
            if let Some(rank) = self.rank(word, &syms[l], &syms[r]) {
                heap.push(Reverse((rank, l, r, syms[l].len, syms[r].len)));
            }
        };
        for i in 1..syms.len() {
            push(&mut heap, &syms, i - 1, i);
        }
        while let Some(Reverse((_, l, r, llen, rlen))) = heap.pop() {
            if syms[l].len == 0 || syms[r].len == 0 || syms[l].len != llen || syms[r].len != rlen {
                continue;
            }
            syms[l].len += syms[r].len;
            syms[r].len = 0;
            syms[l].next = syms[r].next;
            if let Some(n) = syms[r].next {
                syms[n].prev = Some(l);
            }
            if let Some(p) = syms[l].prev {
                push(&mut heap, &syms, p, l);
            }
            if let Some(n) = syms[l].next {
                push(&mut heap, &syms, l, n);
            }
        }
        for s in syms.iter().filter(|s| s.len > 0) {
            let text = &word[s.start..s.start + s.len];
            match self.token_to_id.get(text) {
                Some(&id) => out.push(id),
                None => {
                    // llama.cpp tries each byte as a one-byte token; only
                    // ASCII bytes can name a (valid UTF-8) vocabulary entry.
                    for b in text.bytes().filter(u8::is_ascii) {
                        let one = [b];
                        let key = std::str::from_utf8(&one).unwrap_or_default();
                        if let Some(&id) = self.token_to_id.get(key) {
                            out.push(id);
                        }
                    }
                }
            }
        }
    }
}

/// `<0xAB>` -> 0xAB.
fn parse_byte_token(text: &str) -> Option<Vec<u8>> {
    let hex = text.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok().map(|b| vec![b])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer::pre_split::PreKind;

    /// A toy vocabulary: the 256 byte characters, then merged pieces.
    fn toy(merges: &[&str], extra: &[(&str, i32)]) -> BpeVocab {
        let mut tokens: Vec<String> = (0..=255u8)
            .map(|b| byte_level::byte_to_char(b).to_string())
            .collect();
        let mut types = vec![1; 256];
        for m in merges {
            tokens.push(m.replace(' ', ""));
            types.push(1);
        }
        for (t, ty) in extra {
            tokens.push(t.to_string());
            types.push(*ty);
        }
        let parts = VocabParts {
            tokens,
            token_types: types,
            merges: merges.iter().map(|s| s.to_string()).collect(),
        };
        BpeVocab::new(parts, PreSplitter::new(PreKind::Gpt2).expect("compiles")).expect("valid")
    }

    fn ids(v: &BpeVocab, text: &str, special: bool) -> Vec<u32> {
        let mut out = Vec::new();
        v.encode(text, special, &mut out);
        out
    }

    #[test]
    fn lowest_rank_first_then_leftmost() {
        // "abc": (b,c) has rank 0 so "a"+"bc" wins over "ab"+"c".
        let v = toy(&["b c", "a b", "a bc"], &[]);
        assert_eq!(ids(&v, "abc", false), [256 + 2]);
        // "bcbc": both (b,c) pairs have rank 0; merged left first, then each.
        assert_eq!(ids(&v, "bcbc", false), [256, 256]);
        assert_eq!(ids(&v, "ab", false), [256 + 1]);
    }

    #[test]
    fn specials_and_parse_flag() {
        let v = toy(&[], &[("<ctl>", 3), ("<usr>", 4)]);
        let (ctl, usr) = (256, 257);
        assert_eq!(ids(&v, "x<ctl>", true), [u32::from(b'x'), ctl]);
        // Without parse_special a control token is plain text.
        assert_eq!(ids(&v, "<ctl>", false).len(), 5);
        // User-defined tokens are always matched.
        assert_eq!(ids(&v, "<usr><usr>", false), [usr, usr]);
        assert_eq!(v.token_bytes(ctl), b"<ctl>");
        // Token 32 is the byte-level character for a space.
        assert_eq!(v.token_bytes(32), b" ");
        assert_eq!(v.token_bytes(9999), b"");
    }

    #[test]
    fn bad_inputs() {
        let parts = VocabParts {
            tokens: vec!["a".into()],
            token_types: vec![1, 1],
            merges: vec![],
        };
        let e = BpeVocab::new(parts, PreSplitter::new(PreKind::Gpt2).expect("compiles"));
        assert!(matches!(e, Err(TokenizerError::LengthMismatch { .. })));
        let parts = VocabParts {
            tokens: vec!["a".into()],
            token_types: vec![],
            merges: vec!["nospace".into()],
        };
        let e = BpeVocab::new(parts, PreSplitter::new(PreKind::Gpt2).expect("compiles"));
        assert!(matches!(e, Err(TokenizerError::BadMerge { index: 0, .. })));
    }
}
