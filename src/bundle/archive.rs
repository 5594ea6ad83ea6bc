//! Bundle archives as byte streams (`.tar.zst`, `.tar.gz`, `.tar`, detected by content), and
//! the errors of reading them. The entries are read by [`super::walk`].

use super::fields::esc;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

/// At most this many entries in one archive.
pub const MAX_ENTRIES: usize = 2_000_000;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("cannot open {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{archive}: unsafe entry {}: {reason}", esc(entry))]
    Unsafe {
        archive: PathBuf,
        entry: String,
        reason: String,
    },
    #[error("{archive}: corrupt or truncated archive{at}: {source}")]
    Corrupt {
        archive: PathBuf,
        at: String,
        #[source]
        source: io::Error,
    },
    #[error("{archive}: writing {path}: {source}")]
    Write {
        archive: PathBuf,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{archive}: archive is empty or has no top directory")]
    Empty { archive: PathBuf },
    #[error("{archive}: the archive decompresses to more than the {limit} bytes {why}; refusing to read further")]
    TooLarge {
        archive: PathBuf,
        limit: u64,
        why: &'static str,
    },
    #[error("{archive}: {}: {reason}", esc(entry))]
    Refused {
        archive: PathBuf,
        entry: String,
        reason: String,
    },
}

pub use super::pack::Compression;

/// Detects the compression from the first bytes.
pub fn sniff(path: &Path) -> Result<Compression, ArchiveError> {
    let mut f = std::fs::File::open(path).map_err(|source| ArchiveError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let mut magic = [0u8; 4];
    let n = read_full(&mut f, &mut magic).map_err(|source| ArchiveError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(match &magic[..n] {
        [0x28, 0xb5, 0x2f, 0xfd] => Compression::Zstd,
        [0x1f, 0x8b, ..] => Compression::Gzip,
        _ => Compression::None,
    })
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Opens an archive as a decompressed byte stream.
pub fn open_stream(path: &Path) -> Result<Box<dyn Read>, ArchiveError> {
    let kind = sniff(path)?;
    let f = std::fs::File::open(path).map_err(|source| ArchiveError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let f = BufReader::with_capacity(1 << 20, f);
    Ok(match kind {
        // Decompression runs on its own thread, so it overlaps with hashing.
        Compression::Zstd => Box::new(Prefetch::spawn(zstd::stream::read::Decoder::with_buffer(f).map_err(
            |source| ArchiveError::Corrupt {
                archive: path.to_path_buf(),
                at: String::new(),
                source,
            },
        )?)),
        // Every gzip member, as `gzip -d` and `tar -xz` read them: a second member appended
        // to a bundle must not be invisible to verify.
        Compression::Gzip => Box::new(Prefetch::spawn(flate2::bufread::MultiGzDecoder::new(f))),
        Compression::None => Box::new(f),
    })
}

/// A reader whose source is read ahead on a helper thread, in 1 MiB chunks, at most four
/// in flight (bounded memory). Errors arrive in order, after the data before them.
struct Prefetch {
    rx: std::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
    cur: Vec<u8>,
    pos: usize,
    done: bool,
}

impl Prefetch {
    fn spawn<R: Read + Send + 'static>(mut inner: R) -> Prefetch {
        let (tx, rx) = std::sync::mpsc::sync_channel(4);
        std::thread::spawn(move || loop {
            let mut buf = vec![0u8; 1 << 20];
            let mut n = 0;
            // Fill the chunk (decoders return short reads).
            let res = loop {
                match inner.read(&mut buf[n..]) {
                    Ok(0) => break Ok(()),
                    Ok(k) => {
                        n += k;
                        if n == buf.len() {
                            break Ok(());
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => break Err(e),
                }
            };
            buf.truncate(n);
            let end = n == 0 || res.is_err();
            if n > 0 && tx.send(Ok(buf)).is_err() {
                return;
            }
            if let Err(e) = res {
                let _ = tx.send(Err(e));
                return;
            }
            if end {
                return;
            }
        });
        Prefetch {
            rx,
            cur: Vec::new(),
            pos: 0,
            done: false,
        }
    }
}

impl Read for Prefetch {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            if self.done {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Ok(chunk)) => {
                    self.cur = chunk;
                    self.pos = 0;
                }
                Ok(Err(e)) => {
                    self.done = true;
                    return Err(e);
                }
                Err(_) => {
                    self.done = true;
                    return Ok(0);
                }
            }
        }
        let n = out.len().min(self.cur.len() - self.pos);
        out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
