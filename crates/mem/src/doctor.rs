//! `doctor()`: what this host offers a low-latency process, and what design notes §6.1
//! recommends that it does not have yet. Printable; the CLI exposes it.

use core::fmt;

use crate::huge::{hugepage_counts, HugePageCounts, PageKind};

/// One recommended setting and whether this host has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recommendation {
    /// The setting, as one would write it (`isolcpus=1`, `vm.nr_hugepages=512`, ...).
    pub setting: String,
    /// Why it matters.
    pub why: &'static str,
    /// Whether the host has it already.
    pub present: bool,
}

/// A snapshot of the host's latency-relevant settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DoctorReport {
    /// CPUs online.
    pub cpus_online: usize,
    /// NUMA nodes.
    pub numa_nodes: u32,
    /// `isolcpus=` from `/proc/cmdline`, if set.
    pub isolcpus: Option<String>,
    /// `nohz_full=` from `/proc/cmdline`, if set.
    pub nohz_full: Option<String>,
    /// `rcu_nocbs=` from `/proc/cmdline`, if set.
    pub rcu_nocbs: Option<String>,
    /// The whole kernel command line, if readable.
    pub cmdline: Option<String>,
    /// THP mode (`always` / `madvise` / `never`), if readable.
    pub thp_mode: Option<String>,
    /// 2 MiB hugetlb pool.
    pub hugepages_2m: Option<HugePageCounts>,
    /// 1 GiB hugetlb pool.
    pub hugepages_1g: Option<HugePageCounts>,
    /// cpufreq governor per CPU; empty when the host exposes no cpufreq (typical in VMs).
    pub governors: Vec<(usize, String)>,
    /// `RLIMIT_MEMLOCK` soft limit in bytes (`None` = unlimited).
    pub memlock_limit_bytes: Option<u64>,
    /// Whether the process runs as root.
    pub root: bool,
    /// Whether the process has CAP_IPC_LOCK (bit 14 of `CapEff` in `/proc/self/status`), which
    /// lets it mlock beyond `RLIMIT_MEMLOCK`.
    pub cap_ipc_lock: bool,
    /// Recommended settings, each marked present or missing.
    pub recommendations: Vec<Recommendation>,
}

/// The value of `key=` on a kernel command line.
pub fn cmdline_param<'a>(cmdline: &'a str, key: &str) -> Option<&'a str> {
    cmdline.split_whitespace().find_map(|arg| arg.strip_prefix(key)?.strip_prefix('='))
}

/// True if `flag` (with or without a value) appears on the command line.
pub fn cmdline_has(cmdline: &str, flag: &str) -> bool {
    cmdline.split_whitespace().any(|arg| arg == flag || arg.split('=').next() == Some(flag))
}

/// The bracketed choice of a sysfs multiple-choice file: `always [madvise] never` → `madvise`.
pub fn parse_bracketed(s: &str) -> Option<&str> {
    let start = s.find('[')? + 1;
    let end = start + s[start..].find(']')?;
    Some(&s[start..end])
}

/// CAP_IPC_LOCK's bit in the capability masks.
const CAP_IPC_LOCK: u32 = 14;

/// Whether `CapEff` in a `/proc/<pid>/status` text includes CAP_IPC_LOCK.
pub fn has_cap_ipc_lock(status: &str) -> bool {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_IPC_LOCK) != 0)
}

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok().map(|s| s.trim().to_owned())
}

/// Inspects the host. Never fails: what cannot be read is reported as unknown.
pub fn doctor() -> DoctorReport {
    let cmdline = read("/proc/cmdline");
    let line = cmdline.clone().unwrap_or_default();
    let param = |k: &str| cmdline_param(&line, k).map(str::to_owned);
    let cpus_online = crate::cpu::cpus_online();
    let mut governors = Vec::new();
    for cpu in 0..cpus_online {
        if let Some(g) = read(&format!("/sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_governor"))
        {
            governors.push((cpu, g));
        }
    }
    let mut rl = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `rl` is a valid out-parameter.
    let memlock_limit_bytes = if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut rl) } == 0 {
        (rl.rlim_cur != libc::RLIM_INFINITY).then_some(rl.rlim_cur)
    } else {
        Some(0)
    };
    let thp_mode = read("/sys/kernel/mm/transparent_hugepage/enabled")
        .and_then(|s| parse_bracketed(&s).map(str::to_owned));
    let mut report = DoctorReport {
        cpus_online,
        numa_nodes: crate::numa::node_count(),
        isolcpus: param("isolcpus"),
        nohz_full: param("nohz_full"),
        rcu_nocbs: param("rcu_nocbs"),
        cmdline,
        thp_mode,
        hugepages_2m: hugepage_counts(PageKind::Huge2M),
        hugepages_1g: hugepage_counts(PageKind::Huge1G),
        governors,
        memlock_limit_bytes,
        // SAFETY: no preconditions.
        root: unsafe { libc::geteuid() } == 0,
        cap_ipc_lock: read("/proc/self/status").is_some_and(|s| has_cap_ipc_lock(&s)),
        recommendations: Vec::new(),
    };
    report.recommendations = recommend(&report, &line);
    report
}

/// The design notes' §6.1 kernel parameters plus the memory settings of §3, checked against the
/// host. Hot cores are all but CPU 0 (which keeps the OS, interrupts and I/O threads).
fn recommend(r: &DoctorReport, cmdline: &str) -> Vec<Recommendation> {
    let hot = if r.cpus_online > 1 {
        if r.cpus_online == 2 {
            "1".to_owned()
        } else {
            format!("1-{}", r.cpus_online - 1)
        }
    } else {
        "<none: only one CPU>".to_owned()
    };
    let governors_ok =
        !r.governors.is_empty() && r.governors.iter().all(|(_, g)| g == "performance");
    vec![
        Recommendation {
            setting: format!("isolcpus={hot}"),
            why: "keep the scheduler's other tasks off the pipeline's cores",
            present: r.isolcpus.is_some(),
        },
        Recommendation {
            setting: format!("nohz_full={hot}"),
            why: "no timer tick on a core running one busy thread",
            present: r.nohz_full.is_some(),
        },
        Recommendation {
            setting: format!("rcu_nocbs={hot}"),
            why: "move RCU callbacks off the pipeline's cores",
            present: r.rcu_nocbs.is_some(),
        },
        Recommendation {
            setting: "processor.max_cstate=1 (or idle=poll)".to_owned(),
            why: "deep C-states cost tens of µs to wake from",
            present: cmdline_has(cmdline, "processor.max_cstate") || cmdline_has(cmdline, "idle"),
        },
        Recommendation {
            setting: "cpufreq governor=performance".to_owned(),
            why: "no frequency ramp-up after idle (intel_pstate=disable on Intel)",
            present: governors_ok,
        },
        Recommendation {
            setting: "transparent_hugepage=madvise".to_owned(),
            why: "THP where asked for (our regions), no khugepaged surprises elsewhere",
            present: r.thp_mode.as_deref() == Some("madvise"),
        },
        Recommendation {
            setting: "vm.nr_hugepages>=512 (1 GiB of 2 MiB pages)".to_owned(),
            why: "rings, arenas and state in hugetlb pages: fewer TLB misses, never swapped",
            present: r.hugepages_2m.is_some_and(|h| h.total >= 512),
        },
        Recommendation {
            setting: "memlock unlimited (or CAP_IPC_LOCK)".to_owned(),
            why: "mlock the hot memory so it never page-faults",
            present: r.memlock_limit_bytes.is_none() || r.cap_ipc_lock,
        },
    ]
}

fn opt(s: &Option<String>) -> &str {
    s.as_deref().unwrap_or("not set")
}

impl fmt::Display for DoctorReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "cpus online      {}", self.cpus_online)?;
        let numa = if self.numa_nodes < 2 { " (NUMA binding not available)" } else { "" };
        writeln!(f, "numa nodes       {}{numa}", self.numa_nodes)?;
        writeln!(f, "isolcpus         {}", opt(&self.isolcpus))?;
        writeln!(f, "nohz_full        {}", opt(&self.nohz_full))?;
        writeln!(f, "rcu_nocbs        {}", opt(&self.rcu_nocbs))?;
        writeln!(f, "thp              {}", self.thp_mode.as_deref().unwrap_or("unknown"))?;
        for (name, h) in [("hugepages 2M", self.hugepages_2m), ("hugepages 1G", self.hugepages_1g)]
        {
            match h {
                Some(h) => writeln!(
                    f,
                    "{name}     total {} free {} reserved {}",
                    h.total, h.free, h.reserved
                )?,
                None => writeln!(f, "{name}     pool not available")?,
            }
        }
        if self.governors.is_empty() {
            writeln!(f, "cpufreq          not available (no cpufreq in this kernel or VM)")?;
        } else {
            let g: Vec<String> = self.governors.iter().map(|(c, g)| format!("{c}:{g}")).collect();
            writeln!(f, "cpufreq          {}", g.join(" "))?;
        }
        match self.memlock_limit_bytes {
            None => writeln!(f, "memlock limit    unlimited")?,
            Some(b) => writeln!(
                f,
                "memlock limit    {} KiB{}",
                b / 1024,
                if self.cap_ipc_lock { " (CAP_IPC_LOCK: not binding)" } else { "" }
            )?,
        }
        writeln!(f, "recommended:")?;
        for r in &self.recommendations {
            let mark = if r.present { "ok     " } else { "missing" };
            writeln!(f, "  [{mark}] {:<44} {}", r.setting, r.why)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_parsing() {
        let line = "ro quiet isolcpus=2-5 nohz_full=2,3 idle=poll processor.max_cstate=1";
        assert_eq!(cmdline_param(line, "isolcpus"), Some("2-5"));
        assert_eq!(cmdline_param(line, "nohz_full"), Some("2,3"));
        assert_eq!(cmdline_param(line, "rcu_nocbs"), None);
        assert_eq!(cmdline_param("xisolcpus=1", "isolcpus"), None);
        assert!(cmdline_has(line, "idle"));
        assert!(cmdline_has(line, "quiet"));
        assert!(!cmdline_has(line, "nosmt"));
    }

    #[test]
    fn capability_parsing() {
        assert!(has_cap_ipc_lock("Name:\tx\nCapEff:\t000001ffffffffff\n"));
        assert!(has_cap_ipc_lock("CapEff:\t0000000000004000\n"));
        assert!(!has_cap_ipc_lock("CapEff:\t0000000000003fff\n"));
        assert!(!has_cap_ipc_lock("Name:\tx\n"));
    }

    #[test]
    fn bracketed_choice() {
        assert_eq!(parse_bracketed("always [madvise] never"), Some("madvise"));
        assert_eq!(parse_bracketed("[always] madvise never\n"), Some("always"));
        assert_eq!(parse_bracketed("always madvise"), None);
    }

    #[test]
    fn doctor_reports_this_host() {
        let r = doctor();
        assert!(r.cpus_online >= 1);
        assert!(r.numa_nodes >= 1);
        assert!(r.cmdline.is_some(), "/proc/cmdline is readable on Linux");
        assert!(matches!(r.thp_mode.as_deref(), Some("always" | "madvise" | "never") | None));
        assert_eq!(r.recommendations.len(), 8);
        for rec in &r.recommendations {
            assert!(rec.setting.len() <= 44, "widen the report's column for {}", rec.setting);
        }
        // What the report says must match the command line it read.
        let line = r.cmdline.clone().unwrap();
        assert_eq!(r.isolcpus.is_some(), cmdline_param(&line, "isolcpus").is_some());
        assert_eq!(r.recommendations[0].present, r.isolcpus.is_some());
        let text = r.to_string();
        for needle in ["isolcpus", "nohz_full", "thp", "hugepages 2M", "cpufreq", "memlock"] {
            assert!(text.contains(needle), "report lacks {needle}:\n{text}");
        }
    }
}
