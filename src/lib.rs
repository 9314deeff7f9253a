//! taskcell: run a command in a Linux sandbox (a cell) with exactly the files, network
//! and secrets its profile declares. See ARCHITECTURE.md for the map of modules.

pub mod audit;
pub mod cell;
pub mod cli;
pub mod display;
pub mod doctor;
pub mod explain;
pub mod hold;
pub mod hostfile;
pub mod leftover;
pub mod names;
pub mod net;
pub mod outcome;
pub mod pins;
pub mod plan;
pub mod prepare;
pub mod profile;
pub mod secrets;
pub mod signals;
pub mod spec;
pub mod state;
pub mod supervisor;
pub mod tty;

/// Exit code when taskcell fails before the command runs.
pub const EXIT_SETUP: i32 = 125;
/// Exit code when the command succeeded but the leak scan found a secret declared with
/// `on_leak = "fail"`.
pub const EXIT_LEAK: i32 = 120;
/// Exit code when the command succeeded, a secret is declared with `on_leak = "fail"`,
/// and the leak scan could not search everything the cell wrote (a bound cut it short,
/// or something could not be read or decompressed): it fails closed.
pub const EXIT_SCAN_INCOMPLETE: i32 = 123;
