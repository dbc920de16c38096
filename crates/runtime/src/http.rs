//! Model files over HTTP(S) for native builds: whole-file fetches for configs and tokenizers, and checkpoints
//! streamed in file order into the disk cache by a background download whose bytes tensors are read from as they
//! arrive (a model is never held in memory whole, and never downloaded twice). A dropped connection resumes from
//! the last byte received, with retries and backoff; a half-finished download resumes in the next run; a file whose
//! server publishes a SHA-256 (Hugging Face's `X-Linked-ETag`) is checked against it and discarded when it differs.
//! Hugging Face repo ids resolve to their `resolve` URLs.

use crate::hub::{check_digest, hex, network, published_sha256, status_failure, Failure, ATTEMPTS, BACKOFF_MS};
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;
use ternlight_core::ranged::{past_end, RangeSource};
use ternlight_core::{CoreError, Result};

/// An HTTP client with the project's timeouts.
#[derive(Clone)]
pub struct Client {
    agent: ureq::Agent,
}

/// Seconds a connection may wait for a server (to connect, for a response, between body bytes) before the
/// attempt fails and is retried: `$TERNLIGHT_NET_TIMEOUT`, else 30. A stalled download resumes where it stopped.
fn stall_timeout() -> Duration {
    let env = std::env::var("TERNLIGHT_NET_TIMEOUT").ok().and_then(|v| v.parse::<f64>().ok());
    Duration::from_secs_f64(env.filter(|s| *s > 0.0).unwrap_or(30.0))
}

/// The largest file fetched whole (configs, tokenizers, indexes); weights stream and have no cap.
pub const MAX_WHOLE_FILE: u64 = 256 << 20;

impl Default for Client {
    fn default() -> Self {
        let stall = stall_timeout();
        let config = ureq::Agent::config_builder()
            .timeout_connect(Some(stall))
            .timeout_recv_response(Some(stall))
            .timeout_per_read(Some(stall))
            .http_status_as_error(false)
            .build();
        Client { agent: config.into() }
    }
}

/// Connection-level failures are worth retrying.
fn transient(url: &str, e: impl std::fmt::Display) -> Failure {
    Failure::Retry(network(url, e.to_string()))
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
                    let mut reader = response.into_body().into_reader().take(MAX_WHOLE_FILE + 1);
                    reader.read_to_end(&mut body).map_err(|e| transient(url, e))?;
                    if body.len() as u64 > MAX_WHOLE_FILE {
                        return Err(Failure::Final(network(url, format!("larger than {MAX_WHOLE_FILE} bytes"))));
                    }
                    Ok(Some(body))
                }
                other => Err(status_failure(url, other)),
            }
        })
    }

    /// A file streamed into the disk cache under `cache_dir` (keyed by URL and ETag) by a background download in
    /// file order; reads wait for their bytes. A complete cached copy is used without downloading again.
    pub fn open_cached(&self, url: &str, cache_dir: &Path) -> Result<CachedFile> {
        let probe = retrying(url, || {
            let response = self.agent.get(url).header("Range", "bytes=0-0").call().map_err(|e| transient(url, e))?;
            let status = response.status().as_u16();
            let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(String::from);
            let fail = |m: &str| Failure::Final(network(url, m));
            match status {
                206 => {
                    let len = header("content-range")
                        .and_then(|r| r.rsplit('/').next().and_then(|n| n.parse::<u64>().ok()))
                        .ok_or_else(|| fail("a 206 response without a total length in Content-Range"))?;
                    // Hugging Face puts an LFS file's SHA-256 in X-Linked-ETag; other servers may in ETag.
                    let etag = header("x-linked-etag").or_else(|| header("etag"));
                    Ok((len, etag.map(|e| e.trim_start_matches("W/").trim_matches('"').to_string())))
                }
                200 => Err(fail("the server ignores Range requests (needed to stream tensors)")),
                404 => Err(fail("not found (HTTP 404)")),
                other => Err(status_failure(url, other)),
            }
        })?;
        let (len, etag) = probe;
        let sha256 = published_sha256(etag.as_deref());
        let key = hex(&Sha256::digest(format!("{url}\n{}", etag.as_deref().unwrap_or("")).as_bytes()));
        let dir = cache_dir.join(&key[..32]);
        std::fs::create_dir_all(&dir).map_err(|source| CoreError::Io { path: dir.display().to_string(), source })?;
        CachedFile::start(self.clone(), url, len, sha256, dir)
    }
}

/// Where native downloads are cached: `$TERNLIGHT_CACHE`, else `$XDG_CACHE_HOME/ternlight`, else
/// `~/.cache/ternlight`.
pub fn cache_dir() -> PathBuf {
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    env("TERNLIGHT_CACHE")
        .or_else(|| env("XDG_CACHE_HOME").map(|d| d.join("ternlight")))
        .or_else(|| env("HOME").map(|h| h.join(".cache").join("ternlight")))
        .unwrap_or_else(|| std::env::temp_dir().join("ternlight-cache"))
}

/// Runs `attempt` until it succeeds or fails for good, up to [`ATTEMPTS`] times with doubling delays.
fn retrying<T>(url: &str, mut attempt: impl FnMut() -> std::result::Result<T, Failure>) -> Result<T> {
    let mut delay = Duration::from_millis(BACKOFF_MS);
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

/// How far a download has got.
#[derive(Default)]
struct Progress {
    /// Bytes on disk, from the start of the file.
    done: u64,
    /// Set when the download stopped for good (after retries), or the finished file failed its digest.
    failed: Option<String>,
    /// The file is complete (and matched its digest, when it has one).
    complete: bool,
}

/// One remote file, downloaded in order into the disk cache by a background thread; reads of bytes not there yet
/// wait for them.
pub struct CachedFile {
    url: String,
    len: u64,
    path: PathBuf,
    reader: Mutex<File>,
    progress: Arc<(Mutex<Progress>, Condvar)>,
}

impl CachedFile {
    fn start(client: Client, url: &str, len: u64, sha256: Option<String>, dir: PathBuf) -> Result<Self> {
        let (done_path, partial_path) = (dir.join("file"), dir.join("file.partial"));
        let progress = Arc::new((Mutex::new(Progress::default()), Condvar::new()));
        let io = |path: &Path, source| CoreError::Io { path: path.display().to_string(), source };
        let cached = std::fs::metadata(&done_path).is_ok_and(|m| m.len() == len);
        if cached {
            *progress.0.lock().expect("progress") = Progress { done: len, failed: None, complete: true };
            let reader = File::open(&done_path).map_err(|e| io(&done_path, e))?;
            return Ok(CachedFile { url: url.to_string(), len, path: done_path, reader: Mutex::new(reader), progress });
        }
        let partial = OpenOptions::new().create(true).append(true).read(true).open(&partial_path);
        let partial = partial.map_err(|e| io(&partial_path, e))?;
        // Opened before the download can rename the file: the handle stays valid across the rename.
        let reader = File::open(&partial_path).map_err(|e| io(&partial_path, e))?;
        let (shared, thread_url, from, to) = (progress.clone(), url.to_string(), partial_path.clone(), done_path);
        std::thread::spawn(move || {
            let outcome = download(&client, &thread_url, len, partial, &shared).and_then(|hash| {
                if let Err(e) = check_digest(&thread_url, &hash, sha256.as_deref()) {
                    // Corrupted bytes must not be resumed from: the next run starts clean.
                    let _ = std::fs::remove_file(&from);
                    return Err(e);
                }
                std::fs::rename(&from, &to).map_err(|e| io(&to, e))
            });
            let (lock, ready) = &*shared;
            let mut p = lock.lock().expect("progress");
            match outcome {
                Ok(()) => p.complete = true,
                Err(CoreError::Network { message, .. }) => p.failed = Some(message),
                Err(e) => p.failed = Some(e.to_string()),
            }
            ready.notify_all();
        });
        Ok(CachedFile { url: url.to_string(), len, path: partial_path, reader: Mutex::new(reader), progress })
    }

    /// Waits until bytes up to `end` are on disk, or the download failed.
    fn wait_for(&self, end: u64, whole: bool) -> Result<()> {
        let (lock, ready) = &*self.progress;
        let mut p = lock.lock().expect("progress");
        loop {
            if let Some(e) = &p.failed {
                return Err(network(&self.url, e.clone()));
            }
            if p.complete || (!whole && p.done >= end) {
                return Ok(());
            }
            p = ready.wait(p).expect("progress");
        }
    }
}

/// Downloads bytes `partial.len()..len` of `url` into `partial` (resuming after dropped connections, with retries
/// and backoff), publishing progress; returns the SHA-256 of the whole file.
fn download(
    client: &Client,
    url: &str,
    len: u64,
    mut partial: File,
    shared: &(Mutex<Progress>, Condvar),
) -> Result<Vec<u8>> {
    let io = |source| CoreError::Io { path: url.to_string(), source };
    let mut hasher = Sha256::new();
    let mut done = 0u64;
    // Bytes an earlier run left: hash them, then continue after them.
    partial.seek(SeekFrom::Start(0)).map_err(io)?;
    let mut chunk = vec![0u8; 1 << 16];
    loop {
        let n = partial.read(&mut chunk).map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(&chunk[..n]);
        done += n as u64;
    }
    if done > len {
        return Err(network(url, format!("cached partial file of {done} bytes exceeds the {len}-byte file")));
    }
    let publish = |done: u64| {
        shared.0.lock().expect("progress").done = done;
        shared.1.notify_all();
    };
    publish(done);
    let (mut failures, mut delay) = (0, Duration::from_millis(BACKOFF_MS));
    while done < len {
        let before = done;
        let result = (|| -> std::result::Result<(), String> {
            let range = format!("bytes={done}-{}", len - 1);
            let response = client.agent.get(url).header("Range", &range).call().map_err(|e| e.to_string())?;
            if response.status().as_u16() != 206 {
                return Err(format!("HTTP status {} for range {range}", response.status().as_u16()));
            }
            let mut body = response.into_body().into_reader().take(len - done);
            loop {
                let n = body.read(&mut chunk).map_err(|e| format!("connection dropped: {e}"))?;
                if n == 0 {
                    return Ok(());
                }
                partial.write_all(&chunk[..n]).map_err(|e| e.to_string())?;
                hasher.update(&chunk[..n]);
                done += n as u64;
                publish(done);
            }
        })();
        if done >= len {
            break;
        }
        // Progress resets the count: only consecutive failures give up.
        if done > before {
            failures = 0;
            continue;
        }
        failures += 1;
        if failures >= ATTEMPTS {
            let last = result.err().unwrap_or_else(|| "the response ended early".into());
            return Err(network(url, format!("gave up after {ATTEMPTS} attempts at byte {done}; last: {last}")));
        }
        std::thread::sleep(delay);
        delay *= 2;
    }
    partial.flush().map_err(io)?;
    Ok(hasher.finalize().to_vec())
}

impl RangeSource for CachedFile {
    fn name(&self) -> &str {
        &self.url
    }

    fn len(&self) -> u64 {
        self.len
    }

    fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        let end = offset.checked_add(len as u64).filter(|&e| e <= self.len);
        let end = end.ok_or_else(|| past_end(&self.url, offset, len, self.len))?;
        self.wait_for(end, false)?;
        let io = |source| CoreError::Io { path: self.path.display().to_string(), source };
        let mut file = self.reader.lock().expect("reader");
        let mut out = vec![0u8; len];
        file.seek(SeekFrom::Start(offset)).and_then(|_| file.read_exact(&mut out)).map_err(io)?;
        Ok(out)
    }

    fn verify(&self) -> Result<()> {
        self.wait_for(self.len, true)
    }
}
