//! A checkpoint streamed from a URL into WebGPU: the safetensors or GGUF header first, then each tensor fetched by
//! Range requests just before it is uploaded and dropped right after, so host memory holds one tensor and one cache
//! block (the last one fetched, which the next tensor usually starts in). Bytes go through the block cache; after
//! loading, a file whose server published a SHA-256 is hashed block by block in file order and checked.

use super::cache::{self, BlockCache};
use super::net;
use crate::hub::{check_digest, network, published_sha256};
use crate::weights::Prefetch;
use crate::Result;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use ternlight_core::gguf::checkpoint::GgufCheckpoint;
use ternlight_core::gguf::{Gguf, NEED_MORE};
use ternlight_core::ranged::RangeSource;
use ternlight_core::tensors::{SafetensorsCheckpoint, TensorLocations, TensorSource};
use ternlight_core::CoreError;

/// Bytes per cached block unless the caller chooses: large enough that a big model is a few thousand entries.
pub const DEFAULT_BLOCK: u64 = 4 << 20;

/// The ranges of one file fetched so far, read by the (synchronous) safetensors reader.
struct Fetched {
    name: String,
    len: u64,
    ranges: Mutex<HashMap<(u64, usize), Vec<u8>>>,
    held: Arc<HostBytes>,
}

impl Fetched {
    fn ranges(&self) -> std::sync::MutexGuard<'_, HashMap<(u64, usize), Vec<u8>>> {
        self.ranges.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn insert(&self, offset: u64, bytes: Vec<u8>) {
        self.held.add(bytes.len());
        if let Some(old) = self.ranges().insert((offset, bytes.len()), bytes) {
            self.held.sub(old.len());
        }
    }

    fn remove(&self, offset: u64, len: usize) {
        if let Some(old) = self.ranges().remove(&(offset, len)) {
            self.held.sub(old.len());
        }
    }

    /// Drops every range (the header, once parsed).
    fn clear(&self) {
        let dropped: usize = self.ranges().drain().map(|(_, b)| b.len()).sum();
        self.held.sub(dropped);
    }
}

/// Bytes of a checkpoint the streaming load holds in host memory (fetched ranges and remembered blocks), and the
/// most it held at once.
#[derive(Default)]
pub struct HostBytes {
    now: std::sync::atomic::AtomicU64,
    peak: std::sync::atomic::AtomicU64,
}

impl HostBytes {
    fn add(&self, n: usize) {
        use std::sync::atomic::Ordering::Relaxed;
        let now = self.now.fetch_add(n as u64, Relaxed) + n as u64;
        self.peak.fetch_max(now, Relaxed);
    }

    fn sub(&self, n: usize) {
        self.now.fetch_sub(n as u64, std::sync::atomic::Ordering::Relaxed);
    }

    /// The most bytes held at once so far.
    pub fn peak(&self) -> u64 {
        self.peak.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// The [`RangeSource`] view of a [`RemoteFile`]: ranges fetched ahead, by exact offset and length. A read of a
/// whole fetched range takes it (a tensor is read once, right after its fetch), so its bytes are not held twice;
/// a read within a range (the GGUF header's fields) copies.
struct FetchedSource(Arc<Fetched>);

impl RangeSource for FetchedSource {
    fn name(&self) -> &str {
        &self.0.name
    }

    fn len(&self) -> u64 {
        self.0.len
    }

    fn read(&self, offset: u64, len: usize) -> ternlight_core::Result<Vec<u8>> {
        let mut ranges = self.0.ranges();
        if let Some(bytes) = ranges.remove(&(offset, len)) {
            self.0.held.sub(bytes.len());
            return Ok(bytes);
        }
        let end = offset + len as u64;
        let within = ranges.iter().find(|((o, l), _)| *o <= offset && end <= o + *l as u64);
        within.map(|((o, _), bytes)| bytes[(offset - o) as usize..(end - o) as usize].to_vec()).ok_or_else(|| {
            CoreError::TensorFile {
                path: self.0.name.clone(),
                message: format!("{len} bytes at offset {offset} were read before they were fetched"),
            }
        })
    }
}

/// One remote file, read by range through the block cache.
pub struct RemoteFile {
    url: String,
    len: u64,
    block: u64,
    sha256: Option<String>,
    cache: Option<BlockCache>,
    fetched: Arc<Fetched>,
    downloaded: std::cell::Cell<u64>,
    /// The last block a read downloaded, by index: the next tensor usually begins in it.
    last_block: std::cell::RefCell<Option<(u64, Vec<u8>)>>,
}

impl RemoteFile {
    /// Opens `url` with what a probe learnt of it (probing now when not given), recording the probe for
    /// [`is_cached`]; caches it in blocks of `block` bytes.
    pub async fn open(url: &str, probed: Option<net::Probe>, block: u64, held: Arc<HostBytes>) -> Result<Self> {
        let probe = match probed {
            Some(p) => p,
            None => net::probe(url).await?.ok_or_else(|| network(url, "not found (HTTP 404)"))?,
        };
        cache::set_record("manifest", url, &format!("{}\n{}", probe.len, probe.etag.as_deref().unwrap_or_default()))
            .await;
        let cache = BlockCache::open(url, probe.etag.as_deref(), block).await;
        let fetched = Fetched { name: url.to_string(), len: probe.len, ranges: Mutex::default(), held };
        Ok(RemoteFile {
            url: url.to_string(),
            len: probe.len,
            block,
            sha256: published_sha256(probe.etag.as_deref()),
            cache,
            fetched: Arc::new(fetched),
            downloaded: Default::default(),
            last_block: Default::default(),
        })
    }

    /// The synchronous view the safetensors reader parses.
    fn source(&self) -> Box<dyn RangeSource> {
        Box::new(FetchedSource(self.fetched.clone()))
    }

    /// Bytes `offset..offset + len`, from cached blocks where present and one Range request per run of missing
    /// blocks (each then cached, and the run's last block remembered).
    async fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        let end = offset + len as u64;
        if end > self.len {
            return Err(ternlight_core::ranged::past_end(&self.url, offset, len, self.len).into());
        }
        let block_len = self.block;
        let (first, last) = (offset / block_len, end.saturating_sub(1) / block_len);
        let mut bytes = Vec::with_capacity(((last - first + 1) * block_len) as usize);
        let mut block = first;
        while block <= last {
            if let Some(cached) = self.cached(block).await {
                bytes.extend_from_slice(&cached);
                block += 1;
                continue;
            }
            let mut run_end = block + 1;
            while run_end <= last && self.cached(run_end).await.is_none() {
                run_end += 1;
            }
            let (from, to) = (block * block_len, (run_end * block_len).min(self.len));
            let run = net::fetch_range(&self.url, from, to).await?;
            self.downloaded.set(self.downloaded.get() + run.len() as u64);
            if let Some(cache) = &self.cache {
                for (i, chunk) in run.chunks(block_len as usize).enumerate() {
                    cache.put(&(block + i as u64).to_string(), chunk).await;
                }
            }
            bytes.extend_from_slice(&run);
            let last = ((run_end - 1 - block) * block_len) as usize;
            self.remember(run_end - 1, run[last..].to_vec());
            block = run_end;
        }
        let skip = (offset - first * block_len) as usize;
        bytes.truncate(skip + len);
        bytes.drain(..skip);
        Ok(bytes)
    }

    /// Keeps `bytes`, block `index`, in place of the block remembered before.
    fn remember(&self, index: u64, bytes: Vec<u8>) {
        let held = &self.fetched.held;
        held.add(bytes.len());
        if let Some((_, old)) = self.last_block.replace(Some((index, bytes))) {
            held.sub(old.len());
        }
    }

    async fn cached(&self, block: u64) -> Option<Vec<u8>> {
        if let Some((index, bytes)) = &*self.last_block.borrow() {
            if *index == block {
                return Some(bytes.clone());
            }
        }
        let want = (self.len - block * self.block).min(self.block) as usize;
        self.cache.as_ref()?.get(&block.to_string()).await.filter(|b| b.len() == want)
    }

    /// Fetches `offset..offset + len` for the safetensors reader.
    async fn fetch(&self, offset: u64, len: usize) -> Result<()> {
        if !self.fetched.ranges().contains_key(&(offset, len)) {
            let bytes = self.read(offset, len).await?;
            self.fetched.insert(offset, bytes);
        }
        Ok(())
    }

    /// Checks the whole file against the SHA-256 its server published, once (a pass recorded in the cache is
    /// trusted); a mismatch drops the cached blocks and fails.
    async fn verify(&self) -> Result<()> {
        let Some(want) = &self.sha256 else { return Ok(()) };
        let verified = "verified";
        if let Some(cache) = &self.cache {
            if cache.get(verified).await.is_some() {
                return Ok(());
            }
        }
        let mut hasher = Sha256::new();
        let blocks = self.len.div_ceil(self.block);
        for block in 0..blocks {
            let from = block * self.block;
            hasher.update(self.read(from, (self.len - from).min(self.block) as usize).await?);
        }
        let checked = check_digest(&self.url, &hasher.finalize(), Some(want));
        if let Some(cache) = &self.cache {
            match checked {
                Ok(()) => cache.put(verified, b"").await,
                Err(_) => cache.delete((0..blocks).map(|b| b.to_string())).await,
            }
        }
        checked.map_err(Into::into)
    }
}

/// What the last successful probe of `url` recorded in the cache.
async fn recorded_probe(url: &str) -> Option<net::Probe> {
    let manifest = cache::record("manifest", url).await?;
    let (len, etag) = manifest.split_once('\n')?;
    Some(net::Probe { len: len.parse().ok()?, etag: Some(etag.to_string()).filter(|e| !e.is_empty()) })
}

/// Whether the file at `url` sits in the cache in default-size blocks from an earlier load (its probe recorded,
/// its first and last blocks present).
pub async fn is_cached(url: &str) -> bool {
    let Some(probe) = recorded_probe(url).await else { return false };
    let Some(cache) = BlockCache::open(url, probe.etag.as_deref(), DEFAULT_BLOCK).await else { return false };
    let last = probe.len.div_ceil(DEFAULT_BLOCK).saturating_sub(1);
    cache.get("0").await.is_some() && cache.get(&last.to_string()).await.is_some()
}

/// A checkpoint's files behind URLs, opened header-first; a [`Streaming`] fetches their tensors one at a time.
pub struct RemoteFiles {
    files: Vec<RemoteFile>,
    held: Arc<HostBytes>,
}

/// A checkpoint container a streaming load can read: tensors by name, and where their bytes lie.
pub trait Checkpoint: TensorSource + TensorLocations {}

impl<T: TensorSource + TensorLocations> Checkpoint for T {}

impl RemoteFiles {
    /// Opens safetensors files at `urls` (shards in index order, each with its probe when one was made), cached
    /// in blocks of `block` bytes, and parses their headers.
    pub async fn safetensors(
        urls: Vec<(String, Option<net::Probe>)>,
        block: u64,
    ) -> Result<(Self, SafetensorsCheckpoint)> {
        let held = Arc::<HostBytes>::default();
        let mut files = Vec::with_capacity(urls.len());
        for (url, probe) in urls {
            let file = RemoteFile::open(&url, probe, block, held.clone()).await?;
            file.fetch(0, 8.min(file.len as usize)).await?;
            if file.len >= 8 {
                let head = file.fetched.ranges()[&(0, 8)].clone();
                let header_len = u64::from_le_bytes(head.try_into().expect("8 bytes"));
                if header_len <= file.len - 8 {
                    file.fetch(8, header_len as usize).await?;
                }
            }
            files.push(file);
        }
        let checkpoint = SafetensorsCheckpoint::from_sources(files.iter().map(RemoteFile::source).collect())?;
        Ok((RemoteFiles::parsed(files, held), checkpoint))
    }

    /// Opens the GGUF file at `url` (cached in blocks of `block` bytes) and parses its header, fetching a prefix
    /// that grows until the header fits, as [`Gguf::read`] reads it.
    pub async fn gguf(url: &str, block: u64) -> Result<(Self, GgufCheckpoint)> {
        let held = Arc::<HostBytes>::default();
        let file = RemoteFile::open(url, None, block, held.clone()).await?;
        let mut want = file.len.min(1 << 20);
        loop {
            file.fetch(0, want as usize).await?;
            let prefix = file.fetched.ranges()[&(0, want as usize)].clone();
            match Gguf::parse_prefix(&prefix, file.len) {
                Err(CoreError::InvalidInput(m)) if m == NEED_MORE && want < file.len => want = (want * 4).min(file.len),
                Err(e) => return Err(e.into()),
                Ok(_) => break,
            }
        }
        let checkpoint = GgufCheckpoint::from_source(file.source())?;
        Ok((RemoteFiles::parsed(vec![file], held), checkpoint))
    }

    /// `files`, whose headers are parsed: their bytes are dropped.
    fn parsed(files: Vec<RemoteFile>, held: Arc<HostBytes>) -> Self {
        for file in &files {
            file.fetched.clear();
        }
        RemoteFiles { files, held }
    }

    /// The most checkpoint bytes held in host memory at once so far (see [`HostBytes`]).
    pub fn peak_host_bytes(&self) -> u64 {
        self.held.peak()
    }

    /// Bytes that came over the network (not from the cache) so far.
    pub fn downloaded_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.downloaded.get()).sum()
    }

    /// Warnings about caching (storage full), one per file that had one.
    pub fn warnings(&self) -> Vec<String> {
        self.files.iter().filter_map(|f| f.cache.as_ref()?.warning()).collect()
    }

    /// The [`Prefetch`] that streams the tensors `locations` places in these files.
    pub fn prefetch<'a>(&'a self, locations: &'a dyn TensorLocations) -> Streaming<'a> {
        Streaming { files: &self.files, locations }
    }
}

/// Fetches each tensor of a remote checkpoint just before its upload (one read through the block cache), and
/// drops it after.
pub struct Streaming<'a> {
    files: &'a [RemoteFile],
    locations: &'a dyn TensorLocations,
}

impl Prefetch for Streaming<'_> {
    async fn fetch(&mut self, name: &str) -> Result<()> {
        match self.locations.location(name) {
            Some((file, offset, len)) => self.files[file].fetch(offset, len).await,
            None => Ok(()),
        }
    }

    fn release(&mut self, name: &str) {
        if let Some((file, offset, len)) = self.locations.location(name) {
            self.files[file].fetched.remove(offset, len);
        }
    }

    async fn finish(&mut self) -> Result<()> {
        for file in self.files {
            file.verify().await?;
        }
        Ok(())
    }
}

/// The URLs of a model's checkpoint files under `base`: `model.safetensors` (with the probe that found it), or
/// else the shards its `model.safetensors.index.json` names.
pub async fn checkpoint_urls(base: &str) -> Result<Vec<(String, Option<net::Probe>)>> {
    let single = format!("{base}/model.safetensors");
    if let Some(probe) = net::probe(&single).await? {
        return Ok(vec![(single, Some(probe))]);
    }
    let index_url = format!("{base}/model.safetensors.index.json");
    let Some(index) = net::fetch_whole(&index_url).await? else {
        return Err(network(&single, "not found (HTTP 404), and no model.safetensors.index.json beside it").into());
    };
    let shards = ternlight_core::tensors::shard_names(&index, &index_url)?;
    Ok(shards.into_iter().map(|name| (format!("{base}/{name}"), None)).collect())
}

/// A small file the model needs (config, tokenizer) under `base`, or a clear error naming it.
pub async fn required(base: &str, name: &str) -> Result<Vec<u8>> {
    let url = format!("{base}/{name}");
    net::fetch_whole(&url).await?.ok_or_else(|| network(&url, "not found (HTTP 404)").into())
}
