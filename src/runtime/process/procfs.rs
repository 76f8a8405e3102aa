//! What `/proc` says about a process: its start time (with the pid, its identity), its
//! state, its environment; and signals sent only after `/proc` confirms the pid is still
//! the process we started.
//!
//! Never signals a pid whose start time differs from the recorded one, nor pid 0, 1 or the
//! agent itself.

use std::io;
use std::time::{Duration, Instant};

/// How often `stop` looks whether a signalled process has gone.
const POLL_INTERVAL: Duration = Duration::from_millis(25);

/// Processes whose environment holds `key=value` (only those of our own user are readable).
pub(super) fn pids_with_env(key: &str, value: &str) -> Vec<u32> {
    let needle = format!("{key}={value}");
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()))
        })
        .collect()
}

/// The fields of `/proc/<pid>/stat` this module needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct ProcStat {
    /// Field 3: `R`, `S`, `D`, `Z` (zombie), `T` (stopped), ...
    state: char,
    /// Field 5: the process group.
    pgrp: i32,
    /// Field 22: clock ticks after boot at which the process started.
    pub(super) starttime: u64,
}

pub(super) fn proc_stat(pid: u32) -> io::Result<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_stat(&text).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected /proc/{pid}/stat"),
        )
    })
}

fn parse_stat(text: &str) -> Option<ProcStat> {
    // Field 2 is the command name in parentheses and may itself contain spaces and
    // parentheses, so the fixed fields start after the *last* `)`.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    // `fields[0]` is field 3.
    Some(ProcStat {
        state: fields.first()?.chars().next()?,
        pgrp: fields.get(2)?.parse().ok()?,
        starttime: fields.get(19)?.parse().ok()?,
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Liveness {
    /// Ours and running.
    Alive,
    /// Ours, but stopped by SIGSTOP or a debugger: present, not serving.
    Stopped,
    /// Exited (or a zombie waiting to be reaped), or the pid now belongs to someone else.
    Gone,
}

impl Liveness {
    pub(super) fn is_present(self) -> bool {
        self != Liveness::Gone
    }
}

pub(super) fn liveness(pid: u32, starttime: u64) -> Liveness {
    match proc_stat(pid) {
        Ok(stat) if stat.starttime == starttime => match stat.state {
            'Z' | 'X' | 'x' => Liveness::Gone,
            'T' | 't' => Liveness::Stopped,
            _ => Liveness::Alive,
        },
        _ => Liveness::Gone,
    }
}

/// Sends `signal` to the process group led by `pid`, but only if `pid` is still the process
/// we started (its start time matches). Returns `Ok(false)` when it is not there any more.
///
/// If the process left its group (`setsid`), only the process itself is signalled: the
/// group id would then name a group that may not be ours. A zombie leader still pins its
/// pid and its group, so the group may be signalled then too.
pub(super) fn signal_instance(pid: u32, starttime: u64, signal: libc::c_int) -> io::Result<bool> {
    let Ok(pid_t) = libc::pid_t::try_from(pid) else {
        return Ok(false);
    };
    // pid 0 and -1 mean "my group" and "everyone" to kill(2); 1 is init; never ourselves.
    if pid_t <= 1 || pid == std::process::id() {
        return Err(io::Error::other(format!("refusing to signal pid {pid}")));
    }
    let stat = match proc_stat(pid) {
        Ok(stat) if stat.starttime == starttime => stat,
        Ok(_) => return Ok(false),
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(err) => return Err(err),
    };
    let target = if stat.pgrp == pid_t { -pid_t } else { pid_t };
    // SAFETY: kill(2) takes plain integers and touches no memory of ours. `target` is
    // `±pid` with pid > 1, never 0 or -1, and pid was just checked to be the process we
    // started (same start time).
    let rc = unsafe { libc::kill(target, signal) };
    if rc == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::ESRCH) {
        Ok(false)
    } else {
        Err(err)
    }
}

/// Polls until the process is gone; `false` if it is still there after `timeout`.
pub(super) async fn wait_gone(pid: u32, starttime: u64, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if !liveness(pid, starttime).is_present() {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        tokio::time::sleep(POLL_INTERVAL.min(deadline - now)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_parsing_survives_odd_command_names() {
        let text = "4242 (we ird) (name)) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 100 18446744073709551615";
        assert_eq!(
            parse_stat(text),
            Some(ProcStat {
                state: 'S',
                pgrp: 4242,
                starttime: 987654
            })
        );
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) S 1"), None);
    }

    #[test]
    fn own_stat_is_readable() {
        let stat = proc_stat(std::process::id()).expect("our own /proc entry");
        assert_ne!(stat.state, 'Z');
        assert_eq!(
            liveness(std::process::id(), stat.starttime),
            Liveness::Alive
        );
        assert_eq!(
            liveness(std::process::id(), stat.starttime + 1),
            Liveness::Gone
        );
    }

    #[test]
    fn signalling_refuses_dangerous_pids() {
        for pid in [0, 1, std::process::id()] {
            let own = proc_stat(std::process::id()).expect("own stat").starttime;
            assert!(signal_instance(pid, own, 0).is_err(), "pid {pid}");
        }
        // A pid that is someone else (wrong start time) is not signalled.
        let own = proc_stat(std::process::id()).expect("own stat").starttime;
        let parent = std::os::unix::process::parent_id();
        assert!(matches!(signal_instance(parent, own + 12345, 0), Ok(false)));
    }
}
