//! taskcell-probe: a small helper the tests run inside cells to call one syscall and print
//! the errno it got (0 = success). Arguments are chosen so that no call changes anything
//! outside the probe; where the kernel would fail anyway, it fails with an errno other than
//! the filter's where possible (EFAULT, EBADF, EINVAL), so the tests can tell them apart.
//!
//! Usage:
//!   taskcell-probe sys NAME...         one line `NAME ERRNO` per call
//!   taskcell-probe denied              every call of the deny list
//!   taskcell-probe kill PID SIG        errno of kill(PID, SIG)
//!   taskcell-probe connect PORT        errno of a TCP connect to 127.0.0.1:PORT
//!   taskcell-probe tcp PORT            bind+listen on PORT, then connect to it
//!   taskcell-probe tcp-ephemeral       bind+listen on port 0, then connect to it
//!   taskcell-probe abstract NAME       connect to the abstract unix socket NAME
//!   taskcell-probe connect-race GOOD BAD N
//!                                      N connects from one sockaddr whose port a second
//!                                      thread flips between GOOD and BAD all the time;
//!                                      prints `ok K peers P...` (the ports connected to)
//!   taskcell-probe connect-swap BAD N  N rounds: one thread connects fd K to 127.0.0.1:BAD
//!                                      (and to AF_UNSPEC, which disconnects a TCP
//!                                      socket) while another dup2()s a unix socket and
//!                                      a fresh TCP socket to K all the time; prints
//!                                      `reached R` (TCP sockets connected to BAD)
//!   taskcell-probe udp PORT            errno of socket(AF_INET, SOCK_DGRAM) + sendto
//!   taskcell-probe without-getfd CMD...
//!                                      exec CMD under a seccomp filter that refuses
//!                                      pidfd_getfd with EPERM, as Docker's default
//!                                      profile does without CAP_SYS_PTRACE
//!   taskcell-probe without-landlock CMD...
//!                                      ... landlock_* with ENOSYS, as gVisor
//!   taskcell-probe without-newcgroup CMD...
//!                                      ... clone/unshare with CLONE_NEWCGROUP with
//!                                      EINVAL, as gVisor without a cgroup2 mount
//!   taskcell-probe getppid-loop N      ns per getppid over N calls
//!   taskcell-probe allow-all-loop N    the same under an allow-everything seccomp filter
//!   taskcell-probe i386                getpid through int 0x80 (x86_64)

use std::io::Write;
use std::time::Instant;

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
}

fn ret(r: libc::c_long) -> i32 {
    if r < 0 {
        errno()
    } else {
        0
    }
}

fn sys(nr: libc::c_long, a: [u64; 6]) -> i32 {
    // SAFETY: raw syscalls with integer arguments; pointer arguments are NULL or point to
    // locals of the caller, and none of the calls used here writes through a NULL pointer.
    ret(unsafe { libc::syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]) })
}

/// (name, call) for every syscall the default filter refuses.
fn call(name: &str) -> Option<i32> {
    use libc::*;
    let neg = u64::MAX; // -1 as an fd
    Some(match name {
        "mount" => sys(SYS_mount, [0; 6]),
        "umount2" => sys(SYS_umount2, [0, 0xffff_ffff, 0, 0, 0, 0]),
        "pivot_root" => sys(SYS_pivot_root, [0; 6]),
        "move_mount" => sys(SYS_move_mount, [neg, 0, neg, 0, 0xffff_ffff, 0]),
        "open_tree" => sys(SYS_open_tree, [neg, 0, 0xffff_ffff, 0, 0, 0]),
        "fsopen" => sys(SYS_fsopen, [0, 0xffff_ffff, 0, 0, 0, 0]),
        "fsconfig" => sys(SYS_fsconfig, [neg, 0, 0, 0, 0, 0]),
        "fsmount" => sys(SYS_fsmount, [neg, 0xffff_ffff, 0, 0, 0, 0]),
        "fspick" => sys(SYS_fspick, [neg, 0, 0xffff_ffff, 0, 0, 0]),
        "mount_setattr" => sys(SYS_mount_setattr, [neg, 0, 0xffff_ffff, 0, 0, 0]),
        "unshare" => sys(SYS_unshare, [CLONE_NEWUSER as u64, 0, 0, 0, 0, 0]),
        "setns" => sys(SYS_setns, [neg, 0, 0, 0, 0, 0]),
        "clone-newuser" => clone_with(CLONE_NEWUSER as u64),
        "clone-newns" => clone_with(CLONE_NEWNS as u64),
        "clone-newnet" => clone_with(CLONE_NEWNET as u64),
        "clone-plain" => clone_with(0),
        "clone3" => sys(SYS_clone3, [0; 6]),
        "ptrace" => sys(SYS_ptrace, [PTRACE_PEEKDATA as u64, 0, 0, 0, 0, 0]),
        "process_vm_readv" => sys(
            SYS_process_vm_readv,
            [std::process::id() as u64, 0, 0, 0, 0, 0],
        ),
        "process_vm_writev" => sys(
            SYS_process_vm_writev,
            [std::process::id() as u64, 0, 0, 0, 0, 0],
        ),
        "pidfd_getfd" => sys(SYS_pidfd_getfd, [neg, 0, 0, 0, 0, 0]),
        "bpf" => sys(SYS_bpf, [0xffff, 0, 0, 0, 0, 0]),
        "perf_event_open" => sys(SYS_perf_event_open, [0, 0, neg, neg, 0, 0]),
        // UFFD_USER_MODE_ONLY: allowed for unprivileged users by default.
        "userfaultfd" => sys(SYS_userfaultfd, [1 | O_CLOEXEC as u64, 0, 0, 0, 0, 0]),
        "io_uring_setup" => sys(SYS_io_uring_setup, [0; 6]),
        "io_uring_enter" => sys(SYS_io_uring_enter, [neg, 0, 0, 0, 0, 0]),
        "io_uring_register" => sys(SYS_io_uring_register, [neg, 0, 0, 0, 0, 0]),
        "keyctl" => sys(SYS_keyctl, [0xffff, 0, 0, 0, 0, 0]),
        "add_key" => sys(SYS_add_key, [0; 6]),
        "request_key" => sys(SYS_request_key, [0; 6]),
        "kexec_load" => sys(SYS_kexec_load, [0, 0, 0, 0xffff_ffff, 0, 0]),
        "kexec_file_load" => sys(SYS_kexec_file_load, [neg, neg, 0, 0, 0xffff_ffff, 0]),
        "init_module" => sys(SYS_init_module, [0; 6]),
        "finit_module" => sys(SYS_finit_module, [neg, 0, 0xffff_ffff, 0, 0, 0]),
        "delete_module" => sys(SYS_delete_module, [0; 6]),
        "open_by_handle_at" => sys(SYS_open_by_handle_at, [neg, 0, 0, 0, 0, 0]),
        "name_to_handle_at" => sys(SYS_name_to_handle_at, [neg, 0, 0, 0, 0xffff_ffff, 0]),
        "acct" => sys(SYS_acct, [0; 6]),
        "swapon" => sys(SYS_swapon, [0; 6]),
        "swapoff" => sys(SYS_swapoff, [0; 6]),
        // Wrong magic numbers: the kernel would refuse even with CAP_SYS_BOOT.
        "reboot" => sys(SYS_reboot, [0; 6]),
        "syslog" => sys(SYS_syslog, [0xffff, 0, 0, 0, 0, 0]),
        "quotactl" => sys(SYS_quotactl, [0; 6]),
        "settimeofday" => sys(SYS_settimeofday, [0; 6]),
        "clock_settime" => sys(SYS_clock_settime, [0xffff, 0, 0, 0, 0, 0]),
        "adjtimex" => sys(SYS_adjtimex, [0; 6]),
        "clock_adjtime" => sys(SYS_clock_adjtime, [0xffff, 0, 0, 0, 0, 0]),
        "personality" => {
            let r = sys(SYS_personality, [ADDR_NO_RANDOMIZE as u64, 0, 0, 0, 0, 0]);
            // Put the default back if it worked.
            sys(SYS_personality, [0; 6]);
            r
        }
        "personality-query" => sys(SYS_personality, [0xffff_ffff, 0, 0, 0, 0, 0]),
        "ioctl-tiocsti" => sys(SYS_ioctl, [neg, TIOCSTI, 0, 0, 0, 0]),
        "ioctl-tiocsti-high" => sys(SYS_ioctl, [neg, TIOCSTI | (1 << 32), 0, 0, 0, 0]),
        "ioctl-tioclinux" => sys(SYS_ioctl, [neg, TIOCLINUX, 0, 0, 0, 0]),
        "ioctl-tcgets" => sys(SYS_ioctl, [neg, TCGETS, 0, 0, 0, 0]),
        "ioctl-tiocsetd" => sys(SYS_ioctl, [neg, TIOCSETD, 0, 0, 0, 0]),
        "ioctl-tioccons" => sys(SYS_ioctl, [neg, TIOCCONS, 0, 0, 0, 0]),
        #[cfg(target_arch = "x86_64")]
        "modify_ldt" => sys(SYS_modify_ldt, [0xffff, 0, 0, 0, 0, 0]),
        "socket-packet" => open_socket(AF_PACKET, SOCK_DGRAM, 0),
        "socket-vsock" => open_socket(AF_VSOCK, SOCK_STREAM, 0),
        "socket-alg" => open_socket(AF_ALG, SOCK_SEQPACKET, 0),
        "socket-netlink-audit" => open_socket(AF_NETLINK, SOCK_RAW, NETLINK_AUDIT),
        "socket-netlink-route" => open_socket(AF_NETLINK, SOCK_RAW, NETLINK_ROUTE),
        "socket-mptcp" => open_socket(AF_INET, SOCK_STREAM, 262),
        "socket-inet" => open_socket(AF_INET, SOCK_STREAM, 0),
        "socket-unix" => open_socket(AF_UNIX, SOCK_STREAM, 0),
        "x32" => x32(),
        "getppid" => sys(SYS_getppid, [0; 6]),
        _ => return None,
    })
}

/// What `denied` runs after every syscall of the filter's deny list
/// (`taskcell::spec::seccomp::DENY`, those this probe knows how to call): the namespace
/// calls, the argument-checked forms, and calls that must keep working.
const VARIANTS: &[&str] = &[
    "setns",
    "clone-newuser",
    "clone-newns",
    "clone-newnet",
    "clone3",
    "personality",
    "ioctl-tiocsti",
    "ioctl-tiocsti-high",
    "ioctl-tioclinux",
    "ioctl-tiocsetd",
    "ioctl-tioccons",
    "socket-packet",
    "socket-vsock",
    "socket-alg",
    "socket-netlink-audit",
    "socket-mptcp",
    "x32",
    // Last: without the filter it moves the probe into a new user namespace.
    "unshare",
    // Allowed: these must keep working.
    "clone-plain",
    "personality-query",
    "ioctl-tcgets",
    "socket-netlink-route",
    "socket-inet",
    "socket-unix",
    "getppid",
];

fn clone_with(flags: u64) -> i32 {
    // SAFETY: clone without CLONE_VM and a NULL stack behaves like fork; the child exits at
    // once with _exit, touching nothing.
    let pid = unsafe { libc::syscall(libc::SYS_clone, flags | libc::SIGCHLD as u64, 0, 0, 0, 0) };
    if pid == 0 {
        // SAFETY: leave the child immediately.
        unsafe { libc::_exit(0) }
    }
    if pid < 0 {
        return errno();
    }
    let mut st = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid as i32, &mut st, 0) };
    0
}

fn open_socket(domain: i32, ty: i32, proto: i32) -> i32 {
    // SAFETY: socket takes integers; the fd is closed right away.
    let fd = unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, proto) };
    if fd < 0 {
        return errno();
    }
    // SAFETY: closing the fd we got.
    unsafe { libc::close(fd) };
    0
}

fn x32() -> i32 {
    if cfg!(target_arch = "x86_64") {
        // x32 getpid: __X32_SYSCALL_BIT | 39.
        sys(0x4000_0000 | 39, [0; 6])
    } else {
        libc::ENOSYS
    }
}

#[cfg(target_arch = "x86_64")]
fn i386_getpid() -> i64 {
    let mut ret: i64 = 20; // __NR_getpid on i386
                           // SAFETY: int 0x80 with eax = 20 (getpid) takes no pointer arguments.
    unsafe {
        std::arch::asm!("int 0x80", inout("rax") ret, options(nostack));
    }
    ret
}

#[cfg(not(target_arch = "x86_64"))]
fn i386_getpid() -> i64 {
    -(libc::ENOSYS as i64)
}

fn sockaddr(port: u16) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes([127, 0, 0, 1]),
        },
        sin_zero: [0; 8],
    }
}

fn connect(port: u16) -> i32 {
    // SAFETY: a fresh socket, a sockaddr_in on the stack with its exact size.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return errno();
        }
        let a = sockaddr(port);
        let r = libc::connect(
            fd,
            (&a as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as u32,
        );
        let e = if r < 0 { errno() } else { 0 };
        libc::close(fd);
        e
    }
}

/// A sockaddr_in whose port another thread rewrites while connect() reads it.
#[repr(C)]
struct RaceAddr {
    family: u16,
    port: std::sync::atomic::AtomicU16,
    addr: [u8; 4],
    zero: [u8; 8],
}

static RACE_ADDR: RaceAddr = RaceAddr {
    family: libc::AF_INET as u16,
    port: std::sync::atomic::AtomicU16::new(0),
    addr: [127, 0, 0, 1],
    zero: [0; 8],
};

/// The TOCTOU attack on a user-notification connect check: the sockaddr's port is flipped
/// between GOOD and BAD by another thread all the time, also while connect() waits for
/// the supervisor. Prints how many connects succeeded and the distinct peer ports they
/// reached (getpeername).
fn connect_race(good: u16, bad: u16, n: u64) {
    use std::sync::atomic::{AtomicBool, Ordering};
    static STOP: AtomicBool = AtomicBool::new(false);
    let flipper = std::thread::spawn(move || {
        let mut i = 0u64;
        while !STOP.load(Ordering::Relaxed) {
            let p = if i.is_multiple_of(2) { bad } else { good };
            RACE_ADDR.port.store(p.to_be(), Ordering::Relaxed);
            i += 1;
        }
    });
    let mut oks = 0;
    let mut peers = std::collections::BTreeSet::new();
    for i in 0..n {
        // Start each connect from the allowed port: a check reading it first passes.
        RACE_ADDR.port.store(
            if i % 2 == 0 { good } else { bad }.to_be(),
            Ordering::Relaxed,
        );
        // SAFETY: a fresh socket; RACE_ADDR is a static with sockaddr_in's layout (16
        // bytes); its port is an atomic the other thread writes concurrently.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
            if fd < 0 {
                continue;
            }
            let r = libc::connect(fd, (&RACE_ADDR as *const RaceAddr).cast(), 16);
            if r == 0 {
                oks += 1;
                let mut peer: libc::sockaddr_in = std::mem::zeroed();
                let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
                if libc::getpeername(fd, (&mut peer as *mut libc::sockaddr_in).cast(), &mut len)
                    == 0
                {
                    peers.insert(u16::from_be(peer.sin_port));
                }
            }
            libc::close(fd);
        }
    }
    STOP.store(true, Ordering::SeqCst);
    let _ = flipper.join();
    let list: Vec<String> = peers.iter().map(|p| p.to_string()).collect();
    println!("ok {oks} peers {}", list.join(" "));
}

/// The fd-swap attack on a user-notification connect check that lets unix sockets
/// through (CONTINUE): the check sees a unix socket at the number, the kernel then acts on
/// a TCP socket swapped in; AF_UNSPEC connects try to disconnect one to reuse it.
fn connect_swap(bad: u16, n: u64) {
    use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
    static STOP: AtomicBool = AtomicBool::new(false);
    static TCP: AtomicI32 = AtomicI32::new(-1);
    // SAFETY: socket and dup with integer arguments; the fds stay open for the run.
    let (unix, slot) = unsafe {
        let u = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        (u, libc::dup(u))
    };
    if unix < 0 || slot < 0 {
        println!("setup {}", errno());
        return;
    }
    let swapper = std::thread::spawn(move || {
        while !STOP.load(Ordering::Relaxed) {
            let t = TCP.load(Ordering::Relaxed);
            // SAFETY: dup2 onto our own slot fd.
            unsafe {
                if t >= 0 {
                    libc::dup2(t, slot);
                }
                libc::dup2(unix, slot);
            }
        }
    });
    let bad_addr = sockaddr(bad);
    let unspec = libc::sockaddr {
        sa_family: libc::AF_UNSPEC as libc::sa_family_t,
        sa_data: [0; 14],
    };
    let mut reached = 0;
    for i in 0..n {
        // SAFETY: fresh sockets and sockaddrs on the stack with their exact sizes.
        unsafe {
            let t = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
            if t < 0 {
                continue;
            }
            TCP.store(t, Ordering::Relaxed);
            for _ in 0..20 {
                if i % 2 == 0 {
                    libc::connect(slot, (&unspec as *const libc::sockaddr).cast(), 16);
                }
                libc::connect(
                    slot,
                    (&bad_addr as *const libc::sockaddr_in).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as u32,
                );
            }
            let mut peer: libc::sockaddr_in = std::mem::zeroed();
            let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            if libc::getpeername(t, (&mut peer as *mut libc::sockaddr_in).cast(), &mut len) == 0
                && u16::from_be(peer.sin_port) == bad
            {
                reached += 1;
            }
            TCP.store(-1, Ordering::Relaxed);
            libc::close(t);
        }
    }
    STOP.store(true, Ordering::SeqCst);
    let _ = swapper.join();
    println!("reached {reached}");
}

/// Exec `cmd` under a seccomp filter that refuses what a container runtime refuses:
/// pidfd_getfd (EPERM, Docker's default profile), Landlock (ENOSYS, gVisor), or clone and
/// unshare with CLONE_NEWCGROUP (EINVAL, gVisor without a cgroup2 mount).
fn without(what: &str, cmd: &[String]) -> ! {
    use seccompiler::sock_filter;
    let f = |code: u16, k: u32, jt: u8, jf: u8| sock_filter { code, jt, jf, k };
    const LD_NR: u16 = 0x20;
    const JEQ: u16 = 0x15;
    const RET: u16 = 0x06;
    const AND: u16 = 0x54;
    const ERRNO: u32 = 0x0005_0000;
    let allow = f(RET, libc::SECCOMP_RET_ALLOW, 0, 0);
    let prog = match what {
        "without-getfd" => vec![
            f(LD_NR, 0, 0, 0),
            f(JEQ, libc::SYS_pidfd_getfd as u32, 0, 1),
            f(RET, ERRNO | libc::EPERM as u32, 0, 0),
            allow,
        ],
        "without-landlock" => vec![
            f(LD_NR, 0, 0, 0),
            f(JEQ, libc::SYS_landlock_create_ruleset as u32, 3, 0),
            f(JEQ, libc::SYS_landlock_add_rule as u32, 2, 0),
            f(JEQ, libc::SYS_landlock_restrict_self as u32, 1, 0),
            allow,
            f(RET, ERRNO | libc::ENOSYS as u32, 0, 0),
        ],
        _ => vec![
            f(LD_NR, 0, 0, 0),
            f(JEQ, libc::SYS_clone as u32, 1, 0),
            f(JEQ, libc::SYS_unshare as u32, 0, 4),
            f(0x20, 16, 0, 0), // A = low 32 bits of args[0]
            f(AND, libc::CLONE_NEWCGROUP as u32, 0, 0),
            f(JEQ, libc::CLONE_NEWCGROUP as u32, 0, 1),
            f(RET, ERRNO | libc::EINVAL as u32, 0, 0),
            allow,
        ],
    };
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    if let Err(e) = taskcell::cell::confine::apply_seccomp(&[prog]) {
        eprintln!("{e}");
        std::process::exit(1);
    }
    let Some(first) = cmd.first() else { usage() };
    let e =
        std::os::unix::process::CommandExt::exec(std::process::Command::new(first).args(&cmd[1..]));
    eprintln!("exec {first}: {e}");
    std::process::exit(127)
}

/// errno of creating a UDP socket and sending one datagram to 127.0.0.1:PORT.
fn udp(port: u16) -> i32 {
    // SAFETY: a fresh socket and a sockaddr on the stack with its exact size.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return errno();
        }
        let a = sockaddr(port);
        let r = libc::sendto(
            fd,
            b"x".as_ptr().cast(),
            1,
            0,
            (&a as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as u32,
        );
        let e = if r < 0 { errno() } else { 0 };
        libc::close(fd);
        e
    }
}

/// bind + listen on `port` (0: ephemeral); returns (errno, the port bound, fd).
fn listen(port: u16) -> (i32, u16, i32) {
    // SAFETY: a fresh socket, sockaddr_in on the stack with its exact size.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return (errno(), 0, -1);
        }
        let a = sockaddr(port);
        let len = std::mem::size_of::<libc::sockaddr_in>() as u32;
        if libc::bind(fd, (&a as *const libc::sockaddr_in).cast(), len) < 0 {
            let e = errno();
            libc::close(fd);
            return (e, 0, -1);
        }
        if libc::listen(fd, 8) < 0 {
            let e = errno();
            libc::close(fd);
            return (e, 0, -1);
        }
        let mut got = sockaddr(0);
        let mut l = len;
        libc::getsockname(fd, (&mut got as *mut libc::sockaddr_in).cast(), &mut l);
        (0, u16::from_be(got.sin_port), fd)
    }
}

fn abstract_connect(name: &str) -> i32 {
    // SAFETY: a fresh socket and a sockaddr_un on the stack, length covering the name.
    unsafe {
        let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return errno();
        }
        let mut a: libc::sockaddr_un = std::mem::zeroed();
        a.sun_family = libc::AF_UNIX as libc::sa_family_t;
        let bytes = name.as_bytes();
        let n = bytes.len().min(a.sun_path.len() - 1);
        for (i, b) in bytes[..n].iter().enumerate() {
            a.sun_path[i + 1] = *b as libc::c_char;
        }
        let len = (std::mem::size_of::<libc::sa_family_t>() + 1 + n) as u32;
        let r = libc::connect(fd, (&a as *const libc::sockaddr_un).cast(), len);
        let e = if r < 0 { errno() } else { 0 };
        libc::close(fd);
        e
    }
}

fn getppid_loop(n: u64) {
    let start = Instant::now();
    for _ in 0..n {
        // SAFETY: getppid has no arguments.
        unsafe { libc::syscall(libc::SYS_getppid) };
    }
    let ns = start.elapsed().as_nanos() as f64 / n.max(1) as f64;
    println!("{ns:.1}");
}

fn usage() -> ! {
    eprintln!("usage: taskcell-probe sys NAME... | denied | kill PID SIG | connect PORT | tcp PORT | tcp-ephemeral | abstract NAME | getppid-loop N | allow-all-loop N | i386");
    std::process::exit(2)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize| -> u64 {
        args.get(i)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| usage())
    };
    let mut out = std::io::stdout().lock();
    match args.first().map(String::as_str) {
        Some("sys") => {
            for n in &args[1..] {
                match call(n) {
                    Some(e) => {
                        let _ = writeln!(out, "{n} {e}");
                    }
                    None => {
                        eprintln!("unknown call {n}");
                        std::process::exit(2)
                    }
                }
            }
        }
        Some("denied") => {
            let deny = taskcell::spec::seccomp::DENY
                .iter()
                .flat_map(|(_, n)| n.iter());
            for n in deny.chain(VARIANTS) {
                if let Some(e) = call(n) {
                    let _ = writeln!(out, "{n} {e}");
                }
            }
        }
        Some("kill") => {
            let (pid, sig) = (num(1) as i32, num(2) as i32);
            // SAFETY: kill takes integers.
            let _ = writeln!(out, "{}", ret(unsafe { libc::kill(pid, sig) } as _));
        }
        Some("connect") => {
            let _ = writeln!(out, "{}", connect(num(1) as u16));
        }
        Some("tcp") | Some("tcp-ephemeral") => {
            let port = if args[0] == "tcp" { num(1) as u16 } else { 0 };
            let (b, p, fd) = listen(port);
            let c = if b == 0 { connect(p) } else { -1 };
            let _ = writeln!(out, "bind {b} connect {c}");
            if fd >= 0 {
                // SAFETY: closing our listener.
                unsafe { libc::close(fd) };
            }
        }
        Some("connect-race") => connect_race(num(1) as u16, num(2) as u16, num(3)),
        Some("connect-swap") => connect_swap(num(1) as u16, num(2)),
        Some(w @ ("without-getfd" | "without-landlock" | "without-newcgroup")) => {
            without(w, &args[1..])
        }
        Some("udp") => {
            let _ = writeln!(out, "{}", udp(num(1) as u16));
        }
        Some("abstract") => {
            let name = args.get(1).cloned().unwrap_or_else(|| usage());
            let _ = writeln!(out, "{}", abstract_connect(&name));
        }
        Some("getppid-loop") => getppid_loop(num(1)),
        Some("allow-all-loop") => {
            // SAFETY: prctl with integer arguments only.
            unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
            if let Err(e) =
                taskcell::cell::confine::apply_seccomp(&[taskcell::spec::seccomp::allow_all()])
            {
                eprintln!("{e}");
                std::process::exit(1);
            }
            getppid_loop(num(1))
        }
        Some("i386") => {
            let r = i386_getpid();
            let _ = writeln!(out, "{r}");
        }
        _ => usage(),
    }
}
