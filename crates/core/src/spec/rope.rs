//! Rotary position embedding parameters and the inverse frequencies they imply (as transformers computes them).

use crate::{CoreError, Result};
use serde_json::Value;

/// How the base inverse frequencies are rescaled for long context.
#[derive(Clone, Debug, PartialEq)]
pub enum RopeScaling {
    /// Plain RoPE.
    None,
    /// Position interpolation: every frequency divided by `factor`.
    Linear {
        /// The divisor.
        factor: f32,
    },
    /// Llama 3 wavelength-dependent scaling.
    Llama3 {
        /// Divisor of the low frequencies.
        factor: f32,
        /// Wavelength bound below which frequencies are divided.
        low_freq_factor: f32,
        /// Wavelength bound above which frequencies are kept.
        high_freq_factor: f32,
        /// Context the model was pretrained at.
        original_max_positions: f32,
    },
}

/// Rotary embedding of one attention layer: rotate-half convention on the first `rotary_dim` channels.
#[derive(Clone, Debug, PartialEq)]
pub struct RopeSpec {
    /// Base of the geometric frequency ladder.
    pub theta: f32,
    /// Channels rotated (head_dim, or less with partial rotary).
    pub rotary_dim: usize,
    /// Frequency rescaling.
    pub scaling: RopeScaling,
}

impl RopeSpec {
    /// Parses a transformers rope parameter object (`rope_parameters`, or the legacy `rope_scaling` merged with
    /// `rope_theta`) for a head of `head_dim` channels.
    pub fn from_params(params: &Value, head_dim: usize, partial_rotary: Option<f64>) -> Result<Self> {
        let theta = params
            .get("rope_theta")
            .and_then(Value::as_f64)
            .ok_or_else(|| CoreError::field("rope_theta", "is missing or not a number"))? as f32;
        let partial = params.get("partial_rotary_factor").and_then(Value::as_f64).or(partial_rotary).unwrap_or(1.0);
        let rotary_dim = ((head_dim as f64) * partial).round() as usize;
        if rotary_dim == 0 || rotary_dim > head_dim || !rotary_dim.is_multiple_of(2) {
            return Err(CoreError::field(
                "partial_rotary_factor",
                format!("gives rotary dim {rotary_dim} for head_dim {head_dim}"),
            ));
        }
        let num = |name: &str| {
            params
                .get(name)
                .and_then(Value::as_f64)
                .map(|v| v as f32)
                .ok_or_else(|| CoreError::field(format!("rope_parameters.{name}"), "is missing or not a number"))
        };
        let kind = params.get("rope_type").or_else(|| params.get("type")).and_then(Value::as_str).unwrap_or("default");
        let scaling = match kind {
            "default" => RopeScaling::None,
            "linear" => RopeScaling::Linear { factor: num("factor")? },
            "llama3" => RopeScaling::Llama3 {
                factor: num("factor")?,
                low_freq_factor: num("low_freq_factor")?,
                high_freq_factor: num("high_freq_factor")?,
                original_max_positions: num("original_max_position_embeddings")?,
            },
            other => {
                return Err(CoreError::Unsupported {
                    what: "rope type",
                    name: other.to_string(),
                    supported: "default, linear, llama3".to_string(),
                })
            }
        };
        Ok(RopeSpec { theta, rotary_dim, scaling })
    }

    /// The `rotary_dim / 2` inverse frequencies, computed in f32 as transformers does.
    pub fn inv_freq(&self) -> Vec<f32> {
        let dim = self.rotary_dim as f32;
        let base: Vec<f32> = (0..self.rotary_dim / 2).map(|i| 1.0 / self.theta.powf((2 * i) as f32 / dim)).collect();
        match self.scaling {
            RopeScaling::None => base,
            RopeScaling::Linear { factor } => base.iter().map(|f| f / factor).collect(),
            RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_positions } => {
                let low_wavelen = original_max_positions / low_freq_factor;
                let high_wavelen = original_max_positions / high_freq_factor;
                base.iter()
                    .map(|&f| {
                        let wavelen = 2.0 * std::f32::consts::PI / f;
                        if wavelen < high_wavelen {
                            f
                        } else if wavelen > low_wavelen {
                            f / factor
                        } else {
                            let smooth = (original_max_positions / wavelen - low_freq_factor)
                                / (high_freq_factor - low_freq_factor);
                            (1.0 - smooth) * f / factor + smooth * f
                        }
                    })
                    .collect()
            }
        }
    }

    /// cos and sin tables `[positions, rotary_dim / 2]` for positions `0..positions` (angles in f32, as transformers).
    pub fn tables(&self, positions: usize) -> (Vec<f32>, Vec<f32>) {
        let inv = self.inv_freq();
        let mut cos = Vec::with_capacity(positions * inv.len());
        let mut sin = Vec::with_capacity(positions * inv.len());
        for p in 0..positions {
            for &f in &inv {
                let angle = (p as f32 * f) as f64;
                cos.push(angle.cos() as f32);
                sin.push(angle.sin() as f32);
            }
        }
        (cos, sin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn default_frequencies_follow_the_ladder() {
        let r = RopeSpec::from_params(&json!({"rope_theta": 10000.0}), 16, None).unwrap();
        let f = r.inv_freq();
        assert_eq!(f.len(), 8);
        assert_eq!(f[0], 1.0);
        assert!((f[1] - 10000f32.powf(-2.0 / 16.0)).abs() < 1e-7);
    }

    #[test]
    fn llama3_scaling_keeps_high_and_divides_low_frequencies() {
        let p = json!({"rope_theta": 500000.0, "rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                       "high_freq_factor": 4.0, "original_max_position_embeddings": 8192});
        let r = RopeSpec::from_params(&p, 64, None).unwrap();
        let plain = RopeSpec { scaling: RopeScaling::None, ..r.clone() }.inv_freq();
        let scaled = r.inv_freq();
        assert_eq!(scaled[0], plain[0]);
        assert!((scaled[31] - plain[31] / 32.0).abs() < 1e-12);
        assert!(scaled.iter().zip(&plain).all(|(s, p)| s <= p));
    }

    #[test]
    fn partial_rotary_and_bad_types_are_checked() {
        let r = RopeSpec::from_params(&json!({"rope_theta": 1e7, "partial_rotary_factor": 0.25}), 256, None).unwrap();
        assert_eq!(r.rotary_dim, 64);
        let e = RopeSpec::from_params(&json!({"rope_theta": 1.0, "rope_type": "yarnish"}), 16, None).unwrap_err();
        assert!(e.to_string().contains("yarnish"), "{e}");
    }
}
