//! Where a CPU forward's time goes, op by op (`bench --profile`): the wall
//! time, calls and weight bytes of each op, summed while switched on. The
//! ops are synchronous on the CPU, so their wall time is their cost; off,
//! an op pays one relaxed atomic load.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use crate::backend::Weight;

/// The ops of a forward as the profile names them (a matmul by its
/// weight's role in the block).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Embed,
    RmsNorm,
    InProj,
    SiluGate,
    Conv,
    XProj,
    DtBcRms,
    SplitDt,
    DtProj,
    DtSoftplus,
    Scan,
    OutProj,
    Residual,
    /// The final norm and the LM head's matmul.
    Head,
    /// The greedy or top-k choice over host logits.
    Pick,
}

const N_OPS: usize = 15;

impl Op {
    const ALL: [Op; N_OPS] = [
        Op::Embed,
        Op::RmsNorm,
        Op::InProj,
        Op::SiluGate,
        Op::Conv,
        Op::XProj,
        Op::DtBcRms,
        Op::SplitDt,
        Op::DtProj,
        Op::DtSoftplus,
        Op::Scan,
        Op::OutProj,
        Op::Residual,
        Op::Head,
        Op::Pick,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Op::Embed => "embed",
            Op::RmsNorm => "rms_norm",
            Op::InProj => "in_proj",
            Op::SiluGate => "silu_gate",
            Op::Conv => "conv",
            Op::XProj => "x_proj",
            Op::DtBcRms => "dt_b_c_rms",
            Op::SplitDt => "split_dt",
            Op::DtProj => "dt_proj",
            Op::DtSoftplus => "dt_softplus",
            Op::Scan => "scan",
            Op::OutProj => "out_proj",
            Op::Residual => "residual",
            Op::Head => "head",
            Op::Pick => "pick",
        }
    }

    /// The matmul op of a weight.
    pub(crate) fn of(w: Weight) -> Op {
        match w {
            Weight::In(_) => Op::InProj,
            Weight::X(_) => Op::XProj,
            Weight::Dt(_) => Op::DtProj,
            Weight::Out(_) => Op::OutProj,
            Weight::Head => Op::Head,
        }
    }
}

/// One op's totals over the profiled steps.
#[derive(Clone, Debug, PartialEq)]
pub struct OpTime {
    /// The op's name (`in_proj`, `scan`, ...).
    pub op: &'static str,
    pub calls: u64,
    pub seconds: f64,
    /// Weight bytes its matmuls read (0 for the other ops).
    pub weight_bytes: u64,
}

/// The running totals (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct Profile {
    on: AtomicBool,
    calls: [AtomicU64; N_OPS],
    ns: [AtomicU64; N_OPS],
    bytes: [AtomicU64; N_OPS],
}

impl Profile {
    /// Zeroes the totals and starts summing.
    pub(crate) fn start(&self) {
        for v in self.calls.iter().chain(&self.ns).chain(&self.bytes) {
            v.store(0, Relaxed);
        }
        self.on.store(true, Relaxed);
    }

    /// Stops summing; the ops that ran, in forward order.
    pub(crate) fn stop(&self) -> Vec<OpTime> {
        self.on.store(false, Relaxed);
        Op::ALL
            .iter()
            .enumerate()
            .filter(|(i, _)| self.calls[*i].load(Relaxed) > 0)
            .map(|(i, op)| OpTime {
                op: op.name(),
                calls: self.calls[i].load(Relaxed),
                seconds: self.ns[i].load(Relaxed) as f64 * 1e-9,
                weight_bytes: self.bytes[i].load(Relaxed),
            })
            .collect()
    }

    /// `f()`, its wall time (and `weight_bytes`) added to `op` when on.
    #[inline]
    pub(crate) fn time<T>(&self, op: Op, weight_bytes: usize, f: impl FnOnce() -> T) -> T {
        if !self.on.load(Relaxed) {
            return f();
        }
        let t = Instant::now();
        let r = f();
        let i = op as usize;
        self.ns[i].fetch_add(t.elapsed().as_nanos() as u64, Relaxed);
        self.calls[i].fetch_add(1, Relaxed);
        self.bytes[i].fetch_add(weight_bytes as u64, Relaxed);
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_only_while_on_and_names_ops_in_forward_order() {
        let p = Profile::default();
        p.time(Op::Scan, 0, || ());
        p.start();
        p.time(Op::OutProj, 100, || {
            std::thread::sleep(std::time::Duration::from_millis(2))
        });
        p.time(Op::Scan, 0, || ());
        p.time(Op::OutProj, 100, || ());
        let t = p.stop();
        p.time(Op::Scan, 0, || ());
        let names: Vec<_> = t.iter().map(|o| o.op).collect();
        assert_eq!(names, ["scan", "out_proj"]);
        assert_eq!((t[0].calls, t[1].calls), (1, 2));
        assert_eq!((t[0].weight_bytes, t[1].weight_bytes), (0, 200));
        assert!(t[1].seconds >= 0.002, "{:?}", t[1]);
        assert_eq!(Op::ALL.len(), N_OPS);
        for (i, op) in Op::ALL.iter().enumerate() {
            assert_eq!(*op as usize, i, "{}", op.name());
        }
        p.start();
        assert!(p.stop().is_empty(), "start zeroes the totals");
    }
}
