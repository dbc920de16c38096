//! Runtime attention policies: cheaper masks applied to the softmax-attention layers of any loaded model.
//!
//! Syntax (the CLI's `--attention-policy` and the JS API take the same strings):
//! - `full`: every layer as the model defines it;
//! - `sliding:W` or `sliding:W+sinks:S`: on layers that attend to the whole context, a window of `W` positions
//!   plus the first `S` positions kept as attention sinks, with StreamingLLM positions (queries and keys rotated
//!   by their place in the cache), so generation may run past the trained context with bounded memory (layers
//!   with their own window keep it, also by cache position);
//! - `sparse:infllmv2`, optionally `@N` (attend densely below `N` positions) and `+block:B`, `+topk:K`,
//!   `+local:L`, `+init:I`: InfLLM-V2 block-sparse attention, MiniCPM4.1's settings by default (on layers that
//!   attend to the whole context; sliding-window layers keep their window);
//! - `layers:A-B=P,C=P,...`: policy `P` (one of the above) on model layers `A..=B`, `C`, ...; layers not named
//!   keep their own attention.
//!
//! MLA and linear-attention layers are left as they are.

use super::{AttentionMask, BlockSparse, MixerSpec, ModelSpec};
use crate::{CoreError, Result};

/// What one softmax-attention layer runs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerPolicy {
    /// The layer's own mask.
    Full,
    /// A sliding window with attention sinks and StreamingLLM positions.
    Sliding {
        /// Positions in the window, including the query's own.
        window: usize,
        /// First positions kept visible.
        sinks: usize,
    },
    /// InfLLM-V2 block-sparse attention.
    Sparse(BlockSparse),
}

impl LayerPolicy {
    fn parse(text: &str) -> Result<Self> {
        let bad = |why: &str| CoreError::InvalidInput(format!("attention policy `{text}`: {why}"));
        let number = |s: &str, what: &str| s.parse::<usize>().map_err(|_| bad(&format!("{what} `{s}` is not a count")));
        if text == "full" {
            return Ok(LayerPolicy::Full);
        }
        if let Some(rest) = text.strip_prefix("sparse:infllmv2") {
            let mut cfg = BlockSparse::MINICPM4;
            let mut parts = rest.split('+');
            let head = parts.next().unwrap_or("");
            if let Some(n) = head.strip_prefix('@') {
                cfg.dense_len = number(n, "dense length")?;
            } else if !head.is_empty() {
                return Err(bad(&format!("`{head}` should be `@N` (dense below N positions)")));
            }
            for part in parts {
                let (key, value) = part.split_once(':').ok_or_else(|| bad(&format!("`{part}` is not KEY:VALUE")))?;
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
            return Ok(LayerPolicy::Sparse(cfg));
        }
        let Some(rest) = text.strip_prefix("sliding:") else {
            return Err(bad(
                "expected `full`, `sliding:W[+sinks:S]`, `sparse:infllmv2[@N][+block:B...]` or `layers:RANGES=POLICY,...`",
            ));
        };
        let (window, sinks) = match rest.split_once("+sinks:") {
            Some((w, s)) => (number(w, "window")?, number(s, "sinks")?),
            None => (number(rest, "window")?, 0),
        };
        if window == 0 {
            return Err(bad("the window must hold at least one position"));
        }
        Ok(LayerPolicy::Sliding { window, sinks })
    }

    /// The mask a layer whose own mask is `own` runs with.
    fn mask(&self, own: &AttentionMask) -> AttentionMask {
        match *self {
            LayerPolicy::Full => own.clone(),
            LayerPolicy::Sliding { window, sinks } if own.window.is_none() => {
                AttentionMask { window: Some(window), sinks, reposition: true, ..own.clone() }
            }
            // A layer's own window stays as trained; cache positions give it the same distances, and let the
            // context stream past the trained length.
            LayerPolicy::Sliding { .. } => AttentionMask { reposition: true, ..own.clone() },
            LayerPolicy::Sparse(cfg) if own.window.is_none() => AttentionMask { sparse: Some(cfg), ..own.clone() },
            LayerPolicy::Sparse(_) => own.clone(),
        }
    }
}

/// A policy for every softmax-attention layer of a model (see the module doc for the syntax).
#[derive(Clone, Debug, PartialEq, Eq)]
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
            let mut parts: Vec<&mut MixerSpec> = match &mut layer.mixer {
                MixerSpec::Parallel(branches) => branches.iter_mut().collect(),
                other => vec![other],
            };
            for part in parts.iter_mut() {
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
        assert_eq!(p.layer(7), LayerPolicy::Sliding { window: 4096, sinks: 4 });
        let p = AttentionPolicy::parse("layers:0-5=full,6-23=sliding:512,30=sliding:64+sinks:2").unwrap();
        assert_eq!(p.layer(3), LayerPolicy::Full);
        assert_eq!(p.layer(6), LayerPolicy::Sliding { window: 512, sinks: 0 });
        assert_eq!(p.layer(30), LayerPolicy::Sliding { window: 64, sinks: 2 });
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
        ] {
            let e = AttentionPolicy::parse(text).unwrap_err().to_string();
            assert!(e.contains(says) && e.contains(text), "{text}: {e}");
        }
    }

    #[test]
    fn policies_leave_a_layer_window_as_trained() {
        let own = AttentionMask::causal(Some(16));
        let m = LayerPolicy::Sliding { window: 64, sinks: 4 }.mask(&own);
        assert_eq!((m.window, m.sinks, m.repositions()), (Some(16), 0, true));
        assert_eq!(LayerPolicy::Sparse(BlockSparse::MINICPM4).mask(&own), own);
        assert_eq!(LayerPolicy::Full.mask(&own), own);
        let m = LayerPolicy::Sliding { window: 64, sinks: 4 }.mask(&AttentionMask::default());
        assert_eq!((m.window, m.sinks, m.repositions()), (Some(64), 4, true));
    }
}
