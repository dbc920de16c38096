// Softmax attention for a block of queries against the KV cache: one invocation per (token, head),
// online softmax in registers, GQA by head grouping, under the mask of attention/common.wgsl. Only visible keys
// are visited, so fully masked key ranges cost nothing.
// Variants:
// - streaming (default): each invocation reads K/V itself, best on CPU adapters where barriers are slow. DIFF
//   (differential attention: two softmax maps from the halves of each q and k row, the second subtracted with
//   weight λ) and ABSORB (hybrid memory) run here.
// - HEAD_GROUP: streaming, an invocation serving HEADS query heads of one KV head for its token, reading each K/V
//   quad once for all of them (grouped-query heads see the same keys); a workgroup's invocations, consecutive
//   tokens, walk the union of their keys in step. Needs KV_QUADS; not with ROTATE, DUAL_TRIANGLE, SPARSE, DIFF or
//   ABSORB. KV_BROADCAST (the subgroup size, dividing WG): each key's and value's quads are loaded once per
//   subgroup, K_SLOTS and V_SLOTS per lane, and reach every lane by subgroupBroadcast (CPU adapters load the same
//   address lane by lane; docs/perf.md, session 15). A group of one head then walks keys this way too.
// - KV_TILE: a workgroup is WG consecutive queries of one head; K/V tiles of KV_TILE keys, taken from the union of
//   the queries' visible keys, are staged in workgroup memory and shared by all of them, best on GPUs. Not with
//   ROTATE, DUAL_TRIANGLE or SPARSE, which read keys per query.
#include "attention/common.wgsl"

#if ABSORB
// Adds memory row `row` (per value channel, then the normaliser) with weight w.
fn recall(w: f32, row: u32, tail: ptr<function, array<f32, DV>>, total: ptr<function, f32>) {
    for (var d = 0u; d < DV; d++) {
        (*tail)[d] += w * memory[row + d];
    }
    *total += w * memory[row + DV];
}

// Keys past the window of query token t (position p, kv head kvh), weighted by 1 + s + s²/2 with s the scaled
// score: the cached ones from the first position the memory does not hold, the rest through the Taylor state
// (query-side features 1, q_i, q_i²/2, q_i q_j for scaled q).
fn absorbed(qv: ptr<function, array<f32, D>>, kvh: u32, p: u32, tail: ptr<function, array<f32, DV>>) -> f32 {
    var total = 0.0;
    for (var j = max(params.sinks, first_key(step.pos0)); j < first_key(p); j++) {
        let kb = kv_base(j, kvh);
        let s = score(qv, kb, j, p, 0);
        let w = 1.0 + s + 0.5 * s * s;
        total += w;
        for (var d = 0u; d < DV; d++) {
            (*tail)[d] += w * value_channel(kb + d);
        }
    }
    var row = kvh * FEATURES * (DV + 1u);
    recall(1.0, row, tail, &total);
    for (var i = 0u; i < D; i++) {
        recall((*qv)[i], row + (1u + i) * (DV + 1u), tail, &total);
        recall(0.5 * (*qv)[i] * (*qv)[i], row + (1u + D + i) * (DV + 1u), tail, &total);
    }
    row += (1u + 2u * D) * (DV + 1u);
    for (var i = 0u; i < D; i++) {
        for (var j = i + 1u; j < D; j++) {
            recall((*qv)[i] * (*qv)[j], row, tail, &total);
            row += DV + 1u;
        }
    }
    return total;
}
#endif

// The keys of the block of WG consecutive queries from token t0, for KV_TILE and HEAD_GROUP, which walk them for
// all of the block's queries: the first query's sinks, then its span's start to the last live query's span end.
fn block_visible(t0: u32) -> Visible {
    let first = first_key(step.pos0 + t0);
    let sb = sinks_before(step.pos0 + t0);
    let last = last_key(step.pos0 + min(t0 + {{WG}}u, step.n_tokens) - 1u);
    return Visible(first, sb, sb + last + 1u - first, NO_LIST);
}

// Whether a block's key at position j is hidden from a query whose span is [first, last] after sb sinks.
fn hidden(j: u32, first: u32, sb: u32, last: u32) -> bool {
    return (j >= sb && j < first) || j > last;
}

#if KV_TILE
const TK: u32 = {{KV_TILE}}u;
var<workgroup> k_tile: array<f32, TK * D>;
var<workgroup> v_tile: array<f32, TK * DV>;

@compute @workgroup_size({{WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let h = wid.x;
    let t0 = wid.y * {{WG}}u;
    let t = t0 + lid;
    let live = t < step.n_tokens;
    let p = step.pos0 + t;
    let first = first_key(p);
    let sb = sinks_before(p);
    let last = last_key(p);
    let block = block_visible(t0);
    let kvh = kv_head(h);
    let qi = (t * params.n_heads + h) * D;
    var qv: array<f32, D>;
    var acc: array<f32, DV>;
    if (live) {
#unroll d HEAD_DIM
        qv[{{d}}] = q[qi + {{d}}] * params.scale;
#endunroll
    }
    var st = online_start();
    for (var v0 = 0u; v0 < block.count; v0 += TK) {
        let n = min(TK, block.count - v0);
        for (var e = lid; e < n * D; e += {{WG}}u) {
            k_tile[e] = key_channel(kv_base(key_at(v0 + e / D, block.first, block.sinks), kvh) + e % D);
        }
        for (var e = lid; e < n * DV; e += {{WG}}u) {
            v_tile[e] = value_channel(kv_base(key_at(v0 + e / DV, block.first, block.sinks), kvh) + e % DV);
        }
        workgroupBarrier();
        if (live) {
            for (var i = 0u; i < n; i++) {
                let j = key_at(v0 + i, block.first, block.sinks);
                if (hidden(j, first, sb, last)) {
                    continue;
                }
                let kb = i * D;
                var s = 0.0;
                let vb = i * DV;
#unroll d HEAD_DIM
                s += qv[{{d}}] * k_tile[kb + {{d}}];
#endunroll
                let f = online_step(&st, s);
#unroll d V_DIM
                acc[{{d}}] = acc[{{d}}] * f.x + f.y * v_tile[vb + {{d}}];
#endunroll
            }
        }
        workgroupBarrier();
    }
    if (live) {
        let oi = (t * params.n_heads + h) * DV;
#unroll d V_DIM
        emit(oi + {{d}}, acc[{{d}}] / st.l);
#endunroll
    }
}
#else
#if HEAD_GROUP
const HEADS: u32 = {{HEADS}}u;
const DQ: u32 = {{D_QUADS}}u;
const VQ: u32 = {{V_QUADS}}u;

@compute @workgroup_size({{WG}})
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
#if KV_BROADCAST
    @builtin(subgroup_invocation_id) lane: u32,
#endif
) {
    let t0 = wid.y * {{WG}}u;
    let t = min(t0 + lid, step.n_tokens - 1u);
    let p = step.pos0 + t;
    let first = first_key(p);
    let sb = sinks_before(p);
    let last = last_key(p);
    // Every invocation walks the block's keys in step and skips those its own mask hides.
    let block = block_visible(t0);
    let group0 = t * params.n_heads + wid.x * HEADS;
    let kvh = kv_head(wid.x * HEADS);
    var qv: array<vec4<f32>, HEADS * DQ>;
#unroll g HEADS
#unroll c D_QUADS
    {
        let at = (group0 + {{g}}) * D + 4u * {{c}};
        qv[{{g}} * DQ + {{c}}] = vec4<f32>(q[at], q[at + 1u], q[at + 2u], q[at + 3u]) * params.scale;
    }
#endunroll
#endunroll
    var acc = array<vec4<f32>, HEADS * VQ>();
    var st: array<Online, HEADS>;
#unroll g HEADS
    st[{{g}}] = online_start();
#endunroll
    for (var v = 0u; v < block.count; v++) {
        let j = key_at(v, block.first, block.sinks);
        let seen = !hidden(j, first, sb, last);
        let kb = kv_base(j, kvh) / 4u;
        var s = array<f32, HEADS>();
#if KV_BROADCAST
        // This lane's quads of the key and the value: l, l + KV_BROADCAST, ...
        var k_mine: array<vec4<f32>, {{K_SLOTS}}>;
#unroll c K_SLOTS
        k_mine[{{c}}] = k_cache[kb + min(lane + {{c}} * {{KV_BROADCAST}}u, DQ - 1u)];
#endunroll
        var v_mine: array<vec4<f32>, {{V_SLOTS}}>;
#unroll c V_SLOTS
        v_mine[{{c}}] = v_cache[kb + min(lane + {{c}} * {{KV_BROADCAST}}u, VQ - 1u)];
#endunroll
#endif
#unroll c D_QUADS
        {
#if KV_BROADCAST
            let kq = subgroupBroadcast(k_mine[{{c}} / {{KV_BROADCAST}}u], {{c}} % {{KV_BROADCAST}}u);
#else
            let kq = k_cache[kb + {{c}}];
#endif
#unroll g HEADS
            s[{{g}}] += dot(qv[{{g}} * DQ + {{c}}], kq);
#endunroll
        }
#endunroll
        // A hidden key leaves each head's state and accumulator as they were.
        var f = array<vec2<f32>, HEADS>();
#unroll g HEADS
        {
            var head = st[{{g}}];
            f[{{g}}] = select(vec2<f32>(1.0, 0.0), online_step(&head, s[{{g}}]), seen);
            st[{{g}}].m = select(st[{{g}}].m, head.m, seen);
            st[{{g}}].l = select(st[{{g}}].l, head.l, seen);
        }
#endunroll
#unroll c V_QUADS
        {
#if KV_BROADCAST
            let vq = subgroupBroadcast(v_mine[{{c}} / {{KV_BROADCAST}}u], {{c}} % {{KV_BROADCAST}}u);
#else
            let vq = v_cache[kb + {{c}}];
#endif
#unroll g HEADS
            acc[{{g}} * VQ + {{c}}] = acc[{{g}} * VQ + {{c}}] * f[{{g}}].x + f[{{g}}].y * vq;
#endunroll
        }
#endunroll
    }
    if (t0 + lid < step.n_tokens) {
#unroll g HEADS
        for (var c = 0u; c < VQ; c++) {
            for (var e = 0u; e < 4u; e++) {
                emit((group0 + {{g}}) * DV + 4u * c + e, acc[{{g}} * VQ + c][e] / st[{{g}}].l);
            }
        }
#endunroll
    }
}
#else
@compute @workgroup_size({{WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let idx = flat_group(wid, nwg) * {{WG}}u + lid;
    let t = idx / params.n_heads;
    if (t >= step.n_tokens) {
        return;
    }
    let p = step.pos0 + t;
    let kvh = kv_head(idx % params.n_heads);
    var qv: array<f32, D>;
    var acc: array<f32, DV>;
#unroll d HEAD_DIM
    qv[{{d}}] = q[idx * D + {{d}}] * params.scale;
#endunroll
    let vis = visible(t, kvh, p);
    var st = online_start();
#if DIFF
    // Differential attention: a second softmax over the second halves of q and k, subtracted with weight λ.
    var st2 = online_start();
    var acc2: array<f32, DV>;
#endif
    for (var v = 0u; v < vis.count; v++) {
        let j = visible_key(vis, v);
        let kb = kv_base(j, kvh);
#if DIFF
        let f = online_step(&st, half_score(&qv, kb, 0u));
        let f2 = online_step(&st2, half_score(&qv, kb, 1u));
        for (var d = 0u; d < DV; d++) {
            let x = value_channel(kb + d);
            acc[d] = acc[d] * f.x + f.y * x;
            acc2[d] = acc2[d] * f2.x + f2.y * x;
        }
#else
        let f = online_step(&st, score(&qv, kb, j, p, distance(j, p, vis.first, vis.sinks)));
#if KV_QUADS
#unroll c V_QUADS
        {
            let vq = v_cache[kb / 4u + {{c}}];
#unroll e 4
            acc[{{c}} * 4u + {{e}}] = acc[{{c}} * 4u + {{e}}] * f.x + f.y * vq[{{e}}];
#endunroll
        }
#endunroll
#else
#unroll d V_DIM
        acc[{{d}}] = acc[{{d}}] * f.x + f.y * v_cache[kb + {{d}}];
#endunroll
#endif
#endif
    }
#if ABSORB
    // The window's weights are e^(s - m); the absorbed keys' are taken down by the same e^-m.
    var tail: array<f32, DV>;
    let tail_total = absorbed(&qv, kvh, p, &tail);
    let fade = exp(min(-st.m, 80.0));
    for (var d = 0u; d < DV; d++) {
        acc[d] += fade * tail[d];
    }
    st.l += fade * tail_total;
#endif
    for (var d = 0u; d < DV; d++) {
#if DIFF
        emit(idx * DV + d, acc[d] / st.l - params.lambda * acc2[d] / st2.l);
#else
        emit(idx * DV + d, acc[d] / st.l);
#endif
    }
}
#endif
#endif
