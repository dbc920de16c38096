//! The browser's Cache Storage as a block store for model files: each file (keyed by URL and ETag) is kept as
//! fixed-size blocks, so a half-finished download keeps what arrived and a model is never downloaded twice. When
//! storage is full or unavailable, loading goes on without caching and says so.

use super::net::{describe, global};
use crate::hub::hex;
use sha2::{Digest, Sha256};
use std::cell::RefCell;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::{Cache, CacheStorage, Response};

/// The Cache Storage cache all Ternlight files live in.
const CACHE_NAME: &str = "ternlight-v1";

/// Cache keys must be http(s) URLs; these name entries, they are never fetched.
const KEY_ROOT: &str = "https://cache.ternlight.invalid";

/// One file's blocks (and small records about it) in Cache Storage.
pub struct BlockCache {
    cache: Cache,
    prefix: String,
    warning: RefCell<Option<String>>,
}

/// A short stable key for `text`.
fn key(text: &str) -> String {
    hex(&Sha256::digest(text.as_bytes()))[..32].to_string()
}

impl BlockCache {
    /// The cache of the file at `url` with entity tag `etag` in blocks of `block` bytes, or `None` where Cache
    /// Storage is unavailable (insecure contexts, some private modes).
    pub async fn open(url: &str, etag: Option<&str>, block: u64) -> Option<Self> {
        let caches: CacheStorage = global("caches").dyn_into().ok()?;
        let cache: Cache = JsFuture::from(caches.open(CACHE_NAME)).await.ok()?.dyn_into().ok()?;
        let prefix = format!("{KEY_ROOT}/{}", key(&format!("{url}\n{}\n{block}", etag.unwrap_or(""))));
        Some(BlockCache { cache, prefix, warning: RefCell::new(None) })
    }

    /// The record `name` (a block number or a marker).
    pub async fn get(&self, name: &str) -> Option<Vec<u8>> {
        get(&self.cache, &format!("{}/{name}", self.prefix)).await
    }

    /// Stores `bytes` as record `name`. The first failure (storage full) turns caching off for this file and is
    /// kept as a warning; loading goes on.
    pub async fn put(&self, name: &str, bytes: &[u8]) {
        if self.warning.borrow().is_some() {
            return;
        }
        if let Err(message) = put(&self.cache, &format!("{}/{name}", self.prefix), bytes).await {
            *self.warning.borrow_mut() = Some(format!(
                "browser storage refused the model ({message}): it streams without caching; free some space or \
                 clear this site's data to cache it"
            ));
        }
    }

    /// Drops records `names` (a download that failed its integrity check must not be reused).
    pub async fn delete(&self, names: impl IntoIterator<Item = String>) {
        for name in names {
            let _ = JsFuture::from(self.cache.delete_with_str(&format!("{}/{name}", self.prefix))).await;
        }
    }

    /// Why caching stopped, if it did.
    pub fn warning(&self) -> Option<String> {
        self.warning.borrow().clone()
    }
}

/// The small text record of `kind` about `name`, kept beside the blocks: a model file's manifest (what the last
/// successful probe of its URL learnt, so the page can tell which models are cached without asking the network),
/// an adapter's kernel sizes.
pub async fn record(kind: &str, name: &str) -> Option<String> {
    let caches: CacheStorage = global("caches").dyn_into().ok()?;
    let cache: Cache = JsFuture::from(caches.open(CACHE_NAME)).await.ok()?.dyn_into().ok()?;
    String::from_utf8(get(&cache, &format!("{KEY_ROOT}/{kind}/{}", key(name))).await?).ok()
}

/// Keeps `text` as the record of `kind` about `name`; returns whether it was kept (best effort: a full or missing
/// storage only loses the record).
pub async fn set_record(kind: &str, name: &str, text: &str) -> bool {
    let Ok(caches) = global("caches").dyn_into::<CacheStorage>() else { return false };
    let Ok(cache) = JsFuture::from(caches.open(CACHE_NAME)).await else { return false };
    put(cache.unchecked_ref(), &format!("{KEY_ROOT}/{kind}/{}", key(name)), text.as_bytes()).await.is_ok()
}

async fn get(cache: &Cache, key: &str) -> Option<Vec<u8>> {
    let found = JsFuture::from(cache.match_with_str(key)).await.ok()?;
    let response: Response = found.dyn_into().ok()?;
    let body = JsFuture::from(response.array_buffer().ok()?).await.ok()?;
    Some(js_sys::Uint8Array::new(&body).to_vec())
}

async fn put(cache: &Cache, key: &str, bytes: &[u8]) -> Result<(), String> {
    let mut copy = bytes.to_vec();
    let response = Response::new_with_opt_u8_array(Some(&mut copy)).map_err(|e| describe(&e))?;
    JsFuture::from(cache.put_with_str(key, &response)).await.map(drop).map_err(|e| describe(&e))
}
