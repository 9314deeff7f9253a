//! A cgroup per cell: where the machine lets taskcell create one (cgroup v2 with a delegated
//! subtree or as root; on a hybrid host as root also the v1 `pids`, `memory` and `cpu`
//! hierarchies), the supervisor creates `taskcell-<pid>-<random>` below its own cgroup,
//! writes the limits, moves the cell's init into it before init forks the worker, reads
//! the limit counters when the cell has ended and removes the cgroup. A cgroup left behind
//! by a taskcell that was killed is removed by the next taskcell that starts.
//!
//! The decision which limit goes where is made in [`crate::plan::limits::enforcement`]; this
//! module computes the file writes from it as data ([`writes`]) and performs them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use nix::unistd::Pid;

use crate::plan::limits::{human_bytes, CgVersion, CgroupLimits, Hit, Machine};

/// The controllers taskcell uses.
pub const CONTROLLERS: [&str; 3] = ["pids", "memory", "cpu"];

/// Where a cell's cgroup for one controller is created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    pub version: CgVersion,
    /// The launcher's own cgroup directory in that hierarchy; the cell's goes below it.
    pub parent: PathBuf,
    /// cgroup v2: the controller must still be enabled in the parent's subtree_control.
    pub enable: bool,
}

/// What the machine offers, controller by controller.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Probe {
    pub places: BTreeMap<&'static str, Place>,
    /// Why a controller is missing, by controller.
    pub missing: BTreeMap<&'static str, String>,
}

/// One file write into the cell's cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    pub controller: &'static str,
    pub file: &'static str,
    pub value: String,
    /// Skipped when the file does not exist (e.g. swap accounting is off).
    pub optional: bool,
}

/// The writes that put `limits` into a cell's cgroup, in order.
pub fn writes(limits: &CgroupLimits) -> Vec<Write> {
    let w = |controller, file, value: String, optional| Write {
        controller,
        file,
        value,
        optional,
    };
    let mut out = Vec::new();
    if let Some((n, _)) = limits.pids_max {
        out.push(w("pids", "pids.max", n.to_string(), false));
    }
    match limits.memory_max {
        Some((b, CgVersion::V2)) => {
            out.push(w("memory", "memory.max", b.to_string(), false));
            // Swap counted: the cell cannot move its memory to swap.
            out.push(w("memory", "memory.swap.max", "0".into(), true));
        }
        Some((b, CgVersion::V1)) => {
            out.push(w("memory", "memory.limit_in_bytes", b.to_string(), false));
            // memory+swap: the same value, so swap adds nothing.
            out.push(w(
                "memory",
                "memory.memsw.limit_in_bytes",
                b.to_string(),
                true,
            ));
        }
        None => {}
    }
    match limits.cpu_milli {
        Some((m, CgVersion::V2)) => {
            let quota = m * crate::plan::limits::CPU_PERIOD_US / 1000;
            out.push(w(
                "cpu",
                "cpu.max",
                format!("{quota} {}", crate::plan::limits::CPU_PERIOD_US),
                false,
            ));
        }
        Some((m, CgVersion::V1)) => {
            let quota = m * crate::plan::limits::CPU_PERIOD_US / 1000;
            out.push(w(
                "cpu",
                "cpu.cfs_period_us",
                crate::plan::limits::CPU_PERIOD_US.to_string(),
                false,
            ));
            out.push(w("cpu", "cpu.cfs_quota_us", quota.to_string(), false));
        }
        None => {}
    }
    out
}

/// cgroup mounts from /proc/self/mountinfo: the v2 mount (root, mount point) and the v1
/// mounts (controllers, root, mount point).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Mounts {
    pub v2: Option<(String, PathBuf)>,
    pub v1: Vec<(Vec<String>, String, PathBuf)>,
}

pub fn parse_mountinfo(text: &str) -> Mounts {
    let mut m = Mounts::default();
    for line in text.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let pre: Vec<&str> = pre.split(' ').collect();
        let post: Vec<&str> = post.split(' ').collect();
        if pre.len() < 5 || post.len() < 3 {
            continue;
        }
        let (root, mnt) = (pre[3].to_string(), PathBuf::from(pre[4]));
        match post[0] {
            "cgroup2" if m.v2.is_none() => m.v2 = Some((root, mnt)),
            "cgroup" => {
                let ctrls = post[2]
                    .split(',')
                    .filter(|o| CONTROLLERS.contains(o))
                    .map(str::to_string)
                    .collect::<Vec<_>>();
                if !ctrls.is_empty() {
                    m.v1.push((ctrls, root, mnt));
                }
            }
            _ => {}
        }
    }
    m
}

/// The launcher's cgroups from /proc/self/cgroup: the v2 path and the v1 path per controller.
pub fn parse_proc_cgroup(text: &str) -> (Option<String>, BTreeMap<String, String>) {
    let mut v2 = None;
    let mut v1 = BTreeMap::new();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if ctrls.is_empty() {
            v2 = Some(path.to_string());
        } else {
            for c in ctrls.split(',') {
                v1.insert(c.to_string(), path.to_string());
            }
        }
    }
    (v2, v1)
}

/// The directory of cgroup `path` in a hierarchy mounted at `mnt` with root `root`.
pub fn dir_of(mnt: &Path, root: &str, path: &str) -> PathBuf {
    let rel = if root == "/" {
        path
    } else {
        path.strip_prefix(root).unwrap_or(path)
    };
    let rel = rel.trim_start_matches('/');
    if rel.is_empty() {
        mnt.to_path_buf()
    } else {
        mnt.join(rel)
    }
}

fn writable(p: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: access() reads a NUL-terminated path.
    unsafe { libc::access(c.as_ptr(), libc::W_OK) == 0 }
}

fn read(p: &Path) -> String {
    super::read_kernel_file(p).unwrap_or_default()
}

/// Files read during one [`probe_now`], each read once (every controller asks for the same
/// `cgroup.controllers`; a read of a kernel file costs 10–60 µs).
#[derive(Default)]
struct Reads(BTreeMap<PathBuf, String>);

impl Reads {
    fn get(&mut self, p: PathBuf) -> &str {
        self.0.entry(p).or_insert_with_key(|p| read(p))
    }
}

/// Whether a cell's cgroup with `ctrl` can be created below the cgroup v2 directory `dir`.
fn v2_place(ctrl: &str, dir: &Path, is_root: bool, reads: &mut Reads) -> Result<Place, String> {
    let has = |s: &str| s.split_whitespace().any(|c| c == ctrl);
    let place = |enable| Place {
        version: CgVersion::V2,
        parent: dir.to_path_buf(),
        enable,
    };
    if !has(reads.get(dir.join("cgroup.controllers"))) {
        return Err(format!(
            "cgroup v2 at {} does not offer `{ctrl}`",
            dir.display()
        ));
    }
    if !(writable(dir) && writable(&dir.join("cgroup.procs"))) {
        return Err(format!(
            "cgroup v2 {} is not writable by this user (not delegated)",
            dir.display()
        ));
    }
    if has(reads.get(dir.join("cgroup.subtree_control"))) {
        return Ok(place(false));
    }
    if is_root || read(&dir.join("cgroup.procs")).trim().is_empty() {
        return Ok(place(true));
    }
    Err(format!(
        "cgroup v2 {}: `{ctrl}` is not enabled in cgroup.subtree_control and cannot be while the cgroup holds processes (start taskcell in a delegated cgroup that enables it, e.g. a systemd unit with Delegate=yes)",
        dir.display()
    ))
}

/// Find, for each controller, where a cell's cgroup can be created. Reads only.
/// Read once per process (the hierarchies and this process's place in them do not
/// change during a run; `run` and the supervisor both ask).
pub fn probe() -> Probe {
    static ONCE: std::sync::OnceLock<Probe> = std::sync::OnceLock::new();
    ONCE.get_or_init(probe_now).clone()
}

fn probe_now() -> Probe {
    let mounts = parse_mountinfo(&read(Path::new("/proc/self/mountinfo")));
    let (own_v2, own_v1) = parse_proc_cgroup(&read(Path::new("/proc/self/cgroup")));
    let mut p = Probe::default();
    let mut reads = Reads::default();
    for ctrl in CONTROLLERS {
        // cgroup v2 first.
        let mut why = Vec::new();
        if let (Some((root, mnt)), Some(own)) = (&mounts.v2, &own_v2) {
            let dir = dir_of(mnt, root, own);
            match v2_place(ctrl, &dir, own == "/", &mut reads) {
                Ok(pl) => {
                    p.places.insert(ctrl, pl);
                    continue;
                }
                Err(e) => why.push(e),
            }
            // As root, the top of the hierarchy will do (it is exempt from the
            // no-internal-processes rule).
            if nix::unistd::geteuid().is_root() && own != "/" && root == "/" {
                match v2_place(ctrl, mnt, true, &mut reads) {
                    Ok(pl) => {
                        p.places.insert(ctrl, pl);
                        continue;
                    }
                    Err(e) => why.push(e),
                }
            }
        } else {
            why.push("no cgroup v2 filesystem is mounted".into());
        }
        // cgroup v1 (hybrid hosts).
        let v1 = mounts
            .v1
            .iter()
            .find(|(c, _, _)| c.iter().any(|c| c == ctrl));
        match (v1, own_v1.get(ctrl)) {
            (Some((_, root, mnt)), Some(own)) => {
                let dir = dir_of(mnt, root, own);
                if writable(&dir) {
                    p.places.insert(
                        ctrl,
                        Place {
                            version: CgVersion::V1,
                            parent: dir,
                            enable: false,
                        },
                    );
                    continue;
                }
                why.push(format!(
                    "cgroup v1 {} is not writable by this user",
                    dir.display()
                ));
            }
            _ => why.push(format!("no cgroup v1 `{ctrl}` hierarchy")),
        }
        p.missing.insert(ctrl, why.join("; "));
    }
    p
}

/// Whether the running kernel counts RLIMIT_NPROC per user namespace (Linux 5.14+).
fn kernel_at_least(major: u32, minor: u32) -> bool {
    // uname(2), not /proc/sys/kernel/osrelease: a sysctl read costs ~25 µs.
    let Ok(uts) = nix::sys::utsname::uname() else {
        return false;
    };
    let rel = uts.release().to_string_lossy();
    let mut it = rel
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|s| s.parse::<u32>().ok());
    match (it.next(), it.next()) {
        (Some(a), Some(b)) => (a, b) >= (major, minor),
        _ => false,
    }
}

/// This machine as [`crate::plan::limits::enforcement`] needs it.
pub fn machine_from(p: &Probe) -> Machine {
    use nix::sys::resource::{getrlimit, Resource as R};
    let mut hard = BTreeMap::new();
    for (name, res) in [
        ("nproc", R::RLIMIT_NPROC),
        ("data", R::RLIMIT_DATA),
        ("cpu", R::RLIMIT_CPU),
        ("nofile", R::RLIMIT_NOFILE),
        ("fsize", R::RLIMIT_FSIZE),
        ("core", R::RLIMIT_CORE),
    ] {
        if let Ok((_, h)) = getrlimit(res) {
            if h != libc::RLIM_INFINITY {
                hard.insert(name.to_string(), h);
            }
        }
    }
    let v = |c: &str| p.places.get(c).map(|pl| pl.version);
    Machine {
        pids: v("pids"),
        memory: v("memory"),
        cpu: v("cpu"),
        cgroup_notes: p
            .missing
            .iter()
            .map(|(c, why)| (c.to_string(), why.clone()))
            .collect(),
        uid: nix::unistd::getuid().as_raw(),
        nproc_per_userns: kernel_at_least(5, 14),
        hard,
    }
}

pub fn machine() -> Machine {
    machine_from(&probe())
}

/// `doctor` lines: (name, ok, detail) per controller.
pub fn doctor_rows(p: &Probe) -> Vec<(&'static str, bool, String)> {
    let root = nix::unistd::getuid().is_root();
    CONTROLLERS
        .iter()
        .map(|c| {
            let (name, fallback) = match *c {
                "pids" => (
                    "cgroup pids (processes)",
                    if root {
                        "`processes` cannot be enforced: RLIMIT_NPROC does not bind uid 0"
                    } else {
                        "RLIMIT_NPROC stands in"
                    },
                ),
                "memory" => (
                    "cgroup memory (memory)",
                    "RLIMIT_DATA stands in (per process, not per cell)",
                ),
                _ => (
                    "cgroup cpu (cpu)",
                    "RLIMIT_CPU stands in when a timeout is set (a CPU-time budget, not a share)",
                ),
            };
            match (p.places.get(c), p.missing.get(c)) {
                (Some(pl), _) => (
                    name,
                    true,
                    format!(
                        "{} below {} (each cell gets its own cgroup)",
                        pl.version.as_str(),
                        pl.parent.display()
                    ),
                ),
                (None, why) => (
                    name,
                    false,
                    format!("{}; {fallback}", why.cloned().unwrap_or_default()),
                ),
            }
        })
        .collect()
}

/// Decide how each limit is enforced here and create the cell's cgroup when a limit needs
/// one. When the cgroup cannot be created after all, rlimits stand in (and the returned
/// table says so). Where every controller the limits need is a cgroup v1 hierarchy, the
/// cgroup is made after the clone instead ([`Made::Later`]: its `mkdir`s and limits,
/// 0.27 ms, overlap init's mounts; init moves itself in through `tasks` files it gets with
/// its second release). Stale cgroups of killed taskcells are removed by
/// [`cleanup_stale`], which the supervisor calls while the command runs.
pub fn prepare(
    res: &crate::plan::limits::Resources,
    timeout: Option<std::time::Duration>,
) -> (crate::plan::limits::Enforcement, Made) {
    let p = probe();
    let m = machine_from(&p);
    let e = crate::plan::limits::enforcement(res, timeout, &m);
    if e.cgroup.is_empty() {
        return (e, Made::None);
    }
    let later = Later {
        limits: e.cgroup.clone(),
        probe: p,
        res: res.clone(),
        timeout,
        machine: m,
    };
    if later.all_v1() {
        return (e, Made::Later(later));
    }
    match later.make() {
        Ok(cg) => (e, Made::Now(cg)),
        Err(why) => {
            let e = later.fallback(&why);
            (e, Made::None)
        }
    }
}

/// The cell's cgroup as [`prepare`] left it.
#[derive(Debug)]
pub enum Made {
    /// No limit needs one.
    None,
    /// Made before the clone (cgroup v2: init is cloned into it).
    Now(CellCgroup),
    /// To be made after the clone (cgroup v1 only).
    Later(Later),
}

/// A cell cgroup to make after the clone: its limits, and what [`Later::fallback`] needs
/// to let rlimits stand in when it cannot be made.
#[derive(Debug)]
pub struct Later {
    limits: CgroupLimits,
    probe: Probe,
    res: crate::plan::limits::Resources,
    timeout: Option<std::time::Duration>,
    machine: Machine,
}

impl Later {
    /// Whether every controller the limits need is in a cgroup v1 hierarchy (where init
    /// moves itself in, one thread writing "0" to `tasks`, at no RCU grace period).
    fn all_v1(&self) -> bool {
        needed(&self.limits).iter().all(|c| {
            self.probe
                .places
                .get(c)
                .is_some_and(|pl| pl.version == CgVersion::V1)
        })
    }

    /// Make the cgroup (its directories and limits).
    pub fn make(&self) -> Result<CellCgroup, String> {
        CellCgroup::create(&self.limits, &self.probe)
    }

    /// The enforcement when the cgroup could not be made (`why`, warned here): rlimits
    /// stand in for the cgroup's limits.
    pub fn fallback(&self, why: &str) -> crate::plan::limits::Enforcement {
        tracing::warn!("{why}; rlimits stand in for the cgroup limits");
        let m = Machine {
            pids: None,
            memory: None,
            cpu: None,
            cgroup_notes: ["pids", "memory", "cpu"]
                .iter()
                .map(|c| (c.to_string(), why.to_string()))
                .collect(),
            ..self.machine.clone()
        };
        crate::plan::limits::enforcement(&self.res, self.timeout, &m)
    }
}

/// The controllers `limits` need.
fn needed(limits: &CgroupLimits) -> Vec<&'static str> {
    [
        ("pids", limits.pids_max.is_some()),
        ("memory", limits.memory_max.is_some()),
        ("cpu", limits.cpu_milli.is_some()),
    ]
    .into_iter()
    .filter(|(_, n)| *n)
    .map(|(c, _)| c)
    .collect()
}

/// A new cell cgroup's name: `taskcell-<pid>-<start time>-<random>` (see [`owner_pid`]).
fn new_name() -> String {
    let me = std::process::id() as i32;
    format!(
        "taskcell-{me}-{}-{}",
        start_time(me).unwrap_or(0),
        random_hex()
    )
}

/// One directory of a cell's cgroup.
#[derive(Debug)]
struct Dir {
    version: CgVersion,
    controllers: Vec<&'static str>,
    path: PathBuf,
}

/// A cell's cgroup (one directory per hierarchy). Removed on drop.
#[derive(Debug)]
pub struct CellCgroup {
    pub name: String,
    dirs: Vec<Dir>,
    limits: CgroupLimits,
}

fn random_hex() -> String {
    let mut b = [0u8; 4];
    // SAFETY: getrandom fills the buffer we own.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != b.len() as isize {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        b = t.to_ne_bytes();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `taskcell-<pid>-<start>-<hex>` → (pid, start time); the older `taskcell-<pid>-<hex>`
/// → (pid, None).
pub fn owner_pid(name: &str) -> Option<(i32, Option<u64>)> {
    let rest = name.strip_prefix("taskcell-")?;
    let parts: Vec<&str> = rest.split('-').collect();
    let hex = parts.last()?;
    if hex.is_empty() || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    match parts.as_slice() {
        [pid, _] => Some((pid.parse().ok()?, None)),
        [pid, start, _] => Some((pid.parse().ok()?, Some(start.parse().ok()?))),
        _ => None,
    }
}

/// A process's start time (clock ticks after boot, field 22 of /proc/PID/stat): with the
/// pid, it names one process for the whole uptime (a reused pid starts later).
pub fn start_time(pid: i32) -> Option<u64> {
    let stat = super::read_kernel_file(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count after the last ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

/// Whether the taskcell that made a cgroup may still run. Decided by the pid and the start
/// time recorded in the name (never by the process's name: a launcher run through a
/// symlink `tc` is as alive as one called `taskcell`). A pid that is not visible here may
/// belong to another PID namespace; that is safe because only an empty cgroup is ever
/// removed, and a launcher whose empty cgroup vanished before it moved its cell in makes
/// it again (`CellCgroup::add`).
fn owner_alive(pid: i32, start: Option<u64>) -> bool {
    if pid == std::process::id() as i32 {
        return true;
    }
    match (start, start_time(pid)) {
        (_, None) => false,
        (Some(s), Some(now)) => s == now,
        // An old name without a start time: alive while the pid exists.
        (None, Some(_)) => true,
    }
}

/// Kill what is left in a cgroup directory and remove it (retrying while the kernel
/// finishes tearing the processes down).
fn kill_and_remove(path: &Path) -> Result<(), String> {
    for attempt in 0..200 {
        match std::fs::remove_dir(path) {
            Ok(()) => {
                tracing::debug!("removed {} after {attempt} retries", path.display());
                return Ok(());
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                if attempt % 10 == 0 {
                    let kill = path.join("cgroup.kill");
                    if kill.exists() {
                        let _ = std::fs::write(&kill, "1");
                    } else {
                        for pid in read(&path.join("cgroup.procs"))
                            .lines()
                            .filter_map(|l| l.trim().parse::<i32>().ok())
                            .filter(|p| *p > 0)
                        {
                            let _ = nix::sys::signal::kill(
                                Pid::from_raw(pid),
                                nix::sys::signal::Signal::SIGKILL,
                            );
                        }
                    }
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => return Err(format!("removing cgroup {}: {e}", path.display())),
        }
    }
    Err(format!(
        "removing cgroup {}: still busy (processes left in it)",
        path.display()
    ))
}

/// Whether every process left in a cgroup directory is already dying (a zombie, or being
/// torn down with its PID namespace): then the directory is empty in a moment.
fn only_dying(path: &Path) -> bool {
    read(&path.join("cgroup.procs"))
        .lines()
        .filter_map(|l| l.trim().parse::<i32>().ok())
        .all(|pid| {
            let stat = read(Path::new(&format!("/proc/{pid}/stat")));
            match stat.rfind(')') {
                Some(i) => matches!(stat[i + 1..].trim_start().chars().next(), Some('Z' | 'X')),
                None => true,
            }
        })
}

/// Remove cgroups of taskcell processes that no longer run (a killed taskcell cannot clean
/// up after itself). Never kills anything: only an empty cgroup is removed (`rmdir`; the
/// kernel refuses one that holds a process), so a live cell in it is never harmed, even
/// when the liveness check was wrong. Returns what was removed.
pub fn cleanup_stale(p: &Probe) -> Vec<PathBuf> {
    let mut parents: Vec<&PathBuf> = p.places.values().map(|pl| &pl.parent).collect();
    parents.sort();
    parents.dedup();
    let mut removed = Vec::new();
    for parent in parents {
        let Ok(rd) = std::fs::read_dir(parent) else {
            continue;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some((pid, start)) = owner_pid(&name) else {
                continue;
            };
            if owner_alive(pid, start) {
                continue;
            }
            let path = e.path();
            // A cell whose launcher was just killed is still being torn down: wait a
            // little for that, never for a process that runs.
            for attempt in 0..20 {
                match std::fs::remove_dir(&path) {
                    Ok(()) => {
                        tracing::info!("removed the stale cgroup {}", path.display());
                        removed.push(path);
                        break;
                    }
                    Err(e)
                        if e.raw_os_error() == Some(libc::EBUSY)
                            && attempt < 19
                            && only_dying(&path) =>
                    {
                        std::thread::sleep(std::time::Duration::from_millis(10));
                    }
                    // Not empty: something still runs in it; left alone.
                    Err(e) => {
                        tracing::debug!("stale cgroup {} kept: {e}", path.display());
                        break;
                    }
                }
            }
        }
    }
    removed
}

/// Kill what is left in the cgroups of the launcher `pid` started at `start` (named
/// `taskcell-PID-START-*`) and remove them. Only for a launcher that is gone (checked
/// here: its pid with that start time does not run); the name binds the cgroup to that
/// one process, so a live cell is never touched. Returns how many processes were in them.
pub fn kill_cells_of(pid: i32, start: u64) -> usize {
    if start == 0 || owner_alive(pid, Some(start)) {
        return 0;
    }
    let p = probe();
    let mut parents: Vec<&PathBuf> = p.places.values().map(|pl| &pl.parent).collect();
    parents.sort();
    parents.dedup();
    let prefix = format!("taskcell-{pid}-{start}-");
    let mut n = 0;
    for parent in parents {
        let Ok(rd) = std::fs::read_dir(parent) else {
            continue;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with(&prefix) || owner_pid(&name) != Some((pid, Some(start))) {
                continue;
            }
            let path = e.path();
            n += read(&path.join("cgroup.procs")).lines().count();
            let _ = kill_and_remove(&path);
        }
    }
    n
}

impl CellCgroup {
    /// Create the cell's cgroup in every hierarchy `limits` needs and write the limits.
    pub fn create(limits: &CgroupLimits, p: &Probe) -> Result<CellCgroup, String> {
        let name = new_name();
        let mut cg = CellCgroup {
            name: name.clone(),
            dirs: Vec::new(),
            limits: limits.clone(),
        };
        for ctrl in needed(limits) {
            let Some(place) = p.places.get(ctrl) else {
                return Err(format!("no cgroup with the `{ctrl}` controller"));
            };
            if place.enable {
                let sc = place.parent.join("cgroup.subtree_control");
                std::fs::write(&sc, format!("+{ctrl}"))
                    .map_err(|e| format!("enabling `{ctrl}` in {}: {e}", sc.display()))?;
            }
            let path = place.parent.join(&name);
            if let Some(d) = cg.dirs.iter_mut().find(|d| d.path == path) {
                d.controllers.push(ctrl);
                continue;
            }
            std::fs::create_dir(&path)
                .map_err(|e| format!("creating cgroup {}: {e}", path.display()))?;
            cg.dirs.push(Dir {
                version: place.version,
                controllers: vec![ctrl],
                path,
            });
        }
        for w in writes(limits) {
            let Some(d) = cg
                .dirs
                .iter()
                .find(|d| d.controllers.contains(&w.controller))
            else {
                continue;
            };
            let f = d.path.join(w.file);
            if w.optional && !f.exists() {
                continue;
            }
            std::fs::write(&f, &w.value)
                .map_err(|e| format!("writing {} to {}: {e}", w.value, f.display()))?;
        }
        Ok(cg)
    }

    /// A cgroup without limits, only to hold the cell's processes (best effort without
    /// namespaces, where no PID namespace ends them): every process the command starts
    /// stays in it, so what is left after a SIGKILL of taskcell and its init can be found
    /// and killed by a later start ([`kill_cells_of`]). Where one can be made.
    pub fn tracking(p: &Probe) -> Result<CellCgroup, String> {
        let place = p
            .places
            .get("pids")
            .or_else(|| p.places.values().next())
            .ok_or_else(|| "no cgroup this user can create one in".to_string())?;
        let name = new_name();
        let path = place.parent.join(&name);
        std::fs::create_dir(&path)
            .map_err(|e| format!("creating cgroup {}: {e}", path.display()))?;
        Ok(CellCgroup {
            name,
            dirs: vec![Dir {
                version: place.version,
                controllers: Vec::new(),
                path,
            }],
            limits: CgroupLimits::default(),
        })
    }

    /// The cgroup directories (for the audit log).
    pub fn paths(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.path.clone()).collect()
    }

    /// The cgroup's directory opened for `clone3(CLONE_INTO_CGROUP)`, when the cgroup is
    /// one cgroup v2 directory (a v1 hierarchy, or several, need [`CellCgroup::add`]).
    pub fn open_v2_dir(&self) -> Option<std::os::fd::OwnedFd> {
        use std::os::unix::fs::OpenOptionsExt;
        match self.dirs.as_slice() {
            [d] if d.version == CgVersion::V2 => std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
                .open(&d.path)
                .map(std::os::fd::OwnedFd::from)
                .ok(),
            _ => None,
        }
    }

    /// The `tasks` files of the cgroup's directories opened for writing, when every one
    /// is a cgroup v1 hierarchy: the cell's init writes "0" to each, moving itself (one
    /// thread, `current`: the kernel takes no threadgroup lock and so waits for no RCU
    /// grace period, which a move by pid through `cgroup.procs` does, several
    /// milliseconds). The kernel checks the opener's credentials (root), not the
    /// writer's. Close-on-exec; init closes them at once.
    pub fn open_v1_tasks(&self) -> Option<Vec<std::os::fd::OwnedFd>> {
        self.open_v1_tasks_in(|d| Some(d.to_path_buf()))
    }

    /// The `tasks` file in `dir(d)` of each directory `d`, opened for writing (None unless
    /// every directory is cgroup v1 and every file opens).
    fn open_v1_tasks_in(
        &self,
        dir: impl Fn(&Path) -> Option<PathBuf>,
    ) -> Option<Vec<std::os::fd::OwnedFd>> {
        use std::os::unix::fs::OpenOptionsExt;
        if self.dirs.is_empty() || self.dirs.iter().any(|d| d.version != CgVersion::V1) {
            return None;
        }
        self.dirs
            .iter()
            .map(|d| {
                std::fs::OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
                    .open(dir(&d.path)?.join("tasks"))
                    .map(std::os::fd::OwnedFd::from)
                    .ok()
            })
            .collect()
    }

    /// The `tasks` files of the cgroup's parent directories, opened for writing like
    /// [`CellCgroup::open_v1_tasks`]: once the command and everything else in the cell
    /// have ended, init moves itself out with them, so that the supervisor can remove the
    /// cgroup while init's exit tears the namespaces down, instead of after it.
    pub fn open_v1_parent_tasks(&self) -> Option<Vec<std::os::fd::OwnedFd>> {
        self.open_v1_tasks_in(|d| d.parent().map(Path::to_path_buf))
    }

    /// Remove the directories that can be removed now, in one attempt each (no wait, no
    /// kill): those init has left with the rest of the cell. What stays is removed by
    /// [`CellCgroup::remove`].
    pub fn remove_emptied(&mut self) {
        self.dirs.retain(|d| match std::fs::remove_dir(&d.path) {
            Ok(()) => false,
            Err(e) => e.kind() != std::io::ErrorKind::NotFound,
        });
    }

    /// Move a process (the cell's init, before it forks the worker) into the cgroup.
    pub fn add(&self, pid: Pid) -> Result<(), String> {
        for d in &self.dirs {
            let f = d.path.join("cgroup.procs");
            let mut r = std::fs::write(&f, pid.as_raw().to_string());
            if r.as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound)
            {
                // Removed while empty by a taskcell in another PID namespace, which cannot
                // see that this one runs: make it again.
                self.recreate(d)?;
                r = std::fs::write(&f, pid.as_raw().to_string());
            }
            r.map_err(|e| format!("moving the cell into {}: {e}", f.display()))?;
        }
        Ok(())
    }

    fn recreate(&self, d: &Dir) -> Result<(), String> {
        std::fs::create_dir(&d.path)
            .map_err(|e| format!("creating cgroup {}: {e}", d.path.display()))?;
        for w in writes(&self.limits) {
            if !d.controllers.contains(&w.controller) {
                continue;
            }
            let f = d.path.join(w.file);
            if w.optional && !f.exists() {
                continue;
            }
            std::fs::write(&f, &w.value)
                .map_err(|e| format!("writing {} to {}: {e}", w.value, f.display()))?;
        }
        Ok(())
    }

    /// The limits the cell ran into, from the kernel's counters.
    pub fn hits(&self) -> Vec<Hit> {
        let counter = |text: &str, key: &str| -> u64 {
            text.lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(' ')?;
                    (k == key).then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0)
        };
        let mut out = Vec::new();
        for d in &self.dirs {
            if let (true, Some((n, v))) = (d.controllers.contains(&"pids"), self.limits.pids_max) {
                let refused = counter(&read(&d.path.join("pids.events")), "max");
                if refused > 0 {
                    out.push(Hit {
                        limit: "processes",
                        value: format!("{n} processes and threads"),
                        mechanism: format!("{} pids.max", v.as_str()),
                        detail: format!("{refused} fork/clone calls were refused"),
                    });
                }
            }
            if let (true, Some((b, v))) =
                (d.controllers.contains(&"memory"), self.limits.memory_max)
            {
                let file = match d.version {
                    CgVersion::V2 => "memory.events",
                    CgVersion::V1 => "memory.oom_control",
                };
                let kills = counter(&read(&d.path.join(file)), "oom_kill");
                if kills > 0 {
                    out.push(Hit {
                        limit: "memory",
                        value: human_bytes(b),
                        mechanism: format!("{} {file}", v.as_str()),
                        detail: format!(
                            "the kernel's OOM killer ended {kills} process{} of the cell",
                            if kills == 1 { "" } else { "es" }
                        ),
                    });
                }
            }
        }
        out
    }

    /// Remove the cgroup (killing anything left in it). Idempotent.
    pub fn remove(&mut self) -> Result<(), String> {
        let mut errs = Vec::new();
        for d in self.dirs.drain(..) {
            if let Err(e) = kill_and_remove(&d.path) {
                errs.push(e);
            }
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs.join("; "))
        }
    }
}

impl Drop for CellCgroup {
    fn drop(&mut self) {
        if let Err(e) = self.remove() {
            tracing::warn!("{e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_and_proc_cgroup() {
        let mi = "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n\
                  35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
                  39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids\n\
                  40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd\n\
                  41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        let m = parse_mountinfo(mi);
        assert_eq!(
            m.v2,
            Some(("/".into(), PathBuf::from("/sys/fs/cgroup/unified")))
        );
        assert_eq!(m.v1.len(), 3);
        assert_eq!(m.v1[1].0, ["memory"]);
        let pc = "9:name=systemd:/\n8:pids:/\n4:memory:/process_api/abc\n1:cpu,cpuacct:/x\n0::/user.slice/u.scope\n";
        let (v2, v1) = parse_proc_cgroup(pc);
        assert_eq!(v2.as_deref(), Some("/user.slice/u.scope"));
        assert_eq!(v1["memory"], "/process_api/abc");
        assert_eq!(v1["cpu"], "/x");
        assert_eq!(v1["cpuacct"], "/x");
        assert_eq!(
            dir_of(Path::new("/sys/fs/cgroup/memory"), "/", "/process_api/abc"),
            PathBuf::from("/sys/fs/cgroup/memory/process_api/abc")
        );
        assert_eq!(
            dir_of(Path::new("/sys/fs/cgroup"), "/ctr", "/ctr/a"),
            PathBuf::from("/sys/fs/cgroup/a")
        );
    }

    #[test]
    fn writes_v1_and_v2() {
        let l = CgroupLimits {
            pids_max: Some((64, CgVersion::V1)),
            memory_max: Some((1 << 20, CgVersion::V1)),
            cpu_milli: Some((1500, CgVersion::V1)),
        };
        let w: Vec<_> = writes(&l).into_iter().map(|w| (w.file, w.value)).collect();
        assert_eq!(
            w,
            [
                ("pids.max", "64".to_string()),
                ("memory.limit_in_bytes", "1048576".into()),
                ("memory.memsw.limit_in_bytes", "1048576".into()),
                ("cpu.cfs_period_us", "100000".into()),
                ("cpu.cfs_quota_us", "150000".into()),
            ]
        );
        let l = CgroupLimits {
            pids_max: None,
            memory_max: Some((4096, CgVersion::V2)),
            cpu_milli: Some((250, CgVersion::V2)),
        };
        let w: Vec<_> = writes(&l).into_iter().map(|w| (w.file, w.value)).collect();
        assert_eq!(
            w,
            [
                ("memory.max", "4096".to_string()),
                ("memory.swap.max", "0".into()),
                ("cpu.max", "25000 100000".into()),
            ]
        );
    }

    #[test]
    fn start_time_names_one_process() {
        let me = std::process::id() as i32;
        let t = start_time(me).expect("own start time");
        assert_eq!(start_time(me), Some(t));
        assert!(owner_alive(me, Some(t)));
        // The init of this PID namespace started before this test: another process.
        assert!(!owner_alive(i32::MAX, Some(t)));
    }

    #[test]
    fn owner_pid_of_names() {
        assert_eq!(owner_pid("taskcell-123-deadbeef"), Some((123, None)));
        assert_eq!(
            owner_pid("taskcell-123-98765-deadbeef"),
            Some((123, Some(98765)))
        );
        assert_eq!(owner_pid("taskcell-123-"), None);
        assert_eq!(owner_pid("taskcell-1-2-3-ab"), None);
        assert_eq!(owner_pid("taskcell-x-ab"), None);
        assert_eq!(owner_pid("other"), None);
    }
}
