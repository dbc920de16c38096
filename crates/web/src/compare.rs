//! Side by side: the same generation under two attention policies, one after the other on the one engine, with
//! the text, speeds and KV cache of each; the policy in force before is restored afterwards.

use crate::app::request;
use crate::engine::{get, number, Reply};
use std::rc::Rc;
use wasm_bindgen::JsValue;

/// The attention policies offered in the page (any policy string may be typed instead).
pub const PRESETS: &[&str] = &[
    "full",
    "sliding:256+sinks:4",
    "sliding:32+sinks:4",
    "sliding:32+sinks:4+absorb",
    "sparse:infllmv2",
    "sparse:infllmv2@32+block:8+topk:2+local:1",
];

/// One policy's generation.
#[derive(Clone, Debug, PartialEq)]
pub struct PolicyRun {
    /// The policy as the engine names it.
    pub policy: String,
    /// The generated text.
    pub text: String,
    /// Decode tokens per second.
    pub decode_rate: f64,
    /// Prefill tokens per second.
    pub prefill_rate: f64,
    /// KV cache bytes the context filled.
    pub kv_bytes: f64,
}

type Done = Box<dyn FnOnce(Result<Vec<PolicyRun>, String>)>;

/// Generates with `fields` (a `generate` request's fields) under each of `policies` in turn, then sets `restore`
/// again; `done` receives the runs, or the first error.
pub fn side_by_side(policies: Vec<String>, fields: Vec<(&'static str, JsValue)>, restore: String, done: Done) {
    next(policies.into_iter().rev().collect(), Rc::new(fields), restore, Vec::new(), done);
}

/// Runs the last of `pending` (a stack), or restores the policy once none is left.
fn next(
    mut pending: Vec<String>,
    fields: Rc<Vec<(&'static str, JsValue)>>,
    restore: String,
    runs: Vec<PolicyRun>,
    done: Done,
) {
    let Some(policy) = pending.pop() else {
        let mut done = Some(done);
        request("policy", &[("policy", restore.into())], move |reply| {
            let result = match reply {
                Reply::Failed(m) => Err(m),
                _ => Ok(runs.clone()),
            };
            if let Some(done) = done.take() {
                done(result);
            }
        });
        return;
    };
    let mut state = Some((pending, fields, restore, runs, done));
    request("policy", &[("policy", policy.into())], move |reply| {
        let Some((pending, fields, restore, runs, done)) = state.take() else { return };
        match reply {
            Reply::Failed(m) => done(Err(m)),
            Reply::Done(stats) => generate(
                get(&stats, "attentionPolicy").as_string().unwrap_or_default(),
                pending,
                fields,
                restore,
                runs,
                done,
            ),
            _ => state = Some((pending, fields, restore, runs, done)),
        }
    });
}

/// Generates under the policy just set and goes on with the rest.
fn generate(
    policy: String,
    pending: Vec<String>,
    fields: Rc<Vec<(&'static str, JsValue)>>,
    restore: String,
    mut runs: Vec<PolicyRun>,
    done: Done,
) {
    let mut text = String::new();
    let mut state = Some((pending, fields.clone(), restore, done));
    request("generate", &fields, move |reply| match reply {
        Reply::Token { text: piece, .. } => text.push_str(&piece),
        Reply::Done(stats) => {
            let Some((pending, fields, restore, done)) = state.take() else { return };
            runs.push(PolicyRun {
                policy: policy.clone(),
                text: std::mem::take(&mut text),
                decode_rate: number(&stats, "decodeTokensPerSecond"),
                prefill_rate: number(&stats, "prefillTokensPerSecond"),
                kv_bytes: number(&stats, "kvCacheBytes"),
            });
            next(pending, fields, restore, std::mem::take(&mut runs), done);
        }
        Reply::Failed(m) => {
            if let Some((.., done)) = state.take() {
                done(Err(m));
            }
        }
        Reply::Progress(_) => {}
    });
}
