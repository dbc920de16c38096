// Next-token sampling on the GPU, in one workgroup: the last requested logits row in, one token id out.
// Reference: `sampling::sample_row`. Every sum runs over LANES contiguous chunks, each summed in order by its lane
// and then added in lane order by lane 0, as the reference does. Top-k and top-p become thresholds on the
// probabilities (relative to the top token's 1), found by bisecting their float bits (non-negative floats order
// as their bits do); the token is drawn by inverse CDF in vocabulary order.
#include "common/step.wgsl"

const LANES: u32 = 256u;

struct Params {
    vocab: u32,
    context_rows: u32,  // ids the context buffer holds (a ring for streaming sessions)
}
@group(0) @binding(1) var<uniform> params: Params;

// Per-forward settings, written before each submit.
struct Settings {
    on: u32,            // 0: this forward samples nothing
    temperature: f32,   // <= 0: greedy
    top_k: u32,         // 0: off
    top_p: f32,         // 1: off
    min_p: f32,         // 0: off
    penalty: f32,       // 1: off
    uniform: f32,       // the draw in [0, 1)
    context_start: u32, // first position the repetition penalty looks at
}
@group(0) @binding(2) var<uniform> settings: Settings;
@group(0) @binding(3) var<storage, read> logits: array<f32>;
@group(0) @binding(4) var<storage, read> context: array<u32>;
@group(0) @binding(5) var<storage, read_write> work: array<f32>;
@group(0) @binding(6) var<storage, read_write> token: array<u32>;

var<workgroup> lane_sums: array<f32, LANES>;
var<workgroup> lane_best: array<u32, LANES>;
var<workgroup> total: f32;

// Sum over the tokens whose key is at least `least` of their probability (`weighted`) or of 1, broadcast.
fn measure(lane: u32, chunk: u32, least: u32, weighted: bool) -> f32 {
    var s = 0.0;
    let end = min((lane + 1u) * chunk, params.vocab);
    for (var i = lane * chunk; i < end; i++) {
        let e = work[i];
        if (bitcast<u32>(e) >= least) {
            s += select(1.0, e, weighted);
        }
    }
    lane_sums[lane] = s;
    workgroupBarrier();
    if (lane == 0u) {
        var t = 0.0;
        for (var l = 0u; l < LANES; l++) {
            t += lane_sums[l];
        }
        total = t;
    }
    return workgroupUniformLoad(&total);
}

// The largest key whose measure reaches `goal` (counts when not `weighted`), never below `least`.
fn bisect(lane: u32, chunk: u32, least: u32, weighted: bool, goal: f32) -> u32 {
    var t = 0u;
    for (var bit = 30i; bit >= 0i; bit--) {
        let c = t | (1u << u32(bit));
        if (measure(lane, chunk, max(c, least), weighted) >= goal) {
            t = c;
        }
    }
    return t;
}

fn penalize(logit: f32) -> f32 {
    if (logit > 0.0) {
        return logit / settings.penalty;
    }
    return logit * settings.penalty;
}

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) lane: u32) {
    if (settings.on == 0u || step.n_logits == 0u) {
        return;
    }
    let vocab = params.vocab;
    let row = (step.n_logits - 1u) * vocab;
    let chunk = max((vocab + LANES - 1u) / LANES, 1u);
    let start = lane * chunk;
    let end = min(start + chunk, vocab);
    for (var i = start; i < end; i++) {
        work[i] = logits[row + i];
    }
    storageBarrier();
    if (settings.penalty != 1.0) {
        // Idempotent writes from the original logits, so a repeated id is penalised once.
        let last = step.pos0 + step.n_tokens;
        let first = max(settings.context_start, last - min(last, params.context_rows));
        for (var p = first + lane; p < last; p += LANES) {
            let id = context[p % params.context_rows];
            if (id < vocab) {
                work[id] = penalize(logits[row + id]);
            }
        }
        storageBarrier();
    }
    // Each lane's first largest, then the lanes in order: the lowest index of the largest value.
    var best = start;
    for (var i = start; i < end; i++) {
        if (work[i] > work[best]) {
            best = i;
        }
    }
    lane_best[lane] = min(best, vocab - 1u);
    workgroupBarrier();
    if (lane == 0u) {
        var b = lane_best[0];
        for (var l = 1u; l < LANES; l++) {
            if (work[lane_best[l]] > work[b]) {
                b = lane_best[l];
            }
        }
        lane_best[0] = b;
    }
    let top = workgroupUniformLoad(&lane_best[0]);
    if (settings.temperature <= 0.0) {
        if (lane == 0u) {
            token[0] = top;
        }
        return;
    }
    let t = settings.temperature;
    let m = work[top];
    storageBarrier();
    for (var i = start; i < end; i++) {
        var e = exp(work[i] / t - m / t);
        if (e < 1.17549435e-38) {
            e = 0.0;
        }
        work[i] = e;
    }
    storageBarrier();
    var top_k = 0u;
    if (settings.top_k > 0u && settings.top_k < vocab) {
        top_k = bisect(lane, chunk, 0u, false, f32(settings.top_k));
    }
    var top_p = 0u;
    if (settings.top_p < 1.0) {
        let goal = settings.top_p * measure(lane, chunk, top_k, true);
        top_p = bisect(lane, chunk, top_k, true, goal);
    }
    var min_p = 0u;
    if (settings.min_p > 0.0) {
        min_p = bitcast<u32>(settings.min_p);
    }
    let least = min(max(max(top_k, top_p), min_p), bitcast<u32>(1.0));
    let mass = measure(lane, chunk, least, true);
    if (lane != 0u) {
        return;
    }
    var r = settings.uniform * mass;
    var pick = 0u;
    for (var l = 0u; l < LANES; l++) {
        if (lane_sums[l] > 0.0) {
            pick = l;
        }
    }
    for (var l = 0u; l < LANES; l++) {
        if (r < lane_sums[l]) {
            pick = l;
            break;
        }
        r -= lane_sums[l];
    }
    let lane_start = pick * chunk;
    var chosen = lane_start;
    for (var i = lane_start; i < min(lane_start + chunk, vocab); i++) {
        let e = work[i];
        if (bitcast<u32>(e) >= least && e > 0.0) {
            chosen = i;
            if (r < e) {
                break;
            }
            r -= e;
        }
    }
    token[0] = chosen;
}
