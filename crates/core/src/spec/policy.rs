//! Runtime attention policies: cheaper masks applied to the softmax-attention layers of any loaded model.
//!
//! Syntax (the CLI's `--attention-policy` and the JS API take the same strings):
//! - `full`: every layer as the model defines it;
//! - `sliding:W` or `sliding:W+sinks:S`: on layers that attend to the whole context, a window of `W` positions
//!   plus the first `S` positions kept as attention sinks, with StreamingLLM positions (queries and keys rotated
//!   by their place in the cache), so generation may run past the trained context with bounded memory (layers
//!   with their own window keep it, also by cache position);
//! - `sliding:W+absorb` (sinks allowed too): on layers that attend to the whole context, the window, with the keys
//!   that leave it absorbed into a Taylor linear-attention state instead of dropped (hybrid memory at a fixed cost;
//!   text positions, so within the trained context; see [`AttentionMask::absorb`]); trained windows stay as they are;
//! - `sparse:infllmv2`, optionally `@N` (attend densely below `N` positions) and `+block:B`, `+topk:K`,
//!   `+local:L`, `+init:I`: InfLLM-V2 block-sparse attention, MiniCPM4.1's settings by default (on layers that
//!   attend to the whole context; sliding-window layers keep their window);
//! - `route:infllmv2[@N][+block:B...][+entropy:T]`: a learned-free, Flux-Attention-style router on layers that attend
//!   to the whole context: they attend densely through the prefill (InfLLM-V2 pooling their keys all along); after
//!   it the session measures each layer's attention entropy at the last prompt token (normalised by `ln` of the
//!   keys, averaged over heads) and switches the layers below `T` (default 0.5), whose attention is concentrated,
//!   to block-sparse attention for what follows; the others stay dense;
//! - `layers:A-B=P,C=P,...`: policy `P` (one of the above) on model layers `A..=B`, `C`, ...; layers not named
//!   keep their own attention.
//!
//! MLA and linear-attention layers are left as they are.

use super::{AttentionMask, BlockSparse, MixerSpec, ModelSpec};
use crate::{CoreError, Result};

/// What one softmax-attention layer runs with.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LayerPolicy {
    /// The layer's own mask.
    Full,
    /// A sliding window with attention sinks, and StreamingLLM positions or an absorbing memory.
    Sliding {
        /// Positions in the window, including the query's own.
        window: usize,
        /// First positions kept visible.
        sinks: usize,
        /// Keys leaving the window go to a Taylor linear-attention state (text positions) instead of being
        /// dropped (StreamingLLM positions).
        absorb: bool,
    },
    /// InfLLM-V2 block-sparse attention.
    Sparse(BlockSparse),
    /// Dense until the router measures the layer's attention entropy after a prefill; block-sparse with these
    /// settings when the entropy is below the threshold.
    Routed(BlockSparse, f32),
}

/// Entropy threshold of `route:` when the policy names none.
pub const ROUTE_ENTROPY: f32 = 0.5;

impl LayerPolicy {
    fn parse(text: &str) -> Result<Self> {
        let bad = |why: &str| CoreError::InvalidInput(format!("attention policy `{text}`: {why}"));
        let number = |s: &str, what: &str| s.parse::<usize>().map_err(|_| bad(&format!("{what} `{s}` is not a count")));
        if text == "full" {
            return Ok(LayerPolicy::Full);
        }
        let (routed, sparse) = match (text.strip_prefix("route:infllmv2"), text.strip_prefix("sparse:infllmv2")) {
            (Some(rest), _) => (true, Some(rest)),
            (None, rest) => (false, rest),
        };
        if let Some(rest) = sparse {
            let mut cfg = BlockSparse::MINICPM4;
            let mut entropy = ROUTE_ENTROPY;
            let mut parts = rest.split('+');
            let head = parts.next().unwrap_or("");
            if let Some(n) = head.strip_prefix('@') {
                cfg.dense_len = number(n, "dense length")?;
            } else if !head.is_empty() {
                return Err(bad(&format!("`{head}` should be `@N` (dense below N positions)")));
            }
            for part in parts {
                let (key, value) = part.split_once(':').ok_or_else(|| bad(&format!("`{part}` is not KEY:VALUE")))?;
                if routed && key == "entropy" {
                    entropy = value.parse().map_err(|_| bad(&format!("entropy `{value}` is not a number")))?;
                    continue;
                }
                let value = number(value, key)?;
                match key {
                    "block" => cfg.block = value,
                    "topk" => cfg.topk = value,
                    "local" => cfg.local_blocks = value,
                    "init" => cfg.init_blocks = value,
                    _ => return Err(bad(&format!("unknown setting `{key}` (block, topk, local, init)"))),
                }
            }
            cfg.check().map_err(|e| bad(&e))?;
            return Ok(match routed {
                true => LayerPolicy::Routed(cfg, entropy),
                false => LayerPolicy::Sparse(cfg),
            });
        }
        let Some(rest) = text.strip_prefix("sliding:") else {
            return Err(bad("expected `full`, `sliding:W[+sinks:S][+absorb]`, `sparse:infllmv2[@N][+block:B...]`, \
                 `route:infllmv2[...][+entropy:T]` or `layers:RANGES=POLICY,...`"));
        };
        let mut parts = rest.split('+');
        let window = number(parts.next().unwrap_or(""), "window")?;
        let (mut sinks, mut absorb) = (0, false);
        for part in parts {
            match part.split_once(':') {
                Some(("sinks", s)) => sinks = number(s, "sinks")?,
                None if part == "absorb" => absorb = true,
                _ => return Err(bad(&format!("unknown setting `{part}` (sinks:S, absorb)"))),
            }
        }
        if window == 0 {
            return Err(bad("the window must hold at least one position"));
        }
        Ok(LayerPolicy::Sliding { window, sinks, absorb })
    }

    /// The mask a layer whose own mask is `own` runs with.
    fn mask(&self, own: &AttentionMask) -> AttentionMask {
        match *self {
            LayerPolicy::Full => own.clone(),
            LayerPolicy::Sliding { window, sinks, absorb } if own.window.is_none() => {
                AttentionMask { window: Some(window), sinks, reposition: !absorb, absorb, ..own.clone() }
            }
            // A layer's own window stays as trained (it was trained to drop what leaves it); cache positions give
            // it the same distances, and let the context stream past the trained length.
            LayerPolicy::Sliding { absorb: true, .. } => own.clone(),
            LayerPolicy::Sliding { .. } => AttentionMask { reposition: true, ..own.clone() },
            LayerPolicy::Sparse(cfg) if own.window.is_none() => AttentionMask { sparse: Some(cfg), ..own.clone() },
            // Dense at every length until routed, with the keys pooled so the switch can happen at any point.
            LayerPolicy::Routed(cfg, _) if own.window.is_none() => {
                AttentionMask { sparse: Some(cfg.pooling_only()), ..own.clone() }
            }
            LayerPolicy::Sparse(_) | LayerPolicy::Routed(..) => own.clone(),
        }
    }
}

/// A policy for every softmax-attention layer of a model (see the module doc for the syntax).
#[derive(Clone, Debug, PartialEq)]
pub struct AttentionPolicy {
    /// Layer ranges (inclusive) and their policies, checked in order; unnamed layers keep their own attention.
    rules: Vec<(usize, usize, LayerPolicy)>,
    text: String,
}

impl AttentionPolicy {
    /// The model as it is.
    pub fn full() -> Self {
        AttentionPolicy { rules: Vec::new(), text: "full".into() }
    }

    /// Parses a policy string.
    pub fn parse(text: &str) -> Result<Self> {
        let text = text.trim();
        let bad = |why: String| CoreError::InvalidInput(format!("attention policy `{text}`: {why}"));
        let rules = match text.strip_prefix("layers:") {
            None => vec![(0, usize::MAX, LayerPolicy::parse(text)?)],
            Some(list) => {
                let mut rules = Vec::new();
                for rule in list.split(',') {
                    let (range, policy) =
                        rule.split_once('=').ok_or_else(|| bad(format!("`{rule}` is not RANGE=POLICY")))?;
                    let layer =
                        |s: &str| s.trim().parse::<usize>().map_err(|_| bad(format!("layer `{s}` in `{rule}`")));
                    let (from, to) = match range.split_once('-') {
                        Some((a, b)) => (layer(a)?, layer(b)?),
                        None => (layer(range)?, layer(range)?),
                    };
                    if from > to {
                        return Err(bad(format!("range {from}-{to} runs backwards")));
                    }
                    rules.push((from, to, LayerPolicy::parse(policy.trim())?));
                }
                rules
            }
        };
        Ok(AttentionPolicy { rules, text: text.to_string() })
    }

    /// The policy of model layer `layer`.
    pub fn layer(&self, layer: usize) -> LayerPolicy {
        self.rules.iter().find(|(a, b, _)| (*a..=*b).contains(&layer)).map_or(LayerPolicy::Full, |r| r.2)
    }

    /// `spec` with this policy's masks on its softmax-attention layers. Refuses layer ranges past the model and
    /// windows (with sinks) beyond the positions the model was trained on.
    pub fn apply(&self, spec: &ModelSpec) -> Result<ModelSpec> {
        let bad = |why: String| CoreError::InvalidInput(format!("attention policy `{}`: {why}", self.text));
        let layers = spec.layers.len();
        if let Some((_, to, _)) = self.rules.iter().find(|(_, to, _)| *to != usize::MAX && *to >= layers) {
            return Err(bad(format!("layer {to} is past the model's {layers} layers")));
        }
        let mut out = spec.clone();
        for (i, layer) in out.layers.iter_mut().enumerate() {
            let policy = self.layer(i);
            for part in layer.mixer.parts_mut() {
                if let MixerSpec::Attention(a) = part {
                    a.mask = policy.mask(&a.mask);
                    let reach = a.mask.sinks + a.mask.window.unwrap_or(0);
                    if a.mask.repositions() && reach > spec.max_positions {
                        return Err(bad(format!(
                            "a window and sinks of {reach} positions exceed the model's {} positions",
                            spec.max_positions
                        )));
                    }
                }
            }
        }
        Ok(out)
    }
}

impl AttentionPolicy {
    /// Whether any layer is routed at run time.
    pub fn routes(&self) -> bool {
        self.rules.iter().any(|r| matches!(r.2, LayerPolicy::Routed(..)))
    }

    /// `spec` under this policy with the routed layers listed in `sparse` switched to block-sparse attention (the
    /// other routed layers stay dense).
    pub fn apply_routes(&self, spec: &ModelSpec, sparse: &[usize]) -> Result<ModelSpec> {
        let mut out = self.apply(spec)?;
        for &i in sparse {
            let (LayerPolicy::Routed(cfg, _), Some(layer)) = (self.layer(i), out.layers.get_mut(i)) else { continue };
            for part in layer.mixer.parts_mut() {
                if let MixerSpec::Attention(a) = part {
                    if a.mask.sparse.is_some() {
                        a.mask.sparse = Some(cfg);
                    }
                }
            }
        }
        Ok(out)
    }
}

impl std::fmt::Display for AttentionPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse_into_per_layer_rules() {
        let p = AttentionPolicy::parse("sliding:4096+sinks:4").unwrap();
        assert_eq!(p.layer(7), LayerPolicy::Sliding { window: 4096, sinks: 4, absorb: false });
        let p = AttentionPolicy::parse("layers:0-5=full,6-23=sliding:512,30=sliding:64+sinks:2").unwrap();
        assert_eq!(p.layer(3), LayerPolicy::Full);
        assert_eq!(p.layer(6), LayerPolicy::Sliding { window: 512, sinks: 0, absorb: false });
        assert_eq!(p.layer(30), LayerPolicy::Sliding { window: 64, sinks: 2, absorb: false });
        assert_eq!(p.layer(25), LayerPolicy::Full);
        assert_eq!(AttentionPolicy::parse("full").unwrap().layer(0), LayerPolicy::Full);
        assert_eq!(
            AttentionPolicy::parse("sparse:infllmv2").unwrap().layer(0),
            LayerPolicy::Sparse(BlockSparse::MINICPM4)
        );
        let p = AttentionPolicy::parse("layers:1=sparse:infllmv2@24+block:8+topk:3+local:2").unwrap();
        let want = BlockSparse { block: 8, topk: 3, local_blocks: 2, dense_len: 24, init_blocks: 1 };
        assert_eq!(p.layer(1), LayerPolicy::Sparse(want));
    }

    #[test]
    fn bad_policies_name_the_problem() {
        for (text, says) in [
            ("sliding:", "window"),
            ("sliding:0", "at least one"),
            ("sliding:8+sinks:x", "sinks"),
            ("dense", "expected"),
            ("layers:3-1=full", "backwards"),
            ("layers:0-2", "RANGE=POLICY"),
            ("sparse:infllmv2+block:6", "multiple of 4"),
            ("sparse:infllmv2+stride:4", "unknown setting"),
            ("sparse:infllmv2x", "@N"),
            ("sliding:8+absorbs", "unknown setting"),
            ("route:infllmv2+entropy:high", "entropy"),
        ] {
            let e = AttentionPolicy::parse(text).unwrap_err().to_string();
            assert!(e.contains(says) && e.contains(text), "{text}: {e}");
        }
    }

    #[test]
    fn policies_leave_a_layer_window_as_trained() {
        let own = AttentionMask::causal(Some(16));
        let m = LayerPolicy::Sliding { window: 64, sinks: 4, absorb: false }.mask(&own);
        assert_eq!((m.window, m.sinks, m.repositions()), (Some(16), 0, true));
        assert_eq!(LayerPolicy::Sparse(BlockSparse::MINICPM4).mask(&own), own);
        assert_eq!(LayerPolicy::Full.mask(&own), own);
        let m = LayerPolicy::Sliding { window: 64, sinks: 4, absorb: false }.mask(&AttentionMask::default());
        assert_eq!((m.window, m.sinks, m.repositions()), (Some(64), 4, true));
    }

    #[test]
    fn an_absorbing_window_keeps_text_positions_and_remembers_evicted_keys() {
        let p = AttentionPolicy::parse("sliding:8+sinks:2+absorb").unwrap();
        assert_eq!(p.layer(0), LayerPolicy::Sliding { window: 8, sinks: 2, absorb: true });
        let m = p.layer(0).mask(&AttentionMask::default());
        assert!(m.absorbs() && !m.repositions(), "{m:?}");
        assert_eq!(m.absorbed(20), 2..13, "after the sinks, before the window 13..=20");
        assert_eq!(m.absorbed(6), 0..0, "nothing has left the window yet");
        assert_eq!(m.describe(), "sliding(8)+sinks(2)+absorb");
        assert_eq!(AttentionPolicy::parse("sliding:8").unwrap().layer(0).mask(&m).absorbed(20), 0..0);
        let own = AttentionMask::causal(Some(16));
        assert_eq!(p.layer(0).mask(&own), own, "a trained window is left as it is");
    }

    #[test]
    fn routed_layers_stay_dense_with_pooling_until_the_router_switches_them() {
        let p = AttentionPolicy::parse("layers:1-1=route:infllmv2@32+block:8+entropy:0.7").unwrap();
        assert!(p.routes());
        let LayerPolicy::Routed(cfg, threshold) = p.layer(1) else { panic!("{:?}", p.layer(1)) };
        assert_eq!((cfg.dense_len, cfg.block, threshold), (32, 8, 0.7));
        let own = AttentionMask::default();
        let dense = p.layer(1).mask(&own).sparse.expect("keys pooled");
        assert!(dense.pools_only(), "dense at every length until routed");
        assert_eq!(
            AttentionPolicy::parse("route:infllmv2").unwrap().layer(0),
            LayerPolicy::Routed(BlockSparse::MINICPM4, ROUTE_ENTROPY)
        );
        assert!(!AttentionPolicy::parse("sparse:infllmv2").unwrap().routes());
    }
}
