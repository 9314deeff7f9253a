//! How a cell ended, and the exit code taskcell exits with (the supervisor makes it; the
//! audit log and `main` read it).

use std::time::Duration;

use crate::EXIT_LEAK;

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
    /// The cell left files git would run code from (moved aside, see `leftover`).
    pub leftover: bool,
}

impl Outcome {
    /// The exit code taskcell itself exits with.
    pub fn exit_code(&self) -> i32 {
        if self.timed_out {
            return 124;
        }
        if self.leftover {
            return crate::leftover::EXIT_LEFTOVER;
        }
        match &self.ending {
            Ending::Exited(0) if self.leak_fail => EXIT_LEAK,
            Ending::Exited(c) => *c,
            Ending::Signaled(s) => 128 + s,
            Ending::NotStarted { code, .. } => *code,
            Ending::Lost => 125,
        }
    }
}
