//! Next-token sampling: repetition penalty, then greedy (temperature 0) or
//! top-k -> top-p -> min-p -> temperature -> a seeded draw (llama.cpp's order).
//! Reproducible: the same seed, logits and history give the same tokens.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::error::ModelError;

/// Sampling settings. A filter is off at its neutral value (top_k 0,
/// top_p 1, min_p 0, repeat_penalty 1).
#[derive(Clone, Debug, PartialEq)]
pub struct SamplerConfig {
    /// 0 (or less): greedy.
    pub temp: f32,
    pub top_k: usize,
    pub top_p: f32,
    pub min_p: f32,
    /// llama.cpp's: a seen token's positive logit is divided by it, a negative one multiplied.
    pub repeat_penalty: f32,
    /// How many of the latest tokens the penalties look at (prompt and
    /// generated, as llama.cpp's `penalty_last_n`).
    pub repeat_last_n: usize,
    /// OpenAI's: `count * frequency_penalty + (count > 0) * presence_penalty`
    /// is subtracted from a token's logit, count = its occurrences in the
    /// window. 0 is off.
    pub frequency_penalty: f32,
    pub presence_penalty: f32,
    /// Added to the logits before anything else (OpenAI's `logit_bias`;
    /// -100 all but bans a token). Ids outside the vocabulary are ignored
    /// here; the server refuses them.
    pub logit_bias: Vec<(u32, f32)>,
    pub seed: u64,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig {
            temp: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            logit_bias: Vec::new(),
            seed: 0,
        }
    }
}

/// A sampler with its random generator and candidate buffer.
pub struct Sampler {
    cfg: SamplerConfig,
    rng: StdRng,
    /// (id, logit) candidates, reused across calls.
    cand: Vec<(u32, f32)>,
}

impl Sampler {
    pub fn new(cfg: SamplerConfig) -> Sampler {
        Sampler {
            rng: StdRng::seed_from_u64(cfg.seed),
            cfg,
            cand: Vec::new(),
        }
    }

    pub fn config(&self) -> &SamplerConfig {
        &self.cfg
    }

    /// Whether this sampler always picks the largest logit, the lowest id
    /// on ties ([`argmax`]): greedy, with no bias or penalty to change the
    /// logits first. Such a choice can be made where the logits are
    /// ([`crate::Session::feed_greedy`]).
    pub fn is_plain_greedy(&self) -> bool {
        self.cfg.temp <= 0.0 && self.logits_as_given()
    }

    /// No bias or penalty changes any logit before the choice.
    fn logits_as_given(&self) -> bool {
        let c = &self.cfg;
        c.logit_bias.is_empty()
            && c.frequency_penalty == 0.0
            && c.presence_penalty == 0.0
            && (c.repeat_penalty == 1.0 || c.repeat_penalty <= 0.0)
    }

    /// [`Sampler::sample`] for a decode loop: NaN logits are an error (the
    /// model's output is broken), not a token. Every loop that generates
    /// (`Generate`, the server's slots) samples through this.
    pub fn try_sample(&mut self, logits: &[f32], history: &[u32]) -> Result<u32, ModelError> {
        check_nan(logits)?;
        Ok(self.sample(logits, history))
    }

    /// The next token for `logits`, given the tokens so far (`history`, for the
    /// repetition penalty). NaN logits are never chosen over finite ones.
    pub fn sample(&mut self, logits: &[f32], history: &[u32]) -> u32 {
        let cfg = &self.cfg;
        self.cand.clear();
        self.cand.extend(
            logits
                .iter()
                .enumerate()
                .map(|(i, &l)| (i as u32, if l.is_nan() { f32::NEG_INFINITY } else { l })),
        );
        for &(id, bias) in &cfg.logit_bias {
            if let Some(c) = self.cand.get_mut(id as usize) {
                c.1 += bias;
            }
        }
        let tail = &history[history.len().saturating_sub(cfg.repeat_last_n)..];
        if cfg.frequency_penalty != 0.0 || cfg.presence_penalty != 0.0 {
            for (i, &id) in tail.iter().enumerate() {
                if tail[..i].contains(&id) {
                    continue;
                }
                let count = tail[i..].iter().filter(|&&t| t == id).count() as f32;
                if let Some(c) = self.cand.get_mut(id as usize) {
                    c.1 -= count * cfg.frequency_penalty + cfg.presence_penalty;
                }
            }
        }
        if cfg.repeat_penalty != 1.0 && cfg.repeat_penalty > 0.0 {
            for (i, &id) in tail.iter().enumerate() {
                if tail[..i].contains(&id) {
                    continue;
                }
                if let Some(c) = self.cand.get_mut(id as usize) {
                    c.1 = if c.1 > 0.0 {
                        c.1 / cfg.repeat_penalty
                    } else {
                        c.1 * cfg.repeat_penalty
                    };
                }
            }
        }
        if cfg.temp <= 0.0 || self.cand.len() <= 1 {
            return first_max(self.cand.iter().copied());
        }
        if cfg.top_k > 0 {
            keep_top(&mut self.cand, cfg.top_k);
        }
        self.draw()
    }

    /// [`Sampler::sample`] from the `top_k` largest logits alone (`cands`:
    /// exactly `min(top_k, V)` of them, as [`crate::backend::TopK`] gives
    /// them), for a sampler of [`Sampler::device_top_k`]: the same token as
    /// from all the logits, the random generator moved on alike.
    pub fn sample_top_k(&mut self, cands: &[(u32, f32)]) -> u32 {
        if cands.is_empty() {
            return 0;
        }
        self.cand.clear();
        self.cand.extend_from_slice(cands);
        self.draw()
    }

    /// The top-k cut when nothing else needs the other logits: temperature
    /// sampling with `top_k` in `1..=max` and no bias or penalty (they
    /// change logits outside the top k). Then the device can make the cut
    /// and [`Sampler::sample_top_k`] draws from its candidates.
    pub fn device_top_k(&self, max: usize) -> Option<usize> {
        let c = &self.cfg;
        (c.temp > 0.0 && (1..=max).contains(&c.top_k) && self.logits_as_given()).then_some(c.top_k)
    }

    /// Sorts the candidates, applies top-p and min-p, draws one.
    fn draw(&mut self) -> u32 {
        let cfg = &self.cfg;
        self.cand.sort_unstable_by(by_logit);
        let max = self.cand[0].1;
        if cfg.top_p < 1.0 {
            let total: f64 = self.cand.iter().map(|c| ((c.1 - max) as f64).exp()).sum();
            let mut cum = 0.0;
            let mut keep = self.cand.len();
            for (i, c) in self.cand.iter().enumerate() {
                cum += ((c.1 - max) as f64).exp() / total;
                if cum >= cfg.top_p as f64 {
                    keep = i + 1;
                    break;
                }
            }
            self.cand.truncate(keep.max(1));
        }
        if cfg.min_p > 0.0 {
            // p_i >= min_p * p_max  <=>  l_i >= max + ln(min_p)
            let floor = max + cfg.min_p.ln();
            let keep = self.cand.iter().take_while(|c| c.1 >= floor).count();
            self.cand.truncate(keep.max(1));
        }
        let weights = |c: &(u32, f32)| (((c.1 - max) / cfg.temp) as f64).exp();
        let total: f64 = self.cand.iter().map(weights).sum();
        if !(total.is_finite() && total > 0.0) {
            return self.cand[0].0;
        }
        let mut u = self.rng.gen::<f64>() * total;
        for c in &self.cand {
            u -= weights(c);
            if u < 0.0 {
                return c.0;
            }
        }
        self.cand[self.cand.len() - 1].0
    }
}

/// Keeps the `k` first candidates in [`by_logit`] order (all when `k` is not
/// below their count), in no order.
pub fn keep_top(cands: &mut Vec<(u32, f32)>, k: usize) {
    if k < cands.len() {
        if k > 0 {
            cands.select_nth_unstable_by(k - 1, by_logit);
        }
        cands.truncate(k);
    }
}

/// The candidates' order: logit descending (Rust's total order of floats),
/// the lowest id first on ties.
pub fn by_logit(a: &(u32, f32), b: &(u32, f32)) -> std::cmp::Ordering {
    b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
}

fn check_nan(logits: &[f32]) -> Result<(), ModelError> {
    match logits.iter().position(|l| l.is_nan()) {
        Some(i) => Err(ModelError::NanLogits { id: i as u32 }),
        None => Ok(()),
    }
}

/// THE argmax: the index of the largest logit, the lowest id on ties (as
/// numpy's); NaN logits are an error. Greedy sampling, bench's decode and
/// perplexity's top-1 all use it.
pub fn argmax(logits: &[f32]) -> Result<u32, ModelError> {
    check_nan(logits)?;
    Ok(first_max(
        logits.iter().enumerate().map(|(i, &l)| (i as u32, l)),
    ))
}

/// [`argmax`] for measurements that must not stop: NaN counts as -inf.
pub fn argmax_logits(logits: &[f32]) -> u32 {
    first_max(
        logits
            .iter()
            .enumerate()
            .map(|(i, &l)| (i as u32, if l.is_nan() { f32::NEG_INFINITY } else { l })),
    )
}

/// The id of the first largest value (NaN-free input; 0 when empty).
fn first_max(c: impl Iterator<Item = (u32, f32)>) -> u32 {
    let mut best: Option<(u32, f32)> = None;
    for x in c {
        match best {
            Some(b) if x.1 <= b.1 => {}
            _ => best = Some(x),
        }
    }
    best.map(|b| b.0).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(temp: f32) -> SamplerConfig {
        SamplerConfig {
            temp,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            logit_bias: Vec::new(),
            seed: 42,
        }
    }

    #[test]
    fn logit_bias_and_openai_penalties_move_the_greedy_choice() {
        // Token 1 leads by 1.0.
        let logits = [0.0, 3.0, 2.0, -1.0];
        let mut s = Sampler::new(SamplerConfig {
            logit_bias: vec![(1, -100.0)],
            ..cfg(0.0)
        });
        assert_eq!(s.sample(&logits, &[]), 2);
        let mut s = Sampler::new(SamplerConfig {
            logit_bias: vec![(3, 5.0), (99, 100.0)],
            ..cfg(0.0)
        });
        assert_eq!(
            s.sample(&logits, &[]),
            3,
            "an id past the vocabulary is ignored"
        );
        // Token 1 seen twice: 2 * 0.6 = 1.2 > its lead of 1.0.
        let mut s = Sampler::new(SamplerConfig {
            frequency_penalty: 0.6,
            ..cfg(0.0)
        });
        assert_eq!(s.sample(&logits, &[1, 1]), 2);
        assert_eq!(s.sample(&logits, &[1]), 1, "once: 0.6 < 1.0");
        let mut s = Sampler::new(SamplerConfig {
            presence_penalty: 1.5,
            ..cfg(0.0)
        });
        assert_eq!(s.sample(&logits, &[1]), 2);
        // Negative values encourage repeats (0 + 3.5 > 3).
        let mut s = Sampler::new(SamplerConfig {
            presence_penalty: -3.5,
            ..cfg(0.0)
        });
        assert_eq!(s.sample(&logits, &[0]), 0);
        // Only the window counts.
        let mut s = Sampler::new(SamplerConfig {
            presence_penalty: 1.5,
            repeat_last_n: 1,
            ..cfg(0.0)
        });
        assert_eq!(s.sample(&logits, &[1, 3]), 1);
    }

    #[test]
    fn greedy_takes_the_largest_and_the_lowest_id_on_ties() {
        let mut s = Sampler::new(cfg(0.0));
        assert_eq!(s.sample(&[0.1, 3.0, -1.0, 2.9], &[]), 1);
        assert_eq!(s.sample(&[1.0, 5.0, 5.0], &[]), 1);
        assert_eq!(s.sample(&[f32::NAN, 0.5, 0.2], &[]), 1);
        assert_eq!(argmax_logits(&[0.0, 2.0, 2.0, 1.0]), 1);
    }

    #[test]
    fn argmax_takes_the_first_on_ties_and_refuses_nan() {
        assert_eq!(argmax(&[0.0, 2.0, 2.0, 1.0]).ok(), Some(1));
        assert_eq!(argmax(&[f32::NEG_INFINITY; 3]).ok(), Some(0));
        assert!(matches!(
            argmax(&[0.0, f32::NAN, 1.0]),
            Err(ModelError::NanLogits { id: 1 })
        ));
        let mut s = Sampler::new(cfg(0.0));
        assert!(s.try_sample(&[f32::NAN, 0.5], &[]).is_err());
        assert_eq!(s.try_sample(&[0.1, 0.5, 0.5], &[]).ok(), Some(1));
    }

    #[test]
    fn same_seed_same_tokens_other_seed_differs() {
        let logits: Vec<f32> = (0..100).map(|i| ((i * 37) % 11) as f32 * 0.3).collect();
        let draw = |seed| {
            let mut c = cfg(1.0);
            c.seed = seed;
            let mut s = Sampler::new(c);
            (0..50).map(|_| s.sample(&logits, &[])).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
    }

    #[test]
    fn frequencies_follow_the_softmax_at_the_temperature() {
        // logits ln(1), ln(2), ln(5) at temp 1: p = 0.125, 0.25, 0.625.
        // At temp 0.5: p proportional to 1, 4, 25.
        for (temp, want) in [(1.0f32, [1.0, 2.0, 5.0]), (0.5, [1.0, 4.0, 25.0])] {
            let logits = [1f32.ln(), 2f32.ln(), 5f32.ln()];
            let mut s = Sampler::new(cfg(temp));
            let n = 40_000;
            let mut counts = [0usize; 3];
            for _ in 0..n {
                counts[s.sample(&logits, &[]) as usize] += 1;
            }
            let z: f64 = want.iter().sum();
            for i in 0..3 {
                let p = want[i] / z;
                let f = counts[i] as f64 / n as f64;
                // 5 standard deviations of a binomial frequency.
                let sd = (p * (1.0 - p) / n as f64).sqrt();
                assert!(
                    (f - p).abs() < 5.0 * sd,
                    "temp {temp} token {i}: {f} vs {p}"
                );
            }
        }
    }

    #[test]
    fn top_k_top_p_and_min_p_cut_the_tail() {
        let logits = [3.0f32, 2.0, 1.0, 0.0, -1.0];
        let seen = |c: SamplerConfig| {
            let mut s = Sampler::new(c);
            let mut set = [false; 5];
            for _ in 0..2000 {
                set[s.sample(&logits, &[]) as usize] = true;
            }
            set
        };
        let mut c = cfg(5.0);
        c.top_k = 2;
        assert_eq!(seen(c), [true, true, false, false, false]);
        // softmax at temp 1: 0.636, 0.234, 0.086, 0.032, 0.012: top_p 0.8 keeps 2.
        let mut c = cfg(5.0);
        c.top_p = 0.8;
        assert_eq!(seen(c), [true, true, false, false, false]);
        let mut c = cfg(5.0);
        c.top_p = 0.9;
        assert_eq!(seen(c), [true, true, true, false, false]);
        // min_p 0.1: keep p >= 0.1 * p_max, i.e. logit >= 3 - ln 10 = 0.70.
        let mut c = cfg(5.0);
        c.min_p = 0.1;
        assert_eq!(seen(c), [true, true, true, false, false]);
        let mut c = cfg(5.0);
        c.top_k = 1;
        assert_eq!(seen(c), [true, false, false, false, false]);
    }

    #[test]
    fn repetition_penalty_demotes_seen_tokens_once() {
        let mut c = cfg(0.0);
        c.repeat_penalty = 2.0;
        let mut s = Sampler::new(c.clone());
        // 4.0 / 2 = 2.0 < 3.0: the seen token loses.
        assert_eq!(s.sample(&[4.0, 3.0], &[0]), 1);
        // Repeated in history: still divided once (4/2 = 2 > 1.5).
        assert_eq!(s.sample(&[4.0, 1.5], &[0, 0, 0]), 0);
        // Negative logits are multiplied: -1 * 2 = -2 < -1.5.
        assert_eq!(s.sample(&[-1.0, -1.5], &[0]), 1);
        // Outside the window: no penalty.
        c.repeat_last_n = 1;
        let mut s = Sampler::new(c);
        assert_eq!(s.sample(&[4.0, 3.0], &[0, 1]), 0);
    }

    #[test]
    fn plain_greedy_means_the_choice_is_the_argmax() {
        let plain = |f: fn(&mut SamplerConfig)| {
            let mut c = cfg(0.0);
            f(&mut c);
            Sampler::new(c).is_plain_greedy()
        };
        assert!(plain(|_| {}));
        assert!(plain(|c| c.top_k = 3));
        assert!(!plain(|c| c.temp = 0.7));
        assert!(!plain(|c| c.repeat_penalty = 1.1));
        assert!(!plain(|c| c.frequency_penalty = 0.5));
        assert!(!plain(|c| c.presence_penalty = -0.5));
        assert!(!plain(|c| c.logit_bias = vec![(3, -100.0)]));
    }

    /// Drawing from the top-k candidates alone gives the token drawing from
    /// all the logits gives, draw after draw (the generator moves alike):
    /// random logits and logits with many ties, several cuts (k beyond the
    /// vocabulary too), top-p and min-p on or off.
    #[test]
    fn top_k_candidates_alone_draw_what_all_the_logits_draw() {
        use crate::backend::TopK;
        let mut rng = StdRng::seed_from_u64(5);
        let random: Vec<f32> = (0..300).map(|_| rng.gen_range(-4.0..4.0)).collect();
        let tied: Vec<f32> = (0..300).map(|_| rng.gen_range(0..4) as f32 * 0.5).collect();
        for logits in [&random, &tied] {
            for (k, top_p, min_p, temp) in [
                (1, 1.0, 0.0, 0.8),
                (5, 1.0, 0.0, 1.0),
                (40, 0.9, 0.05, 0.7),
                (40, 1.0, 0.0, 1.5),
                (299, 0.95, 0.0, 1.0),
                (300, 0.5, 0.1, 2.0),
                (1000, 1.0, 0.0, 1.0),
            ] {
                let c = SamplerConfig {
                    temp,
                    top_k: k,
                    top_p,
                    min_p,
                    seed: 9,
                    ..cfg(temp)
                };
                let (mut all, mut cut) = (Sampler::new(c.clone()), Sampler::new(c));
                assert_eq!(cut.device_top_k(1000), Some(k));
                let cands = TopK::of(logits, k.min(logits.len())).cands;
                for draw in 0..50 {
                    assert_eq!(
                        cut.sample_top_k(&cands),
                        all.sample(logits, &[]),
                        "k {k}, top_p {top_p}, min_p {min_p}, temp {temp}, draw {draw}"
                    );
                }
            }
        }
        // Nothing else may read the other logits.
        let only = |f: fn(&mut SamplerConfig)| {
            let mut c = cfg(0.8);
            c.top_k = 40;
            f(&mut c);
            Sampler::new(c).device_top_k(256)
        };
        assert_eq!(only(|_| {}), Some(40));
        assert_eq!(only(|c| c.top_k = 0), None);
        assert_eq!(only(|c| c.top_k = 257), None);
        assert_eq!(only(|c| c.temp = 0.0), None);
        assert_eq!(only(|c| c.repeat_penalty = 1.2), None);
        assert_eq!(only(|c| c.presence_penalty = 0.1), None);
        assert_eq!(only(|c| c.logit_bias = vec![(1, 2.0)]), None);
    }
}
