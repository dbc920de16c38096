//! Model files over HTTP(S) for native builds: Range requests for tensors (so a checkpoint streams tensor by tensor
//! and is never held whole), whole-file fetches for configs and tokenizers, and Hugging Face repo ids resolved to
//! their `resolve` URLs. A dropped connection resumes from the last byte received, with retries and backoff.

use std::io::Read;
use std::time::Duration;
use ternlight_core::ranged::{past_end, RangeSource};
use ternlight_core::{CoreError, Result};

/// Attempts per request before giving up.
const ATTEMPTS: u32 = 5;
/// First retry delay; it doubles per attempt.
const BACKOFF: Duration = Duration::from_millis(100);

/// The base URL of a model given as an `http(s)://` URL or a Hugging Face repo id `org/name[@revision]`; `None` for
/// anything else (a local path).
pub fn model_base(model: &str) -> Option<String> {
    if model.starts_with("http://") || model.starts_with("https://") {
        return Some(model.trim_end_matches('/').to_string());
    }
    let (repo, rev) = model.split_once('@').unwrap_or((model, "main"));
    let ok = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    match repo.split_once('/') {
        Some((org, name)) if ok(org) && ok(name) && ok(rev) && !org.starts_with('.') && !name.starts_with('.') => {
            Some(format!("https://huggingface.co/{org}/{name}/resolve/{rev}"))
        }
        _ => None,
    }
}

/// An HTTP client with the project's timeouts.
#[derive(Clone)]
pub struct Client {
    agent: ureq::Agent,
}

impl Default for Client {
    fn default() -> Self {
        let config = ureq::Agent::config_builder()
            .timeout_connect(Some(Duration::from_secs(15)))
            .timeout_recv_body(Some(Duration::from_secs(60)))
            .http_status_as_error(false)
            .build();
        Client { agent: config.into() }
    }
}

fn network(url: &str, message: impl Into<String>) -> CoreError {
    CoreError::Network { url: url.to_string(), message: message.into() }
}

/// Why an attempt failed: worth another try (connection trouble, server errors) or final (the answer will not
/// change).
enum Failure {
    Retry(CoreError),
    Final(CoreError),
}

/// Connection-level failures are worth retrying.
fn transient(url: &str, e: impl std::fmt::Display) -> Failure {
    Failure::Retry(network(url, e.to_string()))
}

/// 5xx and 429 are worth retrying; other statuses are final.
fn status_failure(url: &str, status: u16) -> Failure {
    let e = network(url, format!("HTTP status {status}"));
    match status >= 500 || status == 429 {
        true => Failure::Retry(e),
        false => Failure::Final(e),
    }
}

impl Client {
    /// A whole file, or `None` when the server says it does not exist (404).
    pub fn fetch(&self, url: &str) -> Result<Option<Vec<u8>>> {
        retrying(url, || {
            let response = self.agent.get(url).call().map_err(|e| transient(url, e))?;
            match response.status().as_u16() {
                404 => Ok(None),
                200 => {
                    let mut body = Vec::new();
                    let mut reader = response.into_body().into_reader();
                    reader.read_to_end(&mut body).map_err(|e| transient(url, e))?;
                    Ok(Some(body))
                }
                other => Err(status_failure(url, other)),
            }
        })
    }

    /// A file read by range; its length comes from the first byte's `Content-Range`.
    pub fn open(&self, url: &str) -> Result<HttpFile> {
        let len = retrying(url, || {
            let response = self.agent.get(url).header("Range", "bytes=0-0").call().map_err(|e| transient(url, e))?;
            let status = response.status().as_u16();
            let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(String::from);
            let fail = |m: &str| Failure::Final(network(url, m));
            match status {
                206 => header("content-range")
                    .and_then(|r| r.rsplit('/').next().and_then(|n| n.parse::<u64>().ok()))
                    .ok_or_else(|| fail("a 206 response without a total length in Content-Range")),
                200 => Err(fail("the server ignores Range requests (needed to stream tensors)")),
                404 => Err(fail("not found (HTTP 404)")),
                other => Err(status_failure(url, other)),
            }
        })?;
        Ok(HttpFile { client: self.clone(), url: url.to_string(), len })
    }
}

/// Runs `attempt` until it succeeds or fails for good, up to [`ATTEMPTS`] times with doubling delays.
fn retrying<T>(url: &str, mut attempt: impl FnMut() -> std::result::Result<T, Failure>) -> Result<T> {
    let mut delay = BACKOFF;
    let mut last = String::new();
    for _ in 0..ATTEMPTS {
        match attempt() {
            Ok(v) => return Ok(v),
            Err(Failure::Final(e)) => return Err(e),
            Err(Failure::Retry(e)) => last = e.to_string(),
        }
        std::thread::sleep(delay);
        delay *= 2;
    }
    Err(network(url, format!("gave up after {ATTEMPTS} attempts; last: {last}")))
}

/// One remote file read by HTTP Range requests.
pub struct HttpFile {
    client: Client,
    url: String,
    len: u64,
}

impl RangeSource for HttpFile {
    fn name(&self) -> &str {
        &self.url
    }

    fn len(&self) -> u64 {
        self.len
    }

    /// Requests the range; when a connection drops, asks again for the bytes still missing (resume), with backoff.
    fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        let end = offset.checked_add(len as u64).filter(|&e| e <= self.len);
        let end = end.ok_or_else(|| past_end(&self.url, offset, len, self.len))?;
        let mut out = Vec::with_capacity(len);
        if len == 0 {
            return Ok(out);
        }
        let (mut failures, mut delay) = (0, BACKOFF);
        while (out.len() as u64) < len as u64 {
            let from = offset + out.len() as u64;
            let before = out.len();
            match self.range_into(from, end, &mut out) {
                Ok(()) => {}
                // Progress resets the count: only consecutive failures give up.
                Err(_) if out.len() > before => failures = 0,
                Err(e) => {
                    failures += 1;
                    if failures >= ATTEMPTS {
                        return Err(network(&self.url, format!("gave up after {ATTEMPTS} attempts; last: {e}")));
                    }
                    std::thread::sleep(delay);
                    delay *= 2;
                }
            }
        }
        Ok(out)
    }
}

impl HttpFile {
    /// Appends bytes `from..end` to `out` from one request, as many as arrive before an error.
    fn range_into(&self, from: u64, end: u64, out: &mut Vec<u8>) -> Result<()> {
        let url = &self.url;
        let range = format!("bytes={from}-{}", end - 1);
        let response =
            self.client.agent.get(url).header("Range", &range).call().map_err(|e| network(url, e.to_string()))?;
        if response.status().as_u16() != 206 {
            return Err(network(url, format!("HTTP status {} for range {range}", response.status().as_u16())));
        }
        let want = (end - from) as usize;
        let mut reader = response.into_body().into_reader().take(want as u64);
        let mut chunk = vec![0u8; 1 << 16];
        let start = out.len();
        loop {
            match reader.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => out.extend_from_slice(&chunk[..n]),
                Err(e) => return Err(network(url, format!("connection dropped: {e}"))),
            }
        }
        if out.len() - start < want {
            return Err(network(url, format!("range {range} ended after {} bytes", out.len() - start)));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_hub_ids_resolve_and_paths_do_not() {
        assert_eq!(model_base("http://127.0.0.1:8080/m/").as_deref(), Some("http://127.0.0.1:8080/m"));
        assert_eq!(
            model_base("microsoft/bitnet-b1.58-2B-4T").as_deref(),
            Some("https://huggingface.co/microsoft/bitnet-b1.58-2B-4T/resolve/main")
        );
        assert_eq!(model_base("org/name@v1.0").as_deref(), Some("https://huggingface.co/org/name/resolve/v1.0"));
        for path in ["tests/fixtures/llama", "../x/y", "model.gguf", "a/b/c", "./a/b"] {
            assert_eq!(model_base(path), None, "{path}");
        }
    }
}
