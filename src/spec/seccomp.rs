//! The seccomp filter: computed from the plan as a list of [`Rule`]s (pure data, printed by
//! `explain`, unit-tested), compiled into classic BPF by [`compile`], and installed by
//! [`apply`] (seccompiler's `apply_filter`) as the very last step before `execve`.
//!
//! Default action: allow. A matching rule returns an errno (EPERM, or ENOSYS for `clone3`
//! and `openat2` so that callers fall back to calls whose arguments the filter can read).
//!
//! One program: a call through another ABI (i386 `int 0x80`, an AArch32 task) kills the
//! process; an x32 call (`__X32_SYSCALL_BIT`) gets EPERM; then a binary search over the
//! rules' syscall numbers, and the rule's argument checks. seccompiler's own compiler
//! emits a linear chain (650+ instructions for this list), which the kernel walks for
//! every syscall number when it builds its action cache at install time (~300 us per cell
//! start here); the search is ~350 instructions and ~10 comparisons deep (~110 us). Each
//! program installed costs a fixed ~35 us besides (its conversion, JIT image and action
//! cache), which is why the arch and x32 checks are not a program of their own. A unit
//! test runs the program in a BPF interpreter against the rules' meaning, for every arch.
//!
//! Cost: only `clone`, `ioctl`, `personality`, `socket`, the chmod/mkdir/mknod family and
//! `open`/`openat` (set-uid modes) have argument checks. For every other syscall the
//! program returns a constant, so the kernel's seccomp action cache (Linux 5.11+) allows
//! it without running the program: hot syscalls pay only the fixed price of having a
//! filter at all.

use std::fmt;

use seccompiler::{sock_filter, BpfProgram};
use serde::Serialize;

use crate::plan::syscalls;
use crate::plan::NetMode;

/// A comparison on one syscall argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Cmp {
    /// `(arg & mask) == mask`: any of these flag bits set (checked one flag per rule).
    HasBits(u64),
    /// The low 32 bits equal the value.
    Eq32(u64),
    /// The low 32 bits differ from the value.
    Ne32(u64),
    /// The low 32 bits are greater than the value (unsigned).
    Gt32(u64),
    /// The low 32 bits are less than the value (unsigned).
    Lt32(u64),
    /// The low 32 bits, masked, differ from the value: `(arg & mask) != value` (a
    /// socket's type without SOCK_NONBLOCK/SOCK_CLOEXEC).
    MaskedNe32(u64, u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Cond {
    pub arg: u8,
    pub cmp: Cmp,
}

/// One deny rule: `name` is refused with `errno` when any of `when` matches (all conditions
/// of one entry must hold); an empty `when` refuses every call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rule {
    pub name: String,
    pub nr: i64,
    pub errno: i32,
    /// Instead of an errno: the call waits for the supervisor (SECCOMP_RET_USER_NOTIF),
    /// which answers it (the container tier's `connect`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub notify: bool,
    pub when: Vec<Vec<Cond>>,
    /// Alternatives checked after `when` (when none of those held): the call waits for
    /// the supervisor (the container tier's inet `socket`s, which it makes itself).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notify_when: Vec<Vec<Cond>>,
    /// Why (shown by `explain`).
    pub why: String,
}

/// The whole filter as data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Filter {
    pub rules: Vec<Rule>,
    /// Calls through another ABI are refused (always true; kept visible for `explain`).
    pub other_abi_refused: bool,
}

/// What the filter needs from the plan.
#[derive(Debug, Clone, Default)]
pub struct Policy<'a> {
    pub net: Option<NetMode>,
    pub deny: &'a [String],
    pub allow: &'a [String],
    pub allow_userns: bool,
    /// The container tier (no network namespace): no UDP, raw, packet or netlink sockets,
    /// TCP only, no TCP Fast Open, and every `connect` goes to the supervisor.
    pub container: bool,
}

/// The default deny list (refused with EPERM, no argument checks), grouped by reason.
pub const DENY: &[(&str, &[&str])] = &[
    (
        "changes the mount table",
        &[
            "mount",
            "umount2",
            "pivot_root",
            "move_mount",
            "open_tree",
            "fsopen",
            "fsconfig",
            "fsmount",
            "fspick",
            "mount_setattr",
        ],
    ),
    (
        "reads or changes another process",
        &[
            "ptrace",
            "process_vm_readv",
            "process_vm_writev",
            "pidfd_getfd",
        ],
    ),
    (
        "kernel attack surface (BPF, perf, userfaultfd, io_uring)",
        &[
            "bpf",
            "perf_event_open",
            "userfaultfd",
            "io_uring_setup",
            "io_uring_enter",
            "io_uring_register",
            // x86 only: the local descriptor table (old kernel bugs; nothing needs it).
            "modify_ldt",
        ],
    ),
    ("kernel keyrings", &["keyctl", "add_key", "request_key"]),
    (
        "loads kernel code or reboots",
        &[
            "kexec_load",
            "kexec_file_load",
            "init_module",
            "finit_module",
            "delete_module",
            "reboot",
        ],
    ),
    (
        "opens files by handle, bypassing paths",
        &["open_by_handle_at", "name_to_handle_at"],
    ),
    (
        "system administration",
        &[
            "acct",
            "swapon",
            "swapoff",
            "syslog",
            "quotactl",
            "quotactl_fd",
            "vhangup",
            "iopl",
            "ioperm",
            "uselib",
        ],
    ),
    (
        "changes the system clock",
        &["settimeofday", "clock_settime", "adjtimex", "clock_adjtime"],
    ),
];

/// Namespace syscalls refused unless `allow_userns`.
const NS_DENY: &[&str] = &["unshare", "setns"];

/// clone flags that create namespaces. CLONE_NEWTIME (0x80) is not among them: for clone()
/// that bit is part of the exit signal; only clone3/unshare take it (both refused).
const CLONE_NS_FLAGS: &[(&str, u64)] = &[
    ("CLONE_NEWNS", libc::CLONE_NEWNS as u64),
    ("CLONE_NEWCGROUP", libc::CLONE_NEWCGROUP as u64),
    ("CLONE_NEWUTS", libc::CLONE_NEWUTS as u64),
    ("CLONE_NEWIPC", libc::CLONE_NEWIPC as u64),
    ("CLONE_NEWUSER", libc::CLONE_NEWUSER as u64),
    ("CLONE_NEWPID", libc::CLONE_NEWPID as u64),
    ("CLONE_NEWNET", libc::CLONE_NEWNET as u64),
];

pub const TIOCSTI: u64 = 0x5412;
pub const TIOCLINUX: u64 = 0x541C;
/// Sets a terminal's line discipline (N_NULL leaves the user's shell dead).
pub const TIOCSETD: u64 = 0x5423;
/// Redirects the console's output to a terminal.
pub const TIOCCONS: u64 = 0x541D;
/// `personality(0xffffffff)` only queries the current persona.
const PERSONALITY_QUERY: u64 = 0xffff_ffff;
const IPPROTO_MPTCP: u64 = 262;
const NETLINK_ROUTE: u64 = 0;
/// The socket type without SOCK_NONBLOCK and SOCK_CLOEXEC (the kernel's SOCK_TYPE_MASK).
const SOCK_TYPE_MASK: u64 = 0xf;
const MSG_FASTOPEN: u64 = 0x2000_0000;

/// `__O_TMPFILE`: `open(dir, O_TMPFILE, mode)` creates a file with `mode` too.
const O_TMPFILE_BIT: u64 = 0o20000000;

/// x32 syscalls on x86_64 carry this bit in the syscall number.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

fn rule(name: &str, errno: i32, when: Vec<Vec<Cond>>, why: &str) -> Option<Rule> {
    let nr = syscalls::number(name)?;
    Some(Rule {
        name: name.to_string(),
        nr,
        errno,
        notify: false,
        when,
        notify_when: Vec::new(),
        why: why.to_string(),
    })
}

fn c(arg: u8, cmp: Cmp) -> Cond {
    Cond { arg, cmp }
}

/// Compute the filter for a plan. Names not present on this architecture (e.g. `iopl` on
/// aarch64) are skipped; profile names were checked when the profile was read.
pub fn filter(p: &Policy) -> Filter {
    let mut rules: Vec<Rule> = Vec::new();
    let mut push = |r: Option<Rule>| {
        if let Some(r) = r {
            rules.push(r);
        }
    };
    for (why, names) in DENY {
        for n in *names {
            push(rule(n, libc::EPERM, vec![], why));
        }
    }
    if !p.allow_userns {
        for n in NS_DENY {
            push(rule(n, libc::EPERM, vec![], "creates or joins namespaces"));
        }
        push(rule(
            "clone",
            libc::EPERM,
            CLONE_NS_FLAGS
                .iter()
                .map(|(_, f)| vec![c(0, Cmp::HasBits(*f))])
                .collect(),
            "creates namespaces (flags CLONE_NEW*)",
        ));
    }
    push(rule(
        "clone3",
        libc::ENOSYS,
        vec![],
        "its flags cannot be inspected; ENOSYS makes libc fall back to clone",
    ));
    push(rule(
        "ioctl",
        libc::EPERM,
        vec![
            vec![c(1, Cmp::Eq32(TIOCSTI))],
            vec![c(1, Cmp::Eq32(TIOCLINUX))],
            vec![c(1, Cmp::Eq32(TIOCSETD))],
            vec![c(1, Cmp::Eq32(TIOCCONS))],
        ],
        "TIOCSTI/TIOCLINUX inject input into a terminal, TIOCSETD changes its line discipline, TIOCCONS takes the console (request compared on its low 32 bits)",
    ));
    push(rule(
        "personality",
        libc::EPERM,
        vec![vec![c(0, Cmp::Ne32(0)), c(0, Cmp::Ne32(PERSONALITY_QUERY))]],
        "anything but the default persona (e.g. ADDR_NO_RANDOMIZE)",
    ));
    // Set-user-ID and set-group-ID files (systemd's RestrictSUIDSGID): `nosuid` holds only
    // inside the cell, and a set-uid file left in the workspace runs with the caller's
    // uid outside (root's, when root started the cell) for whoever executes it.
    let suid = [libc::S_ISUID as u64, libc::S_ISGID as u64];
    for (name, mode_arg) in [
        ("chmod", 1u8),
        ("fchmod", 1),
        ("fchmodat", 2),
        ("fchmodat2", 2),
        ("creat", 1),
        ("mkdir", 1),
        ("mkdirat", 2),
        ("mknod", 1),
        ("mknodat", 2),
    ] {
        push(rule(
            name,
            libc::EPERM,
            suid.iter()
                .map(|b| vec![c(mode_arg, Cmp::HasBits(*b))])
                .collect(),
            "creates a set-user-ID or set-group-ID file",
        ));
    }
    for (name, flags_arg) in [("open", 1u8), ("openat", 2)] {
        let creating = [libc::O_CREAT as u64, O_TMPFILE_BIT];
        push(rule(
            name,
            libc::EPERM,
            creating
                .iter()
                .flat_map(|f| {
                    suid.iter().map(move |b| {
                        vec![
                            c(flags_arg, Cmp::HasBits(*f)),
                            c(flags_arg + 1, Cmp::HasBits(*b)),
                        ]
                    })
                })
                .collect(),
            "creates a set-user-ID or set-group-ID file",
        ));
    }
    push(rule(
        "openat2",
        libc::ENOSYS,
        vec![],
        "its mode is in a struct the filter cannot read (set-uid files); ENOSYS makes callers fall back to openat",
    ));
    if matches!(
        p.net,
        Some(NetMode::None) | Some(NetMode::Loopback) | Some(NetMode::Proxy)
    ) {
        let af_inet = libc::AF_INET as u64;
        let af_inet6 = libc::AF_INET6 as u64;
        let af_netlink = libc::AF_NETLINK as u64;
        let mut when = vec![
            // Families between AF_INET and AF_INET6 (AX25, IPX, APPLETALK, ...).
            vec![c(0, Cmp::Gt32(af_inet)), c(0, Cmp::Lt32(af_inet6))],
            // Families above AF_INET6 but netlink (PACKET, VSOCK, ALG, XDP, ...).
            vec![c(0, Cmp::Gt32(af_inet6)), c(0, Cmp::Ne32(af_netlink))],
            // Netlink other than route queries (getifaddrs needs NETLINK_ROUTE).
            vec![c(0, Cmp::Eq32(af_netlink)), c(2, Cmp::Ne32(NETLINK_ROUTE))],
            // MPTCP is not covered by Landlock's TCP rules.
            vec![c(2, Cmp::Eq32(IPPROTO_MPTCP))],
        ];
        let mut why = "socket families a cell without network has no use for (only unix, inet, inet6, netlink route; no MPTCP)";
        if p.container {
            // No network namespace: the network is the container's. TCP only (the
            // supervisor makes its connects), no UDP/raw/SCTP, no netlink at all.
            when[2] = vec![c(0, Cmp::Eq32(af_netlink))];
            for af in [af_inet, af_inet6] {
                when.push(vec![
                    c(0, Cmp::Eq32(af)),
                    c(1, Cmp::MaskedNe32(SOCK_TYPE_MASK, libc::SOCK_STREAM as u64)),
                ]);
                when.push(vec![
                    c(0, Cmp::Eq32(af)),
                    c(2, Cmp::Ne32(0)),
                    c(2, Cmp::Ne32(libc::IPPROTO_TCP as u64)),
                ]);
            }
            why = "the container tier: only unix sockets and TCP (type SOCK_STREAM, protocol 0 or TCP); no UDP, raw, packet, SCTP, MPTCP or netlink sockets; every TCP socket is made by the supervisor (user notification), which keeps it to make its connects";
        }
        let mut socket = rule("socket", libc::EPERM, when, why);
        if let (Some(r), true) = (socket.as_mut(), p.container) {
            // What is left of inet is TCP: the supervisor makes the socket itself and
            // installs it in the cell (SECCOMP_IOCTL_NOTIF_ADDFD).
            r.notify_when = vec![
                vec![c(0, Cmp::Eq32(af_inet))],
                vec![c(0, Cmp::Eq32(af_inet6))],
            ];
        }
        push(socket);
        if p.container {
            // Every connect waits for the supervisor: it connects the TCP sockets it made
            // (and holds) itself, to the address it decided (no TOCTOU on the cell's
            // sockaddr or fd); any other socket gets CONTINUE.
            if let Some(mut r) = rule(
                "connect",
                0,
                vec![],
                "the container tier: the supervisor connects the TCP socket it made for the cell itself, to the proxy, or refuses",
            ) {
                r.notify = true;
                push(Some(r));
            }
            // TCP Fast Open connects from sendto/sendmsg, past connect().
            for (name, flags_arg) in [("sendto", 3u8), ("sendmsg", 2), ("sendmmsg", 3)] {
                push(rule(
                    name,
                    libc::EPERM,
                    vec![vec![c(flags_arg, Cmp::HasBits(MSG_FASTOPEN))]],
                    "the container tier: MSG_FASTOPEN connects without connect()",
                ));
            }
        }
    }
    for n in p.deny {
        // A profile's deny refuses every call, also of a call the list checks arguments of.
        match rules.iter_mut().find(|r| &r.name == n) {
            Some(r) => {
                if !r.when.is_empty() {
                    r.when.clear();
                    r.why = "denied by the profile".into();
                }
            }
            None => rules.extend(rule(n, libc::EPERM, vec![], "denied by the profile")),
        }
    }
    rules.retain(|r| !p.allow.contains(&r.name));
    Filter {
        rules,
        other_abi_refused: true,
    }
}

impl fmt::Display for Cond {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let a = self.arg;
        match self.cmp {
            Cmp::HasBits(m) => {
                // clone's flags are its arg0; the send calls' flags their arg2/arg3.
                let name = match (a, m) {
                    (0, _) => CLONE_NS_FLAGS
                        .iter()
                        .find(|(_, v)| *v == m)
                        .map(|(n, _)| n.to_string()),
                    (2 | 3, MSG_FASTOPEN) => Some("MSG_FASTOPEN".to_string()),
                    _ => None,
                }
                .unwrap_or_else(|| format!("{m:#x}"));
                write!(f, "arg{a} has {name}")
            }
            Cmp::Eq32(v) => write!(f, "arg{a} == {}", value_name(a, v)),
            Cmp::Ne32(v) => write!(f, "arg{a} != {}", value_name(a, v)),
            Cmp::Gt32(v) => write!(f, "arg{a} > {}", value_name(a, v)),
            Cmp::Lt32(v) => write!(f, "arg{a} < {}", value_name(a, v)),
            Cmp::MaskedNe32(m, v) => write!(f, "arg{a} & {m:#x} != {}", value_name(a, v)),
        }
    }
}

fn value_name(arg: u8, v: u64) -> String {
    match (arg, v) {
        (1, TIOCSTI) => "TIOCSTI".into(),
        (1, TIOCLINUX) => "TIOCLINUX".into(),
        (1, TIOCSETD) => "TIOCSETD".into(),
        (1, TIOCCONS) => "TIOCCONS".into(),
        (0, 2) => "AF_INET".into(),
        (0, 10) => "AF_INET6".into(),
        (0, 16) => "AF_NETLINK".into(),
        (2, IPPROTO_MPTCP) => "IPPROTO_MPTCP".into(),
        _ if v > 0xffff => format!("{v:#x}"),
        _ => v.to_string(),
    }
}

fn action_name(r: &Rule) -> &'static str {
    if r.notify {
        "the supervisor (user notification)"
    } else {
        errno_name(r.errno)
    }
}

fn errno_name(e: i32) -> &'static str {
    match e {
        libc::EPERM => "EPERM",
        libc::ENOSYS => "ENOSYS",
        _ => "errno",
    }
}

/// One line per rule, for `explain`.
pub fn describe(f: &Filter) -> Vec<String> {
    let mut out = Vec::new();
    let alts = |when: &[Vec<Cond>]| {
        when.iter()
            .map(|all| {
                all.iter()
                    .map(|c| c.to_string())
                    .collect::<Vec<_>>()
                    .join(" && ")
            })
            .collect::<Vec<_>>()
            .join(" || ")
    };
    for r in &f.rules {
        let when = if r.when.is_empty() {
            String::new()
        } else {
            format!(" if {}", alts(&r.when))
        };
        let notified = if r.notify_when.is_empty() {
            String::new()
        } else {
            format!(
                ", else if {} -> the supervisor (user notification)",
                alts(&r.notify_when)
            )
        };
        out.push(format!(
            "{}{when} -> {}{notified} ({})",
            r.name,
            action_name(r),
            r.why
        ));
    }
    if f.other_abi_refused {
        out.push(if cfg!(target_arch = "x86_64") {
            "x32 calls -> EPERM; i386 calls (int 0x80) -> process killed".into()
        } else {
            "calls through another ABI (AArch32) -> process killed".into()
        });
    }
    out
}

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 62 | 0x8000_0000 | 0x4000_0000;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 183 | 0x8000_0000 | 0x4000_0000;

/// BPF_LD | BPF_W | BPF_ABS (0x00 | 0x00 | 0x20).
const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JEQ_K: u16 = 0x05 | 0x10;
const BPF_JGE_K: u16 = 0x05 | 0x30;
const BPF_RET_K: u16 = 0x06;
const BPF_JGT_K: u16 = 0x05 | 0x20;
const BPF_JA: u16 = 0x05;
const BPF_ALU_AND_K: u16 = 0x04 | 0x50;
/// Offset of `args[0]` in `struct seccomp_data` (nr u32, arch u32, ip u64, args u64[6]).
const ARGS_OFFSET: u32 = 16;
/// Leaves of the binary search: at most this many syscalls are compared one by one.
const LEAF: usize = 4;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;

fn stmt(code: u16, k: u32) -> sock_filter {
    sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

/// Does the filter hand calls to the supervisor (its program must be installed with a
/// listener)?
pub fn notifies(f: &Filter) -> bool {
    f.rules.iter().any(|r| r.notify)
}

/// Compile the filter into the programs to install, in order (one: see the module's
/// documentation; the worker installs a list).
pub fn compile(f: &Filter) -> Result<Vec<BpfProgram>, String> {
    Ok(vec![program(f)?])
}

/// The program: another ABI kills, an x32 call gets EPERM, then a binary search over the
/// rules' syscall numbers, so a call costs a handful of comparisons (and the kernel's
/// per-syscall action cache is cheap to build), then the rule's argument checks. Numbers
/// no rule names are allowed.
fn program(f: &Filter) -> Result<BpfProgram, String> {
    let mut rules: Vec<&Rule> = f.rules.iter().collect();
    rules.sort_by_key(|r| r.nr);
    if let Some(w) = rules.windows(2).find(|w| w[0].nr == w[1].nr) {
        return Err(format!("seccomp: two rules for {}", w[0].name));
    }
    let mut p = vec![
        stmt(BPF_LD_W_ABS, 4), // seccomp_data.arch
        jump(BPF_JEQ_K, AUDIT_ARCH, 1, 0),
        stmt(BPF_RET_K, libc::SECCOMP_RET_KILL_PROCESS),
        stmt(BPF_LD_W_ABS, 0), // seccomp_data.nr
    ];
    if cfg!(target_arch = "x86_64") {
        p.push(jump(BPF_JGE_K, X32_SYSCALL_BIT, 0, 1));
        p.push(stmt(BPF_RET_K, SECCOMP_RET_ERRNO | libc::EPERM as u32));
    }
    search(&rules, &mut p)?;
    if p.len() > 4096 {
        return Err(format!(
            "seccomp: the filter is {} instructions (at most 4096)",
            p.len()
        ));
    }
    Ok(p)
}

/// Emit the search over `rules` (sorted by number); the accumulator holds the number.
fn search(rules: &[&Rule], p: &mut Vec<sock_filter>) -> Result<(), String> {
    if rules.len() <= LEAF {
        for r in rules {
            let block = rule_block(r)?;
            let skip = u8::try_from(block.len())
                .map_err(|_| format!("seccomp: the checks of {} are too long", r.name))?;
            // Every block ends in a return, so the accumulator (the number) is intact for
            // the next comparison whenever a block is skipped.
            p.push(jump(BPF_JEQ_K, r.nr as u32, 0, skip));
            p.extend(block);
        }
        p.push(stmt(BPF_RET_K, libc::SECCOMP_RET_ALLOW));
        return Ok(());
    }
    let mid = rules.len() / 2;
    let (left, right) = rules.split_at(mid);
    // nr >= right[0]: jump over the left half (a JA, whose offset is 32 bits wide).
    let mut l = Vec::new();
    search(left, &mut l)?;
    p.push(jump(BPF_JGE_K, right[0].nr as u32, 0, 1));
    p.push(stmt(BPF_JA, l.len() as u32));
    p.extend(l);
    search(right, p)
}

/// One instruction of an alternative, before its jump offsets are known.
enum Step {
    Plain(sock_filter),
    /// A comparison; the alternative fails when it is false.
    FailUnless(u16, u32),
    /// A comparison; the alternative fails when it is true.
    FailIf(u16, u32),
}

/// The code for one rule, entered when the number matched. Ends in a return on every
/// path: the rule's errno when any alternative holds, else allow.
fn rule_block(r: &Rule) -> Result<Vec<sock_filter>, String> {
    let deny = || {
        if r.notify {
            stmt(BPF_RET_K, libc::SECCOMP_RET_USER_NOTIF)
        } else {
            stmt(BPF_RET_K, SECCOMP_RET_ERRNO | (r.errno as u32 & 0xffff))
        }
    };
    if r.when.is_empty() && r.notify_when.is_empty() {
        return Ok(vec![deny()]);
    }
    let notify = || stmt(BPF_RET_K, libc::SECCOMP_RET_USER_NOTIF);
    let alternatives = r
        .when
        .iter()
        .map(|a| (a, deny()))
        .chain(r.notify_when.iter().map(|a| (a, notify())));
    let mut out = Vec::new();
    for (all, action) in alternatives {
        let mut alt: Vec<Step> = Vec::new();
        for c in all {
            let lo = ARGS_OFFSET + 8 * c.arg as u32;
            let load = |off: u32| Step::Plain(stmt(BPF_LD_W_ABS, off));
            match c.cmp {
                Cmp::HasBits(m) => {
                    for (off, part) in [(lo, m as u32), (lo + 4, (m >> 32) as u32)] {
                        if part != 0 {
                            alt.push(load(off));
                            alt.push(Step::Plain(stmt(BPF_ALU_AND_K, part)));
                            alt.push(Step::FailUnless(BPF_JEQ_K, part));
                        }
                    }
                }
                Cmp::Eq32(v) => {
                    alt.push(load(lo));
                    alt.push(Step::FailUnless(BPF_JEQ_K, v as u32));
                }
                Cmp::Ne32(v) => {
                    alt.push(load(lo));
                    alt.push(Step::FailIf(BPF_JEQ_K, v as u32));
                }
                Cmp::Gt32(v) => {
                    alt.push(load(lo));
                    alt.push(Step::FailUnless(BPF_JGT_K, v as u32));
                }
                Cmp::Lt32(v) => {
                    alt.push(load(lo));
                    alt.push(Step::FailIf(BPF_JGE_K, v as u32));
                }
                Cmp::MaskedNe32(m, v) => {
                    alt.push(load(lo));
                    alt.push(Step::Plain(stmt(BPF_ALU_AND_K, m as u32)));
                    alt.push(Step::FailIf(BPF_JEQ_K, v as u32));
                }
            }
        }
        alt.push(Step::Plain(action));
        // A failed comparison jumps to the end of this alternative: the next one, or the
        // final allow.
        let n = alt.len();
        for (i, step) in alt.into_iter().enumerate() {
            let off = || {
                u8::try_from(n - i - 1)
                    .map_err(|_| format!("seccomp: the checks of {} are too long", r.name))
            };
            out.push(match step {
                Step::Plain(ins) => ins,
                Step::FailUnless(code, k) => jump(code, k, 0, off()?),
                Step::FailIf(code, k) => jump(code, k, off()?, 0),
            });
        }
    }
    out.push(stmt(BPF_RET_K, libc::SECCOMP_RET_ALLOW));
    Ok(out)
}

/// A filter that allows everything (the floor any filter costs; for benchmarks).
pub fn allow_all() -> BpfProgram {
    vec![stmt(BPF_RET_K, libc::SECCOMP_RET_ALLOW)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(f: &Filter) -> Vec<&str> {
        f.rules.iter().map(|r| r.name.as_str()).collect()
    }

    fn loopback() -> Policy<'static> {
        Policy {
            net: Some(NetMode::Loopback),
            ..Policy::default()
        }
    }

    #[test]
    fn default_list_covers_the_issue() {
        let f = filter(&loopback());
        let n = names(&f);
        // Every syscall of the deny list (each one is also called in a cell by
        // tests/layers.rs, with the errno it must get), the namespace calls, and those
        // refused by argument.
        let deny = DENY.iter().flat_map(|(_, names)| names.iter());
        for must in
            deny.chain(NS_DENY)
                .chain(&["clone", "clone3", "personality", "ioctl", "socket"])
        {
            assert!(n.contains(must), "{must} missing from {n:?}");
        }
        // Hot syscalls are never in the list (openat is, for its mode argument only).
        for hot in ["read", "write", "getppid", "mmap", "futex", "execve"] {
            assert!(!n.contains(&hot), "{hot} must not be filtered");
        }
    }

    #[test]
    fn errnos_and_argument_checks() {
        let f = filter(&loopback());
        let get = |n: &str| f.rules.iter().find(|r| r.name == n).expect(n).clone();
        assert_eq!(get("clone3").errno, libc::ENOSYS);
        assert_eq!(get("mount").errno, libc::EPERM);
        assert!(get("mount").when.is_empty());
        assert_eq!(
            get("ioctl").when,
            vec![
                vec![c(1, Cmp::Eq32(0x5412))],
                vec![c(1, Cmp::Eq32(0x541C))],
                vec![c(1, Cmp::Eq32(0x5423))],
                vec![c(1, Cmp::Eq32(0x541D))]
            ]
        );
        let clone = get("clone");
        assert_eq!(clone.when.len(), 7);
        assert!(clone
            .when
            .contains(&vec![c(0, Cmp::HasBits(libc::CLONE_NEWUSER as u64))]));
        // Only these have argument checks: everything else stays cacheable.
        let mut with_args: Vec<&str> = f
            .rules
            .iter()
            .filter(|r| !r.when.is_empty())
            .map(|r| r.name.as_str())
            .collect();
        with_args.sort();
        assert_eq!(
            with_args,
            vec![
                "chmod",
                "clone",
                "creat",
                "fchmod",
                "fchmodat",
                "fchmodat2",
                "ioctl",
                "mkdir",
                "mkdirat",
                "mknod",
                "mknodat",
                "open",
                "openat",
                "personality",
                "socket"
            ]
        );
        // A set-uid or set-gid bit in a created file's mode is refused; openat's mode is
        // its fourth argument and counts only with O_CREAT or O_TMPFILE.
        let openat = get("openat");
        assert!(openat.when.contains(&vec![
            c(2, Cmp::HasBits(libc::O_CREAT as u64)),
            c(3, Cmp::HasBits(libc::S_ISUID as u64))
        ]));
        assert_eq!(get("fchmodat").when.len(), 2);
        assert_eq!(get("openat2").errno, libc::ENOSYS);
    }

    #[test]
    fn sockets_only_restricted_without_host_network() {
        let host = filter(&Policy {
            net: Some(NetMode::Host),
            ..Policy::default()
        });
        assert!(!names(&host).contains(&"socket"));
        let none = filter(&Policy {
            net: Some(NetMode::None),
            ..Policy::default()
        });
        assert!(names(&none).contains(&"socket"));
    }

    #[test]
    fn profile_deny_and_allow() {
        let deny = vec!["chroot".to_string(), "mount".to_string()];
        let allow = vec!["ptrace".to_string(), "personality".to_string()];
        let f = filter(&Policy {
            net: Some(NetMode::None),
            deny: &deny,
            allow: &allow,
            allow_userns: false,
            container: false,
        });
        let n = names(&f);
        assert!(n.contains(&"chroot"));
        assert_eq!(n.iter().filter(|x| **x == "mount").count(), 1);
        assert!(!n.contains(&"ptrace"));
        assert!(!n.contains(&"personality"));
    }

    #[test]
    fn allow_userns_gives_back_namespaces_only() {
        let f = filter(&Policy {
            net: Some(NetMode::None),
            allow_userns: true,
            ..Policy::default()
        });
        let n = names(&f);
        for gone in ["unshare", "setns", "clone"] {
            assert!(!n.contains(&gone));
        }
        assert!(n.contains(&"mount"));
        assert!(n.contains(&"clone3"));
    }

    #[test]
    fn one_program_that_checks_the_abi_first() {
        let f = filter(&loopback());
        let progs = compile(&f).expect("compile");
        assert_eq!(progs.len(), 1);
        let p = &progs[0];
        // The arch is loaded and compared first.
        assert_eq!(p[0], stmt(BPF_LD_W_ABS, 4));
        assert_eq!(p[1].k, AUDIT_ARCH);
        // Another ABI (i386 `int 0x80` on x86_64, AArch32 on aarch64) kills the process,
        // whatever the number.
        let other = if cfg!(target_arch = "x86_64") {
            3 | 0x4000_0000 // AUDIT_ARCH_I386
        } else {
            40 | 0x4000_0000 // AUDIT_ARCH_ARM
        };
        for nr in [0, libc::SYS_getppid as u32, libc::SYS_clone3 as u32, 600] {
            assert_eq!(
                run_arch(p, other, nr, [0; 6]),
                libc::SECCOMP_RET_KILL_PROCESS,
                "nr {nr}"
            );
        }
        if cfg!(target_arch = "x86_64") {
            // An x32 call gets EPERM, a call whose x86_64 number is allowed included.
            for nr in [libc::SYS_getppid as u32, libc::SYS_read as u32] {
                assert_eq!(
                    run(p, X32_SYSCALL_BIT | nr, [0; 6]),
                    SECCOMP_RET_ERRNO | libc::EPERM as u32
                );
            }
        }
        // The unconditional ENOSYS rules are in the search like every other rule.
        assert_eq!(
            run(p, libc::SYS_clone3 as u32, [0; 6]),
            SECCOMP_RET_ERRNO | libc::ENOSYS as u32
        );
        assert_eq!(
            run(p, libc::SYS_getppid as u32, [0; 6]),
            libc::SECCOMP_RET_ALLOW
        );
    }

    /// [`run_arch`] with the native arch.
    fn run(p: &[sock_filter], nr: u32, args: [u64; 6]) -> u32 {
        run_arch(p, AUDIT_ARCH, nr, args)
    }

    /// A small classic-BPF interpreter for the instructions the compiler emits.
    fn run_arch(p: &[sock_filter], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&nr.to_ne_bytes());
        data[4..8].copy_from_slice(&arch.to_ne_bytes());
        for (i, a) in args.iter().enumerate() {
            data[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_le_bytes());
        }
        let (mut acc, mut pc) = (0u32, 0usize);
        loop {
            let ins = &p[pc];
            pc += 1;
            let cond = |holds: bool| {
                if holds {
                    ins.jt as usize
                } else {
                    ins.jf as usize
                }
            };
            match ins.code {
                BPF_LD_W_ABS => {
                    let k = ins.k as usize;
                    acc = u32::from_ne_bytes(data[k..k + 4].try_into().unwrap());
                }
                BPF_ALU_AND_K => acc &= ins.k,
                BPF_JA => pc += ins.k as usize,
                BPF_JEQ_K => pc += cond(acc == ins.k),
                BPF_JGE_K => pc += cond(acc >= ins.k),
                BPF_JGT_K => pc += cond(acc > ins.k),
                BPF_RET_K => return ins.k,
                c => panic!("unexpected BPF code {c:#x}"),
            }
        }
    }

    /// The action the rule's conditions give for `args` (what the program must return).
    fn action(r: &Rule, args: [u64; 6]) -> u32 {
        let ret = if r.notify {
            libc::SECCOMP_RET_USER_NOTIF
        } else {
            SECCOMP_RET_ERRNO | r.errno as u32
        };
        if (r.when.is_empty() && r.notify_when.is_empty()) || holds(&r.when, args) {
            ret
        } else if holds(&r.notify_when, args) {
            libc::SECCOMP_RET_USER_NOTIF
        } else {
            libc::SECCOMP_RET_ALLOW
        }
    }

    fn holds(when: &[Vec<Cond>], args: [u64; 6]) -> bool {
        when.iter().any(|all| {
            all.iter().all(|c| {
                let a = args[c.arg as usize];
                let lo = a as u32 as u64;
                match c.cmp {
                    Cmp::HasBits(m) => a & m == m,
                    Cmp::Eq32(v) => lo == v,
                    Cmp::Ne32(v) => lo != v,
                    Cmp::Gt32(v) => lo > v,
                    Cmp::Lt32(v) => lo < v,
                    Cmp::MaskedNe32(m, v) => lo & m != v,
                }
            })
        })
    }

    #[test]
    fn container_tier_sockets_connect_and_fast_open() {
        let f = filter(&Policy {
            net: Some(NetMode::Proxy),
            container: true,
            ..Policy::default()
        });
        assert!(notifies(&f));
        let p = program(&f).expect("compiles");
        let nr = |n: &str| syscalls::number(n).expect(n) as u32;
        let eperm = SECCOMP_RET_ERRNO | libc::EPERM as u32;
        let allow = libc::SECCOMP_RET_ALLOW;
        let notif = libc::SECCOMP_RET_USER_NOTIF;
        let (inet, inet6, unix) = (
            libc::AF_INET as u64,
            libc::AF_INET6 as u64,
            libc::AF_UNIX as u64,
        );
        let stream = libc::SOCK_STREAM as u64;
        let flags = (libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC) as u64;
        for (args, want) in [
            ([inet, stream, 0], notif),
            ([inet6, stream | flags, libc::IPPROTO_TCP as u64], notif),
            ([unix, stream | flags, 0], allow),
            ([unix, libc::SOCK_DGRAM as u64, 0], allow),
            ([inet, libc::SOCK_DGRAM as u64, 0], eperm),
            ([inet6, libc::SOCK_DGRAM as u64 | flags, 0], eperm),
            ([inet, libc::SOCK_RAW as u64, 1], eperm),
            ([inet, stream, libc::IPPROTO_SCTP as u64], eperm),
            ([inet, stream, IPPROTO_MPTCP], eperm),
            (
                [
                    libc::AF_NETLINK as u64,
                    libc::SOCK_RAW as u64,
                    NETLINK_ROUTE,
                ],
                eperm,
            ),
            ([libc::AF_PACKET as u64, libc::SOCK_RAW as u64, 0], eperm),
        ] {
            let got = run(&p, nr("socket"), [args[0], args[1], args[2], 0, 0, 0]);
            assert_eq!(got, want, "socket{args:?}");
        }
        assert_eq!(
            run(&p, nr("connect"), [3, 0, 16, 0, 0, 0]),
            libc::SECCOMP_RET_USER_NOTIF
        );
        assert_eq!(run(&p, nr("sendto"), [3, 0, 1, MSG_FASTOPEN, 0, 0]), eperm);
        assert_eq!(run(&p, nr("sendto"), [3, 0, 1, 0, 0, 0]), allow);
        assert_eq!(run(&p, nr("sendmsg"), [3, 0, MSG_FASTOPEN, 0, 0, 0]), eperm);
        // The full tier keeps UDP and netlink route in its own network namespace.
        let full = filter(&Policy {
            net: Some(NetMode::Proxy),
            ..Policy::default()
        });
        assert!(!notifies(&full));
        let p = program(&full).expect("compiles");
        assert_eq!(
            run(
                &p,
                nr("socket"),
                [inet, libc::SOCK_DGRAM as u64, 0, 0, 0, 0]
            ),
            allow
        );
        assert_eq!(run(&p, nr("connect"), [3, 0, 16, 0, 0, 0]), allow);
    }

    #[test]
    fn compiled_program_matches_the_rules() {
        for container in [false, true] {
            program_matches_the_rules(container);
        }
    }

    fn program_matches_the_rules(container: bool) {
        let deny = vec!["chroot".to_string()];
        let f = filter(&Policy {
            deny: &deny,
            container,
            ..loopback()
        });
        let p = program(&f).expect("compiles");
        // The container tier adds socket checks, connect and the sendto family.
        let most = if container { 480 } else { 400 };
        assert!(p.len() < most, "{} instructions", p.len());
        // Arguments that hit or miss each condition: every value a rule compares with,
        // one more and one less, all bits, no bits.
        let mut values: Vec<u64> = vec![0, u64::MAX, 0xffff_ffff, 1 << 40];
        for r in &f.rules {
            for c in r.when.iter().chain(&r.notify_when).flatten() {
                let v = match c.cmp {
                    Cmp::HasBits(v)
                    | Cmp::Eq32(v)
                    | Cmp::Ne32(v)
                    | Cmp::Gt32(v)
                    | Cmp::Lt32(v)
                    | Cmp::MaskedNe32(_, v) => v,
                };
                values.extend([v, v.wrapping_add(1), v.wrapping_sub(1), v | (1 << 35)]);
            }
        }
        let mut checked = 0;
        for r in &f.rules {
            for (i, v) in values.iter().enumerate() {
                for arg in 0..4 {
                    let mut args = [values[(i + 3) % values.len()]; 6];
                    args[arg] = *v;
                    // Set every argument the rule checks, for the multi-condition rules.
                    let got = run(&p, r.nr as u32, args);
                    let want = action(r, args);
                    assert_eq!(got, want, "{} args {args:x?}", r.name);
                    checked += 1;
                }
            }
        }
        assert!(checked > 1000);
        // Numbers no rule names are allowed, including the ones between rule numbers.
        let named: Vec<u32> = f.rules.iter().map(|r| r.nr as u32).collect();
        for nr in 0..600u32 {
            if !named.contains(&nr) {
                assert_eq!(run(&p, nr, [0; 6]), libc::SECCOMP_RET_ALLOW, "nr {nr}");
            }
        }
        // A hot call stays short: getppid passes in a handful of instructions.
        assert_eq!(
            run(&p, libc::SYS_getppid as u32, [0; 6]),
            libc::SECCOMP_RET_ALLOW
        );
    }

    #[test]
    fn describe_is_readable() {
        let d = describe(&filter(&loopback())).join("\n");
        assert!(
            d.contains("ioctl if arg1 == TIOCSTI || arg1 == TIOCLINUX || arg1 == TIOCSETD || arg1 == TIOCCONS -> EPERM"),
            "{d}"
        );
        assert!(d.contains("clone3 -> ENOSYS"), "{d}");
        assert!(d.contains("arg0 has CLONE_NEWUSER"), "{d}");
    }
}
