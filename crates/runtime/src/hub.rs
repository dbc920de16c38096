//! What the native and browser downloaders share: where a model given by name lives (`http(s)://` base URLs and
//! Hugging Face repo ids), which failures are worth retrying, and the SHA-256 check of a finished file.

use ternlight_core::{CoreError, Result};

/// Attempts per request before giving up.
pub const ATTEMPTS: u32 = 5;
/// First retry delay in milliseconds; it doubles per attempt.
pub const BACKOFF_MS: u64 = 100;

/// A network error about `url`.
pub fn network(url: &str, message: impl Into<String>) -> CoreError {
    CoreError::Network { url: url.to_string(), message: message.into() }
}

/// Why an attempt failed: worth another try (connection trouble, server errors) or final (the answer will not
/// change).
pub enum Failure {
    /// Try again after a delay.
    Retry(CoreError),
    /// Give up now.
    Final(CoreError),
}

/// 5xx and 429 are worth retrying; other statuses are final.
pub fn status_failure(url: &str, status: u16) -> Failure {
    let e = network(url, format!("HTTP status {status}"));
    match status >= 500 || status == 429 {
        true => Failure::Retry(e),
        false => Failure::Final(e),
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The SHA-256 an ETag publishes, when it is one (Hugging Face's `X-Linked-ETag` of LFS files is the file's
/// SHA-256; other servers' ETags are opaque).
pub fn published_sha256(etag: Option<&str>) -> Option<String> {
    let tag = etag?.trim_start_matches("W/").trim_matches('"');
    (tag.len() == 64 && tag.bytes().all(|b| b.is_ascii_hexdigit())).then(|| tag.to_lowercase())
}

/// Checks a finished download's SHA-256 `hash` against the one its server published, if any.
pub fn check_digest(url: &str, hash: &[u8], expected: Option<&str>) -> Result<()> {
    match expected {
        Some(want) if hex(hash) != want => Err(network(
            url,
            format!(
                "integrity check failed: SHA-256 {} where the server published {want} (the download is discarded)",
                hex(hash)
            ),
        )),
        _ => Ok(()),
    }
}

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
