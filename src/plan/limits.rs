//! Resource limits as policy: the units people write, the resolved numbers, and which
//! mechanism enforces each limit on a given machine.
//!
//! Everything here is pure. The profile layer validates the text of each key
//! ([`check`]); `plan::resolve` turns the text into numbers ([`resolve`]); [`enforcement`]
//! takes the numbers and a description of the machine ([`Machine`], probed by
//! `cell::cgroup::machine`) and decides, limit by limit, whether a cgroup, an rlimit or
//! nothing enforces it. The result is plain data: the cgroup values the supervisor writes,
//! the rlimits the worker sets, and the table `explain`, `doctor` and the audit log show.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::plan::Rlimit;
use crate::profile::{Origin, Val};

/// The human keys of `[limits]` (and the matching `--KEY` flags, with `-` for `_`).
pub const KEYS: &[&str] = &[
    "processes",
    "memory",
    "cpu",
    "open_files",
    "file_size",
    "core",
];

/// The resolved resource limits of a plan. `None` = no limit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Resources {
    /// Processes and threads of the cell together.
    pub processes: Option<u64>,
    /// Bytes of memory, swap counted (a cell cannot move its memory to swap).
    pub memory: Option<u64>,
    /// A share of CPU cores in thousandths (1.5 cores = 1500).
    pub cpu_milli: Option<u64>,
    /// Open file descriptors per process.
    pub open_files: Option<u64>,
    /// Bytes one file may grow to.
    pub file_size: Option<u64>,
    /// Bytes of a core dump (0 = no core file).
    pub core: Option<u64>,
}

fn is_unlimited(s: &str) -> bool {
    matches!(s, "unlimited" | "none" | "infinity" | "max")
}

/// Largest size any limit takes: 1024T (1 PiB). Larger is an error, not a wrap-around.
pub const MAX_SIZE: u64 = 1 << 50;
/// Largest `processes`: the kernel's own ceiling on PIDs (PID_MAX_LIMIT, 4194304).
pub const MAX_PROCESSES: u64 = 1 << 22;
/// Largest `open_files`: the kernel's ceiling on `fs.nr_open` (1073741816).
pub const MAX_OPEN_FILES: u64 = 1_073_741_816;

/// A count: `4096`, `64k` is not accepted (counts are written as numbers). At most `max`.
pub fn parse_count_max(s: &str, max: u64) -> Result<Option<u64>, String> {
    let s = s.trim();
    if is_unlimited(s) {
        return Ok(None);
    }
    let digits = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    // All digits but no u64: past any maximum.
    let n: u64 = match s.parse() {
        Ok(n) => n,
        Err(_) if digits => u64::MAX,
        Err(_) => {
            return Err(format!(
                "{s:?} is not a whole number (write e.g. 4096, or \"unlimited\")"
            ))
        }
    };
    if n == 0 {
        return Err("0 would forbid everything (write a number above 0, or \"unlimited\")".into());
    }
    if n > max {
        return Err(format!(
            "{s} is above the maximum {max} (write at most {max}, or \"unlimited\")"
        ));
    }
    Ok(Some(n))
}

/// A count of at most [`MAX_OPEN_FILES`].
pub fn parse_count(s: &str) -> Result<Option<u64>, String> {
    parse_count_max(s, MAX_OPEN_FILES)
}

/// A size: `512M`, `4G`, `1.5G`, `100k`, `1048576` (bytes), binary units (K = 1024),
/// an optional trailing `B`/`iB`. `allow_zero` for `core`.
pub fn parse_size(s: &str, allow_zero: bool) -> Result<Option<u64>, String> {
    let t = s.trim();
    if is_unlimited(t) {
        return Ok(None);
    }
    let num_end = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(num_end);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (write e.g. 512M, 4G, 1.5G)"))?;
    let unit = unit.trim().to_ascii_uppercase();
    let unit = unit
        .strip_suffix("IB")
        .or_else(|| unit.strip_suffix('B'))
        .unwrap_or(&unit);
    let mult: u64 = match unit {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => {
            return Err(format!(
                "unknown unit in size {s:?} (use K, M, G or T, e.g. 512M)"
            ))
        }
    };
    let bytes = n * mult as f64;
    if !bytes.is_finite() || bytes > MAX_SIZE as f64 {
        return Err(format!(
            "size {s:?} is above the maximum 1024T (write at most 1024T, or \"unlimited\")"
        ));
    }
    let bytes = bytes.round() as u64;
    if bytes == 0 && !allow_zero {
        return Err(format!(
            "size {s:?} is zero (write a size above 0, or \"unlimited\")"
        ));
    }
    Ok(Some(bytes))
}

/// Memory: a size, or a share of this machine's RAM (`75%`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MemSpec {
    Bytes(u64),
    Percent(f64),
}

pub fn parse_memory(s: &str) -> Result<Option<MemSpec>, String> {
    let t = s.trim();
    if let Some(p) = t.strip_suffix('%') {
        let v: f64 = p
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not a percentage (write e.g. 75%)"))?;
        if !(v > 0.0 && v <= 100.0) {
            return Err(format!(
                "{s:?}: a share of the machine's memory is above 0% and at most 100%"
            ));
        }
        return Ok(Some(MemSpec::Percent(v)));
    }
    Ok(parse_size(t, false)?.map(MemSpec::Bytes))
}

/// CPU cores: `1.5`, `2`, `0.25` → thousandths of a core.
pub fn parse_cores(s: &str) -> Result<Option<u64>, String> {
    let t = s.trim();
    if is_unlimited(t) {
        return Ok(None);
    }
    let v: f64 = t.parse().map_err(|_| {
        format!("{s:?} is not a number of cores (write e.g. 1.5, or \"unlimited\")")
    })?;
    if !(v.is_finite() && v >= 0.01) {
        return Err(format!("{s:?}: write at least 0.01 cores"));
    }
    if v > 100_000.0 {
        return Err(format!("{s:?} cores is too many"));
    }
    Ok(Some((v * 1000.0).round() as u64))
}

/// Validate the text of one human key (used by the profile parser and the CLI).
pub fn check(key: &str, value: &str) -> Result<(), String> {
    match key {
        "processes" => parse_count_max(value, MAX_PROCESSES).map(|_| ()),
        "open_files" => parse_count_max(value, MAX_OPEN_FILES).map(|_| ()),
        "memory" => parse_memory(value).map(|_| ()),
        "cpu" => parse_cores(value).map(|_| ()),
        "file_size" => parse_size(value, false).map(|_| ()),
        "core" => parse_size(value, true).map(|_| ()),
        _ => Err(format!(
            "unknown limit `{key}` (known: timeout, grace, {}, rlimits)",
            KEYS.join(", ")
        )),
    }
}

/// Bytes of RAM of this machine (MemTotal of /proc/meminfo, which sysinfo(2) gives
/// without the cost of computing the rest of that file on every start), or None when
/// the kernel does not say.
pub fn mem_total() -> Option<u64> {
    // SAFETY: struct sysinfo holds integers only: all zero is a valid value.
    let mut si: libc::sysinfo = unsafe { std::mem::zeroed() };
    // SAFETY: as above; a valid pointer to a sysinfo struct for the call.
    if unsafe { libc::sysinfo(&mut si) } != 0 {
        return None;
    }
    let unit = u64::from(si.mem_unit.max(1));
    // (c_ulong: u64 here, u32 on 32-bit targets.)
    #[allow(clippy::useless_conversion)]
    let ram = u64::from(si.totalram);
    Some(ram.checked_mul(unit)?).filter(|b| *b > 0)
}

/// Turn the declared text (profile entries, then command-line values, which win) into
/// numbers. `core` is 0 unless declared.
pub fn resolve(
    declared: &BTreeMap<String, Val<String>>,
    cli: &[(String, String)],
    mem_total: Option<u64>,
) -> Result<Resources, String> {
    let mut all: BTreeMap<&str, (String, Origin)> = BTreeMap::new();
    for (k, v) in declared {
        all.insert(k.as_str(), (v.value.clone(), v.origin.clone()));
    }
    for (k, v) in cli {
        all.insert(k.as_str(), (v.clone(), Origin::cli()));
    }
    let mut r = Resources {
        core: Some(0),
        ..Resources::default()
    };
    for (k, (v, origin)) in all {
        let err = |m: String| format!("{origin}: `limits.{k}`: {m}");
        match k {
            "processes" => r.processes = parse_count_max(&v, MAX_PROCESSES).map_err(err)?,
            "open_files" => r.open_files = parse_count_max(&v, MAX_OPEN_FILES).map_err(err)?,
            "cpu" => r.cpu_milli = parse_cores(&v).map_err(err)?,
            "file_size" => r.file_size = parse_size(&v, false).map_err(err)?,
            "core" => r.core = parse_size(&v, true).map_err(err)?,
            "memory" => {
                r.memory = match parse_memory(&v).map_err(err)? {
                    None => None,
                    Some(MemSpec::Bytes(b)) => Some(b),
                    Some(MemSpec::Percent(p)) => {
                        let total = mem_total.ok_or_else(|| {
                            err(format!(
                                "{v:?} is a share of this machine's memory, but the kernel did not say how much memory it has (sysinfo failed; write a size such as 4G)"
                            ))
                        })?;
                        Some(((total as f64) * p / 100.0) as u64)
                    }
                }
            }
            _ => return Err(err("unknown limit".into())),
        }
    }
    Ok(r)
}

/// Bytes as people read them: `512 MiB`, `1.5 GiB`.
pub fn human_bytes(b: u64) -> String {
    const UNITS: &[(&str, u64)] = &[("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20)];
    for (name, m) in UNITS {
        if b >= *m {
            let v = b as f64 / *m as f64;
            return if (v - v.round()).abs() < 0.005 {
                format!("{} {name}", v.round() as u64)
            } else {
                format!("{v:.2} {name}")
            };
        }
    }
    if b >= 1024 {
        return format!("{} KiB", b / 1024);
    }
    format!("{b} bytes")
}

pub fn human_cores(milli: u64) -> String {
    let v = milli as f64 / 1000.0;
    if milli.is_multiple_of(1000) {
        format!("{} cores", milli / 1000)
    } else {
        format!("{v} cores")
    }
}

/// A cgroup version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum CgVersion {
    #[serde(rename = "cgroup v1")]
    V1,
    #[serde(rename = "cgroup v2")]
    V2,
}

impl CgVersion {
    pub fn as_str(self) -> &'static str {
        match self {
            CgVersion::V1 => "cgroup v1",
            CgVersion::V2 => "cgroup v2",
        }
    }
}

/// What this machine lets taskcell use (probed by `cell::cgroup::machine`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Machine {
    /// Where a cell can get its own cgroup with the `pids`, `memory`, `cpu` controller.
    pub pids: Option<CgVersion>,
    pub memory: Option<CgVersion>,
    pub cpu: Option<CgVersion>,
    /// Why a controller (`pids`, `memory`, `cpu`) is not available, shown with the fallback.
    pub cgroup_notes: BTreeMap<String, String>,
    /// The launcher's uid (RLIMIT_NPROC does not bind uid 0).
    pub uid: u32,
    /// Linux ≥ 5.14 counts RLIMIT_NPROC per user namespace (the cell's own processes).
    pub nproc_per_userns: bool,
    /// The launcher's hard rlimits (a cell cannot raise them), by name; absent = unlimited.
    pub hard: BTreeMap<String, u64>,
}

/// How one limit is enforced on this machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Row {
    pub limit: &'static str,
    /// The value as people read it.
    pub value: String,
    /// `cgroup v1 pids.max`, `RLIMIT_NOFILE`, ... or `none`.
    pub mechanism: String,
    pub enforced: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The values the supervisor writes into the cell's cgroup.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CgroupLimits {
    pub pids_max: Option<(u64, CgVersion)>,
    pub memory_max: Option<(u64, CgVersion)>,
    pub cpu_milli: Option<(u64, CgVersion)>,
}

impl CgroupLimits {
    pub fn is_empty(&self) -> bool {
        self.pids_max.is_none() && self.memory_max.is_none() && self.cpu_milli.is_none()
    }
}

/// Everything the mechanism needs, and the table people read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Enforcement {
    pub rows: Vec<Row>,
    pub cgroup: CgroupLimits,
    /// Set by the worker before the profile's raw `[limits.rlimits]` (which win).
    pub rlimits: Vec<Rlimit>,
}

impl Enforcement {
    /// One line per limit that cannot be enforced here.
    pub fn unenforced(&self) -> Vec<String> {
        self.rows
            .iter()
            .filter(|r| !r.enforced)
            .map(|r| {
                format!(
                    "limit `{}` ({}) cannot be enforced on this machine: {}",
                    r.limit,
                    r.value,
                    r.note.as_deref().unwrap_or("no mechanism")
                )
            })
            .collect()
    }
}

/// CFS period used for `cpu` (100 ms, the kernel's default).
pub const CPU_PERIOD_US: u64 = 100_000;

/// Decide how each limit is enforced on `m`.
pub fn enforcement(res: &Resources, timeout: Option<Duration>, m: &Machine) -> Enforcement {
    let mut b = Builder {
        m,
        e: Enforcement::default(),
    };
    if let Some(p) = res.processes {
        processes(&mut b, p);
    }
    if let Some(bytes) = res.memory {
        memory(&mut b, bytes);
    }
    if let Some(c) = res.cpu_milli {
        cpu(&mut b, c, timeout);
    }
    if let Some(n) = res.open_files {
        b.rlimit(
            "open_files",
            "nofile",
            "RLIMIT_NOFILE",
            n,
            format!("{n} per process"),
            None,
        );
    }
    if let Some(bytes) = res.file_size {
        b.rlimit(
            "file_size",
            "fsize",
            "RLIMIT_FSIZE",
            bytes,
            human_bytes(bytes),
            Some("a write past it fails with EFBIG (File too large); SIGXFSZ is ignored".into()),
        );
    }
    if let Some(bytes) = res.core {
        let value = if bytes == 0 {
            "0 (no core files)".to_string()
        } else {
            human_bytes(bytes)
        };
        b.rlimit("core", "core", "RLIMIT_CORE", bytes, value, None);
    }
    if let Some(t) = timeout {
        b.e.rows.push(Row {
            limit: "timeout",
            value: format!("{}s", t.as_secs_f64()),
            mechanism: "supervisor timer".into(),
            enforced: true,
            note: Some("SIGTERM, then SIGKILL after the grace period".into()),
        });
    }
    b.e
}

/// The enforcement being built, and the machine it is built for.
struct Builder<'a> {
    m: &'a Machine,
    e: Enforcement,
}

impl Builder<'_> {
    /// The launcher's hard limit for rlimit `name`.
    fn hard(&self, name: &str) -> u64 {
        self.m.hard.get(name).copied().unwrap_or(u64::MAX)
    }

    /// Why there is no cgroup for controller `c`.
    fn why(&self, c: &str) -> String {
        self.m
            .cgroup_notes
            .get(c)
            .cloned()
            .unwrap_or_else(|| "no cgroup can be created".into())
    }

    /// An rlimit the cell can set: at most the launcher's hard limit.
    fn rlimit(
        &mut self,
        limit: &'static str,
        name: &'static str,
        kernel: &str,
        v: u64,
        value: String,
        note: Option<String>,
    ) {
        let h = self.hard(name);
        let (v, clamp) = if v > h {
            (
                h,
                Some(format!(
                    "clamped to {h}, the launcher's hard limit (a cell cannot raise it)"
                )),
            )
        } else {
            (v, None)
        };
        self.e.rlimits.push(Rlimit {
            name,
            soft: v,
            hard: v,
        });
        let note = match (note, clamp) {
            (Some(a), Some(b)) => Some(format!("{a}; {b}")),
            (a, b) => a.or(b),
        };
        self.e.rows.push(Row {
            limit,
            value,
            mechanism: kernel.to_string(),
            enforced: true,
            note,
        });
    }
}

/// `processes`: a pids cgroup, else RLIMIT_NPROC (which does not bind uid 0).
fn processes(b: &mut Builder, p: u64) {
    let value = format!("{p} processes and threads");
    if let Some(v) = b.m.pids {
        b.e.cgroup.pids_max = Some((p, v));
        b.e.rows.push(Row {
            limit: "processes",
            value,
            mechanism: format!("{} pids.max", v.as_str()),
            enforced: true,
            note: None,
        });
    } else if b.m.uid == 0 {
        b.e.rows.push(Row {
            limit: "processes",
            value,
            mechanism: "none".into(),
            enforced: false,
            note: Some(format!(
                "no pids cgroup ({}), and RLIMIT_NPROC does not bind uid 0",
                b.why("pids")
            )),
        });
    } else {
        let note = if b.m.nproc_per_userns {
            format!("no pids cgroup ({}); RLIMIT_NPROC counts this uid's processes in the cell's user namespace, Linux 5.14+", b.why("pids"))
        } else {
            format!("no pids cgroup ({}); RLIMIT_NPROC counts ALL processes of this uid on the host (Linux < 5.14), so a low value also fails when the user runs many processes", b.why("pids"))
        };
        b.rlimit("processes", "nproc", "RLIMIT_NPROC", p, value, Some(note));
    }
}

/// `memory`: a memory cgroup (swap counted), else RLIMIT_DATA per process.
fn memory(b: &mut Builder, bytes: u64) {
    let value = format!("{} (swap counted)", human_bytes(bytes));
    if let Some(v) = b.m.memory {
        b.e.cgroup.memory_max = Some((bytes, v));
        let files = match v {
            CgVersion::V2 => "memory.max + memory.swap.max = 0",
            CgVersion::V1 => "memory.limit_in_bytes + memory.memsw.limit_in_bytes",
        };
        b.e.rows.push(Row {
            limit: "memory",
            value,
            mechanism: format!("{} {files}", v.as_str()),
            enforced: true,
            note: Some("the whole cell together; past it the kernel's OOM killer ends a process of the cell".into()),
        });
    } else {
        b.rlimit(
            "memory",
            "data",
            "RLIMIT_DATA",
            bytes,
            value,
            Some(format!(
                "no memory cgroup ({}): per process, private writable memory only (allocations past it fail); N processes may use N times the value, shared memory and tmpfs are not counted",
                b.why("memory")
            )),
        );
    }
}

/// `cpu`: a cpu cgroup quota, else (with a timeout) a CPU-time budget per process.
fn cpu(b: &mut Builder, c: u64, timeout: Option<Duration>) {
    let value = human_cores(c);
    if let Some(v) = b.m.cpu {
        b.e.cgroup.cpu_milli = Some((c, v));
        let files = match v {
            CgVersion::V2 => "cpu.max",
            CgVersion::V1 => "cpu.cfs_quota_us",
        };
        b.e.rows.push(Row {
            limit: "cpu",
            value,
            mechanism: format!("{} {files}", v.as_str()),
            enforced: true,
            note: None,
        });
    } else if let Some(t) = timeout {
        // The share over the whole allowed wall-clock time, as CPU seconds per process.
        let secs = ((c as f64 / 1000.0) * t.as_secs_f64()).ceil().max(1.0) as u64;
        let h = b.hard("cpu");
        let soft = secs.min(h);
        b.e.rlimits.push(Rlimit {
            name: "cpu",
            soft,
            // SIGXCPU at the soft limit, SIGKILL a second later.
            hard: soft.saturating_add(1).min(h),
        });
        b.e.rows.push(Row {
            limit: "cpu",
            value,
            mechanism: "RLIMIT_CPU".into(),
            enforced: true,
            note: Some(format!(
                "no cpu cgroup ({}): not a share but a budget of {soft} CPU seconds per process (cores × timeout), then SIGXCPU",
                b.why("cpu")
            )),
        });
    } else {
        b.e.rows.push(Row {
            limit: "cpu",
            value,
            mechanism: "none".into(),
            enforced: false,
            note: Some(format!(
                "no cpu cgroup ({}); with a `timeout`, RLIMIT_CPU would bound CPU time instead",
                b.why("cpu")
            )),
        });
    }
}

/// A limit the cell ran into.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hit {
    pub limit: &'static str,
    /// The limit's value as people read it.
    pub value: String,
    pub mechanism: String,
    /// What happened, e.g. "the kernel's OOM killer ended 1 process".
    pub detail: String,
}

impl Hit {
    /// The one line printed when a cell hit a limit.
    pub fn line(&self) -> String {
        format!(
            "the cell hit its {} limit ({}, {}): {}",
            self.limit, self.value, self.mechanism, self.detail
        )
    }
}

/// Limits read from how the cell ended: CPU time (SIGXCPU from RLIMIT_CPU) and the
/// wall-clock timeout. `rlimits` as the worker set them (the last `cpu` wins).
pub fn signal_hits(
    rlimits: &[Rlimit],
    signal: Option<i32>,
    timed_out: Option<(Duration, Duration)>,
) -> Vec<Hit> {
    let mut out = Vec::new();
    if signal == Some(libc::SIGXCPU) {
        if let Some(r) = rlimits.iter().rev().find(|r| r.name == "cpu") {
            out.push(Hit {
                limit: "cpu",
                value: format!("{} CPU seconds per process", r.soft),
                mechanism: "RLIMIT_CPU".into(),
                detail: "the command used up its CPU time and was killed by SIGXCPU".into(),
            });
        }
    }
    if let Some((t, grace)) = timed_out {
        out.push(Hit {
            limit: "timeout",
            value: format!("{}s", t.as_secs_f64()),
            mechanism: "supervisor timer".into(),
            detail: format!(
                "the command was stopped (SIGTERM, SIGKILL after {}s)",
                grace.as_secs_f64()
            ),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hits_from_signals() {
        let rl = [Rlimit {
            name: "cpu",
            soft: 15,
            hard: 16,
        }];
        let h = signal_hits(&rl, Some(libc::SIGXCPU), None);
        assert_eq!(h.len(), 1);
        assert!(
            h[0].line().contains("cpu limit (15 CPU seconds"),
            "{}",
            h[0].line()
        );
        assert!(signal_hits(&[], Some(libc::SIGXCPU), None).is_empty());
        let h = signal_hits(
            &[],
            Some(libc::SIGTERM),
            Some((Duration::from_secs(2), Duration::from_secs(5))),
        );
        assert_eq!(h[0].limit, "timeout");
        assert!(
            h[0].line().contains("(2s, supervisor timer)"),
            "{}",
            h[0].line()
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512M", false), Ok(Some(512 << 20)));
        assert_eq!(parse_size("4G", false), Ok(Some(4 << 30)));
        assert_eq!(parse_size("1.5G", false), Ok(Some(3 << 29)));
        assert_eq!(parse_size("100k", false), Ok(Some(100 << 10)));
        assert_eq!(parse_size("2GiB", false), Ok(Some(2 << 30)));
        assert_eq!(parse_size("64MB", false), Ok(Some(64 << 20)));
        assert_eq!(parse_size("4096", false), Ok(Some(4096)));
        assert_eq!(parse_size("unlimited", false), Ok(None));
        assert_eq!(parse_size("0", true), Ok(Some(0)));
        assert!(parse_size("0", false).is_err());
        assert!(parse_size("4X", false).is_err());
        assert!(parse_size("G", false).is_err());
        assert!(parse_size("-1", false).is_err());
        // Past the documented maximum: one-line errors, never a wrap-around or a panic.
        assert_eq!(parse_size("1024T", false), Ok(Some(MAX_SIZE)));
        for s in [
            "1025T",
            "99999999999999999999999G",
            "1e400",
            &"9".repeat(400),
        ] {
            let e = parse_size(s, false).unwrap_err();
            assert!(!e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn counts_cores_memory() {
        assert_eq!(parse_count("64"), Ok(Some(64)));
        assert!(parse_count("0").is_err());
        assert!(parse_count("1.5").is_err());
        assert_eq!(
            parse_count_max("4194304", MAX_PROCESSES),
            Ok(Some(MAX_PROCESSES))
        );
        assert!(check("processes", "4194305").is_err());
        assert!(check("open_files", "99999999999999999999999").is_err());
        assert!(check("cpu", "1e300").is_err());
        assert!(check("memory", "100000000000%").is_err());
        assert_eq!(parse_cores("1.5"), Ok(Some(1500)));
        assert_eq!(parse_cores("2"), Ok(Some(2000)));
        assert!(parse_cores("0").is_err());
        assert!(parse_cores("two").is_err());
        assert_eq!(parse_memory("75%"), Ok(Some(MemSpec::Percent(75.0))));
        assert!(parse_memory("150%").is_err());
        assert_eq!(parse_memory("1G"), Ok(Some(MemSpec::Bytes(1 << 30))));
        assert!(check("bogus", "1").is_err());
    }

    fn declared(kv: &[(&str, &str)]) -> BTreeMap<String, Val<String>> {
        kv.iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    Val {
                        value: v.to_string(),
                        origin: Origin {
                            file: "p.toml".into(),
                            line: 7,
                        },
                    },
                )
            })
            .collect()
    }

    #[test]
    fn resolve_defaults_percent_and_cli_wins() {
        let r = resolve(
            &declared(&[("memory", "50%"), ("processes", "100")]),
            &[("processes".into(), "64".into())],
            Some(8 << 30),
        )
        .unwrap();
        assert_eq!(r.memory, Some(4 << 30));
        assert_eq!(r.processes, Some(64));
        assert_eq!(r.core, Some(0), "core defaults to 0");
        let r = resolve(&declared(&[("core", "unlimited")]), &[], None).unwrap();
        assert_eq!(r.core, None);
        let e = resolve(&declared(&[("cpu", "x")]), &[], None).unwrap_err();
        assert!(e.contains("p.toml line 7"), "{e}");
        assert!(e.contains("limits.cpu"), "{e}");
    }

    fn full() -> Resources {
        Resources {
            processes: Some(64),
            memory: Some(256 << 20),
            cpu_milli: Some(1500),
            open_files: Some(1024),
            file_size: Some(1 << 20),
            core: Some(0),
        }
    }

    #[test]
    fn cgroups_when_available() {
        let m = Machine {
            pids: Some(CgVersion::V1),
            memory: Some(CgVersion::V2),
            cpu: Some(CgVersion::V1),
            uid: 0,
            ..Machine::default()
        };
        let e = enforcement(&full(), None, &m);
        assert_eq!(e.cgroup.pids_max, Some((64, CgVersion::V1)));
        assert_eq!(e.cgroup.memory_max, Some((256 << 20, CgVersion::V2)));
        assert_eq!(e.cgroup.cpu_milli, Some((1500, CgVersion::V1)));
        let names: Vec<_> = e.rlimits.iter().map(|r| r.name).collect();
        assert_eq!(names, ["nofile", "fsize", "core"]);
        assert!(e.rows.iter().all(|r| r.enforced));
    }

    #[test]
    fn rlimits_stand_in_without_cgroups() {
        let mut m = Machine {
            uid: 1000,
            nproc_per_userns: true,
            ..Machine::default()
        };
        m.hard.insert("nofile".into(), 512);
        let e = enforcement(&full(), Some(Duration::from_secs(10)), &m);
        assert!(e.cgroup.is_empty());
        let get = |n: &str| e.rlimits.iter().find(|r| r.name == n).copied();
        assert_eq!(get("nproc").map(|r| r.soft), Some(64));
        assert_eq!(get("data").map(|r| r.soft), Some(256 << 20));
        let cpu = get("cpu").unwrap();
        assert_eq!((cpu.soft, cpu.hard), (15, 16), "1.5 cores x 10 s");
        assert_eq!(get("nofile").map(|r| r.soft), Some(512), "clamped");
        assert_eq!(get("core").map(|r| r.soft), Some(0));
        assert!(e.unenforced().is_empty());
        // Without a timeout, a CPU share cannot be enforced; as root neither can processes.
        m.uid = 0;
        let e = enforcement(&full(), None, &m);
        let bad: Vec<_> = e
            .rows
            .iter()
            .filter(|r| !r.enforced)
            .map(|r| r.limit)
            .collect();
        assert_eq!(bad, ["processes", "cpu"]);
        assert!(e.unenforced()[0].contains("RLIMIT_NPROC does not bind uid 0"));
        assert!(!e.rlimits.iter().any(|r| r.name == "nproc"));
    }
}
