//! The prompt cache: model states at text prefixes (the end of each chat
//! message, the end of a prompt, the end of a reply), least recently used
//! evicted beyond a byte budget.
//!
//! Entries are keyed by the prompt *text* they cover, and carry the tokens the
//! state has seen. A request whose prompt text starts with an entry's text
//! restores that state and tokenizes and feeds only the rest, so a follow-up
//! chat turn that repeats the model's reply continues from exactly the tokens
//! the model generated, as an uninterrupted session would (re-tokenizing the
//! reply's text could give other tokens).
//!
//! With a directory ([`PrefixCache::with_disk`]) every entry is also kept on
//! disk, in the checksummed state-file format (the text and tokens in its
//! note), bounded by its own byte budget, least recently used removed first:
//! a restarted server still answers a long conversation's next turn from its
//! cached state. A file that fails its checksum or belongs to another model
//! is never served (a damaged one is deleted). Files are written to a
//! temporary name and renamed when complete.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::error::Result;
use crate::session::{Session, Snapshot};
use crate::state_file;
use crate::Model;

/// The extension of the disk tier's files.
const EXT: &str = "mgstate";

/// One state on disk (loaded only when restored).
struct DiskEntry {
    text: String,
    tokens: Vec<u32>,
    file: PathBuf,
    bytes: u64,
    last_used: u64,
}

/// The disk tier of a [`PrefixCache`].
struct Disk {
    dir: PathBuf,
    cap: u64,
    used: u64,
    entries: Vec<DiskEntry>,
}

/// What the state file's note holds for a cache entry.
#[derive(serde::Serialize, serde::Deserialize)]
struct Note {
    text: String,
    tokens: Vec<u32>,
}

impl Disk {
    /// Reads the entries of `dir` that are states of `model`; a damaged
    /// file is deleted, another model's left alone, an orphaned temporary
    /// file removed.
    fn open(dir: &Path, cap: u64, model: &Model) -> std::io::Result<Disk> {
        std::fs::create_dir_all(dir)?;
        let mut d = Disk {
            dir: dir.to_path_buf(),
            cap,
            used: 0,
            entries: Vec::new(),
        };
        let mut found = Vec::new();
        for e in std::fs::read_dir(dir)? {
            let p = e?.path();
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.starts_with('.') && name.contains(".tmp-") {
                let _ = std::fs::remove_file(&p);
                continue;
            }
            if p.extension().and_then(|x| x.to_str()) != Some(EXT) {
                continue;
            }
            let Ok(bytes) = std::fs::read(&p) else {
                continue;
            };
            match state_file::decode(model, &bytes, &p.display().to_string()) {
                Ok((_, note)) => match serde_json::from_str::<Note>(&note) {
                    Ok(n) => {
                        let mtime = std::fs::metadata(&p)
                            .and_then(|m| m.modified())
                            .ok()
                            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                            .map_or(0, |d| d.as_secs());
                        found.push((mtime, n, p, bytes.len() as u64));
                    }
                    Err(_) => {
                        let _ = std::fs::remove_file(&p);
                    }
                },
                Err(state_file::StateFileError::WrongModel { .. }) => {}
                Err(_) => {
                    let _ = std::fs::remove_file(&p);
                }
            }
        }
        // Oldest first, so the clock order follows the files' ages.
        found.sort_by_key(|f| f.0);
        for (i, (_, n, file, bytes)) in found.into_iter().enumerate() {
            d.used += bytes;
            d.entries.push(DiskEntry {
                text: n.text,
                tokens: n.tokens,
                file,
                bytes,
                last_used: i as u64,
            });
        }
        d.evict(0);
        Ok(d)
    }

    /// Removes least recently used files until `extra` more bytes fit.
    fn evict(&mut self, extra: u64) {
        while self.used + extra > self.cap {
            let Some(i) = self
                .entries
                .iter()
                .enumerate()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(i, _)| i)
            else {
                break;
            };
            let e = self.entries.swap_remove(i);
            let _ = std::fs::remove_file(&e.file);
            self.used -= e.bytes;
        }
    }

    fn insert(&mut self, text: &str, tokens: &[u32], snap: &Snapshot, model: &Model, clock: u64) {
        if let Some(e) = self.entries.iter_mut().find(|e| e.text == text) {
            e.last_used = clock;
            return;
        }
        let note = serde_json::json!({"text": text, "tokens": tokens}).to_string();
        let bytes = state_file::encode(model, snap, &note);
        let len = bytes.len() as u64;
        if len > self.cap {
            return;
        }
        self.evict(len);
        let hash: [u8; 32] = Sha256::digest(text.as_bytes()).into();
        let name: String = hash[..12].iter().map(|b| format!("{b:02x}")).collect();
        let file = self.dir.join(format!("{name}.{EXT}"));
        let tmp = self
            .dir
            .join(format!(".{name}.{EXT}.tmp-{}", std::process::id()));
        let ok = std::fs::write(&tmp, &bytes).is_ok() && std::fs::rename(&tmp, &file).is_ok();
        if !ok {
            // A full or read-only disk: the memory tier still serves.
            let _ = std::fs::remove_file(&tmp);
            return;
        }
        self.used += len;
        self.entries.push(DiskEntry {
            text: text.to_string(),
            tokens: tokens.to_vec(),
            file,
            bytes: len,
            last_used: clock,
        });
    }
}

struct Entry {
    text: String,
    tokens: Vec<u32>,
    /// Shared with the state store's write-behind queue, when one takes it.
    snap: Arc<Snapshot>,
    bytes: usize,
    last_used: u64,
}

/// A byte-bounded LRU of states at text prefixes.
pub struct PrefixCache {
    entries: Vec<Entry>,
    disk: Option<Disk>,
    cap: usize,
    used: usize,
    clock: u64,
    hits: u64,
    misses: u64,
}

/// What a lookup restored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    /// Bytes of the prompt text the restored state covers.
    pub text_len: usize,
    /// The tokens that state has seen.
    pub tokens: Vec<u32>,
}

fn snap_bytes(s: &Snapshot) -> usize {
    s.state.bytes() + s.logits.len() * 4
}

impl PrefixCache {
    /// A cache holding at most `cap_bytes` of states, texts and tokens.
    pub fn new(cap_bytes: usize) -> PrefixCache {
        PrefixCache {
            entries: Vec::new(),
            disk: None,
            cap: cap_bytes,
            used: 0,
            clock: 0,
            hits: 0,
            misses: 0,
        }
    }

    /// [`new`](Self::new) with a disk tier in `dir` of at most
    /// `disk_bytes`, holding the states of `model` found there.
    pub fn with_disk(
        cap_bytes: usize,
        dir: &Path,
        disk_bytes: u64,
        model: &Model,
    ) -> std::io::Result<PrefixCache> {
        let mut c = PrefixCache::new(cap_bytes);
        let disk = Disk::open(dir, disk_bytes, model)?;
        c.clock = disk.entries.len() as u64;
        c.disk = Some(disk);
        Ok(c)
    }

    /// Entries on disk and their bytes.
    pub fn disk_stats(&self) -> Option<(usize, u64)> {
        self.disk.as_ref().map(|d| (d.entries.len(), d.used))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes held.
    pub fn used_bytes(&self) -> usize {
        self.used
    }

    /// (hits, misses) of [`restore_longest`](Self::restore_longest).
    pub fn stats(&self) -> (u64, u64) {
        (self.hits, self.misses)
    }

    /// Restores into `session` the state of the longest entry whose text is a
    /// prefix of `text` (and whose token count is at most `max_tokens`).
    pub fn restore_longest(
        &mut self,
        text: &str,
        max_tokens: usize,
        session: &mut Session,
    ) -> Option<Hit> {
        self.clock += 1;
        let in_memory = self
            .entries
            .iter()
            .filter(|e| e.tokens.len() <= max_tokens && text.starts_with(e.text.as_str()))
            .map(|e| e.text.len())
            .max();
        // A longer prefix on disk: read it (checksum and model checked),
        // keep it in memory too.
        if let Some(d) = self.disk.as_mut() {
            let on_disk = d
                .entries
                .iter()
                .enumerate()
                .filter(|(_, e)| e.tokens.len() <= max_tokens && text.starts_with(e.text.as_str()))
                .max_by_key(|(_, e)| e.text.len())
                .map(|(i, e)| (i, e.text.len()));
            if let Some((i, len)) = on_disk.filter(|&(_, len)| Some(len) > in_memory) {
                let e = &d.entries[i];
                let read = std::fs::read(&e.file)
                    .ok()
                    .and_then(|b| {
                        state_file::decode(session.model(), &b, &e.file.display().to_string()).ok()
                    })
                    .filter(|(_, note)| {
                        serde_json::from_str::<Note>(note).is_ok_and(|n| n.text == e.text)
                    });
                match read {
                    Some((snap, _)) if session.restore(&snap).is_ok() => {
                        let tokens = e.tokens.clone();
                        let t = e.text.clone();
                        d.entries[i].last_used = self.clock;
                        self.hits += 1;
                        self.insert_snapshot(&t, &tokens, Arc::new(snap));
                        return Some(Hit {
                            text_len: len,
                            tokens,
                        });
                    }
                    _ => {
                        // Damaged since it was listed: never served.
                        let e = d.entries.swap_remove(i);
                        let _ = std::fs::remove_file(&e.file);
                        d.used -= e.bytes;
                    }
                }
            }
        }
        let best = self
            .entries
            .iter_mut()
            .filter(|e| e.tokens.len() <= max_tokens && text.starts_with(e.text.as_str()))
            .max_by_key(|e| e.text.len());
        let Some(e) = best else {
            self.misses += 1;
            return None;
        };
        if session.restore(&e.snap).is_err() {
            self.misses += 1;
            return None;
        }
        e.last_used = self.clock;
        self.hits += 1;
        Some(Hit {
            text_len: e.text.len(),
            tokens: e.tokens.clone(),
        })
    }

    /// Stores the session's state (its host form) as the one after `text` /
    /// `tokens`. Errs only when the backend cannot read the state.
    pub fn insert(&mut self, text: &str, tokens: &[u32], session: &mut Session) -> Result<()> {
        self.clock += 1;
        if let Some(e) = self.entries.iter_mut().find(|e| e.text == text) {
            e.last_used = self.clock;
            return Ok(());
        }
        let snap = session.snapshot()?;
        if let Some(d) = self.disk.as_mut() {
            d.insert(text, tokens, &snap, session.model(), self.clock);
        }
        self.insert_snapshot(text, tokens, Arc::new(snap));
        Ok(())
    }

    /// The bytes of `text` that the longest entry (in memory or on disk)
    /// whose text is a prefix of it covers, among entries of at most
    /// `max_tokens` tokens; 0 when none is.
    pub fn longest_prefix(&self, text: &str, max_tokens: usize) -> usize {
        let fits = |t: &str, n: usize| n <= max_tokens && text.starts_with(t);
        let mem = self
            .entries
            .iter()
            .filter(|e| fits(&e.text, e.tokens.len()))
            .map(|e| e.text.len());
        let disk = self.disk.iter().flat_map(|d| {
            d.entries
                .iter()
                .filter(|e| fits(&e.text, e.tokens.len()))
                .map(|e| e.text.len())
        });
        mem.chain(disk).max().unwrap_or(0)
    }

    /// The state held in memory after exactly `text`, and its tokens.
    pub fn get(&self, text: &str) -> Option<(Arc<Snapshot>, &[u32])> {
        self.entries
            .iter()
            .find(|e| e.text == text)
            .map(|e| (e.snap.clone(), e.tokens.as_slice()))
    }

    /// Puts a state that came from elsewhere (the shared state store) into
    /// the memory tier as the one after `text` / `tokens`.
    pub fn insert_restored(&mut self, text: &str, tokens: &[u32], snap: Snapshot) {
        self.clock += 1;
        if self.entries.iter().any(|e| e.text == text) {
            return;
        }
        self.insert_snapshot(text, tokens, Arc::new(snap));
    }

    /// The memory tier's insert.
    fn insert_snapshot(&mut self, text: &str, tokens: &[u32], snap: Arc<Snapshot>) {
        let bytes = snap_bytes(&snap) + text.len() + tokens.len() * 4;
        if bytes > self.cap {
            return;
        }
        while self.used + bytes > self.cap {
            let Some(i) = self
                .entries
                .iter()
                .enumerate()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(i, _)| i)
            else {
                break;
            };
            let old = self.entries.swap_remove(i);
            self.used -= old.bytes;
        }
        self.used += bytes;
        self.entries.push(Entry {
            text: text.to_string(),
            tokens: tokens.to_vec(),
            snap,
            bytes,
            last_used: self.clock,
        });
    }
}
