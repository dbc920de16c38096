// Per-forward values, written once before each submit and shared by every dispatch of a plan.
struct Step {
    pos0: u32,      // position of the first token of this forward
    n_tokens: u32,  // tokens in this forward
    n_logits: u32,  // rows whose logits are computed
    pad: u32,
}
@group(0) @binding(0) var<uniform> step: Step;

// Row count a dispatch follows: 0 = tokens, 1 = logit rows.
fn row_count(sel: u32) -> u32 {
    if (sel == 1u) {
        return step.n_logits;
    }
    return step.n_tokens;
}
