//! The recurrent state of a Mamba model: per layer a conv state and an SSM
//! state, fp32. Its size is fixed by the hyper-parameters, independent of how
//! many tokens have been seen.
//!
//! States live in the backend, in a slot-indexed pool (see
//! [`crate::backend`]); a sequence holds a [`StateSlot`]. [`State`] is the
//! host form of one slot: what state files and the prefix cache keep, and
//! what moves a state between backends.

use std::sync::{Arc, Mutex};

use crate::model::Hparams;

/// Which slots of one model's state pool are taken.
#[derive(Debug, Default)]
pub(crate) struct SlotTable {
    used: Mutex<Vec<bool>>,
}

impl SlotTable {
    /// Takes the lowest free slot (growing the table by one if none is).
    pub(crate) fn take(self: &Arc<Self>) -> StateSlot {
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        let index = match used.iter().position(|u| !u) {
            Some(i) => i,
            None => {
                used.push(false);
                used.len() - 1
            }
        };
        used[index] = true;
        StateSlot {
            index,
            table: self.clone(),
        }
    }
}

/// One slot of a model's state pool, held by one sequence (a
/// [`Session`](crate::Session)); given back to the pool when dropped. Not
/// `Clone`: a slot has one owner.
#[derive(Debug)]
pub struct StateSlot {
    index: usize,
    table: Arc<SlotTable>,
}

impl StateSlot {
    /// The slot's index in the backend's pool.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Whether the slot is from this table (this model's pool).
    pub(crate) fn is_of(&self, table: &Arc<SlotTable>) -> bool {
        Arc::ptr_eq(&self.table, table)
    }
}

impl Drop for StateSlot {
    fn drop(&mut self) {
        let mut used = self.table.used.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(u) = used.get_mut(self.index) {
            *u = false;
        }
    }
}

/// One layer's state.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerState {
    /// [(K-1)][E]: the last K-1 conv inputs, oldest first.
    pub conv: Vec<f32>,
    /// [E][N]: the selective-scan state.
    pub ssm: Vec<f32>,
}

/// The whole model's state. Cloning it is a snapshot.
#[derive(Clone, Debug, PartialEq)]
pub struct State {
    pub layers: Vec<LayerState>,
}

impl State {
    /// A zero state (the start of a sequence).
    pub fn new(hp: &Hparams) -> State {
        let conv = hp.d_conv.saturating_sub(1) * hp.d_inner;
        let ssm = hp.d_inner * hp.d_state;
        State {
            layers: (0..hp.n_layer)
                .map(|_| LayerState {
                    conv: vec![0.0; conv],
                    ssm: vec![0.0; ssm],
                })
                .collect(),
        }
    }

    /// Whether it has `hp`'s shape (layers, conv and SSM sizes).
    pub fn fits(&self, hp: &Hparams) -> bool {
        let conv = hp.d_conv.saturating_sub(1) * hp.d_inner;
        let ssm = hp.d_inner * hp.d_state;
        self.layers.len() == hp.n_layer
            && self
                .layers
                .iter()
                .all(|l| l.conv.len() == conv && l.ssm.len() == ssm)
    }

    /// Back to the start of a sequence.
    pub fn reset(&mut self) {
        for l in &mut self.layers {
            l.conv.fill(0.0);
            l.ssm.fill(0.0);
        }
    }

    /// Copy `other` into self without allocating (same model).
    pub fn copy_from(&mut self, other: &State) -> bool {
        if self.layers.len() != other.layers.len() {
            return false;
        }
        for (a, b) in self.layers.iter_mut().zip(&other.layers) {
            if a.conv.len() != b.conv.len() || a.ssm.len() != b.ssm.len() {
                return false;
            }
            a.conv.copy_from_slice(&b.conv);
            a.ssm.copy_from_slice(&b.ssm);
        }
        true
    }

    /// Bytes held by the state.
    pub fn bytes(&self) -> usize {
        self.layers
            .iter()
            .map(|l| (l.conv.len() + l.ssm.len()) * 4)
            .sum()
    }
}
