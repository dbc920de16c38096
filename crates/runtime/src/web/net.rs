//! `fetch` from a page or a worker: whole small files, a Range probe of a large one, and byte ranges read from
//! streamed bodies that resume from the last byte received after a dropped connection, with retries and backoff.

use crate::hub::{network, status_failure, Failure, ATTEMPTS, BACKOFF_MS};
use js_sys::{Function, Promise, Reflect, Uint8Array};
use ternlight_core::Result;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{Headers, ReadableStreamDefaultReader, RequestInit, Response};

/// A property of the global object (the window or the worker scope).
pub fn global(name: &str) -> JsValue {
    Reflect::get(&js_sys::global(), &name.into()).unwrap_or(JsValue::UNDEFINED)
}

/// A JavaScript exception's message.
pub fn describe(e: &JsValue) -> String {
    e.as_string()
        .or_else(|| Reflect::get(e, &"message".into()).ok().and_then(|m| m.as_string()))
        .unwrap_or_else(|| format!("{e:?}"))
}

/// Waits `ms` milliseconds without blocking the page.
pub async fn sleep(ms: u64) {
    let promise = Promise::new(&mut |resolve, _| {
        if let Ok(set_timeout) = global("setTimeout").dyn_into::<Function>() {
            let _ = set_timeout.call2(&JsValue::NULL, &resolve, &JsValue::from(ms as f64));
        }
    });
    let _ = JsFuture::from(promise).await;
}

/// A GET of `url`, for bytes `start..end` when a range is given.
async fn get(url: &str, range: Option<(u64, u64)>) -> std::result::Result<Response, JsValue> {
    let init = RequestInit::new();
    if let Some((start, end)) = range {
        let headers = Headers::new()?;
        headers.set("Range", &format!("bytes={start}-{}", end - 1))?;
        init.set_headers(&headers);
    }
    let fetch: Function = global("fetch").dyn_into()?;
    let promise: Promise = fetch.call2(&js_sys::global(), &url.into(), &init)?.dyn_into()?;
    JsFuture::from(promise).await?.dyn_into()
}

/// Runs `attempt` until it succeeds or fails for good, up to [`ATTEMPTS`] times with doubling delays.
async fn retrying<T, F: std::future::Future<Output = std::result::Result<T, Failure>>>(
    url: &str,
    mut attempt: impl FnMut() -> F,
) -> Result<T> {
    let mut delay = BACKOFF_MS;
    let mut last = String::new();
    for _ in 0..ATTEMPTS {
        match attempt().await {
            Ok(v) => return Ok(v),
            Err(Failure::Final(e)) => return Err(e),
            Err(Failure::Retry(e)) => last = e.to_string(),
        }
        sleep(delay).await;
        delay *= 2;
    }
    Err(network(url, format!("gave up after {ATTEMPTS} attempts; last: {last}")))
}

fn retry(url: &str, e: &JsValue) -> Failure {
    Failure::Retry(network(url, describe(e)))
}

/// A whole (small) file, or `None` when the server says it does not exist (404).
pub async fn fetch_whole(url: &str) -> Result<Option<Vec<u8>>> {
    retrying(url, || async {
        let response = get(url, None).await.map_err(|e| retry(url, &e))?;
        match response.status() {
            404 => Ok(None),
            200 => {
                let body = response.array_buffer().map_err(|e| retry(url, &e))?;
                let body = JsFuture::from(body).await.map_err(|e| retry(url, &e))?;
                Ok(Some(Uint8Array::new(&body).to_vec()))
            }
            other => Err(status_failure(url, other)),
        }
    })
    .await
}

/// What a Range probe learnt of a file: its length and ETag.
pub struct Probe {
    /// Total bytes.
    pub len: u64,
    /// The entity tag (Hugging Face's `X-Linked-ETag` when exposed), unquoted.
    pub etag: Option<String>,
}

/// Asks for the first byte of `url` to learn its length and ETag (`None`: the server says it does not exist);
/// refuses servers that ignore Range requests.
pub async fn probe(url: &str) -> Result<Option<Probe>> {
    retrying(url, || async {
        let response = get(url, Some((0, 1))).await.map_err(|e| retry(url, &e))?;
        let header = |name: &str| response.headers().get(name).ok().flatten();
        let fail = |m: &str| Failure::Final(network(url, m));
        match response.status() {
            206 => {
                let len = header("content-range")
                    .and_then(|r| r.rsplit('/').next().and_then(|n| n.parse::<u64>().ok()))
                    .ok_or_else(|| {
                        fail("a 206 response without a readable Content-Range (the server must expose it to CORS)")
                    })?;
                let etag = header("x-linked-etag").or_else(|| header("etag"));
                Ok(Some(Probe { len, etag: etag.map(|e| e.trim_start_matches("W/").trim_matches('"').to_string()) }))
            }
            200 => Err(fail("the server ignores Range requests (needed to stream tensors)")),
            404 => Ok(None),
            other => Err(status_failure(url, other)),
        }
    })
    .await
}

/// Bytes `start..end` of `url`, read from streamed bodies; a dropped connection resumes from the last byte
/// received. Only consecutive failures without progress count towards giving up.
pub async fn fetch_range(url: &str, start: u64, end: u64) -> Result<Vec<u8>> {
    let want = (end - start) as usize;
    let mut out = Vec::with_capacity(want);
    let (mut failures, mut delay) = (0, BACKOFF_MS);
    while out.len() < want {
        let before = out.len();
        let last = match read_into(url, start + before as u64, end, &mut out).await {
            Ok(()) => "the response ended early".to_string(),
            Err(Failure::Final(e)) => return Err(e),
            Err(Failure::Retry(e)) => e.to_string(),
        };
        if out.len() >= want {
            break;
        }
        if out.len() > before {
            failures = 0;
            continue;
        }
        failures += 1;
        if failures >= ATTEMPTS {
            let at = start + out.len() as u64;
            return Err(network(url, format!("gave up after {ATTEMPTS} attempts at byte {at}; last: {last}")));
        }
        sleep(delay).await;
        delay *= 2;
    }
    Ok(out)
}

/// One request for bytes `from..end`, appending what arrives to `out` (never past `end`).
async fn read_into(url: &str, from: u64, end: u64, out: &mut Vec<u8>) -> std::result::Result<(), Failure> {
    let response = get(url, Some((from, end))).await.map_err(|e| retry(url, &e))?;
    match response.status() {
        206 => {}
        // A server answering a range from the start with the whole file still gives the right bytes first.
        200 if from == 0 => {}
        200 => return Err(Failure::Final(network(url, "the server ignores Range requests (needed to resume)"))),
        other => return Err(status_failure(url, other)),
    }
    let body = response.body().ok_or_else(|| Failure::Retry(network(url, "a response without a body")))?;
    let reader: ReadableStreamDefaultReader = body.get_reader().unchecked_into();
    let limit = out.len() + (end - from) as usize;
    loop {
        let chunk = JsFuture::from(reader.read())
            .await
            .map_err(|e| Failure::Retry(network(url, format!("connection dropped: {}", describe(&e)))))?;
        if Reflect::get(&chunk, &"done".into()).is_ok_and(|d| d.is_truthy()) {
            return Ok(());
        }
        let value: Uint8Array = Reflect::get(&chunk, &"value".into()).map_err(|e| retry(url, &e))?.unchecked_into();
        let take = (value.length() as usize).min(limit - out.len());
        let start = out.len();
        out.resize(start + take, 0);
        value.subarray(0, take as u32).copy_to(&mut out[start..]);
        if out.len() == limit {
            let _ = reader.cancel();
            return Ok(());
        }
    }
}
