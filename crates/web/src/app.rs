//! The page: pick and load a model (progress, device facts), chat with it (streaming text, stop, sampling
//! controls, chat template), watch speed and memory, see one attention head's map live, and let the layout adapt to
//! the reader's state (observer panel with override and agreement; a toggle turns it off). The URL parameters and
//! `data-testid`s are the automated tests' contract (see the README).

use crate::compare::{side_by_side, PolicyRun, PRESETS};
use crate::engine::{get, number, object, EngineClient, Reply};
use crate::heatmap::{self, Map};
use crate::reader::{Agreement, Detector, ReaderState, Signal};
use leptos::html;
use leptos::prelude::*;
use std::cell::RefCell;
use std::time::Duration;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

thread_local! {
    static ENGINE: RefCell<Option<EngineClient>> = const { RefCell::new(None) };
    static DETECTOR: RefCell<Detector> = RefCell::new(Detector::default());
    static LAST_SCROLL: RefCell<f64> = const { RefCell::new(0.0) };
}

/// The picker's models: the embedded default, then real ones by Hugging Face id.
const MODELS: [(&str, &str); 7] = [
    ("embedded", "Ternlight demo · 1.2M ternary hybrid (offline)"),
    ("Qwen/Qwen3.5-0.8B", "Qwen3.5 0.8B · Gated DeltaNet hybrid"),
    ("microsoft/bitnet-b1.58-2B-4T", "BitNet b1.58 2B4T · ternary"),
    ("google/gemma-3-270m", "Gemma 3 270M · sliding window"),
    ("LiquidAI/LFM2-350M", "LFM2 350M · short-conv hybrid"),
    ("HuggingFaceTB/SmolLM2-135M", "SmolLM2 135M"),
    ("fla-hub/gla-340M-15B", "fla GLA 340M · linear attention"),
];

/// Rows of the attention map: the most recent query positions.
const MAP_QUERIES: u32 = 48;

/// Mounts the page.
pub fn start() {
    console_error_panic_hook();
    ENGINE.with(|e| *e.borrow_mut() = EngineClient::start().ok());
    leptos::mount::mount_to_body(App);
}

fn console_error_panic_hook() {
    std::panic::set_hook(Box::new(|info| web_sys::console::error_1(&info.to_string().into())));
}

/// Sends a request to the engine worker (a failed worker start reports through the handler).
pub(crate) fn request(op: &str, fields: &[(&str, JsValue)], mut handler: impl FnMut(Reply) + 'static) -> Option<u32> {
    ENGINE.with(|e| match e.borrow().as_ref() {
        Some(engine) => Some(engine.request(op, fields, handler)),
        None => {
            handler(Reply::Failed("the engine worker could not start".into()));
            None
        }
    })
}

fn now() -> f64 {
    web_sys::window().and_then(|w| w.performance()).map_or(0.0, |p| p.now() / 1e3)
}

fn observe(signal: Signal) {
    DETECTOR.with(|d| d.borrow_mut().observe(now(), signal));
}

/// The page's own URL parameters.
struct Params(web_sys::UrlSearchParams);

impl Params {
    fn read() -> Self {
        let search = web_sys::window().and_then(|w| w.location().search().ok()).unwrap_or_default();
        Params(
            web_sys::UrlSearchParams::new_with_str(&search)
                .unwrap_or_else(|_| web_sys::UrlSearchParams::new().unwrap()),
        )
    }

    fn get(&self, name: &str) -> Option<String> {
        self.0.get(name).filter(|v| !v.is_empty())
    }
}

/// The embedded model's base URL (shipped with the page under `models/default`).
fn embedded_url() -> String {
    let href = web_sys::window().and_then(|w| w.location().href().ok()).unwrap_or_default();
    let page = href.split(['?', '#']).next().unwrap_or_default();
    format!("{}/models/default", &page[..page.rfind('/').unwrap_or(page.len())])
}

fn source_of(choice: &str) -> String {
    match choice {
        "embedded" => embedded_url(),
        other => other.to_string(),
    }
}

/// Speed and memory figures from the engine's stats.
#[derive(Clone, Debug, Default, PartialEq)]
struct Stats {
    decode_rate: f64,
    prefill_rate: f64,
    ttft_ms: f64,
    weight_bytes: f64,
    state_bytes: f64,
    kv_bytes: f64,
    recurrent_bytes: f64,
    context: f64,
    max_context: f64,
    projection: Vec<(f64, f64)>,
    generated: f64,
    stage_seconds: Vec<f64>,
    policy: String,
}

impl Stats {
    fn from_js(v: &JsValue) -> Self {
        Stats {
            decode_rate: number(v, "decodeTokensPerSecond"),
            prefill_rate: number(v, "prefillTokensPerSecond"),
            ttft_ms: number(v, "ttftMs"),
            weight_bytes: number(v, "weightBytes"),
            state_bytes: number(v, "stateBytes"),
            kv_bytes: number(v, "kvCacheBytes"),
            recurrent_bytes: number(v, "recurrentBytes"),
            context: number(v, "contextTokens"),
            max_context: number(v, "maxContext"),
            projection: js_sys::Array::from(&get(v, "contextMemory"))
                .iter()
                .map(|p| (number(&p, "tokens"), number(&p, "bytes")))
                .collect(),
            generated: number(v, "generatedTokens"),
            policy: get(v, "attentionPolicy").as_string().unwrap_or_default(),
            stage_seconds: get(v, "stageSeconds")
                .dyn_into::<js_sys::Float64Array>()
                .map(|a| a.to_vec())
                .unwrap_or_default(),
        }
    }
}

/// Load progress.
#[derive(Clone, Debug, Default, PartialEq)]
struct Progress {
    bytes: f64,
    total: f64,
    rate: f64,
    layers: f64,
    layers_total: f64,
}

fn mib(bytes: f64) -> String {
    format!("{:.1} MiB", bytes / (1 << 20) as f64)
}

/// What the adapter offers, or why there is no WebGPU.
async fn describe_device() -> Result<String, String> {
    let navigator = get(&js_sys::global(), "navigator");
    let gpu = get(&navigator, "gpu");
    if gpu.is_undefined() {
        return Err("WebGPU is not available in this browser (try a recent Chrome or Edge)".into());
    }
    let request: js_sys::Function = get(&gpu, "requestAdapter").dyn_into().map_err(|_| "no requestAdapter")?;
    let promise: js_sys::Promise = request.call0(&gpu).map_err(|e| format!("{e:?}"))?.dyn_into().map_err(|_| "?")?;
    let adapter = JsFuture::from(promise).await.map_err(|e| format!("{e:?}"))?;
    if adapter.is_null() || adapter.is_undefined() {
        return Err("WebGPU is present but no GPU adapter is available".into());
    }
    let info = get(&adapter, "info");
    let name = ["description", "vendor", "architecture"]
        .iter()
        .filter_map(|f| get(&info, f).as_string().filter(|s| !s.is_empty()))
        .collect::<Vec<_>>()
        .join(" · ");
    let has = |f: &str| {
        let features = get(&adapter, "features");
        js_sys::Reflect::get(&features, &"has".into())
            .ok()
            .and_then(|h| h.dyn_into::<js_sys::Function>().ok())
            .and_then(|h| h.call1(&features, &f.into()).ok())
            .is_some_and(|v| v.is_truthy())
    };
    let binding = number(&get(&adapter, "limits"), "maxStorageBufferBindingSize");
    Ok(format!(
        "{} · shader-f16 {} · {} per binding",
        if name.is_empty() { "WebGPU adapter".into() } else { name },
        if has("shader-f16") { "yes" } else { "no" },
        mib(binding)
    ))
}

/// The page.
#[component]
fn App() -> impl IntoView {
    let params = Params::read();
    let autorun = params.get("autorun").as_deref() == Some("1");
    let initial_model = params.get("model").unwrap_or_else(|| "embedded".into());
    let custom_start = if MODELS.iter().any(|m| m.0 == initial_model) { String::new() } else { initial_model.clone() };

    let (status, set_status) = signal("starting".to_string());
    let (model, set_model) = signal(if custom_start.is_empty() { initial_model } else { "custom".into() });
    let (custom, set_custom) = signal(custom_start);
    let (progress, set_progress) = signal(None::<Progress>);
    let (prompt, set_prompt) = signal(params.get("prompt").unwrap_or_else(|| "lighthouse (noun):".into()));
    let (max_tokens, set_max_tokens) = signal(params.get("max_tokens").and_then(|v| v.parse().ok()).unwrap_or(32u32));
    let (temperature, set_temperature) = signal(0.0f64);
    let (top_p, set_top_p) = signal(1.0f64);
    let (seed, set_seed) = signal(params.get("seed").and_then(|v| v.parse().ok()).unwrap_or(0u32));
    let (chat, set_chat) = signal(false);
    let (text, set_text) = signal(String::new());
    let (shown, set_shown) = signal(String::new());
    let (stats, set_stats) = signal(Stats::default());
    let (rates, set_rates) = signal(Vec::<f64>::new());
    // (index, kind, heads with a map, whether those heads can be switched off)
    let (layers, set_layers) = signal(Vec::<(usize, String, usize, bool)>::new());
    let (layer, set_layer) = signal(None::<usize>);
    let (head, set_head) = signal(0usize);
    let (map, set_map) = signal(None::<Map>);
    let (hover, set_hover) = signal(String::new());
    let (attention_open, set_attention_open) = signal(true);
    let (device, set_device) = signal("checking WebGPU…".to_string());
    let (adaptive, set_adaptive) = signal(true);
    let (detected, set_detected) = signal(ReaderState::Focused);
    let (chosen, set_chosen) = signal(None::<ReaderState>);
    let (reason, set_reason) = signal("no signals yet".to_string());
    let (features, set_features) = signal(String::new());
    let (agreement, set_agreement) = signal(Agreement::default());
    let (recap, set_recap) = signal(None::<String>);
    let (cached, set_cached) = signal(Vec::<bool>::new());
    let (running, set_running) = signal(None::<u32>);
    let (ablated, set_ablated) = signal(Vec::<(usize, usize)>::new());
    let (overview_open, set_overview_open) = signal(false);
    let (overview, set_overview) = signal(Vec::<(usize, Vec<f32>)>::new());
    let (before, set_before) = signal(None::<String>);
    let (policy_input, set_policy_input) = signal("sliding:256+sinks:4".to_string());
    let (compare_a, set_compare_a) = signal("full".to_string());
    let (compare_b, set_compare_b) = signal("sliding:32+sinks:4".to_string());
    let (comparison, set_comparison) = signal(Vec::<PolicyRun>::new());
    let (comparing, set_comparing) = signal(false);
    let canvas = NodeRef::<html::Canvas>::new();
    let chart = NodeRef::<html::Canvas>::new();
    let growth = NodeRef::<html::Canvas>::new();

    let state = Memo::new(move |_| match adaptive.get() {
        false => ReaderState::Focused,
        true => chosen.get().unwrap_or(detected.get()),
    });

    let fetch_overview = move || {
        if running.get_untracked().is_some() || !overview_open.get_untracked() {
            return;
        }
        request("overview", &[], move |reply| {
            if let Reply::Done(o) = reply {
                set_overview.set(parse_overview(&o));
            }
        });
    };

    let fetch_map = move || {
        let (Some(l), h) = (layer.get_untracked(), head.get_untracked()) else { return };
        if running.get_untracked().is_some() || !attention_open.get_untracked() {
            return;
        }
        let fields = [("layer", (l as u32).into()), ("head", (h as u32).into()), ("maxQueries", MAP_QUERIES.into())];
        request("attention", &fields, move |reply| {
            if let Reply::Done(m) = reply {
                set_map.set(Map::from_js(&m));
            }
        });
    };

    // A generation's request fields from the prompt and sampling controls.
    let generation_fields = move || {
        let mut fields = vec![
            ("maxTokens", max_tokens.get_untracked().into()),
            ("temperature", temperature.get_untracked().into()),
            ("topP", top_p.get_untracked().into()),
            ("seed", seed.get_untracked().into()),
        ];
        let text_in = prompt.get_untracked();
        if chat.get_untracked() {
            let message = object(&[("role", "user".into()), ("content", text_in.into())]);
            fields.push(("messages", js_sys::Array::of1(&message).into()));
        } else {
            fields.push(("prompt", text_in.into()));
        }
        fields
    };

    let generate = move || {
        if running.get_untracked().is_some() || comparing.get_untracked() {
            return;
        }
        set_text.set(String::new());
        set_shown.set(String::new());
        set_rates.set(Vec::new());
        set_status.set("generating".into());
        let mut fields = generation_fields();
        fields.push(("profile", true.into()));
        if let (true, Some(l)) = (attention_open.get_untracked(), layer.get_untracked()) {
            let tap = object(&[
                ("layer", (l as u32).into()),
                ("head", (head.get_untracked() as u32).into()),
                ("maxQueries", MAP_QUERIES.into()),
                ("overview", overview_open.get_untracked().into()),
            ]);
            fields.push(("attention", tap));
        }
        let id = request("generate", &fields, move |reply| match reply {
            Reply::Token { text: piece, stats: s, map: m, overview: o } => {
                if !o.is_undefined() {
                    set_overview.set(parse_overview(&o));
                }
                set_text.update(|t| t.push_str(&piece));
                let s = Stats::from_js(&s);
                set_rates.update(|r| r.push(s.decode_rate));
                set_stats.set(s);
                if let Some(m) = Map::from_js(&m) {
                    set_map.set(Some(m));
                }
            }
            Reply::Done(s) => {
                set_stats.set(Stats::from_js(&s));
                set_shown.set(text.get_untracked());
                set_running.set(None);
                set_status.set("done".into());
            }
            Reply::Failed(m) => {
                set_running.set(None);
                set_status.set(format!("error: {m}"));
            }
            Reply::Progress(_) => {}
        });
        set_running.set(id);
    };

    let apply_policy = move || {
        if running.get_untracked().is_some() || comparing.get_untracked() {
            return;
        }
        request("policy", &[("policy", policy_input.get_untracked().into())], move |reply| match reply {
            Reply::Done(s) => {
                set_stats.set(Stats::from_js(&s));
                set_status.set("ready".into());
            }
            Reply::Failed(m) => set_status.set(format!("error: {m}")),
            _ => {}
        });
    };

    // The same generation under policies A and B, then the policy in force again.
    let compare = move || {
        if running.get_untracked().is_some() || comparing.get_untracked() {
            return;
        }
        set_comparing.set(true);
        set_comparison.set(Vec::new());
        set_status.set("comparing policies".into());
        let fields = generation_fields();
        let policies = vec![compare_a.get_untracked(), compare_b.get_untracked()];
        let restore = stats.get_untracked().policy;
        side_by_side(
            policies,
            fields,
            if restore.is_empty() { "full".into() } else { restore },
            Box::new(move |result| {
                set_comparing.set(false);
                match result {
                    Ok(runs) => {
                        set_comparison.set(runs);
                        set_status.set("done".into());
                    }
                    Err(m) => set_status.set(format!("error: {m}")),
                }
            }),
        );
    };

    let stop = move || {
        if let Some(id) = running.get_untracked() {
            request("stop", &[("target", id.into())], |_| {});
        }
    };

    let load = move || {
        let choice = model.get_untracked();
        let source = if choice == "custom" { custom.get_untracked() } else { source_of(&choice) };
        set_status.set("loading".into());
        set_progress.set(None);
        set_map.set(None);
        request("load", &[("source", source.into())], move |reply| match reply {
            Reply::Progress(p) => set_progress.set(Some(Progress {
                bytes: number(&p, "bytesDone"),
                total: number(&p, "bytesTotal"),
                rate: number(&p, "bytesPerSecond"),
                layers: number(&p, "layersReady"),
                layers_total: number(&p, "layersTotal"),
            })),
            Reply::Done(s) => {
                let list: Vec<(usize, String, usize, bool)> = js_sys::Array::from(&get(&s, "layers"))
                    .iter()
                    .enumerate()
                    .map(|(i, l)| {
                        let kind = get(&l, "kind").as_string().unwrap_or_default();
                        let switchable = get(&l, "switchableHeads").as_bool() == Some(true);
                        (i, kind, number(&l, "attentionHeads") as usize, switchable)
                    })
                    .collect();
                set_layer.set(list.iter().find(|l| l.2 > 0).map(|l| l.0));
                set_head.set(0);
                set_layers.set(list);
                set_stats.set(Stats::from_js(&s));
                set_status.set("ready".into());
                if autorun {
                    generate();
                }
            }
            Reply::Failed(m) => set_status.set(format!("error: {m}")),
            Reply::Token { .. } => {}
        });
    };

    // Start: device facts, which models are cached, then the selected model.
    wasm_bindgen_futures::spawn_local(async move {
        match describe_device().await {
            Ok(d) => {
                set_device.set(d);
                let sources: js_sys::Array = MODELS.iter().map(|m| JsValue::from(source_of(m.0))).collect();
                request("cached", &[("sources", sources.into())], move |reply| {
                    if let Reply::Done(list) = reply {
                        set_cached.set(js_sys::Array::from(&list).iter().map(|v| v.is_truthy()).collect());
                    }
                });
                load();
            }
            Err(e) => {
                set_device.set(e.clone());
                set_status.set(format!("error: {e}"));
            }
        }
    });

    // Token reveal: at once, or paced for a tired reader.
    set_interval(
        move || {
            let (full, now_shown) = (text.get_untracked(), shown.get_untracked());
            if now_shown.len() < full.len() {
                let next = match state.get_untracked() {
                    ReaderState::Fatigued => {
                        full[now_shown.len()..].chars().next().map_or(full.len(), |c| now_shown.len() + c.len_utf8())
                    }
                    _ => full.len(),
                };
                set_shown.set(full[..next].to_string());
            }
        },
        Duration::from_millis(60),
    );

    // The reader-state detector: signals in, a tick every 2 s.
    window_event_listener(leptos::ev::keydown, |e| {
        observe(Signal::Key { correction: matches!(e.key().as_str(), "Backspace" | "Delete") })
    });
    window_event_listener(leptos::ev::click, |_| observe(Signal::Click));
    window_event_listener(leptos::ev::scroll, |_| {
        let y = web_sys::window().and_then(|w| w.scroll_y().ok()).unwrap_or(0.0);
        let dy = LAST_SCROLL.with(|l| y - l.replace(y));
        observe(Signal::Scroll { dy });
    });
    window_event_listener(leptos::ev::visibilitychange, move |_| {
        let hidden = web_sys::window().and_then(|w| w.document()).is_some_and(|d| d.hidden());
        observe(if hidden { Signal::Hidden } else { Signal::Visible });
    });
    set_interval(
        move || {
            let (s, why, f) = DETECTOR.with(|d| {
                let mut d = d.borrow_mut();
                let t = now();
                let f = d.features(t);
                let s = d.tick(t);
                (s, d.reason(), f)
            });
            if detected.get_untracked() == ReaderState::Drifting && s != ReaderState::Drifting {
                let tail: String =
                    text.get_untracked().chars().rev().take(80).collect::<Vec<_>>().into_iter().rev().collect();
                set_recap.set(Some(match tail.is_empty() {
                    true => format!("Welcome back. The model is {}.", status.get_untracked()),
                    false => format!("Welcome back. The model was writing: “…{tail}”"),
                }));
            }
            set_detected.set(s);
            set_reason.set(why.to_string());
            set_features.set(format!(
                "idle {:.0} s · {:.0} keys/min · corrections {:.0}% · slowdown ×{:.1} · {:.0} events/min · cadence cv {:.2} · {:.0} scroll reversals/min · {:.0} clicks/min · {} tab switches",
                f.idle_s, f.keys_per_min, f.correction_ratio * 100.0, f.typing_slowdown, f.events_per_min, f.cadence_cv,
                f.reversals_per_min, f.clicks_per_min, f.tab_switches
            ));
        },
        Duration::from_secs(2),
    );

    // Drawing: the attention map and the speed chart.
    Effect::new(move |_| {
        let (Some(m), Some(c)) = (map.get(), canvas.get()) else { return };
        heatmap::draw(&c, &m);
    });
    Effect::new(move |_| {
        let r = rates.get();
        if let Some(c) = chart.get() {
            draw_chart(&c, &r);
        }
    });
    Effect::new(move |_| {
        let s = stats.get();
        if let Some(c) = growth.get() {
            draw_growth(&c, &s.projection, s.context);
        }
    });

    // Switch the shown head off (or back on) and generate again, keeping the previous text to compare.
    let toggle_ablation = move || {
        let (Some(l), h) = (layer.get_untracked(), head.get_untracked()) else { return };
        if running.get_untracked().is_some() {
            return;
        }
        let mut heads = ablated.get_untracked();
        match heads.iter().position(|&x| x == (l, h)) {
            Some(i) => {
                heads.remove(i);
            }
            None => heads.push((l, h)),
        }
        let pairs: js_sys::Array = heads
            .iter()
            .map(|&(l, h)| JsValue::from(js_sys::Array::of2(&(l as u32).into(), &(h as u32).into())))
            .collect();
        request("ablate", &[("heads", pairs.into())], move |reply| match reply {
            Reply::Done(_) => {
                set_before.set(Some(shown.get_untracked()));
                set_ablated.set(heads.clone());
                generate();
            }
            Reply::Failed(m) => set_status.set(format!("error: {m}")),
            _ => {}
        });
    };

    let heads = move || layer.get().and_then(|l| layers.get().get(l).map(|x| x.2)).unwrap_or(0);
    let switchable = move || layer.get().and_then(|l| layers.get().get(l).map(|x| x.3)).unwrap_or(false);
    let hook = move || {
        let m = map.get()?;
        let sink = *m.sinks().first()?;
        let share: f32 = (0..m.queries).map(|q| m.weights[q * m.keys + sink]).sum::<f32>() / m.queries as f32;
        Some(format!(
            "Curious? Head {} of layer {} puts {:.0}% of its attention on token {} (“{}”): an attention sink.",
            head.get(),
            layer.get().unwrap_or(0),
            share * 100.0,
            sink,
            m.tokens.get(sink).cloned().unwrap_or_default()
        ))
    };

    view! {
        <div class=move || format!("app state-{}", state.get().name())>
            <header>
                <h1>"Ternlight"</h1>
                <span class="device">{move || device.get()}</span>
                <span class="status" data-testid="status">{move || status.get()}</span>
            </header>
            {move || recap.get().filter(|_| state.get() != ReaderState::Hyperfocused).map(|r| view! {
                <div class="recap" role="status">{r}
                    <button on:click=move |_| set_recap.set(None)>"Dismiss"</button>
                </div>
            })}
            <main>
                <section class="panel model">
                    <h2>"Model"</h2>
                    <label>"Model "
                        <select prop:value=move || model.get() on:change=move |ev| set_model.set(event_target_value(&ev))>
                            {MODELS.iter().enumerate().map(|(i, (id, name))| view! {
                                <option value=*id>{move || format!("{name}{}", if cached.get().get(i).copied().unwrap_or(false) { " · cached" } else { "" })}</option>
                            }).collect_view()}
                            <option value="custom">"Another Hugging Face id or URL…"</option>
                        </select>
                    </label>
                    {move || (model.get() == "custom").then(|| view! {
                        <input type="text" placeholder="org/name or https://…" prop:value=move || custom.get()
                            on:input=move |ev| set_custom.set(event_target_value(&ev)) />
                    })}
                    <button on:click=move |_| load() disabled=move || running.get().is_some()>"Load"</button>
                    {move || progress.get().map(|p| view! {
                        <div class="progress">
                            <progress max=p.total value=p.bytes></progress>
                            <span>{format!("{} of {} · {}/s · layers {}/{}", mib(p.bytes), mib(p.total), mib(p.rate), p.layers, p.layers_total)}</span>
                        </div>
                    })}
                </section>

                <section class="panel chat">
                    <h2>"Prompt"</h2>
                    <textarea rows="3" prop:value=move || prompt.get()
                        on:input=move |ev| set_prompt.set(event_target_value(&ev))
                        on:keydown=move |ev| if ev.key() == "Enter" && ev.ctrl_key() { generate() }></textarea>
                    <div class="controls">
                        <button class="primary" on:click=move |_| generate() disabled=move || running.get().is_some() || comparing.get() || status.get() == "loading">"Generate"</button>
                        <button on:click=move |_| stop() disabled=move || running.get().is_none()>"Stop"</button>
                        <label><input type="checkbox" prop:checked=move || chat.get() on:change=move |ev| set_chat.set(event_target_checked(&ev)) />" chat template"</label>
                    </div>
                    <div class="controls advanced">
                        <label>"max tokens "<input type="number" min="1" max="4096" prop:value=move || max_tokens.get().to_string()
                            on:change=move |ev| set_max_tokens.set(event_target_value(&ev).parse().unwrap_or(32)) /></label>
                        <label>"temperature "<input type="number" min="0" max="2" step="0.1" prop:value=move || temperature.get().to_string()
                            on:change=move |ev| set_temperature.set(event_target_value(&ev).parse().unwrap_or(0.0)) /></label>
                        <label>"top-p "<input type="number" min="0" max="1" step="0.05" prop:value=move || top_p.get().to_string()
                            on:change=move |ev| set_top_p.set(event_target_value(&ev).parse().unwrap_or(1.0)) /></label>
                        <label>"seed "<input type="number" min="0" prop:value=move || seed.get().to_string()
                            on:change=move |ev| set_seed.set(event_target_value(&ev).parse().unwrap_or(0)) /></label>
                    </div>
                    <pre class="output" data-testid="generated-text" aria-live="polite">{move || shown.get()}</pre>
                    {move || before.get().map(|b| view! {
                        <p class="before">"Before the last head change: "<span data-testid="text-before">{b}</span></p>
                    })}
                    {move || (state.get() == ReaderState::Drifting).then(hook).flatten().map(|h| view! { <p class="hook">{h}</p> })}
                </section>

                <section class="panel speed">
                    <h2>"Speed and memory"</h2>
                    <dl class="figures">
                        <dt>"decode"</dt><dd><span data-testid="tokens-per-second">{move || format!("{:.1}", stats.get().decode_rate)}</span>" tok/s"</dd>
                        <dt>"prefill"</dt><dd>{move || format!("{:.1} tok/s", stats.get().prefill_rate)}</dd>
                        <dt>"first token"</dt><dd><span data-testid="ttft-ms">{move || format!("{:.0}", stats.get().ttft_ms)}</span>" ms"</dd>
                        <dt>"context"</dt><dd>{move || format!("{:.0} tokens ({:.0} new)", stats.get().context, stats.get().generated)}</dd>
                    </dl>
                    <canvas class="chart advanced" node_ref=chart width="320" height="60" aria-label="decode tokens per second over the generation"></canvas>
                    <canvas class="chart advanced" data-testid="memory-growth" node_ref=growth width="320" height="70"
                        aria-label="context memory as the context grows from 256 to 128K tokens (log scale), the current context marked"></canvas>
                    <div class="layer-times advanced" data-testid="layer-times">
                        {move || {
                            let s = stats.get();
                            let max = s.stage_seconds.iter().cloned().fold(1e-12, f64::max);
                            let names = layers.get();
                            let last = s.stage_seconds.len().saturating_sub(1);
                            let label = |i: usize| match i {
                                0 => "embedding".to_string(),
                                i if i == last => "head".to_string(),
                                i => format!("L{} {}", i - 1, names.get(i - 1).map(|l| l.1.clone()).unwrap_or_default()),
                            };
                            match s.stage_seconds.is_empty() {
                                true => view! { <p class="note">"GPU time per layer shows after a generation where the adapter has timestamp queries."</p> }.into_any(),
                                false => view! {
                                    <p class="note">"GPU time of the last forward, per layer"</p>
                                    <ul>
                                        {s.stage_seconds.iter().enumerate().map(|(i, t)| view! {
                                            <li><span class="name">{label(i)}</span>
                                                <span class="bar" style:width=format!("{:.1}%", 100.0 * t / max)></span>
                                                <span class="ms">{format!("{:.2} ms", t * 1e3)}</span></li>
                                        }).collect_view()}
                                    </ul>
                                }.into_any(),
                            }
                        }}
                    </div>
                    <div class="memory" data-testid="memory">
                        {move || {
                            let s = stats.get();
                            let total = (s.weight_bytes + s.state_bytes).max(1.0);
                            let kv_reserved = (s.state_bytes - s.recurrent_bytes - s.kv_bytes).max(0.0);
                            let pct = |b: f64| format!("{:.1}%", 100.0 * b / total);
                            view! {
                                <div class="bar">
                                    <span class="weights" style:width=pct(s.weight_bytes)></span>
                                    <span class="recurrent" style:width=pct(s.recurrent_bytes)></span>
                                    <span class="kv" style:width=pct(s.kv_bytes)></span>
                                    <span class="reserved" style:width=pct(kv_reserved)></span>
                                </div>
                                <p>{format!(
                                    "weights {} · recurrent state {} (fixed) · KV cache {} used by {:.0} tokens of {} reserved for {:.0}",
                                    mib(s.weight_bytes), mib(s.recurrent_bytes), mib(s.kv_bytes), s.context,
                                    mib(s.state_bytes - s.recurrent_bytes), s.max_context
                                )}</p>
                                <p>{format!("context memory (KV cache + state) at {}", s.projection.iter()
                                    .filter(|(t, _)| [4096.0, 32768.0, 131072.0].contains(t))
                                    .map(|(t, b)| format!("{:.0}K tokens: {}", t / 1024.0, mib(*b)))
                                    .collect::<Vec<_>>().join(" · "))}</p>
                            }
                        }}
                    </div>
                </section>

                <section class="panel policy">
                    <h2>"Attention policy"</h2>
                    <datalist id="policy-presets">
                        {PRESETS.iter().map(|p| view! { <option value=*p></option> }).collect_view()}
                    </datalist>
                    <div class="controls">
                        <input type="text" list="policy-presets" data-testid="policy-input" prop:value=move || policy_input.get()
                            on:input=move |ev| set_policy_input.set(event_target_value(&ev)) />
                        <button data-testid="policy-apply" on:click=move |_| apply_policy()
                            disabled=move || running.get().is_some() || comparing.get()>"Apply"</button>
                        <span class="note">"in force: "<code data-testid="policy">{move || stats.get().policy}</code></span>
                    </div>
                    <p class="note">"full · sliding:W+sinks:S (StreamingLLM) · sparse:infllmv2 (block-sparse) · layers:0-5=full,6-23=sliding:512"</p>
                    <div class="controls">
                        <label>"A "<input type="text" list="policy-presets" data-testid="compare-a" prop:value=move || compare_a.get()
                            on:input=move |ev| set_compare_a.set(event_target_value(&ev)) /></label>
                        <label>"B "<input type="text" list="policy-presets" data-testid="compare-b" prop:value=move || compare_b.get()
                            on:input=move |ev| set_compare_b.set(event_target_value(&ev)) /></label>
                        <button data-testid="compare" on:click=move |_| compare()
                            disabled=move || running.get().is_some() || comparing.get() || status.get() == "loading">"Run both"</button>
                    </div>
                    {move || (!comparison.get().is_empty()).then(|| view! {
                        <table class="comparison" data-testid="comparison">
                            <thead><tr><th>"policy"</th><th>"text"</th><th>"decode"</th><th>"prefill"</th><th>"KV cache"</th></tr></thead>
                            <tbody>
                                {comparison.get().into_iter().map(|r| view! {
                                    <tr>
                                        <td><code>{r.policy}</code></td>
                                        <td class="text">{r.text}</td>
                                        <td>{format!("{:.1} tok/s", r.decode_rate)}</td>
                                        <td>{format!("{:.1} tok/s", r.prefill_rate)}</td>
                                        <td>{format!("{:.1} KiB", r.kv_bytes / 1024.0)}</td>
                                    </tr>
                                }).collect_view()}
                            </tbody>
                        </table>
                    })}
                </section>

                <section class="panel attention">
                    <h2>
                        <label><input type="checkbox" prop:checked=move || attention_open.get()
                            on:change=move |ev| set_attention_open.set(event_target_checked(&ev)) />" Attention map"</label>
                    </h2>
                    {move || attention_open.get().then(|| view! {
                        <div class="controls">
                            <label>"layer "<select data-testid="layer-select" prop:value=move || layer.get().map(|l| l.to_string()).unwrap_or_default()
                                on:change=move |ev| { set_layer.set(event_target_value(&ev).parse().ok()); set_head.set(0); fetch_map(); }>
                                {move || layers.get().into_iter().filter(|l| l.2 > 0).map(|(i, kind, _, _)| view! {
                                    <option value=i.to_string()>{format!("{i} · {kind}")}</option>
                                }).collect_view()}
                            </select></label>
                            <label>"head "<select data-testid="head-select" prop:value=move || head.get().to_string()
                                on:change=move |ev| { set_head.set(event_target_value(&ev).parse().unwrap_or(0)); fetch_map(); }>
                                {move || (0..heads()).map(|h| view! { <option value=h.to_string()>{h.to_string()}</option> }).collect_view()}
                            </select></label>
                        </div>
                        <canvas data-testid="attention-map" node_ref=canvas width="480" height="240"
                            aria-label="attention weights: query positions down, key positions across"
                            on:mousemove=move |ev| {
                                let (Some(m), Some(c)) = (map.get_untracked(), canvas.get_untracked()) else { return };
                                let rect = c.get_bounding_client_rect();
                                let (x, y) = (ev.client_x() as f64 - rect.left(), ev.client_y() as f64 - rect.top());
                                if let Some((q, k, w)) = heatmap::cell_at(&m, &c, x, y, rect.width(), rect.height()) {
                                    let token = |i: usize| m.tokens.get(i).cloned().unwrap_or_default();
                                    set_hover.set(format!("query {q} “{}” → key {k} “{}”: {:.3}", token(q), token(k), w));
                                }
                            }></canvas>
                        <p class="hover">{move || hover.get()}</p>
                        <label><input type="checkbox" prop:checked=move || overview_open.get()
                            on:change=move |ev| { set_overview_open.set(event_target_checked(&ev)); fetch_overview(); } />
                            " layers × heads overview (entropy: dark = focused on few tokens, bright = spread)"</label>
                        {move || overview_open.get().then(|| view! {
                            <table class="overview" data-testid="attention-overview">
                                <tbody>
                                {move || overview.get().into_iter().map(|(l, entropies)| view! {
                                    <tr>
                                        <th scope="row">{format!("L{l}")}</th>
                                        {entropies.into_iter().enumerate().map(|(h, e)| view! {
                                            <td>
                                                <button class="cell" style:background=heatmap::colour(e)
                                                    title=format!("layer {l} head {h}: entropy {e:.2}")
                                                    aria-label=format!("layer {l} head {h}, entropy {e:.2}")
                                                    on:click=move |_| { set_layer.set(Some(l)); set_head.set(h); fetch_map(); }>
                                                </button>
                                            </td>
                                        }).collect_view()}
                                    </tr>
                                }).collect_view()}
                                </tbody>
                            </table>
                        })}
                        <div class="controls">
                            <button data-testid="ablate" on:click=move |_| toggle_ablation()
                                title=move || (!switchable()).then_some("heads of this kind of layer cannot be switched off yet")
                                disabled=move || running.get().is_some() || !switchable()>
                                {move || match layer.get().is_some_and(|l| ablated.get().contains(&(l, head.get()))) {
                                    true => "Restore this head and regenerate",
                                    false => "Switch this head off and regenerate",
                                }}
                            </button>
                            <span class="ablated">{move || {
                                let a = ablated.get();
                                match a.is_empty() {
                                    true => String::new(),
                                    false => format!("off: {}", a.iter().map(|(l, h)| format!("L{l}H{h}")).collect::<Vec<_>>().join(" ")),
                                }
                            }}</span>
                        </div>
                        {move || layers.get().iter().all(|l| l.2 == 0).then(|| view! {
                            <p>"This model has no softmax-attention layer to show."</p>
                        })}
                    })}
                </section>

                <section class="panel observer">
                    <h2>"Reader state"</h2>
                    <p>"State: "<strong data-testid="ui-state">{move || state.get().name()}</strong>
                        " · decision: "{move || state.get().adaptation()}</p>
                    <label>"Override "
                        <select data-testid="ui-state-override" on:change=move |ev| {
                            let choice = ReaderState::from_name(&event_target_value(&ev));
                            if let Some(c) = choice {
                                set_agreement.update(|a| a.record(detected.get_untracked(), c));
                            }
                            set_chosen.set(choice);
                        }>
                            <option value="auto">"automatic"</option>
                            {ReaderState::ALL.iter().map(|s| view! { <option value=s.name()>{s.name()}</option> }).collect_view()}
                        </select>
                    </label>
                    <label><input type="checkbox" prop:checked=move || adaptive.get()
                        on:change=move |ev| set_adaptive.set(event_target_checked(&ev)) />" adapt the page"</label>
                    <details class="advanced">
                        <summary>"Why"</summary>
                        <p>{move || format!("detected {} ({})", detected.get().name(), reason.get())}</p>
                        <p class="signals">{move || features.get()}</p>
                        <p>{move || match agreement.get().rate() {
                            Some(r) => format!("agreement with your overrides: {:.0}% of {}", r * 100.0, agreement.get().overrides),
                            None => "no overrides yet".to_string(),
                        }}</p>
                        <p>"Signals stay on this device: idle time, scrolling, clicks, tab switches and typing rhythm, over 30 s."</p>
                    </details>
                </section>
            </main>
        </div>
    }
}

/// The engine's overview: each captured layer's head entropies.
fn parse_overview(v: &JsValue) -> Vec<(usize, Vec<f32>)> {
    js_sys::Array::from(v)
        .iter()
        .map(|l| {
            let entropies =
                get(&l, "entropies").dyn_into::<js_sys::Float32Array>().map(|a| a.to_vec()).unwrap_or_default();
            (number(&l, "layer") as usize, entropies)
        })
        .collect()
}

/// Context memory against context length (log scale from the first point to the last), with the current
/// context marked.
fn draw_growth(canvas: &web_sys::HtmlCanvasElement, points: &[(f64, f64)], context: f64) {
    let Some((ctx, w, h)) = heatmap::cleared(canvas) else { return };
    let (Some(&(t0, _)), Some(&(t1, _))) = (points.first(), points.last()) else { return };
    let max = points.iter().fold(1.0f64, |m, p| m.max(p.1));
    let x = |t: f64| (t.max(t0).ln() - t0.ln()) / (t1.ln() - t0.ln()).max(1e-9) * (w - 4.0) + 2.0;
    let y = |b: f64| h - 12.0 - b / max * (h - 16.0);
    heatmap::polyline(&ctx, "#f2cc60", points.iter().map(|&(t, b)| (x(t), y(b))));
    ctx.set_fill_style_str("#8b949e");
    ctx.set_font("10px sans-serif");
    let _ = ctx.fill_text(&mib(max), 2.0, 10.0);
    let _ = ctx.fill_text(&format!("{:.0}K tokens", t1 / 1024.0), w - 60.0, h - 1.0);
    if context > 0.0 {
        ctx.set_fill_style_str("#3fb6a8");
        ctx.fill_rect(x(context) - 1.0, 0.0, 2.0, h - 12.0);
    }
}

/// The decode rate over the generation as a line.
fn draw_chart(canvas: &web_sys::HtmlCanvasElement, rates: &[f64]) {
    let Some((ctx, w, h)) = heatmap::cleared(canvas) else { return };
    let max = rates.iter().cloned().fold(1e-9, f64::max);
    let step = w / rates.len().saturating_sub(1).max(1) as f64;
    heatmap::polyline(
        &ctx,
        "#3fb6a8",
        rates.iter().enumerate().map(|(i, r)| (i as f64 * step, h - 2.0 - r / max * (h - 4.0))),
    );
}
