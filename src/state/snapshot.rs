//! Snapshots: online copies of the state database, taken while the store
//! goes on writing. A snapshot is SQLite's backup of one read transaction
//! (WAL lets writers continue meanwhile), so it is consistent as of one
//! commit. It is written beside its final name, synced, then renamed, so a
//! crash never leaves half a snapshot under a snapshot's name; the newest
//! `keep` are kept.

use super::store::{Store, StoreError};
use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};
use std::path::{Path, PathBuf};

const PREFIX: &str = "state-seq";
const SUFFIX: &str = ".sqlite";

/// A snapshot taken.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub path: PathBuf,
    /// The last event it holds.
    pub last_seq: u64,
    pub bytes: u64,
}

fn io_error(path: &Path, context: &'static str) -> impl Fn(std::io::Error) -> StoreError {
    let path = path.to_path_buf();
    move |e| StoreError::Io {
        path: path.clone(),
        context,
        source: e,
    }
}

fn sql_error(path: &Path, context: &'static str) -> impl Fn(rusqlite::Error) -> StoreError {
    let path = path.to_path_buf();
    move |source| StoreError::Sqlite {
        path: path.clone(),
        context,
        source,
    }
}

/// The snapshots in `dir`, oldest first.
pub fn list(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(PREFIX) && n.ends_with(SUFFIX))
        })
        .collect();
    out.sort();
    out
}

/// Copies the database at `db` into `dir` (created if missing) as
/// `state-seq<last seq>.sqlite`, unless a snapshot of that seq is there
/// already (nothing changed: `Ok(None)`), then deletes all but the newest
/// `keep` snapshots.
pub fn take(db: &Path, dir: &Path, keep: usize) -> Result<Option<Snapshot>, StoreError> {
    std::fs::create_dir_all(dir).map_err(io_error(dir, "creating the snapshot folder"))?;
    let src = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sql_error(db, "opening the database for a snapshot"))?;
    src.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(sql_error(db, "setting the busy timeout"))?;
    let tmp = dir.join(format!(".{PREFIX}-partial{SUFFIX}"));
    let _ = std::fs::remove_file(&tmp);
    {
        let mut dst = Connection::open(&tmp).map_err(sql_error(&tmp, "creating a snapshot"))?;
        let backup = Backup::new(&src, &mut dst).map_err(sql_error(db, "starting a snapshot"))?;
        // All pages in one step: one read transaction, so a writer on
        // another connection cannot make it start over.
        match backup
            .step(-1)
            .map_err(sql_error(db, "copying a snapshot"))?
        {
            StepResult::Done => {}
            other => {
                return Err(StoreError::Io {
                    path: db.to_path_buf(),
                    context: "copying a snapshot",
                    source: std::io::Error::other(format!(
                        "the backup did not finish in one step: {other:?}"
                    )),
                })
            }
        }
    }
    let last_seq = {
        let check = Store::open(&tmp)?;
        check.last_seq()?
    };
    let path = dir.join(format!("{PREFIX}{last_seq:012}{SUFFIX}"));
    if path.exists() {
        let _ = std::fs::remove_file(&tmp);
        return Ok(None);
    }
    let file = std::fs::File::open(&tmp).map_err(io_error(&tmp, "syncing a snapshot"))?;
    file.sync_all()
        .map_err(io_error(&tmp, "syncing a snapshot"))?;
    let bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
    std::fs::rename(&tmp, &path).map_err(io_error(&path, "naming a snapshot"))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    let all = list(dir);
    for old in &all[..all.len().saturating_sub(keep.max(1))] {
        let _ = std::fs::remove_file(old);
    }
    Ok(Some(Snapshot {
        path,
        last_seq,
        bytes,
    }))
}
