//! Random access to one file's bytes wherever they live: in memory, on local disk, or (in the runtime) over HTTP
//! with Range requests. Tensor containers read their header first and then each tensor when it is asked for, so a
//! model never has to sit in host memory whole.

use crate::{CoreError, Result};
use std::io::{Read, Seek, SeekFrom};
use std::sync::Mutex;

/// A file's bytes, read by range.
pub trait RangeSource: Send + Sync {
    /// Where the bytes come from (a path or URL), for messages.
    fn name(&self) -> &str;
    /// Total length in bytes.
    fn len(&self) -> u64;
    /// Exactly `len` bytes from `offset` (an error names the source when they cannot be had).
    fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>>;
    /// The bytes without copying, for sources already in memory.
    fn slice(&self, _offset: u64, _len: usize) -> Option<&[u8]> {
        None
    }
    /// Checks the whole file against the digest its origin published, once every byte has arrived (sources
    /// without one have nothing to check).
    fn verify(&self) -> Result<()> {
        Ok(())
    }
    /// Whether the file is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A file already in memory.
pub struct Memory {
    name: String,
    bytes: Vec<u8>,
}

impl Memory {
    /// `bytes`, known as `name`.
    pub fn new(name: impl Into<String>, bytes: Vec<u8>) -> Self {
        Memory { name: name.into(), bytes }
    }
}

impl RangeSource for Memory {
    fn name(&self) -> &str {
        &self.name
    }

    fn len(&self) -> u64 {
        self.bytes.len() as u64
    }

    fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        self.slice(offset, len).map(<[u8]>::to_vec).ok_or_else(|| past_end(&self.name, offset, len, self.len()))
    }

    fn slice(&self, offset: u64, len: usize) -> Option<&[u8]> {
        let start = usize::try_from(offset).ok()?;
        self.bytes.get(start..start.checked_add(len)?)
    }
}

/// A file on local disk, read where asked.
pub struct LocalFile {
    name: String,
    file: Mutex<std::fs::File>,
    len: u64,
}

impl LocalFile {
    /// Opens `path`.
    pub fn open(path: &std::path::Path) -> Result<Self> {
        let io = |source| CoreError::Io { path: path.display().to_string(), source };
        let file = std::fs::File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        Ok(LocalFile { name: path.display().to_string(), file: Mutex::new(file), len })
    }
}

impl RangeSource for LocalFile {
    fn name(&self) -> &str {
        &self.name
    }

    fn len(&self) -> u64 {
        self.len
    }

    fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        if offset.checked_add(len as u64).is_none_or(|end| end > self.len) {
            return Err(past_end(&self.name, offset, len, self.len));
        }
        let mut file = self.file.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out = vec![0u8; len];
        file.seek(SeekFrom::Start(offset))
            .and_then(|_| file.read_exact(&mut out))
            .map_err(|source| CoreError::Io { path: self.name.clone(), source })?;
        Ok(out)
    }
}

/// The error for a read past the end of a source.
pub fn past_end(name: &str, offset: u64, len: usize, total: u64) -> CoreError {
    CoreError::TensorFile {
        path: name.to_string(),
        message: format!("{len} bytes at offset {offset} lie past the end of the {total}-byte file"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_and_disk_read_the_same_ranges_and_refuse_past_the_end() {
        let bytes: Vec<u8> = (0..=255).collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.bin");
        std::fs::write(&path, &bytes).unwrap();
        let sources: [Box<dyn RangeSource>; 2] =
            [Box::new(Memory::new("m", bytes)), Box::new(LocalFile::open(&path).unwrap())];
        for s in &sources {
            assert_eq!(s.read(10, 3).unwrap(), vec![10, 11, 12]);
            assert_eq!(s.len(), 256);
            let e = s.read(250, 7).unwrap_err().to_string();
            assert!(e.contains("past the end") && e.contains(s.name()), "{e}");
        }
    }
}
