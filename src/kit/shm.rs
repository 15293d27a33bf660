//! Fast DDS shared-memory files left behind by dead processes.
//!
//! A process that exits cleanly removes its shared-memory segment and the
//! ports it listens on. One that is killed (a crash, SIGKILL, the OOM
//! killer) cannot: its files stay in `/dev/shm`, which is memory. With
//! `params/fastdds.xml` a segment is 64 MB, so a cell whose manager
//! restarts a crashed camera every day would fill the computer's memory in
//! weeks.
//!
//! Fast DDS marks what is alive with locks: each segment `fastrtps_<16
//! hex>` has a lock file `<segment>_el` that its owner holds (flock,
//! exclusive) while it lives, and each port `fastrtps_port<N>` a lock file
//! `<port>_el` or `<port>_sl` that its listener holds, beside its mutex
//! `sem.<port>_mutex`. The kernel drops a dead process's locks, so a lock
//! file nobody holds marks files to remove. This is what Fast DDS's own
//! `fastdds shm clean` does; [`sweep`] adds one guard: a lock file younger
//! than `settle` is left alone, as its owner may be between creating it
//! and locking it.

use std::collections::HashSet;
use std::fs::OpenOptions;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

/// Where Fast DDS keeps its shared memory on Linux.
pub const SHM_DIR: &str = "/dev/shm";

/// How young a lock file is left alone: far longer than a process takes
/// between creating its lock file and locking it.
pub const SETTLE: Duration = Duration::from_secs(5);

/// What one sweep removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Swept {
    /// The files removed, by name.
    pub removed: Vec<String>,
    /// Segments and ports found alive (locked) or too young to judge.
    pub kept: usize,
    /// The memory the removed files held (tmpfs blocks), bytes.
    pub bytes: u64,
}

/// What every sweep of this process removed: files, bytes.
static TOTAL: (AtomicU64, AtomicU64) = (AtomicU64::new(0), AtomicU64::new(0));

/// What every [`sweep`] of this process removed so far: (files, bytes).
pub fn swept_total() -> (u64, u64) {
    (
        TOTAL.0.load(Ordering::Relaxed),
        TOTAL.1.load(Ordering::Relaxed),
    )
}

/// What a lock file guards: the names to remove with it, when nobody holds it.
fn guarded(lock: &str) -> Option<Vec<String>> {
    let base = lock
        .strip_suffix("_el")
        .or_else(|| lock.strip_suffix("_sl"))?;
    if is_port(base) {
        return Some(vec![base.to_string(), format!("sem.{base}_mutex")]);
    }
    let segment = base
        .strip_prefix("fastrtps_")
        .or_else(|| base.strip_prefix("fastdds_"))?;
    (segment.len() == 16
        && segment
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
        && lock.ends_with("_el"))
    .then(|| vec![base.to_string()])
}

/// Whether some process holds a lock on `path` (or it cannot be opened to
/// find out, which counts as held: only what is known dead is removed).
/// std's `try_lock` is flock(2) on Unix, as Fast DDS's lock; ours goes
/// with the descriptor when `f` drops.
fn held(path: &Path) -> bool {
    match OpenOptions::new().append(true).open(path) {
        Ok(f) => f.try_lock().is_err(),
        Err(_) => true,
    }
}

/// Removes, from `dir`, the Fast DDS segments and ports whose owner is
/// dead: lock files nobody holds, last modified more than `settle` before
/// now, with the files they guard; and ports left with no lock file that
/// no live process uses ([`orphan_ports`]). A file that cannot be removed
/// (another user's) is left; an unreadable `dir` sweeps nothing.
pub fn sweep(dir: &Path, settle: Duration) -> Swept {
    sweep_with(dir, settle, Orphans::Settled)
}

/// [`sweep`] for a supervisor whose cell has stopped: also the ports left
/// with no lock file that only this process still uses, however young.
/// Such a port's listener is gone (it held the lock file), so nobody will
/// read it again; this process talked to it until the end (so it is
/// young, and mapped here), and keeps its mapping of the removed file
/// until it exits. Without this the ports of every node the supervisor
/// wrote to outlive the run when a killed process had them open too.
pub fn sweep_at_end(dir: &Path, settle: Duration) -> Swept {
    sweep_with(dir, settle, Orphans::Ending)
}

/// Which ports with no lock file a sweep removes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Orphans {
    /// Those older than the settling time that no live process uses.
    Settled,
    /// Those no other live process uses, of any age.
    Ending,
}

fn sweep_with(dir: &Path, settle: Duration, orphans: Orphans) -> Swept {
    let mut out = Swept::default();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    let now = SystemTime::now();
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    names.sort();
    for lock in &names {
        let Some(with) = guarded(lock) else {
            continue;
        };
        let path = dir.join(lock);
        let young = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .map_or(true, |t| now.duration_since(t).unwrap_or_default() < settle);
        if young || held(&path) {
            out.kept += 1;
            continue;
        }
        for name in with.iter().chain(std::iter::once(lock)) {
            let path = dir.join(name);
            let bytes = std::fs::metadata(&path).map_or(0, |m| m.blocks() * 512);
            if std::fs::remove_file(&path).is_ok() {
                out.removed.push(name.clone());
                out.bytes += bytes;
            }
        }
    }
    orphan_ports(dir, settle, now, orphans, &mut out);
    TOTAL
        .0
        .fetch_add(out.removed.len() as u64, Ordering::Relaxed);
    TOTAL.1.fetch_add(out.bytes, Ordering::Relaxed);
    out
}

/// Whether `name` is a port's (`fastrtps_port<N>`, `fastdds_port<N>`).
fn is_port(name: &str) -> bool {
    ["fastrtps_port", "fastdds_port"].iter().any(|p| {
        name.strip_prefix(p)
            .is_some_and(|n| !n.is_empty() && n.len() <= 5 && n.bytes().all(|b| b.is_ascii_digit()))
    })
}

/// Files that some live process has open or mapped (other than this one,
/// with `others_only`).
fn in_use(others_only: bool) -> HashSet<PathBuf> {
    let mut out = HashSet::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return out;
    };
    let me = std::process::id().to_string();
    for p in procs.filter_map(Result::ok) {
        let name = p.file_name();
        if others_only && (name == "self" || name == "thread-self" || name == me.as_str()) {
            continue;
        }
        let dir = p.path();
        if let Ok(fds) = std::fs::read_dir(dir.join("fd")) {
            out.extend(fds.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok()));
        }
        if let Ok(maps) = std::fs::read_to_string(dir.join("maps")) {
            out.extend(maps.lines().filter_map(|l| {
                let at = l.find('/')?;
                Some(PathBuf::from(l[at..].trim_end_matches(" (deleted)")))
            }));
        }
    }
    out
}

/// A port whose listener went away cleanly (taking its lock file) is
/// removed by the last process to close it; one that a killed writer
/// also had open is not, and stays with no lock file. Such a port, older
/// than `settle` and open or mapped by no live process, goes with its
/// mutex ([`Orphans::Ending`]: of any age, and by no other process).
fn orphan_ports(dir: &Path, settle: Duration, now: SystemTime, orphans: Orphans, out: &mut Swept) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let names: HashSet<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    let mut ports: Vec<&String> = names
        .iter()
        .filter(|n| is_port(n))
        .filter(|n| !names.contains(&format!("{n}_el")) && !names.contains(&format!("{n}_sl")))
        .filter(|n| {
            orphans == Orphans::Ending
                || std::fs::metadata(dir.join(n))
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| now.duration_since(t).unwrap_or_default() >= settle)
        })
        .collect();
    if ports.is_empty() {
        return;
    }
    ports.sort();
    let used = in_use(orphans == Orphans::Ending);
    for port in ports {
        if used.contains(&dir.join(port)) {
            out.kept += 1;
            continue;
        }
        for name in [port.clone(), format!("sem.{port}_mutex")] {
            let path = dir.join(&name);
            let bytes = std::fs::metadata(&path).map_or(0, |m| m.blocks() * 512);
            if std::fs::remove_file(&path).is_ok() {
                out.removed.push(name);
                out.bytes += bytes;
            }
        }
    }
}

/// [`sweep`] of [`SHM_DIR`], logged: for a supervisor after a process of
/// its own exited, and for a cell as it starts.
pub fn sweep_dead(why: &str) -> Swept {
    logged(why, sweep(Path::new(SHM_DIR), SETTLE))
}

/// [`sweep_at_end`] of [`SHM_DIR`], logged: for a supervisor that has
/// stopped its cell's processes.
pub fn sweep_dead_at_end(why: &str) -> Swept {
    logged(why, sweep_at_end(Path::new(SHM_DIR), SETTLE))
}

/// The first four bytes of a Fast DDS port file are boost.interprocess's
/// segment state: its creator writes [`INITIALIZING`], builds the segment,
/// then writes 2 (initialized). Anyone who opens the port meanwhile waits,
/// spinning, for 2; a creator killed in between leaves it at 1 for good,
/// and every process that then opens that port (to send to it, or to
/// listen on it) spins forever, holding Fast DDS's locks: measured here, a
/// camera killed while it made a dead detector's port again hung the
/// supervisor's event thread and its discovery, and the whole cell lost its
/// manager (RELIABILITY §1). [`CORRUPTED`] (3) makes boost throw instead,
/// and Fast DDS then goes on without that port (checked: a participant
/// spinning on such a port came up at once when its state was set to 3).
const INITIALIZING: u32 = 1;
const CORRUPTED: u32 = 3;

/// How long a port may stay half made before its creator is taken for
/// dead: making one takes microseconds.
pub const HALF_MADE: Duration = Duration::from_secs(1);

/// Marks as corrupted every port in `dir` still being made (state 1) and
/// last modified more than `older_than` ago, so that no process waits on it
/// any longer; returns their names. Unreadable files are left.
pub fn unstick_ports(dir: &Path, older_than: Duration) -> Vec<String> {
    use std::os::unix::fs::FileExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let now = SystemTime::now();
    let mut out = Vec::new();
    for name in entries.filter_map(|e| e.ok()?.file_name().into_string().ok()) {
        if !is_port(&name) {
            continue;
        }
        let path = dir.join(&name);
        let old = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .is_ok_and(|t| now.duration_since(t).unwrap_or_default() >= older_than);
        if !old {
            continue;
        }
        let Ok(f) = OpenOptions::new().read(true).write(true).open(&path) else {
            continue;
        };
        let mut state = [0u8; 4];
        if f.read_exact_at(&mut state, 0).is_ok()
            && u32::from_le_bytes(state) == INITIALIZING
            && f.write_all_at(&CORRUPTED.to_le_bytes(), 0).is_ok()
        {
            out.push(name);
        }
    }
    out.sort();
    out
}

/// [`unstick_ports`] of [`SHM_DIR`]: for the manager, every second,
/// whoever restarts the processes; it raises an alert naming what was
/// marked.
pub fn unstick_dead_ports() -> Vec<String> {
    unstick_ports(Path::new(SHM_DIR), HALF_MADE)
}

fn logged(why: &str, s: Swept) -> Swept {
    if !s.removed.is_empty() {
        tracing::warn!(
            files = s.removed.len(),
            mb = s.bytes as f64 / 1e6,
            "{why}: removed a dead process's Fast DDS shared memory from {SHM_DIR}: {}",
            s.removed.join(" ")
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;

    /// A fresh directory of the test's own.
    fn scratch(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("cncpick-shm-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn touch(dir: &Path, name: &str) {
        File::create(dir.join(name)).unwrap();
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    fn lock(dir: &Path, name: &str) -> File {
        let f = File::open(dir.join(name)).unwrap();
        f.lock().unwrap();
        f
    }

    /// A port file of `len` bytes whose state (first 4 bytes) is `state`,
    /// last modified `age` ago.
    fn port_file(dir: &Path, name: &str, state: u32, age: Duration) {
        let mut bytes = vec![0u8; 64];
        bytes[..4].copy_from_slice(&state.to_le_bytes());
        std::fs::write(dir.join(name), bytes).unwrap();
        let f = File::options().write(true).open(dir.join(name)).unwrap();
        f.set_modified(SystemTime::now() - age).unwrap();
    }

    fn state_of(dir: &Path, name: &str) -> u32 {
        let b = std::fs::read(dir.join(name)).unwrap();
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }

    #[test]
    fn a_port_left_half_made_is_marked_corrupted_and_nothing_else_is_touched() {
        let d = scratch("halfmade");
        let dir = d.as_path();
        let old = Duration::from_secs(5);
        port_file(dir, "fastrtps_port26671", INITIALIZING, old);
        // Being made right now by a live process: left to finish.
        port_file(dir, "fastrtps_port26673", INITIALIZING, Duration::ZERO);
        // Made: left alone.
        port_file(dir, "fastrtps_port26675", 2, old);
        // Not a port (a segment): left alone whatever it holds.
        port_file(dir, "fastrtps_0123456789abcdef", INITIALIZING, old);
        assert_eq!(
            unstick_ports(dir, HALF_MADE),
            vec!["fastrtps_port26671".to_string()]
        );
        assert_eq!(state_of(dir, "fastrtps_port26671"), CORRUPTED);
        assert_eq!(state_of(dir, "fastrtps_port26673"), INITIALIZING);
        assert_eq!(state_of(dir, "fastrtps_port26675"), 2);
        assert_eq!(state_of(dir, "fastrtps_0123456789abcdef"), INITIALIZING);
        // Once marked it is not reported again.
        assert!(unstick_ports(dir, HALF_MADE).is_empty());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn what_a_dead_process_left_goes_and_what_a_live_one_holds_stays() {
        let d = scratch("dead");
        let dir = d.as_path();
        // Dead: a segment and a port nobody holds.
        for n in [
            "fastrtps_0123456789abcdef",
            "fastrtps_0123456789abcdef_el",
            "fastrtps_port7411",
            "fastrtps_port7411_el",
            "sem.fastrtps_port7411_mutex",
        ] {
            touch(dir, n);
        }
        // Alive: a segment and a (multicast) port whose locks are held.
        for n in [
            "fastrtps_fedcba9876543210",
            "fastrtps_fedcba9876543210_el",
            "fastrtps_port7400",
            "fastrtps_port7400_sl",
            "sem.fastrtps_port7400_mutex",
        ] {
            touch(dir, n);
        }
        // Not Fast DDS's, or not a lock file: never touched.
        for n in [
            "lttng-ust-wait-6",
            "fastrtps_port7400x_el",
            "fastrtps_short_el",
        ] {
            touch(dir, n);
        }
        std::fs::write(dir.join("fastrtps_0123456789abcdef"), [7u8; 8192]).unwrap();
        let _a = lock(dir, "fastrtps_fedcba9876543210_el");
        let _b = lock(dir, "fastrtps_port7400_sl");
        let s = sweep(dir, Duration::ZERO);
        let mut removed = s.removed.clone();
        removed.sort();
        assert_eq!(
            removed,
            [
                "fastrtps_0123456789abcdef",
                "fastrtps_0123456789abcdef_el",
                "fastrtps_port7411",
                "fastrtps_port7411_el",
                "sem.fastrtps_port7411_mutex",
            ]
        );
        assert_eq!(s.kept, 2);
        assert!(s.bytes >= 8192, "{} bytes counted", s.bytes);
        assert_eq!(
            names(dir),
            [
                "fastrtps_fedcba9876543210",
                "fastrtps_fedcba9876543210_el",
                "fastrtps_port7400",
                "fastrtps_port7400_sl",
                "fastrtps_port7400x_el",
                "fastrtps_short_el",
                "lttng-ust-wait-6",
                "sem.fastrtps_port7400_mutex",
            ]
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_port_left_with_no_lock_file_goes_unless_a_live_process_has_it_open() {
        let d = scratch("orphan");
        for n in [
            "fastrtps_port7001",
            "sem.fastrtps_port7001_mutex",
            "fastrtps_port7002",
            "sem.fastrtps_port7002_mutex",
        ] {
            touch(&d, n);
        }
        // A live writer still has port 7002 open.
        let _open = File::open(d.join("fastrtps_port7002")).unwrap();
        let s = sweep(&d, Duration::ZERO);
        let mut removed = s.removed.clone();
        removed.sort();
        assert_eq!(
            removed,
            ["fastrtps_port7001", "sem.fastrtps_port7001_mutex"]
        );
        assert_eq!(s.kept, 1);
        assert_eq!(
            names(&d),
            ["fastrtps_port7002", "sem.fastrtps_port7002_mutex"]
        );
        // Too young to judge: left too.
        touch(&d, "fastrtps_port7003");
        assert!(sweep(&d, Duration::from_secs(3600)).removed.is_empty());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn at_the_end_a_port_with_no_lock_file_goes_however_young_unless_another_process_has_it() {
        let d = scratch("ending");
        for n in [
            "fastrtps_port7001",
            "sem.fastrtps_port7001_mutex",
            "fastrtps_port7002",
            "sem.fastrtps_port7002_mutex",
            "fastrtps_port7003",
            "fastrtps_port7003_el",
        ] {
            touch(&d, n);
        }
        // This process wrote to 7001 until now; another live process (a
        // child holding it on its stdin) has 7002 open; 7003's listener
        // holds its lock.
        let _mine = File::open(d.join("fastrtps_port7001")).unwrap();
        let mut other = std::process::Command::new("sleep")
            .arg("30")
            .stdin(File::open(d.join("fastrtps_port7002")).unwrap())
            .spawn()
            .unwrap();
        let _held = lock(&d, "fastrtps_port7003_el");
        let settle = Duration::from_secs(3600);
        // Young, and used here: an ordinary sweep leaves them all.
        assert!(sweep(&d, settle).removed.is_empty());
        let s = sweep_at_end(&d, settle);
        let _ = other.kill();
        let _ = other.wait();
        let mut removed = s.removed.clone();
        removed.sort();
        assert_eq!(
            removed,
            ["fastrtps_port7001", "sem.fastrtps_port7001_mutex"]
        );
        assert_eq!(
            names(&d),
            [
                "fastrtps_port7002",
                "fastrtps_port7003",
                "fastrtps_port7003_el",
                "sem.fastrtps_port7002_mutex",
            ]
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_lock_file_younger_than_the_settling_time_is_left_for_its_owner_to_lock() {
        let d = scratch("young");
        touch(&d, "fastrtps_0123456789abcdef");
        touch(&d, "fastrtps_0123456789abcdef_el");
        let s = sweep(&d, Duration::from_secs(3600));
        assert!(s.removed.is_empty());
        assert_eq!(s.kept, 1);
        assert_eq!(names(&d).len(), 2);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_missing_directory_sweeps_nothing() {
        let s = sweep(Path::new("/nonexistent/cncpick-shm"), Duration::ZERO);
        assert_eq!(s, Swept::default());
    }
}
