//! NUMA binding (design notes §3.4) through the `mbind` system call, without libnuma.
//!
//! On a machine with one node (such as the 2-vCPU VMs this project is developed on) binding is
//! meaningless, and [`bind`] reports [`NumaOutcome::NotAvailable`] instead of pretending.

use core::fmt;

/// `MPOL_BIND` from `<linux/mempolicy.h>`.
const MPOL_BIND: libc::c_int = 2;
/// `MPOL_MF_STRICT`: fail if existing pages do not follow the policy.
const MPOL_MF_STRICT: libc::c_uint = 1;
/// Nodes a mask covers (one `u64` word).
const NODES_MAX: u32 = 64;

/// Result of a NUMA binding request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NumaOutcome {
    /// Not asked for.
    NotRequested,
    /// The machine has fewer than two NUMA nodes: nothing to bind to.
    NotAvailable {
        /// Nodes found under `/sys/devices/system/node`.
        nodes: u32,
    },
    /// Bound to this node.
    Bound {
        /// The node.
        node: u32,
    },
    /// `mbind` refused (or the node does not exist: EINVAL), with this errno.
    Failed {
        /// The node asked for.
        node: u32,
        /// The errno.
        errno: i32,
    },
}

impl fmt::Display for NumaOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotRequested => f.write_str("not requested"),
            Self::NotAvailable { nodes } => write!(f, "not available ({nodes} node)"),
            Self::Bound { node } => write!(f, "bound to node {node}"),
            Self::Failed { node, errno } => write!(
                f,
                "binding to node {node} failed: {}",
                std::io::Error::from_raw_os_error(*errno)
            ),
        }
    }
}

/// NUMA nodes the kernel exposes (`/sys/devices/system/node/nodeN`); 1 if that is unreadable.
pub fn node_count() -> u32 {
    let Ok(dir) = std::fs::read_dir("/sys/devices/system/node") else {
        return 1;
    };
    let n = dir
        .filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.strip_prefix("node")
                .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
        })
        .count() as u32;
    n.max(1)
}

/// Binds the pages of `memory` (page-aligned, best not yet touched) to `node`.
pub fn bind(memory: &mut [u8], node: u32) -> NumaOutcome {
    let (ptr, len) = (memory.as_mut_ptr(), memory.len());
    let nodes = node_count();
    if nodes < 2 {
        return NumaOutcome::NotAvailable { nodes };
    }
    if node >= nodes || node >= NODES_MAX {
        return NumaOutcome::Failed { node, errno: libc::EINVAL };
    }
    let mask: u64 = 1 << node;
    // SAFETY: `mask` outlives the call; `maxnode` counts the bits of one u64 plus one, as the
    // kernel's off-by-one convention for mbind requires; the range is memory we borrow mutably
    // (mbind changes only where its pages are placed, never their contents).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mbind,
            ptr,
            len,
            MPOL_BIND,
            &mask as *const u64,
            u64::from(NODES_MAX) + 1,
            MPOL_MF_STRICT,
        )
    };
    if rc == 0 {
        NumaOutcome::Bound { node }
    } else {
        let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
        NumaOutcome::Failed { node, errno }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binding_reports_what_happened() {
        let nodes = node_count();
        assert!(nodes >= 1);
        let mut buf = vec![0u8; 8192];
        let outcome = bind(&mut buf[..4096], 0);
        if nodes == 1 {
            assert_eq!(outcome, NumaOutcome::NotAvailable { nodes: 1 });
            assert!(outcome.to_string().contains("not available"));
        } else {
            // A heap pointer may not be page-aligned: either bound or a reported error.
            assert!(matches!(outcome, NumaOutcome::Bound { node: 0 } | NumaOutcome::Failed { .. }));
            assert!(matches!(bind(&mut buf[..4096], 63), NumaOutcome::Failed { .. }));
        }
    }
}
