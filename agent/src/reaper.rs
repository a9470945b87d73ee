//! The agent's only `waitpid` caller.
//!
//! The agent is a child subreaper, so every container process — whose
//! `runc create`/`runc exec --detach` parent exits straight away — is
//! reparented to it. One thread reaps every child (`waitpid(-1)`) and
//! records its exit status; callers block on [`Reaper::wait`] for the pid
//! they care about. Because that thread steals every status, nothing else
//! in the agent may wait for a child (`std::process::Child::wait` would
//! fail with ECHILD or, worse, race it).

use std::collections::{HashMap, HashSet};
use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long the reaper thread sleeps when the agent has no children at
/// all, before it looks again (a new child also wakes it: [`Reaper::kick`]).
const IDLE_POLL: Duration = Duration::from_millis(200);

/// Exit statuses of reaped children, and the waiters for them.
#[derive(Debug, Default)]
pub struct Reaper {
    table: Mutex<Table>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct Table {
    /// pid → exit status, for reaped children not yet forgotten.
    exited: HashMap<u32, u32>,
    /// pid → how many callers block in [`Reaper::wait`] for it.
    waiters: HashMap<u32, usize>,
    /// Pids forgotten while someone still waited: the last waiter drops
    /// the status, so that no waiter misses it.
    doomed: HashSet<u32>,
}

/// The exit status the API reports for a `waitpid` status word: the exit
/// code, or 128 + the signal that ended the process (as shells do).
/// `None` for a status that does not mean the process ended.
pub fn exit_status(status: libc::c_int) -> Option<u32> {
    if libc::WIFEXITED(status) {
        Some(libc::WEXITSTATUS(status) as u32)
    } else if libc::WIFSIGNALED(status) {
        Some(128 + libc::WTERMSIG(status) as u32)
    } else {
        None
    }
}

/// Makes this process the child subreaper of its descendants.
pub fn become_subreaper() -> io::Result<()> {
    // SAFETY: PR_SET_CHILD_SUBREAPER takes one integer argument and
    // touches no memory of ours.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Starts the reaper thread.
pub fn spawn_reaper() -> io::Result<Arc<Reaper>> {
    let reaper = Arc::new(Reaper::default());
    let r = reaper.clone();
    std::thread::Builder::new()
        .name("reaper".into())
        .spawn(move || r.run())?;
    Ok(reaper)
}

impl Reaper {
    fn run(&self) {
        loop {
            let mut status: libc::c_int = 0;
            // SAFETY: `status` is a valid c_int for waitpid to write.
            let pid = unsafe { libc::waitpid(-1, &mut status, 0) };
            if pid > 0 {
                if let Some(code) = exit_status(status) {
                    self.record(pid as u32, code);
                }
                continue;
            }
            match io::Error::last_os_error().raw_os_error() {
                Some(libc::EINTR) => {}
                Some(libc::ECHILD) => {
                    // No children yet: sleep until one is started (kick)
                    // or a while has passed (orphans reparented to us
                    // arrive without a kick).
                    let guard = self.lock();
                    let _ = self.changed.wait_timeout(guard, IDLE_POLL);
                }
                _ => {
                    log::error!(
                        "podvm-agent: reaper: waitpid: {}",
                        io::Error::last_os_error()
                    );
                    std::thread::sleep(IDLE_POLL);
                }
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().expect("reaper lock poisoned")
    }

    fn record(&self, pid: u32, code: u32) {
        self.lock().exited.insert(pid, code);
        self.changed.notify_all();
    }

    /// Wakes the reaper thread if it sleeps for want of children: call it
    /// after starting a child.
    pub fn kick(&self) {
        self.changed.notify_all();
    }

    /// Blocks until `pid` has been reaped and returns its exit status (see
    /// [`exit_status`]). The status stays recorded until [`Reaper::forget`].
    pub fn wait(&self, pid: u32) -> u32 {
        self.wait_until(pid, None)
            .expect("a wait with no deadline ends only with a status")
    }

    /// Like [`Reaper::wait`], giving up (`None`) after `within`.
    pub fn wait_timeout(&self, pid: u32, within: Duration) -> Option<u32> {
        self.wait_until(pid, Some(Instant::now() + within))
    }

    fn wait_until(&self, pid: u32, deadline: Option<Instant>) -> Option<u32> {
        let mut t = self.lock();
        *t.waiters.entry(pid).or_default() += 1;
        let code = loop {
            if let Some(&code) = t.exited.get(&pid) {
                break Some(code);
            }
            match deadline {
                None => t = self.changed.wait(t).expect("reaper lock poisoned"),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break None;
                    }
                    t = self
                        .changed
                        .wait_timeout(t, left)
                        .expect("reaper lock poisoned")
                        .0;
                }
            }
        };
        let n = t.waiters.get_mut(&pid).expect("this waiter is counted");
        *n -= 1;
        if *n == 0 {
            t.waiters.remove(&pid);
            if t.doomed.remove(&pid) {
                t.exited.remove(&pid);
            }
        }
        code
    }

    /// Like [`Reaper::wait`], then forgets the status: for short-lived
    /// helper commands whose pid nobody asks about again.
    pub fn wait_and_forget(&self, pid: u32) -> u32 {
        let code = self.wait(pid);
        self.forget(pid);
        code
    }

    /// The exit status of `pid` if it has been reaped.
    pub fn try_status(&self, pid: u32) -> Option<u32> {
        self.lock().exited.get(&pid).copied()
    }

    /// Drops the recorded status of `pid` (its pid may be reused); if
    /// callers still wait for it, once the last of them has it.
    pub fn forget(&self, pid: u32) {
        let mut t = self.lock();
        if t.waiters.contains_key(&pid) {
            t.doomed.insert(pid);
        } else {
            t.exited.remove(&pid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_exit_codes_or_128_plus_signal() {
        // Status words as the kernel builds them: code << 8, or the signal.
        assert_eq!(exit_status(7 << 8), Some(7));
        assert_eq!(exit_status(0), Some(0));
        assert_eq!(exit_status(libc::SIGKILL), Some(137));
        // A stopped process (0x7f in the low byte) has not ended.
        assert_eq!(exit_status((libc::SIGSTOP << 8) | 0x7f), None);
    }

    #[test]
    fn recorded_statuses_wake_waiters_until_forgotten() {
        let r = Arc::new(Reaper::default());
        let r2 = r.clone();
        let waiter = std::thread::spawn(move || r2.wait(42));
        r.record(42, 3);
        assert_eq!(waiter.join().unwrap(), 3);
        assert_eq!(r.try_status(42), Some(3));
        r.forget(42);
        assert_eq!(r.try_status(42), None);
        assert_eq!(r.wait_timeout(43, Duration::from_millis(10)), None);
    }

    #[test]
    fn a_status_forgotten_under_a_waiter_still_reaches_it() {
        let r = Arc::new(Reaper::default());
        let r2 = r.clone();
        let waiter = std::thread::spawn(move || r2.wait(7));
        // Wait (bounded) until the waiter is counted, then race it.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !r.lock().waiters.contains_key(&7) {
            assert!(Instant::now() < deadline, "the waiter never started");
            std::thread::yield_now();
        }
        // Record and forget before waking anyone: the waiter only wakes
        // after the status is forgotten.
        r.lock().exited.insert(7, 9);
        r.forget(7);
        r.changed.notify_all();
        assert_eq!(waiter.join().unwrap(), 9);
        assert_eq!(r.try_status(7), None, "the last waiter drops it");
    }
}
