//! The page's client of the engine worker: the npm package's `worker.js` (copied into the site under `pkg/`),
//! spoken to with the package's request protocol (`{id, op, ...}` out; `progress`, `token`, `result`, `error`
//! back), so the page and embedding sites run one engine the same way.

use js_sys::{Object, Reflect};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use wasm_bindgen::prelude::*;
use web_sys::{MessageEvent, Worker, WorkerOptions, WorkerType};

/// A reply to one request.
pub enum Reply {
    /// Load progress (the package's `LoadProgress` object).
    Progress(JsValue),
    /// A piece of generated text, the stats after it and the attention map (and overview) when asked for.
    Token {
        /// The text.
        text: String,
        /// The engine's stats.
        stats: JsValue,
        /// The attention map, if the generation asked for one.
        map: JsValue,
        /// Every attention layer's head entropies, if the generation asked for the overview.
        overview: JsValue,
    },
    /// The request's result (final).
    Done(JsValue),
    /// The request failed (final).
    Failed(String),
}

type Handlers = Rc<RefCell<HashMap<u32, Box<dyn FnMut(Reply)>>>>;

/// The worker and the handlers of requests in flight.
pub struct EngineClient {
    worker: Worker,
    next: RefCell<u32>,
    handlers: Handlers,
    _on_message: Closure<dyn FnMut(MessageEvent)>,
}

fn field(v: &JsValue, name: &str) -> JsValue {
    Reflect::get(v, &name.into()).unwrap_or(JsValue::UNDEFINED)
}

impl EngineClient {
    /// Starts the engine worker.
    pub fn start() -> Result<Self, JsValue> {
        let options = WorkerOptions::new();
        options.set_type(WorkerType::Module);
        let worker = Worker::new_with_options("pkg/worker.js", &options)?;
        let handlers: Handlers = Rc::default();
        let routes = handlers.clone();
        let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
            let data = event.data();
            let Some(id) = field(&data, "id").as_f64().map(|id| id as u32) else { return };
            let op = field(&data, "op").as_string().unwrap_or_default();
            let reply = match op.as_str() {
                "progress" => Reply::Progress(field(&data, "progress")),
                "token" => Reply::Token {
                    text: field(&data, "text").as_string().unwrap_or_default(),
                    stats: field(&data, "stats"),
                    map: field(&data, "map"),
                    overview: field(&data, "overview"),
                },
                "result" => Reply::Done(field(&data, "value")),
                _ => Reply::Failed(field(&data, "message").as_string().unwrap_or_else(|| "engine error".into())),
            };
            let last = matches!(reply, Reply::Done(_) | Reply::Failed(_));
            // Take the handler out while it runs: it may send further requests.
            let handler = routes.borrow_mut().remove(&id);
            if let Some(mut handler) = handler {
                handler(reply);
                if !last {
                    routes.borrow_mut().insert(id, handler);
                }
            }
        });
        worker.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        Ok(EngineClient { worker, next: RefCell::new(1), handlers, _on_message: on_message })
    }

    /// Sends `op` with `fields` and routes its replies to `handler`; returns the request id.
    pub fn request(&self, op: &str, fields: &[(&str, JsValue)], handler: impl FnMut(Reply) + 'static) -> u32 {
        let id = {
            let mut next = self.next.borrow_mut();
            *next += 1;
            *next
        };
        let message = Object::new();
        let _ = Reflect::set(&message, &"id".into(), &id.into());
        let _ = Reflect::set(&message, &"op".into(), &op.into());
        for (name, value) in fields {
            let _ = Reflect::set(&message, &(*name).into(), value);
        }
        self.handlers.borrow_mut().insert(id, Box::new(handler));
        if let Err(e) = self.worker.post_message(&message) {
            if let Some(mut h) = self.handlers.borrow_mut().remove(&id) {
                h(Reply::Failed(format!("cannot reach the engine worker: {e:?}")));
            }
        }
        id
    }
}

/// A plain JavaScript object from named values.
pub fn object(fields: &[(&str, JsValue)]) -> JsValue {
    let out = Object::new();
    for (name, value) in fields {
        let _ = Reflect::set(&out, &(*name).into(), value);
    }
    out.into()
}

/// A number field of a JavaScript object (0 when absent).
pub fn number(v: &JsValue, name: &str) -> f64 {
    field(v, name).as_f64().unwrap_or(0.0)
}

/// A field of a JavaScript object.
pub fn get(v: &JsValue, name: &str) -> JsValue {
    field(v, name)
}
