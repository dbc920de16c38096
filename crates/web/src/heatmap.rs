//! Attention maps on a canvas: query positions down, key positions across, each cell's colour its weight's
//! magnitude (square-root scaled per row, so small weights stay visible; a delta-rule layer's implicit weights can
//! be negative), with attention-sink columns — keys most queries lean on — marked in a band along the top.

use crate::engine::{get, number};
use wasm_bindgen::prelude::*;
use web_sys::{CanvasRenderingContext2d, HtmlCanvasElement};

/// Height of the sink band above the cells, in canvas pixels.
const BAND: f64 = 6.0;

/// One head's attention map, as the engine sends it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Map {
    /// Position of the first row.
    pub first_query: usize,
    /// Rows.
    pub queries: usize,
    /// Columns.
    pub keys: usize,
    /// Row-major weights.
    pub weights: Vec<f32>,
    /// Text of each key position.
    pub tokens: Vec<String>,
}

impl Map {
    /// The map in an engine reply, if it holds one with cells.
    pub fn from_js(v: &JsValue) -> Option<Map> {
        let weights = get(v, "weights").dyn_into::<js_sys::Float32Array>().ok()?.to_vec();
        let tokens = js_sys::Array::from(&get(v, "tokens")).iter().map(|t| t.as_string().unwrap_or_default()).collect();
        let map = Map {
            first_query: number(v, "firstQuery") as usize,
            queries: number(v, "queries") as usize,
            keys: number(v, "keys") as usize,
            weights,
            tokens,
        };
        (map.queries > 0 && map.keys > 0 && map.weights.len() == map.queries * map.keys).then_some(map)
    }

    /// Keys that at least half the rows give more than four times the uniform weight.
    pub fn sinks(&self) -> Vec<usize> {
        (0..self.keys)
            .filter(|&k| {
                let heavy = (0..self.queries)
                    .filter(|&q| {
                        let visible = self.first_query + q + 1;
                        self.weights[q * self.keys + k].abs() > 4.0 / visible as f32
                    })
                    .count();
                2 * heavy >= self.queries
            })
            .collect()
    }
}

/// The canvas's 2D context, cleared, with the canvas's width and height (`None` where it has none).
pub fn cleared(canvas: &HtmlCanvasElement) -> Option<(CanvasRenderingContext2d, f64, f64)> {
    let ctx = canvas.get_context("2d").ok().flatten()?.dyn_into::<CanvasRenderingContext2d>().ok()?;
    let (w, h) = (canvas.width() as f64, canvas.height() as f64);
    ctx.clear_rect(0.0, 0.0, w, h);
    Some((ctx, w, h))
}

/// Strokes a line through `points` in `colour`.
pub fn polyline(ctx: &CanvasRenderingContext2d, colour: &str, points: impl IntoIterator<Item = (f64, f64)>) {
    ctx.set_stroke_style_str(colour);
    ctx.begin_path();
    for (i, (x, y)) in points.into_iter().enumerate() {
        if i == 0 {
            ctx.move_to(x, y);
        } else {
            ctx.line_to(x, y);
        }
    }
    ctx.stroke();
}

/// Draws `map` over the whole canvas.
pub fn draw(canvas: &HtmlCanvasElement, map: &Map) {
    let Some((ctx, w, h)) = cleared(canvas) else { return };
    ctx.set_fill_style_str("#0b1020");
    ctx.fill_rect(0.0, 0.0, w, h);
    let (cw, ch) = (w / map.keys as f64, (h - BAND) / map.queries as f64);
    for q in 0..map.queries {
        let row = &map.weights[q * map.keys..(q + 1) * map.keys];
        let max = row.iter().fold(0.0f32, |m, w| m.max(w.abs())).max(1e-9);
        for (k, &weight) in row.iter().enumerate() {
            if weight == 0.0 {
                continue;
            }
            ctx.set_fill_style_str(&colour((weight.abs() / max).sqrt()));
            ctx.fill_rect(k as f64 * cw, BAND + q as f64 * ch, cw.max(1.0), ch.max(1.0));
        }
    }
    ctx.set_fill_style_str("#ff5470");
    for k in map.sinks() {
        ctx.fill_rect(k as f64 * cw, 0.0, cw.max(2.0), BAND - 1.0);
    }
}

/// The cell under canvas point (`x`, `y`) in CSS pixels of a canvas shown `css_w` × `css_h`: (query position,
/// key position, weight).
pub fn cell_at(
    map: &Map,
    canvas: &HtmlCanvasElement,
    x: f64,
    y: f64,
    css_w: f64,
    css_h: f64,
) -> Option<(usize, usize, f32)> {
    let (px, py) = (x * canvas.width() as f64 / css_w, y * canvas.height() as f64 / css_h);
    if py < BAND {
        return None;
    }
    let k = (px / (canvas.width() as f64 / map.keys as f64)) as usize;
    let q = ((py - BAND) / ((canvas.height() as f64 - BAND) / map.queries as f64)) as usize;
    (k < map.keys && q < map.queries).then(|| (map.first_query + q, k, map.weights[q * map.keys + k]))
}

/// A dark-blue → teal → yellow ramp for `t` in [0, 1].
pub fn colour(t: f32) -> String {
    let t = t.clamp(0.0, 1.0);
    let stops = [(16.0, 24.0, 64.0), (24.0, 150.0, 160.0), (250.0, 230.0, 80.0)];
    let (a, b, f) = if t < 0.5 { (stops[0], stops[1], t * 2.0) } else { (stops[1], stops[2], (t - 0.5) * 2.0) };
    let mix = |x: f32, y: f32| (x + (y - x) * f) as u8;
    format!("rgb({},{},{})", mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}
