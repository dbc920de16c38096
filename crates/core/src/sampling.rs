//! Choosing the next token from logits: greedy, or temperature with top-k / top-p / min-p filtering and a
//! repetition penalty, in the order transformers applies them. A seeded RNG makes runs repeatable.
//!
//! [`sample_row`] is the algorithm the GPU sampler (`common/sample.wgsl`) runs, written so that it needs no sort:
//! top-k and top-p become thresholds on the token probabilities, each found by bisecting the bits of a float, and
//! the token is drawn by inverse CDF in vocabulary order. Sums run over [`SAMPLE_LANES`] contiguous chunks of the
//! vocabulary, each summed in order and then added in lane order, as the kernel's lanes do, so both round alike.

/// Lanes the GPU sampler splits the vocabulary over (one workgroup); the reference sums in the same chunks.
pub const SAMPLE_LANES: usize = 256;

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

impl SamplingParams {
    /// Greedy decoding with every filter off (the default).
    pub const GREEDY: SamplingParams =
        SamplingParams { temperature: 0.0, top_k: 0, top_p: 1.0, min_p: 0.0, repetition_penalty: 1.0, seed: 0 };
}

impl SamplingParams {
    /// Refuses settings no sampler can follow, naming the setting: a temperature that is negative or not finite,
    /// top-p or min-p outside [0, 1], a repetition penalty that is not positive and finite.
    pub fn check(&self) -> Result<(), String> {
        let bad = |name: &str, value: f32, wanted: &str| Err(format!("sampling setting {name} = {value}: {wanted}"));
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return bad("temperature", self.temperature, "must be finite and at least 0 (0 is greedy)");
        }
        for (name, value) in [("top_p", self.top_p), ("min_p", self.min_p)] {
            if !(0.0..=1.0).contains(&value) {
                return bad(name, value, "must lie in [0, 1]");
            }
        }
        if !(self.repetition_penalty.is_finite() && self.repetition_penalty > 0.0) {
            return bad("repetition_penalty", self.repetition_penalty, "must be finite and above 0 (1 is off)");
        }
        Ok(())
    }
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams::GREEDY
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

/// The lowest index of the largest value.
fn argmax(values: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if v > values[best] {
            best = i;
        }
    }
    best as u32
}

/// `logit` under a repetition penalty: positive logits divided by it, negative ones multiplied.
fn penalize(logit: f32, penalty: f32) -> f32 {
    if logit > 0.0 {
        logit / penalty
    } else {
        logit * penalty
    }
}

/// Probabilities relative to the most likely token (which gets exactly 1), with their float bits as sort keys:
/// for non-negative floats the bit patterns order as the values do.
struct Weights {
    e: Vec<f32>,
    chunk: usize,
}

impl Weights {
    /// Sum over the tokens whose key is at least `floor` of their weight (`weighted`) or of 1, in the lane order.
    fn measure(&self, floor: u32, weighted: bool) -> f32 {
        self.lane_sums(floor, weighted).iter().fold(0.0, |total, &s| total + s)
    }

    fn lane_sums(&self, floor: u32, weighted: bool) -> Vec<f32> {
        self.e
            .chunks(self.chunk)
            .map(|lane| {
                lane.iter().filter(|e| e.to_bits() >= floor).fold(0.0, |s, &e| s + if weighted { e } else { 1.0 })
            })
            .collect()
    }

    /// The largest key `t` for which `holds(t)` (which must hold at 0 and fail beyond some key), bit by bit.
    fn bisect(&self, holds: impl Fn(u32) -> bool) -> u32 {
        (0..31).rev().fold(0, |t, bit| if holds(t | 1 << bit) { t | 1 << bit } else { t })
    }
}

/// Picks a token from one row of `logits` with settings `p`, given the ids already in the context (for the
/// repetition penalty) and a uniform draw `u` in [0, 1) (unused when greedy). The reference of the GPU sampler.
pub fn sample_row(logits: &[f32], context: &[u32], p: &SamplingParams, u: f32) -> u32 {
    let vocab = logits.len();
    let mut x = logits.to_vec();
    if p.repetition_penalty != 1.0 {
        for &id in context.iter().filter(|&&id| (id as usize) < vocab) {
            x[id as usize] = penalize(logits[id as usize], p.repetition_penalty);
        }
    }
    if p.temperature <= 0.0 {
        return argmax(&x);
    }
    let max = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let e = x
        .iter()
        .map(|&v| (v / p.temperature - max / p.temperature).exp())
        .map(|e| if e < f32::MIN_POSITIVE { 0.0 } else { e })
        .collect();
    let w = Weights { e, chunk: vocab.div_ceil(SAMPLE_LANES).max(1) };
    // Top-k: the k-th largest probability; top-p: the smallest probability of the shortest prefix (by falling
    // probability) of the top-k set holding p of its mass; min-p: relative to the top token's 1.
    let top_k = if p.top_k > 0 && p.top_k < vocab { w.bisect(|t| w.measure(t, false) >= p.top_k as f32) } else { 0 };
    let top_p = if p.top_p < 1.0 {
        let target = p.top_p * w.measure(top_k, true);
        w.bisect(|t| w.measure(t.max(top_k), true) >= target)
    } else {
        0
    };
    // Never above the top token's 1, so at least it stays whatever the settings.
    let floor = top_k.max(top_p).max(if p.min_p > 0.0 { p.min_p.to_bits() } else { 0 }).min(1f32.to_bits());
    draw(&w, floor, u)
}

/// The token an inverse-CDF walk in vocabulary order reaches at `u` of the mass of the tokens whose key is at
/// least `floor`: the lane holding it first, then the token within the lane. Rounding that runs past the end
/// lands on the last kept token with any mass.
fn draw(w: &Weights, floor: u32, u: f32) -> u32 {
    let lanes = w.lane_sums(floor, true);
    let mut r = u * lanes.iter().fold(0.0, |total, &s| total + s);
    let mut lane = lanes.iter().rposition(|&s| s > 0.0).unwrap_or(0);
    for (l, &s) in lanes.iter().enumerate() {
        if r < s {
            lane = l;
            break;
        }
        r -= s;
    }
    let start = lane * w.chunk;
    let mut last = start;
    for (i, &e) in w.e.iter().enumerate().skip(start).take(w.chunk) {
        if e.to_bits() >= floor && e > 0.0 {
            if r < e {
                return i as u32;
            }
            r -= e;
            last = i;
        }
    }
    last as u32
}

impl Sampler {
    /// A sampler with `params`, its RNG seeded from `params.seed`.
    pub fn new(params: SamplingParams) -> Self {
        let rng = Rng::new(params.seed);
        Sampler { params, rng }
    }

    /// The settings.
    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// The uniform draw for the next token (one per token, greedy or not, so a run's draws do not depend on
    /// where it samples).
    pub fn next_uniform(&mut self) -> f32 {
        self.rng.next_f32()
    }

    /// Picks the next token from `logits`, given the ids already in the context (for the repetition penalty).
    pub fn sample(&mut self, logits: &[f32], context: &[u32]) -> u32 {
        let u = self.next_uniform();
        sample_row(logits, context, &self.params, u)
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

    /// The tokens transformers' warpers keep (sort, top-k, renormalise, top-p prefix, min-p), with probabilities.
    fn kept_by_sorting(logits: &[f32], p: &SamplingParams) -> Vec<(usize, f32)> {
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
        if p.top_k > 0 {
            order.truncate(p.top_k);
        }
        let max = logits[order[0]] / p.temperature;
        let probs: Vec<f32> = order.iter().map(|&i| (logits[i] / p.temperature - max).exp()).collect();
        let total: f32 = probs.iter().sum();
        // A token is in the nucleus while the mass before it is below p.
        let mut before = 0.0;
        let mut nucleus = 0;
        while nucleus < probs.len() && before < p.top_p {
            before += probs[nucleus] / total;
            nucleus += 1;
        }
        let min_p = probs.iter().take_while(|&&x| x >= p.min_p).count();
        order.iter().zip(probs).take(nucleus.min(min_p)).map(|(&i, x)| (i, x)).collect()
    }

    #[test]
    fn threshold_filters_keep_what_sorting_keeps() {
        let mut rng = Rng::new(3);
        let logits: Vec<f32> = (0..1000).map(|_| rng.next_f32() * 8.0 - 4.0).collect();
        for (temperature, top_k, top_p, min_p) in
            [(1.0, 0, 0.9, 0.0), (0.7, 40, 1.0, 0.0), (1.3, 100, 0.5, 0.0), (1.0, 0, 1.0, 0.3), (2.0, 7, 0.8, 0.05)]
        {
            let p = SamplingParams { temperature, top_k, top_p, min_p, ..Default::default() };
            let want = kept_by_sorting(&logits, &p);
            let mass: f32 = want.iter().map(|w| w.1).sum();
            let steps = 8192;
            let reached: std::collections::BTreeSet<u32> =
                (0..steps).map(|i| sample_row(&logits, &[], &p, i as f32 / steps as f32)).collect();
            let kept: std::collections::BTreeSet<u32> = want.iter().map(|w| w.0 as u32).collect();
            assert!(reached.is_subset(&kept), "{p:?}: drew outside the kept set");
            // A sweep this fine reaches every kept token holding more than two steps of the mass.
            for &(i, x) in want.iter().filter(|w| w.1 / mass > 2.0 / steps as f32) {
                assert!(reached.contains(&(i as u32)), "{p:?}: token {i} (p = {}) never drawn", x / mass);
            }
        }
    }

    #[test]
    fn settings_no_sampler_can_follow_are_refused_by_name() {
        assert_eq!(SamplingParams::GREEDY.check(), Ok(()));
        for (params, name) in [
            (SamplingParams { temperature: f32::NAN, ..Default::default() }, "temperature"),
            (SamplingParams { temperature: -1.0, ..Default::default() }, "temperature"),
            (SamplingParams { top_p: 1.5, ..Default::default() }, "top_p"),
            (SamplingParams { min_p: f32::NAN, ..Default::default() }, "min_p"),
            (SamplingParams { repetition_penalty: 0.0, ..Default::default() }, "repetition_penalty"),
        ] {
            let e = params.check().unwrap_err();
            assert!(e.contains(name), "{e}");
        }
    }

    #[test]
    fn filters_that_keep_nothing_keep_the_top_token() {
        let l = logits();
        let greedy = Sampler::new(SamplingParams::default()).sample(&l, &[]);
        for params in [
            SamplingParams { temperature: 1.0, top_p: 0.0, ..Default::default() },
            SamplingParams { temperature: 1.0, min_p: 2.0, ..Default::default() },
        ] {
            assert_eq!(sample_row(&l, &[], &params, 0.99), greedy, "{params:?}");
        }
    }
}
