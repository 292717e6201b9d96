//! CPU pinning and real-time scheduling (design notes §6.1), each reporting what it obtained.
//!
//! Unlike the design notes' `pin_thread_to_cpu`, which returns -1 and leaves the caller to guess
//! whether pinning or SCHED_FIFO failed, each step here returns its own outcome, and pinning is
//! verified by reading the affinity back.

use core::fmt;
use std::io;

fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// CPUs online (`sysconf(_SC_NPROCESSORS_ONLN)`).
pub fn cpus_online() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    n.max(1) as usize
}

/// The CPU the calling thread runs on now.
pub fn current_cpu() -> Option<usize> {
    // SAFETY: no preconditions.
    let c = unsafe { libc::sched_getcpu() };
    (c >= 0).then_some(c as usize)
}

/// CPUs the calling thread may run on.
pub fn affinity() -> io::Result<Vec<usize>> {
    // SAFETY: cpu_set_t is plain data; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { core::mem::zeroed() };
    // SAFETY: `set` is a valid cpu_set_t of the size passed; pid 0 is the calling thread.
    if unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let max = 8 * size_of::<libc::cpu_set_t>();
    // SAFETY: CPU_ISSET reads `set` within bounds for cpu < CPU_SETSIZE.
    Ok((0..max).filter(|&c| unsafe { libc::CPU_ISSET(c, &set) }).collect())
}

/// Result of [`pin_current_thread`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PinOutcome {
    /// The thread may now run only on this CPU (read back and checked).
    Pinned {
        /// The CPU.
        cpu: usize,
    },
    /// Refused (EINVAL: no such CPU, or outside the cpuset), with this errno.
    Failed {
        /// The CPU asked for.
        cpu: usize,
        /// The errno.
        errno: i32,
    },
}

impl fmt::Display for PinOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Pinned { cpu } => write!(f, "pinned to cpu {cpu}"),
            Self::Failed { cpu, errno } => {
                write!(f, "pinning to cpu {cpu} failed: {}", io::Error::from_raw_os_error(*errno))
            }
        }
    }
}

/// Restricts the calling thread to `cpu` (`sched_setaffinity`), then checks it took effect.
pub fn pin_current_thread(cpu: usize) -> PinOutcome {
    if cpu >= 8 * size_of::<libc::cpu_set_t>() {
        return PinOutcome::Failed { cpu, errno: libc::EINVAL };
    }
    // SAFETY: cpu_set_t is plain data; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { core::mem::zeroed() };
    // SAFETY: `cpu < CPU_SETSIZE`, checked above.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: valid set and size; pid 0 is the calling thread.
    if unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) } != 0 {
        return PinOutcome::Failed { cpu, errno: errno() };
    }
    match affinity() {
        Ok(cpus) if cpus == [cpu] => PinOutcome::Pinned { cpu },
        Ok(_) => PinOutcome::Failed { cpu, errno: libc::EINVAL },
        Err(e) => PinOutcome::Failed { cpu, errno: e.raw_os_error().unwrap_or(0) },
    }
}

/// Lets the calling thread run on any of `cpus` again.
pub fn set_affinity(cpus: &[usize]) -> io::Result<()> {
    // SAFETY: cpu_set_t is plain data; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { core::mem::zeroed() };
    for &c in cpus.iter().filter(|&&c| c < 8 * size_of::<libc::cpu_set_t>()) {
        // SAFETY: `c < CPU_SETSIZE`.
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    // SAFETY: valid set and size; pid 0 is the calling thread.
    if unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A scheduling policy of the calling thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// SCHED_OTHER (the default, fair scheduler).
    Other,
    /// SCHED_FIFO with this priority (1..=99).
    Fifo(i32),
    /// Anything else (SCHED_RR, SCHED_BATCH, SCHED_IDLE, ...), by number.
    Unknown(i32),
}

/// The calling thread's policy.
pub fn current_policy() -> io::Result<Policy> {
    // SAFETY: no preconditions; pid 0 is the calling thread.
    let p = unsafe { libc::sched_getscheduler(0) };
    if p < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid out-parameter.
    if unsafe { libc::sched_getparam(0, &mut param) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(match p {
        libc::SCHED_OTHER => Policy::Other,
        libc::SCHED_FIFO => Policy::Fifo(param.sched_priority),
        other => Policy::Unknown(other),
    })
}

/// Result of [`set_fifo`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SchedOutcome {
    /// The calling thread now runs SCHED_FIFO at this priority (read back and checked).
    Fifo {
        /// The priority.
        priority: i32,
    },
    /// Refused (EPERM without CAP_SYS_NICE or an RLIMIT_RTPRIO; EINVAL for a bad priority).
    Failed {
        /// The errno.
        errno: i32,
    },
}

impl fmt::Display for SchedOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Fifo { priority } => write!(f, "SCHED_FIFO priority {priority}"),
            Self::Failed { errno } => {
                write!(f, "SCHED_FIFO refused: {}", io::Error::from_raw_os_error(*errno))
            }
        }
    }
}

/// Switches the calling thread to SCHED_FIFO at `priority` (1..=99). A SCHED_FIFO thread that
/// busy-spins can starve the kernel's own threads on its CPU: use it on isolated cores only.
pub fn set_fifo(priority: i32) -> SchedOutcome {
    let param = libc::sched_param { sched_priority: priority };
    // SAFETY: valid param; pid 0 is the calling thread.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) } != 0 {
        return SchedOutcome::Failed { errno: errno() };
    }
    match current_policy() {
        Ok(Policy::Fifo(p)) if p == priority => SchedOutcome::Fifo { priority },
        _ => SchedOutcome::Failed { errno: libc::EINVAL },
    }
}

/// Switches the calling thread back to SCHED_OTHER.
pub fn set_other() -> io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: valid param; pid 0 is the calling thread.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_OTHER, &param) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// What one thread of this process has used so far (Linux: `/proc/self/task/TID`), for
/// benchmarks and tests that watch threads: CPU time, how often it slept and woke
/// (voluntary context switches) or was preempted (involuntary ones), minor page faults.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ThreadStats {
    /// `comm`: the thread's name, at most 15 bytes.
    pub name: String,
    /// CPU time on the CPU so far (`schedstat`), ns.
    pub cpu_ns: u64,
    /// Times it gave up the CPU itself (sleeps, waits).
    pub voluntary_switches: u64,
    /// Times it was preempted.
    pub involuntary_switches: u64,
    /// Minor page faults (`minflt`).
    pub minor_faults: u64,
}

/// [`ThreadStats`] of every thread of this process (empty where `/proc` is not there; a thread
/// that ends while it is read is left out).
pub fn thread_stats() -> Vec<ThreadStats> {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else { return Vec::new() };
    dir.flatten().filter_map(|t| thread_stats_at(&t.path())).collect()
}

fn thread_stats_at(p: &std::path::Path) -> Option<ThreadStats> {
    let read = |f: &str| std::fs::read_to_string(p.join(f)).ok();
    let status = read("status")?;
    let field = |key: &str| {
        status.lines().find_map(|l| l.strip_prefix(key)).and_then(|x| x.trim().parse().ok())
    };
    // minflt: the 10th field of stat, the 8th after the parenthesised name.
    let stat = read("stat")?;
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    Some(ThreadStats {
        name: read("comm")?.trim().to_string(),
        cpu_ns: read("schedstat")?.split(' ').next()?.parse().ok()?,
        voluntary_switches: field("voluntary_ctxt_switches:")?,
        involuntary_switches: field("nonvoluntary_ctxt_switches:")?,
        minor_faults: after_name.split_whitespace().nth(7)?.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinning_takes_effect_and_bad_cpus_are_reported() {
        std::thread::spawn(|| {
            let last = cpus_online() - 1;
            assert_eq!(pin_current_thread(last), PinOutcome::Pinned { cpu: last });
            assert_eq!(affinity().unwrap(), vec![last]);
            std::thread::yield_now();
            assert_eq!(current_cpu(), Some(last));
            let bad = pin_current_thread(4000);
            assert!(matches!(bad, PinOutcome::Failed { cpu: 4000, errno: libc::EINVAL }), "{bad}");
            let offline = pin_current_thread(1000);
            assert!(matches!(offline, PinOutcome::Failed { cpu: 1000, .. }), "{offline}");
            assert_eq!(affinity().unwrap(), vec![last], "a failed pin leaves affinity unchanged");
        })
        .join()
        .unwrap();
    }

    #[test]
    fn thread_stats_name_this_thread_and_count_its_sleeps() {
        std::thread::Builder::new()
            .name("stats-probe".into())
            .spawn(|| {
                let me = || thread_stats().into_iter().find(|t| t.name == "stats-probe");
                let before = me().expect("this thread is listed");
                std::thread::sleep(std::time::Duration::from_millis(2));
                let v: Vec<u64> = (0..1_000_000u64).map(|x| x * 3).collect(); // CPU time, faults
                assert_eq!(v.len(), 1_000_000);
                let after = me().expect("still listed");
                assert!(after.voluntary_switches > before.voluntary_switches, "a sleep is one");
                assert!(after.cpu_ns > before.cpu_ns);
                assert!(after.minor_faults > before.minor_faults, "8 MB of fresh memory");
            })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn fifo_is_obtained_or_refused_with_a_reason() {
        std::thread::spawn(|| {
            assert_eq!(current_policy().unwrap(), Policy::Other);
            // SAFETY: no preconditions.
            let root = unsafe { libc::geteuid() } == 0;
            match set_fifo(10) {
                SchedOutcome::Fifo { priority } => {
                    assert_eq!(priority, 10);
                    assert_eq!(current_policy().unwrap(), Policy::Fifo(10));
                    set_other().unwrap();
                    assert_eq!(current_policy().unwrap(), Policy::Other);
                }
                SchedOutcome::Failed { errno } => {
                    assert!(!root, "root was refused SCHED_FIFO: errno {errno}");
                    assert_eq!(errno, libc::EPERM);
                }
            }
            assert!(matches!(set_fifo(1000), SchedOutcome::Failed { errno: libc::EINVAL }));
        })
        .join()
        .unwrap();
    }
}
