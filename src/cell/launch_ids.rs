//! `cncpick with-participant-id`: a node process started by `ros2 launch`
//! takes a Fast DDS participant number of its own when it is a restart, as
//! the process table gives one (cell/participant_ids.rs), and then becomes
//! the node (exec, so the pid launch watches and signals is the node's).
//!
//! launch's `respawn` runs the same command again with the same
//! environment, so the choice is made here, at every start, from a file
//! that every node process of this user, host and domain shares
//! ([`SharedIds`] as JSON, written under a lock): which numbers are held,
//! and by which node's process. The numbered profile is written beside it.

use super::host::DDS_PROFILE_ENV;
use super::participant_ids::{take_shared, write_numbered_profile, SharedIds};
use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// How long a start waits for another process's turn at the file before it
/// goes on without a number: a node is never held back for this.
const LOCK_TIMEOUT: Duration = Duration::from_secs(2);

/// The shared file's folder when none is given: per user and domain (the
/// numbers and their ports are per host and domain).
pub fn default_state_dir() -> PathBuf {
    let domain = std::env::var("ROS_DOMAIN_ID").unwrap_or_else(|_| "0".into());
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    std::env::temp_dir().join(format!("cncpick-participants-{uid}-domain-{domain}"))
}

fn alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks that the process exists.
    let found = unsafe { libc::kill(pid, 0) } == 0;
    found || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Takes `node`'s number for this process (None: a first start, every
/// number held, or the file's lock not had in time), writing the shared
/// file back. Errors name the file.
pub fn take_for_this_process(dir: &Path, node: &str) -> anyhow::Result<Option<u8>> {
    std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
    let lock_path = dir.join("lock");
    let lock =
        File::create(&lock_path).map_err(|e| anyhow::anyhow!("{}: {e}", lock_path.display()))?;
    let deadline = Instant::now() + LOCK_TIMEOUT;
    while lock.try_lock().is_err() {
        if Instant::now() >= deadline {
            tracing::warn!(
                node,
                "{}: not had within {LOCK_TIMEOUT:?}; starting without a participant number of its own",
                lock_path.display()
            );
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let path = dir.join("participants.json");
    let mut state = match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            tracing::warn!(node, "{}: {e}; starting the file afresh", path.display());
            SharedIds::default()
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => SharedIds::default(),
        Err(e) => anyhow::bail!("{}: {e}", path.display()),
    };
    let id = take_shared(
        &mut state,
        node,
        std::process::id(),
        SystemTime::now(),
        alive,
    );
    let text = serde_json::to_vec_pretty(&state)?;
    let fresh = dir.join(format!("participants.json.{}", std::process::id()));
    std::fs::write(&fresh, text).map_err(|e| anyhow::anyhow!("{}: {e}", fresh.display()))?;
    std::fs::rename(&fresh, &path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(id)
}

/// The profile this process should start with: a copy of the one the
/// environment names, with `id`, written into `dir`; None (keep the
/// environment's) when there is none to copy or it already sets a number.
fn numbered_profile(dir: &Path, node: &str, id: u8) -> anyhow::Result<Option<PathBuf>> {
    let Some(base) = std::env::var_os(DDS_PROFILE_ENV).filter(|v| !v.is_empty()) else {
        tracing::warn!(
            node,
            "{DDS_PROFILE_ENV} is not set: no profile to give participant {id}"
        );
        return Ok(None);
    };
    let base = PathBuf::from(base);
    let path = dir.join(format!("{node}-participant-{id}.xml"));
    let written = write_numbered_profile(&base, id, &path)
        .map_err(|e| anyhow::anyhow!("{DDS_PROFILE_ENV}: {e:#}"))?;
    if !written {
        return Ok(None);
    }
    Ok(Some(path))
}

/// Becomes `command` (exec), with a participant number of its own when
/// this is `node`'s restart. Returns only when the command cannot be run.
/// A number that cannot be had (the shared file unreadable, say) is
/// logged and the node starts without one.
pub fn exec_with_participant_id(dir: &Path, node: &str, command: &[OsString]) -> anyhow::Error {
    use std::os::unix::process::CommandExt;
    let Some((program, args)) = command.split_first() else {
        return anyhow::anyhow!("with-participant-id: no command to run after --");
    };
    let mut cmd = std::process::Command::new(program);
    cmd.args(args);
    let numbered = take_for_this_process(dir, node)
        .and_then(|id| match id {
            Some(id) => Ok(numbered_profile(dir, node, id)?.map(|p| (id, p))),
            None => Ok(None),
        })
        .unwrap_or_else(|e| {
            tracing::warn!(
                node,
                "{e:#}; starting without a participant number of its own"
            );
            None
        });
    if let Some((id, profile)) = numbered {
        tracing::info!(
            node,
            participant_id = id,
            "restarting it as Fast DDS participant {id}"
        );
        cmd.env(DDS_PROFILE_ENV, profile);
    }
    let e = cmd.exec();
    anyhow::anyhow!("{}: {e}", Path::new(program).display())
}
