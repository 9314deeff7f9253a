//! How a cell ended, and the exit code taskcell exits with (the supervisor makes it; the
//! audit log and `main` read it).

use std::time::Duration;

use crate::{EXIT_LEAK, EXIT_SCAN_INCOMPLETE};

/// Exit code when the cell's init was killed (the OOM killer chose it, or someone outside
/// killed it): the command's own status never arrived.
pub const EXIT_INIT_KILLED: i32 = 121;

/// How a cell ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// The command exited with this code.
    Exited(i32),
    /// The command was killed by this signal.
    Signaled(i32),
    /// taskcell or the kernel refused before the command ran (125/126/127).
    NotStarted { code: i32, message: String },
    /// The cell ended without reporting (its init was killed).
    Lost,
}

#[derive(Debug, Clone)]
pub struct Outcome {
    pub ending: Ending,
    pub timed_out: bool,
    pub duration: Duration,
    /// Limits the cell ran into (OOM kill, pids exhausted, CPU time, timeout).
    pub limit_hits: Vec<crate::plan::limits::Hit>,
    /// How the limits were enforced in the end (rlimits stand in when the cgroup could
    /// not be created after all).
    pub enforcement: crate::plan::limits::Enforcement,
    /// The leak scan found a secret declared `on_leak = "fail"`.
    pub leak_fail: bool,
    /// A secret is declared `on_leak = "fail"` and the leak scan was not complete.
    pub scan_incomplete_fail: bool,
    /// A terminating signal taskcell got while the cell ran (it stopped the cell).
    pub stopped_by: Option<i32>,
    /// The cell left files git would run code from (moved aside, see `leftover`).
    pub leftover: bool,
    /// The tier the cell ran in (`container` when its namespaces could not be made).
    pub tier: crate::plan::tier::Tier,
}

impl Outcome {
    /// Why the cell ended, in a few words (the `reason` of `session_end`).
    pub fn reason(&self) -> String {
        if self.timed_out {
            return "timeout".into();
        }
        if let Some(sig) = self.stopped_by {
            return format!("taskcell got {}", crate::signals::name(sig));
        }
        match &self.ending {
            Ending::Exited(_) => "command exited".into(),
            Ending::Signaled(s) => {
                format!("command killed by {}", crate::signals::name(*s))
            }
            Ending::NotStarted { .. } => "not started".into(),
            Ending::Lost if self.limit_hits.iter().any(|h| h.limit == "memory") => {
                "cell init killed by the OOM killer (memory limit)".into()
            }
            Ending::Lost => "cell init killed".into(),
        }
    }

    /// The exit code taskcell itself exits with.
    pub fn exit_code(&self) -> i32 {
        if self.timed_out {
            return 124;
        }
        if self.leftover {
            return crate::leftover::EXIT_LEFTOVER;
        }
        match (&self.ending, self.stopped_by) {
            (Ending::Exited(0), _) if self.leak_fail => EXIT_LEAK,
            (Ending::Exited(0), _) if self.scan_incomplete_fail => EXIT_SCAN_INCOMPLETE,
            (Ending::Exited(c), _) => *c,
            // Stopped because taskcell got a signal: as a shell reports that signal.
            (Ending::Signaled(_) | Ending::Lost, Some(s)) => 128 + s,
            (Ending::Signaled(s), None) => 128 + s,
            (Ending::NotStarted { code, .. }, _) => *code,
            (Ending::Lost, None) => EXIT_INIT_KILLED,
        }
    }
}
