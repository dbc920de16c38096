//! Choosing the next token from logits: greedy, or temperature with top-k / top-p / min-p filtering and a
//! repetition penalty, in the order transformers applies them. A seeded RNG makes runs repeatable.

/// Sampling settings. `temperature == 0` means greedy (argmax).
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingParams {
    /// Softmax temperature; 0 selects the argmax.
    pub temperature: f32,
    /// Keep only the k most likely tokens (0 = off).
    pub top_k: usize,
    /// Keep the smallest set whose probability reaches p (1.0 = off).
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` × the most likely one (0 = off).
    pub min_p: f32,
    /// Penalty (> 1 discourages) on tokens already in the context (1.0 = off).
    pub repetition_penalty: f32,
    /// RNG seed: the same seed, logits and settings give the same tokens.
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams { temperature: 0.0, top_k: 0, top_p: 1.0, min_p: 0.0, repetition_penalty: 1.0, seed: 0 }
    }
}

/// SplitMix64: a small, well-mixed, seedable generator (no platform entropy, so it behaves the same in wasm).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform float in [0, 1).
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// A stateful sampler: settings plus its RNG.
#[derive(Clone, Debug)]
pub struct Sampler {
    params: SamplingParams,
    rng: Rng,
}

fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best as u32
}

impl Sampler {
    /// A sampler with `params`, its RNG seeded from `params.seed`.
    pub fn new(params: SamplingParams) -> Self {
        let rng = Rng::new(params.seed);
        Sampler { params, rng }
    }

    /// Picks the next token from `logits`, given the ids already in the context (for the repetition penalty).
    pub fn sample(&mut self, logits: &[f32], context: &[u32]) -> u32 {
        let p = &self.params;
        let mut logits = logits.to_vec();
        if p.repetition_penalty != 1.0 {
            let mut seen = vec![false; logits.len()];
            for &id in context {
                if let Some(s) = seen.get_mut(id as usize) {
                    *s = true;
                }
            }
            for (l, _) in logits.iter_mut().zip(&seen).filter(|(_, &s)| s) {
                *l = if *l > 0.0 { *l / p.repetition_penalty } else { *l * p.repetition_penalty };
            }
        }
        if p.temperature <= 0.0 {
            return argmax(&logits);
        }
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
        if p.top_k > 0 {
            order.truncate(p.top_k);
        }
        let max = logits[order[0]] / p.temperature;
        let mut probs: Vec<f32> = order.iter().map(|&i| (logits[i] / p.temperature - max).exp()).collect();
        let total: f32 = probs.iter().sum();
        probs.iter_mut().for_each(|x| *x /= total);
        if p.top_p < 1.0 {
            let mut acc = 0.0;
            let keep = probs.iter().position(|&x| {
                acc += x;
                acc >= p.top_p
            });
            let keep = keep.map_or(probs.len(), |k| k + 1);
            order.truncate(keep);
            probs.truncate(keep);
        }
        if p.min_p > 0.0 {
            let cut = probs[0] * p.min_p;
            let keep = probs.iter().take_while(|&&x| x >= cut).count().max(1);
            order.truncate(keep);
            probs.truncate(keep);
        }
        let total: f32 = probs.iter().sum();
        let mut r = self.rng.next_f32() * total;
        for (&i, &pr) in order.iter().zip(&probs) {
            if r < pr {
                return i as u32;
            }
            r -= pr;
        }
        order[order.len() - 1] as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logits() -> Vec<f32> {
        (0..50).map(|i| ((i * 37) % 50) as f32 * 0.1 - 2.0).collect()
    }

    #[test]
    fn greedy_is_argmax() {
        let mut s = Sampler::new(SamplingParams::default());
        let l = logits();
        let best = s.sample(&l, &[]);
        assert!(l.iter().all(|&v| v <= l[best as usize]));
    }

    #[test]
    fn same_seed_same_tokens_and_different_seed_differs() {
        let params = SamplingParams { temperature: 1.5, seed: 7, ..Default::default() };
        let draw = |params: &SamplingParams| {
            let mut s = Sampler::new(params.clone());
            (0..64).map(|_| s.sample(&logits(), &[])).collect::<Vec<_>>()
        };
        assert_eq!(draw(&params), draw(&params));
        assert_ne!(draw(&params), draw(&SamplingParams { seed: 8, ..params.clone() }));
    }

    #[test]
    fn top_k_one_and_tiny_top_p_are_greedy() {
        let l = logits();
        let greedy = Sampler::new(SamplingParams::default()).sample(&l, &[]);
        for params in [
            SamplingParams { temperature: 1.0, top_k: 1, ..Default::default() },
            SamplingParams { temperature: 1.0, top_p: 1e-6, ..Default::default() },
            SamplingParams { temperature: 1.0, min_p: 0.999, ..Default::default() },
        ] {
            let mut s = Sampler::new(params);
            assert!((0..20).all(|_| s.sample(&l, &[]) == greedy));
        }
    }

    #[test]
    fn top_k_restricts_the_support() {
        let l = logits();
        let mut order: Vec<usize> = (0..l.len()).collect();
        order.sort_by(|&a, &b| l[b].total_cmp(&l[a]));
        let mut s = Sampler::new(SamplingParams { temperature: 5.0, top_k: 3, seed: 1, ..Default::default() });
        for _ in 0..200 {
            let t = s.sample(&l, &[]) as usize;
            assert!(l[t] >= l[order[2]]);
        }
    }

    #[test]
    fn repetition_penalty_moves_greedy_off_a_seen_token() {
        let l = vec![1.0, 0.9, -0.5];
        let mut s = Sampler::new(SamplingParams { repetition_penalty: 2.0, ..Default::default() });
        assert_eq!(s.sample(&l, &[]), 0);
        assert_eq!(s.sample(&l, &[0]), 1);
    }
}
