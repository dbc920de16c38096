//! WGSL sources and their preprocessor.
//!
//! Shaders live under `shaders/` and are compiled into the binary with `include_str!`. Variants (weight dtype,
//! head dim, tile sizes, fused epilogues) are produced by a small preprocessor:
//! `#include "path"`, `#if NAME` / `#if !NAME` / `#else` / `#endif` (true when NAME is defined and not "0"),
//! `#unroll i COUNT` / `#endunroll` (the lines between, COUNT times, with `{{i}}` replaced by the u32 literals `0u`,
//! `1u`, ...; COUNT a number or a define; above [`UNROLL_LIMIT`] a loop instead, `{{i}}` its counter) and `{{NAME}}`
//! substitution. The result is cached by the pipeline cache under (shader, defines).
//!
//! Unrolling matters on SwiftShader, the browser's CPU adapter: it keeps a private array that a loop indexes in
//! memory and gathers it lane by lane, while constant indices stay in registers (8x on a bf16 matrix-vector product,
//! docs/perf.md). Hot loops over a kernel's accumulators are therefore written as `#unroll` blocks.

use crate::error::{GpuError, Result};

macro_rules! shaders {
    ($($path:literal),* $(,)?) => {
        /// Every WGSL file, by its path under `shaders/`.
        pub const SOURCES: &[(&str, &str)] = &[
            $(($path, include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shaders/", $path)))),*
        ];
    };
}

shaders!(
    "common/grid.wgsl",
    "common/step.wgsl",
    "common/weights.wgsl",
    "common/embedding.wgsl",
    "common/rmsnorm.wgsl",
    "common/linear_io.wgsl",
    "common/tile.wgsl",
    "common/matmul.wgsl",
    "common/matvec.wgsl",
    "common/matvec_quads.wgsl",
    "common/matvec_rows.wgsl",
    "common/rope.wgsl",
    "common/activations.wgsl",
    "common/gated_act.wgsl",
    "common/moe.wgsl",
    "common/residual.wgsl",
    "common/copy.wgsl",
    "common/sample.wgsl",
    "attention/ring.wgsl",
    "attention/common.wgsl",
    "attention/prefill.wgsl",
    "attention/decode.wgsl",
    "attention/combine.wgsl",
    "attention/mla.wgsl",
    "attention/pool.wgsl",
    "attention/select.wgsl",
    "attention/moh.wgsl",
    "attention/absorb.wgsl",
    "attention/entropy.wgsl",
    "linear/chunks.wgsl",
    "linear/columns.wgsl",
    "linear/input.wgsl",
    "linear/qkv.wgsl",
    "linear/running.wgsl",
    "linear/short_conv.wgsl",
    "linear/substitution.wgsl",
    "linear/gated_deltanet.wgsl",
    "linear/gla.wgsl",
    "linear/gsa.wgsl",
    "linear/rwkv7.wgsl",
    "linear/hgrn2.wgsl",
    "linear/linear_attn.wgsl",
    "linear/mamba2.wgsl",
    "linear/rat.wgsl",
    "ternary/act_quant.wgsl",
    "ternary/matvec_dp4.wgsl",
);

/// The most repetitions an `#unroll` block is written out with; longer ones stay loops (a head of 1024 channels would
/// otherwise write its loop body 1024 times).
pub const UNROLL_LIMIT: usize = 256;

/// Compile-time defines of one shader variant, kept sorted so equal sets compare equal.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Defines(Vec<(String, String)>);

impl Defines {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces a define.
    pub fn set(mut self, name: &str, value: impl ToString) -> Self {
        self.0.retain(|(n, _)| n != name);
        self.0.push((name.to_string(), value.to_string()));
        self.0.sort();
        self
    }

    /// Adds a boolean flag (value "1") when `on`.
    pub fn flag(self, name: &str, on: bool) -> Self {
        if on {
            self.set(name, 1)
        } else {
            self
        }
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

fn source(name: &str) -> Result<&'static str> {
    SOURCES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, s)| *s)
        .ok_or_else(|| GpuError::Shader { name: name.into(), message: "no such shader".into() })
}

/// Expands includes, conditionals and substitutions of shader `name` for `defines`.
pub fn preprocess(name: &str, defines: &Defines) -> Result<String> {
    let mut out = String::new();
    expand(name, defines, &mut out, &mut Vec::new())?;
    Ok(out)
}

fn expand(name: &str, defines: &Defines, out: &mut String, stack: &mut Vec<String>) -> Result<()> {
    let err = |message: String| GpuError::Shader { name: name.into(), message };
    if stack.iter().any(|s| s == name) {
        return Err(err("recursive #include".into()));
    }
    stack.push(name.to_string());
    let lines: Vec<String> = source(name)?.lines().map(String::from).collect();
    expand_lines(name, &lines, 0, defines, out, stack)?;
    stack.pop();
    Ok(())
}

/// Expands `lines` of shader `name` (the first one at 0-based line `first` there, for messages).
fn expand_lines(
    name: &str,
    lines: &[String],
    first: usize,
    defines: &Defines,
    out: &mut String,
    stack: &mut Vec<String>,
) -> Result<()> {
    let err = |message: String| GpuError::Shader { name: name.into(), message };
    // Each entry: (this branch active, some enclosing branch inactive).
    let mut conds: Vec<(bool, bool)> = Vec::new();
    let active = |conds: &Vec<(bool, bool)>| conds.iter().all(|(on, _)| *on);
    let mut i = 0;
    while i < lines.len() {
        let (lineno, line) = (first + i, &lines[i]);
        i += 1;
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("#if ") {
            let (negated, key) = match rest.trim().strip_prefix('!') {
                Some(key) => (true, key),
                None => (false, rest.trim()),
            };
            let on = defines.get(key).is_some_and(|v| v != "0") != negated;
            conds.push((on, !active(&conds)));
        } else if t == "#else" {
            let top = conds.last_mut().ok_or_else(|| err(format!("line {}: #else without #if", lineno + 1)))?;
            top.0 = !top.0;
        } else if t == "#endif" {
            conds.pop().ok_or_else(|| err(format!("line {}: #endif without #if", lineno + 1)))?;
        } else if !active(&conds) {
            continue;
        } else if let Some(rest) = t.strip_prefix("#include ") {
            expand(rest.trim().trim_matches('"'), defines, out, stack)?;
        } else if let Some(rest) = t.strip_prefix("#unroll ") {
            let (var, count) = unroll_header(rest, defines).map_err(|m| err(format!("line {}: {m}", lineno + 1)))?;
            let end = matching_endunroll(&lines[i..])
                .ok_or_else(|| err(format!("line {}: #unroll without #endunroll", lineno + 1)))?;
            let pattern = format!("{{{{{var}}}}}");
            let body =
                |index: &str| -> Vec<String> { lines[i..i + end].iter().map(|l| l.replace(&pattern, index)).collect() };
            if count <= UNROLL_LIMIT {
                for k in 0..count {
                    expand_lines(name, &body(&format!("{k}u")), first + i, defines, out, stack)?;
                }
            } else {
                let counter = format!("unroll_{var}");
                out.push_str(&format!("for (var {counter} = 0u; {counter} < {count}u; {counter}++) {{\n"));
                expand_lines(name, &body(&counter), first + i, defines, out, stack)?;
                out.push_str("}\n");
            }
            i += end + 1;
        } else if t == "#endunroll" {
            return Err(err(format!("line {}: #endunroll without #unroll", lineno + 1)));
        } else {
            let mut line = line.to_string();
            while let Some(start) = line.find("{{") {
                let end =
                    line[start..].find("}}").ok_or_else(|| err(format!("line {}: unclosed {{{{", lineno + 1)))? + start;
                let key = &line[start + 2..end];
                let value = defines
                    .get(key)
                    .ok_or_else(|| err(format!("line {}: {{{{{key}}}}} is not defined", lineno + 1)))?;
                line.replace_range(start..end + 2, value);
            }
            out.push_str(&line);
            out.push('\n');
        }
    }
    if !conds.is_empty() {
        return Err(err(format!("#if without #endif before line {}", first + lines.len() + 1)));
    }
    Ok(())
}

/// The variable and count of an `#unroll` line's `rest` (`i COUNT`, COUNT a number or a define holding one).
fn unroll_header<'r>(rest: &'r str, defines: &Defines) -> std::result::Result<(&'r str, usize), String> {
    let mut parts = rest.split_whitespace();
    let (Some(var), Some(count), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(format!("#unroll needs a variable and a count, not `{rest}`"));
    };
    let value = defines.get(count).unwrap_or(count);
    let n = value.parse().map_err(|_| format!("#unroll count `{count}` is not a number or a numeric define"))?;
    Ok((var, n))
}

/// The index in `lines` of the `#endunroll` closing an `#unroll` just before them (nested blocks skipped).
fn matching_endunroll(lines: &[String]) -> Option<usize> {
    let mut depth = 0;
    for (i, line) in lines.iter().enumerate() {
        let t = line.trim();
        if t.starts_with("#unroll ") {
            depth += 1;
        } else if t == "#endunroll" {
            if depth == 0 {
                return Some(i);
            }
            depth -= 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shader_expands_for_its_documented_defaults() {
        let d = Defines::new()
            .set("WG", 64)
            .set("HEAD_DIM", 16)
            .set("V_DIM", 16)
            .set("W_ELEM", "u32")
            .flag("W_BF16", true)
            .set("W_EPW", 2)
            .set("W_BINDING", 4)
            .set("ACT", "silu")
            .set("TM", 4)
            .set("TN", 4)
            .set("WG_X", 8)
            .set("WG_Y", 8)
            .set("NR", 4)
            .set("RPL", 2)
            .set("MATRICES", 1)
            .set("CHUNK", 8)
            .set("VW", 4)
            .set("COL", "f32")
            .set("QUADS", 1)
            .set("STEP_WORDS", 4)
            .set("X_QUADS", 2)
            .set("LANES", 2)
            .set("KV_TILE", 16)
            .set("TT", 8)
            .set("DK", 16)
            .set("DV", 16)
            .set("GATE_BINDING", 5)
            .set("NORMALIZER", "16.0")
            .set("Q_SCALE", "0.25")
            .set("GATE_ACT", "silu")
            .set("BETA_SCALE", "1.0")
            .set("NORM_BINDING", 4)
            .set("MAX_GROUP", 4)
            .set("MAX_HEADS", 8)
            .set("V_UNITS", 16)
            .set("V_LANES", 16)
            .set("V_GROUPS", 4)
            .set("SCRATCH_BINDING", 6)
            .set("G_BINDING", 5)
            .set("HEADS", 2);
        for (name, _) in SOURCES {
            let text = preprocess(name, &d).unwrap();
            let directive = text.lines().any(|l| l.trim_start().starts_with('#'));
            assert!(!text.contains("{{") && !directive, "{name} left directives behind");
        }
    }

    #[test]
    fn unroll_repeats_its_block_with_each_index() {
        let expand = |lines: &[&str], d: &Defines| {
            let lines: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
            let mut out = String::new();
            expand_lines("test", &lines, 0, d, &mut out, &mut Vec::new()).map(|_| out)
        };
        let d = Defines::new().set("N", 2).set("X", 7).flag("F", true);
        let nested = [
            "#unroll r N",
            "a[{{r}}] = {{X}};",
            "#unroll c 2",
            "b[{{r}}][{{c}}];",
            "#endunroll",
            "#if F",
            "f{{r}};",
            "#endif",
            "#if !F",
            "#unroll z UNDEFINED",
            "#endunroll",
            "#endif",
            "#endunroll",
            "end;",
        ];
        assert_eq!(
            expand(&nested, &d).unwrap(),
            "a[0u] = 7;\nb[0u][0u];\nb[0u][1u];\nf0u;\na[1u] = 7;\nb[1u][0u];\nb[1u][1u];\nf1u;\nend;\n"
        );
        assert_eq!(expand(&["#unroll r 0", "never;", "#endunroll"], &d).unwrap(), "");
        let long = format!("#unroll r {}", UNROLL_LIMIT + 1);
        assert_eq!(
            expand(&[&long, "a[{{r}}] += 1.0;", "#endunroll"], &d).unwrap(),
            format!(
                "for (var unroll_r = 0u; unroll_r < {}u; unroll_r++) {{\na[unroll_r] += 1.0;\n}}\n",
                UNROLL_LIMIT + 1
            )
        );
        let broken: [&[&str]; 5] = [
            &["#unroll r"],
            &["#unroll r M", "#endunroll"],
            &["#unroll r 2", "x;"],
            &["#endunroll"],
            &["#unroll r 2", "#if F", "#endunroll"],
        ];
        for lines in broken {
            assert!(expand(lines, &d).is_err(), "{lines:?} expanded");
        }
    }

    #[test]
    fn conditionals_nest_and_substitute() {
        let text = preprocess(
            "common/weights.wgsl",
            &Defines::new().set("W_ELEM", "f32").set("W_BINDING", 4).flag("W_F32", true).set("W_EPW", 1),
        )
        .unwrap();
        assert!(text.contains("alias Stored = f32;"));
        assert!(!text.contains("unpack2x16float"));
        let e = preprocess("common/weights.wgsl", &Defines::new()).unwrap_err();
        assert!(e.to_string().contains("W_ELEM"), "{e}");
    }
}
