//! A write-ahead log: JSON lines appended and fsynced before a write is acknowledged, replayed on
//! open, compacted by rewriting the live records to a new file and renaming it into place.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use llmem_core::{Error, MemoryRecord, Result};
use serde::{Deserialize, Serialize};

/// One logged operation.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum WalOp {
    Put {
        records: Vec<MemoryRecord>,
    },
    Delete {
        ids: Vec<String>,
    },
    /// Everything before is void (a restore).
    Clear,
    /// Reads: the access time and count of records held (ids no longer held are skipped).
    Touch {
        touches: Vec<Touch>,
    },
}

/// The access fields of one record after some reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Touch {
    pub id: String,
    pub accessed_at: llmem_core::Timestamp,
    pub access_count: u64,
}

/// An append-only, fsynced JSONL log.
#[derive(Debug)]
pub struct Wal {
    path: PathBuf,
    file: File,
    /// Operations appended since the last compaction.
    pub appended: usize,
}

impl Wal {
    /// Opens (creating) the log at `path` and returns it with the operations it holds. A torn
    /// last line (a crash mid-write, never acknowledged) is ignored.
    pub fn open(path: &Path) -> Result<(Wal, Vec<WalOp>)> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        }
        let mut ops = Vec::new();
        if path.exists() {
            let bytes = std::fs::read(path)
                .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
            let mut good = 0usize;
            for line in bytes.split_inclusive(|b| *b == b'\n') {
                let complete = line.ends_with(b"\n");
                let body = line.strip_suffix(b"\n").unwrap_or(line);
                if body.iter().all(u8::is_ascii_whitespace) && complete {
                    good += line.len();
                    continue;
                }
                match serde_json::from_slice::<WalOp>(body) {
                    Ok(op) if complete => {
                        ops.push(op);
                        good += line.len();
                    }
                    _ => {
                        tracing::warn!(path = %path.display(), "dropping a torn write-ahead log tail (never acknowledged)");
                        break;
                    }
                }
            }
            if good < bytes.len() {
                let f = OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
                f.set_len(good as u64)
                    .map_err(|e| Error::io(format!("truncating {}", path.display()), e))?;
                f.sync_all()
                    .map_err(|e| Error::io(format!("fsync of {}", path.display()), e))?;
            }
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        let appended = ops.len();
        Ok((
            Wal {
                path: path.to_owned(),
                file,
                appended,
            },
            ops,
        ))
    }

    /// Appends and fsyncs; when this returns `Ok`, the operation survives a crash.
    pub fn append(&mut self, op: &WalOp) -> Result<()> {
        let mut line =
            serde_json::to_vec(op).map_err(|e| Error::serde("write-ahead log entry", e))?;
        line.push(b'\n');
        self.file
            .write_all(&line)
            .map_err(|e| Error::io(format!("appending to {}", self.path.display()), e))?;
        self.file
            .sync_data()
            .map_err(|e| Error::io(format!("fsync of {}", self.path.display()), e))?;
        self.appended += 1;
        Ok(())
    }

    /// Replaces the log with one `Put` of the live records, atomically (write, fsync, rename).
    pub fn compact<'a>(&mut self, live: impl Iterator<Item = &'a MemoryRecord>) -> Result<()> {
        let tmp = self.path.with_extension("compact");
        {
            let mut f = File::create(&tmp)
                .map_err(|e| Error::io(format!("creating {}", tmp.display()), e))?;
            let mut batch = Vec::with_capacity(1024);
            let flush = |batch: &mut Vec<MemoryRecord>, f: &mut File| -> Result<()> {
                if batch.is_empty() {
                    return Ok(());
                }
                let op = WalOp::Put {
                    records: std::mem::take(batch),
                };
                let mut line = serde_json::to_vec(&op)
                    .map_err(|e| Error::serde("write-ahead log entry", e))?;
                line.push(b'\n');
                f.write_all(&line)
                    .map_err(|e| Error::io(format!("writing {}", tmp.display()), e))
            };
            for r in live {
                batch.push(r.clone());
                if batch.len() == 1024 {
                    flush(&mut batch, &mut f)?;
                }
            }
            flush(&mut batch, &mut f)?;
            f.sync_all()
                .map_err(|e| Error::io(format!("fsync of {}", tmp.display()), e))?;
        }
        std::fs::rename(&tmp, &self.path)
            .map_err(|e| Error::io(format!("renaming {}", tmp.display()), e))?;
        if let Some(dir) = self.path.parent()
            && let Ok(d) = File::open(dir)
        {
            let _ = d.sync_all();
        }
        self.file = OpenOptions::new()
            .append(true)
            .open(&self.path)
            .map_err(|e| Error::io(format!("opening {}", self.path.display()), e))?;
        self.appended = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replays_what_was_appended_and_skips_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("warm.wal");
        let r = MemoryRecord::new("u", "hello");
        {
            let (mut wal, ops) = Wal::open(&path).unwrap();
            assert!(ops.is_empty());
            wal.append(&WalOp::Put {
                records: vec![r.clone()],
            })
            .unwrap();
            wal.append(&WalOp::Delete {
                ids: vec!["x".into()],
            })
            .unwrap();
        }
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"op\":\"put\",\"rec")
            .unwrap();
        let (mut wal, ops) = Wal::open(&path).unwrap();
        assert_eq!(ops.len(), 2);
        wal.append(&WalOp::Delete {
            ids: vec!["y".into()],
        })
        .unwrap();
        let (mut wal, ops) = Wal::open(&path).unwrap();
        assert_eq!(ops.len(), 3, "an append after a torn tail is readable");
        assert!(matches!(&ops[0], WalOp::Put { records } if records[0] == r));
        wal.compact([r.clone()].iter()).unwrap();
        let (_, ops) = Wal::open(&path).unwrap();
        assert_eq!(ops.len(), 1);
    }
}
