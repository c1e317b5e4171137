//! Pre-tokenization of the GGUF-vocabulary BPE: the text is cut into words
//! by a chain of patterns before BPE runs on each word, as llama.cpp does for
//! the `tokenizer.ggml.pre` names we support.
//!
//! Each stage applies one pattern to every piece the previous stage left and
//! keeps both the matches and the text between them, so a later stage can
//! only cut pieces finer, never join them.

use tokenizers::utils::SysRegex;

use super::TokenizerError;

/// Runs of punctuation plus the ASCII symbols Falcon's tokenizer counts as
/// punctuation (`$ + < = > ^ ~ |` and the backquote).
const FALCON_PUNCT: &str = r"[\p{P}$+<=>^~|`]+";
/// The same without the backquote (llama.cpp's "default" chain).
const DEFAULT_PUNCT: &str = r"[\p{P}$+<=>^~|]+";
/// GPT-2's word pattern: English contractions, optionally space-led runs of
/// letters, of numbers or of other non-space characters, then whitespace
/// (leaving a run's last blank to lead the next word).
const GPT2_WORDS: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
const NUMBER_RUNS: &str = r"\p{N}+";
const SINGLE_NUMBER: &str = r"\p{N}";

/// The pre-tokenizer families we implement, by `tokenizer.ggml.pre`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PreKind {
    /// "falcon": punctuation runs, GPT-2 words, groups of three ASCII digits.
    Falcon,
    /// "gpt-2" and the tokenizers llama.cpp treats the same (mpt, olmo, ...).
    Gpt2,
    /// "default" or no `tokenizer.ggml.pre`: punctuation runs, GPT-2 words,
    /// number runs, groups of three ASCII digits.
    Default,
    /// "starcoder" family: single numbers, then GPT-2 words.
    Starcoder,
}

impl PreKind {
    /// Maps a `tokenizer.ggml.pre` value; `None` for one we do not implement.
    pub fn from_name(name: &str) -> Option<PreKind> {
        Some(match name {
            "falcon" => PreKind::Falcon,
            "default" | "" => PreKind::Default,
            "gpt2" | "gpt-2" | "phi-2" | "jina-es" | "jina-de" | "gigachat" | "jina-v2-es"
            | "jina-v2-de" | "a.x-4.0" | "mellum" | "modern-bert" | "mpt" | "olmo" | "jais"
            | "trillion" | "granite-docling" => PreKind::Gpt2,
            "starcoder" | "refact" | "command-r" | "smollm" | "codeshell" | "exaone"
            | "minerva-7b" | "mellum2" => PreKind::Starcoder,
            _ => return None,
        })
    }
}

enum Stage {
    Pattern(SysRegex),
    /// `[0-9][0-9][0-9]`: three ASCII digits, taken left to right.
    DigitTriples,
}

/// A compiled chain of pre-tokenizer stages.
pub struct PreSplitter {
    kind: PreKind,
    stages: Vec<Stage>,
}

impl std::fmt::Debug for PreSplitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreSplitter")
            .field("kind", &self.kind)
            .finish()
    }
}

fn pattern(p: &str) -> Result<Stage, TokenizerError> {
    SysRegex::new(p)
        .map(Stage::Pattern)
        .map_err(|e| TokenizerError::Regex {
            pattern: p.to_string(),
            message: e.to_string(),
        })
}

impl PreSplitter {
    pub fn new(kind: PreKind) -> Result<PreSplitter, TokenizerError> {
        let stages = match kind {
            PreKind::Falcon => vec![
                pattern(FALCON_PUNCT)?,
                pattern(GPT2_WORDS)?,
                Stage::DigitTriples,
            ],
            PreKind::Gpt2 => vec![pattern(GPT2_WORDS)?],
            PreKind::Default => vec![
                pattern(DEFAULT_PUNCT)?,
                pattern(GPT2_WORDS)?,
                pattern(NUMBER_RUNS)?,
                Stage::DigitTriples,
            ],
            PreKind::Starcoder => vec![pattern(SINGLE_NUMBER)?, pattern(GPT2_WORDS)?],
        };
        Ok(PreSplitter { kind, stages })
    }

    /// Cuts `text` into words; their concatenation is `text`.
    pub fn split<'t>(&self, text: &'t str) -> Vec<&'t str> {
        if text.is_empty() {
            return Vec::new();
        }
        let mut pieces = vec![text];
        for stage in &self.stages {
            let mut next = Vec::with_capacity(pieces.len() * 2);
            for piece in pieces {
                let mut prev = 0;
                let mut keep = |start: usize, end: usize, next: &mut Vec<&'t str>| {
                    if start > prev {
                        next.push(&piece[prev..start]);
                    }
                    if end > start {
                        next.push(&piece[start..end]);
                    }
                    prev = end;
                };
                match stage {
                    Stage::Pattern(re) => {
                        for (start, end) in re.find_iter(piece) {
                            keep(start, end, &mut next);
                        }
                    }
                    Stage::DigitTriples => {
                        let b = piece.as_bytes();
                        let mut i = 0;
                        while i + 3 <= b.len() {
                            if b[i..i + 3].iter().all(u8::is_ascii_digit) {
                                keep(i, i + 3, &mut next);
                                i += 3;
                            } else {
                                i += 1;
                            }
                        }
                    }
                }
                if prev < piece.len() {
                    next.push(&piece[prev..]);
                }
            }
            pieces = next;
        }
        pieces
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(kind: PreKind, text: &str) -> Vec<String> {
        let s = PreSplitter::new(kind).expect("patterns compile");
        let words: Vec<String> = s.split(text).into_iter().map(str::to_string).collect();
        assert_eq!(words.concat(), text, "pieces must cover the text");
        words
    }

    #[test]
    fn gpt2_words() {
        assert_eq!(
            split(PreKind::Gpt2, "Hello world's  best!!\n\n 42"),
            ["Hello", " world", "'s", " ", " best", "!!", "\n\n", " 42"]
        );
    }

    #[test]
    fn falcon_punctuation_then_words_then_triples() {
        // The punctuation stage isolates "..." and "$", so no word starts
        // with a space before them; digits go in threes from the left.
        assert_eq!(
            split(PreKind::Falcon, "Wait... $1234567 ok"),
            ["Wait", "...", " ", "$", "123", "456", "7", " ok"]
        );
    }

    #[test]
    fn default_number_runs() {
        assert_eq!(split(PreKind::Default, "a 12345"), ["a", " ", "123", "45"]);
    }

    #[test]
    fn empty_text_has_no_words() {
        assert!(split(PreKind::Falcon, "").is_empty());
    }

    #[test]
    fn names() {
        assert_eq!(PreKind::from_name("falcon"), Some(PreKind::Falcon));
        assert_eq!(PreKind::from_name("gpt-2"), Some(PreKind::Gpt2));
        assert_eq!(PreKind::from_name("gpt2"), Some(PreKind::Gpt2));
        assert_eq!(PreKind::from_name("default"), Some(PreKind::Default));
        assert_eq!(PreKind::from_name("llama-bpe"), None);
    }
}
