//! Launch replay: a decode step as one CUDA graph.
//!
//! A decode step of a 7B model is some 500 small kernels; launched one by
//! one, the driver's per-launch cost (a few microseconds of CPU each) is a
//! large part of a token on a fast card. So a [`crate::Device`] does not run
//! a launch when it is asked for it: it queues it ([`Launch`]: kernel, grid,
//! block and the parameter bytes) and runs the queue at the next operation
//! that could observe or change device memory from the host (a copy in
//! either direction, a memset, a wait, a buffer freed). That queue is then,
//! in a steady decode loop, the same list of launches step after step: the
//! same kernels, the same buffers, the same shapes. [`Replay`] keeps the
//! lists it has seen (the last [`CACHE`]); when a list comes back it is
//! built once into a graph (`cuGraphAddKernelNode` per launch, each after
//! the previous one, then `cuGraphInstantiate`) and from then on that one
//! graph is launched in place of the list.
//!
//! Why this cannot change what is computed: a graph is only ever launched
//! for a queue equal, byte for byte, to the list it was built from (kernel
//! names, launch shapes, parameter blocks, which hold every buffer address
//! and size), so launching it is launching exactly the queued kernels, in
//! their order, on the legacy stream, as the one-by-one path would. No
//! address goes stale: a graph whose buffers were freed can only match a
//! queue that names the same addresses again, that is, buffers the caller
//! checked and holds now. Inputs that change every step (token ids, slot
//! ids) are uploaded into fixed buffers before the launches that read them.
//!
//! On the emulator a "graph" replays its stored list through the emulator,
//! so the queueing, the matching and the flush points are tested on every
//! machine; only the driver's graph calls (`cuda.rs`) run on a GPU alone.
//! `MAMBA_GGUF_CUDA_GRAPHS=0` (or `MAMBA_GGUF_CUDA_SYNC=1`) launches every
//! kernel at once instead, as before; a graph the driver refuses to build
//! turns graphs off for the device and is reported by
//! [`crate::Device::graph_error`].

use crate::error::CudaError;

/// Lists kept for matching, least recently used evicted first. A server's
/// steps vary with its batch (1 to 32 sequences) and the step's variant
/// (logits, greedy, top-k): 8 made it rebuild or launch kernel by kernel
/// most steps (review finding 14); 32 keeps the shapes a busy server cycles
/// through (each entry: the step's ~50 KB list and one executable graph).
pub const CACHE: usize = 32;

/// A queue shorter than this is launched as it is (a graph would not pay).
pub const MIN_GRAPH: usize = 4;

/// One queued kernel launch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Launch {
    /// A static name: a step queues hundreds of launches, none allocates one.
    pub kernel: &'static str,
    pub grid: (u32, u32, u32),
    pub block: (u32, u32, u32),
    /// The kernel's parameter block (its one struct argument).
    pub params: Vec<u8>,
}

/// What [`Replay::take`] decided for a queue.
#[derive(Debug)]
pub enum Plan {
    /// Run these launches one by one.
    Each(Vec<Launch>),
    /// Launch the graph of the current list ([`Replay::current`]).
    Graph,
    /// Build a graph of the current list, store it with [`Replay::built`]
    /// and launch it (or, if the build fails, [`Replay::refuse`] and run
    /// the list one by one).
    Build,
}

struct Entry<G> {
    launches: Vec<Launch>,
    hash: u64,
    seen: u64,
    graph: Option<G>,
}

/// The queue and the lists seen, generic over the graph handle `G` (the
/// driver's executable graph, or the emulator's marker).
pub struct Replay<G> {
    pending: Vec<Launch>,
    hash: u64,
    entries: Vec<Entry<G>>,
    /// Graphs allowed (false after the driver refused to build one).
    pub graphs: bool,
    /// Why graphs were turned off, if they were.
    pub error: Option<String>,
    /// A failure of a launch run at a flush that nobody could be told of
    /// (a buffer's drop), returned by the next flush.
    pub sticky: Option<CudaError>,
}

impl<G> Default for Replay<G> {
    fn default() -> Self {
        Replay {
            pending: Vec::new(),
            hash: FNV,
            entries: Vec::new(),
            graphs: true,
            error: None,
            sticky: None,
        }
    }
}

const FNV: u64 = 0xcbf2_9ce4_8422_2325;

/// A running hash of the queue (a step is ~50 KB of parameter blocks: 8
/// bytes per multiply, not one). Only a filter: a match is confirmed by
/// comparing the lists.
fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        let mut v = [0u8; 8];
        v.copy_from_slice(w);
        h = (h ^ u64::from_le_bytes(v)).wrapping_mul(0x0000_0100_0000_01b3);
        h ^= h >> 29;
    }
    for &b in words.remainder() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

impl<G> Replay<G> {
    /// Queues a launch.
    pub fn push(&mut self, l: Launch) {
        let mut h = fnv(self.hash, l.kernel.as_bytes());
        for v in [
            l.grid.0, l.grid.1, l.grid.2, l.block.0, l.block.1, l.block.2,
        ] {
            h = fnv(h, &v.to_le_bytes());
        }
        self.hash = fnv(h, &l.params);
        self.pending.push(l);
    }

    /// Launches queued and not yet run.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Empties the queue and says how to run it: a list seen before is
    /// launched as its graph (built now if this is its second time).
    pub fn take(&mut self) -> Plan {
        let pending = std::mem::take(&mut self.pending);
        let hash = std::mem::replace(&mut self.hash, FNV);
        if pending.len() < MIN_GRAPH {
            return Plan::Each(pending);
        }
        let Some(i) = self
            .entries
            .iter()
            .position(|e| e.hash == hash && e.launches == pending)
        else {
            if self.entries.len() == CACHE {
                self.entries.remove(0);
            }
            self.entries.push(Entry {
                launches: pending.clone(),
                hash,
                seen: 1,
                graph: None,
            });
            return Plan::Each(pending);
        };
        // Most recently used last: that is the current list.
        let mut e = self.entries.remove(i);
        e.seen += 1;
        let plan = match (&e.graph, self.graphs) {
            (Some(_), _) => Plan::Graph,
            (None, true) => Plan::Build,
            (None, false) => Plan::Each(pending),
        };
        self.entries.push(e);
        plan
    }

    /// The list [`Plan::Graph`] or [`Plan::Build`] is about, and its graph.
    pub fn current(&self) -> (&[Launch], Option<&G>) {
        match self.entries.last() {
            Some(e) => (&e.launches, e.graph.as_ref()),
            None => (&[], None),
        }
    }

    /// Stores the graph built for the most recent [`Plan::Build`].
    pub fn built(&mut self, g: G) {
        if let Some(e) = self.entries.last_mut() {
            e.graph = Some(g);
        }
    }

    /// Turns graphs off for good (the driver refused one), dropping those built.
    pub fn refuse(&mut self, why: String) {
        self.graphs = false;
        self.error = Some(why);
        for e in &mut self.entries {
            e.graph = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(k: &'static str, p: u8) -> Launch {
        Launch {
            kernel: k,
            grid: (1, 1, 1),
            block: (32, 1, 1),
            params: vec![p; 8],
        }
    }

    fn queue(r: &mut Replay<u32>, ps: &[u8]) {
        for &p in ps {
            r.push(l("k", p));
        }
    }

    fn kind(p: &Plan) -> &'static str {
        match p {
            Plan::Each(_) => "each",
            Plan::Graph => "graph",
            Plan::Build => "build",
        }
    }

    #[test]
    fn a_list_is_built_on_its_second_time_and_launched_as_a_graph_after() {
        let mut r = Replay::<u32>::default();
        let step = [1, 2, 3, 4, 5];
        queue(&mut r, &step);
        assert_eq!(kind(&r.take()), "each");
        queue(&mut r, &step);
        assert_eq!(kind(&r.take()), "build");
        r.built(7);
        queue(&mut r, &step);
        assert_eq!(kind(&r.take()), "graph");
        let (ls, g) = r.current();
        assert_eq!(g, Some(&7));
        assert_eq!(ls.len(), 5);
        assert_eq!(ls[4], l("k", 5));
        assert_eq!(r.pending(), 0);
    }

    #[test]
    fn one_byte_of_a_parameter_block_is_another_list() {
        let mut r = Replay::<u32>::default();
        for _ in 0..2 {
            queue(&mut r, &[1, 2, 3, 4]);
            let _ = r.take();
        }
        r.built(1);
        queue(&mut r, &[1, 2, 3, 4]);
        let mut other = l("k", 4);
        other.params[7] ^= 1;
        let _ = r.take();
        r.push(l("k", 1));
        r.push(l("k", 2));
        r.push(l("k", 3));
        r.push(other.clone());
        match r.take() {
            Plan::Each(ls) => assert_eq!(ls[3], other),
            p => panic!("a changed list matched: {}", kind(&p)),
        }
        // Same bytes, another kernel or another shape: not a match either.
        let mut named = l("k2", 4);
        queue(&mut r, &[1, 2, 3]);
        r.push(named.clone());
        assert_eq!(kind(&r.take()), "each");
        named = l("k", 4);
        named.grid.0 = 2;
        queue(&mut r, &[1, 2, 3]);
        r.push(named);
        assert_eq!(kind(&r.take()), "each");
    }

    #[test]
    fn short_queues_are_never_cached_and_old_lists_are_evicted() {
        let mut r = Replay::<u32>::default();
        for _ in 0..3 {
            queue(&mut r, &[1, 2, 3]);
            assert_eq!(kind(&r.take()), "each");
        }
        // CACHE + 1 distinct lists: the first is gone, the last still matches.
        for i in 0..=CACHE as u8 {
            queue(&mut r, &[i, i, i, i]);
            let _ = r.take();
        }
        queue(&mut r, &[0, 0, 0, 0]);
        assert_eq!(kind(&r.take()), "each");
        let c = CACHE as u8;
        queue(&mut r, &[c, c, c, c]);
        assert_eq!(kind(&r.take()), "build");
    }

    #[test]
    fn a_refused_graph_turns_graphs_off() {
        let mut r = Replay::<u32>::default();
        for _ in 0..2 {
            queue(&mut r, &[1, 2, 3, 4]);
            let _ = r.take();
        }
        r.built(3);
        r.refuse("no".into());
        queue(&mut r, &[1, 2, 3, 4]);
        assert_eq!(kind(&r.take()), "each");
        assert_eq!(r.error.as_deref(), Some("no"));
    }
}
