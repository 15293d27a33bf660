//! Child processes that end with their supervisor.
//!
//! A supervisor that exits cleanly stops its node processes; one that is
//! killed outright (SIGKILL, the OOM killer, a crash) cannot, and its nodes
//! would run on with no manager: in a factory, a camera and a CNC driver
//! nobody watches, holding the serial ports a new supervisor needs.
//! Linux's `PR_SET_PDEATHSIG` has the kernel signal a child when its parent
//! dies, but "parent" is the *thread* that forked it: a node respawned from
//! one of the manager's tokio tasks would be signalled when that worker
//! thread ends. So every child is forked from one thread that lives as long
//! as the process ([`spawn_tied`]).
//!
//! The signal is SIGTERM, so that a node shuts down as it does when stopped
//! (it removes its Fast DDS shared memory); it survives the node's `exec`.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::mpsc::{channel, Sender};
use std::sync::OnceLock;
use std::time::Duration;

/// How long a caller waits for the spawning thread's answer: a fork and an
/// exec take milliseconds.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

type Job = (Command, Sender<io::Result<Child>>);

/// The spawning thread's queue (the thread and this sender live as long as
/// the process).
fn spawner() -> io::Result<&'static Sender<Job>> {
    static SPAWNER: OnceLock<Sender<Job>> = OnceLock::new();
    if let Some(s) = SPAWNER.get() {
        return Ok(s);
    }
    let (tx, rx) = channel::<Job>();
    let started = std::thread::Builder::new()
        .name("cncpick-spawner".into())
        .spawn(move || {
            for (mut command, answer) in rx {
                let _ = answer.send(command.spawn());
            }
        });
    match started {
        // Another thread may have won the race: its spawner is used, and
        // this one ends with its unused queue.
        Ok(_) => Ok(SPAWNER.get_or_init(|| tx)),
        Err(e) => Err(e),
    }
}

/// Starts `command` so that it receives SIGTERM when this process ends,
/// however it ends.
pub fn spawn_tied(mut command: Command) -> io::Result<Child> {
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs in the forked child before exec and calls
    // only async-signal-safe functions (prctl, getppid), allocating nothing.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong) == -1 {
                return Err(io::Error::last_os_error());
            }
            // The parent died before the request was made: the signal
            // will never come, so the child does not start.
            if libc::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    let (tx, rx) = channel();
    spawner()?
        .send((command, tx))
        .map_err(|_| io::Error::other("the spawning thread has ended"))?;
    rx.recv_timeout(ANSWER_TIMEOUT).map_err(|_| {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("the spawning thread did not answer within {ANSWER_TIMEOUT:?}"),
        )
    })?
}
