//! Command line: argv → [`Cli`]. No logic beyond parsing.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::plan::NetMode;

#[derive(Debug, Parser)]
#[command(
    name = "taskcell",
    version,
    about = "Run a command in a sandbox (a cell) with exactly the files, network and secrets its profile declares",
    after_help = "Examples:\n  taskcell run -p build -- make test\n  taskcell explain -p agent\n  taskcell doctor"
)]
pub struct Cli {
    /// More diagnostics on stderr (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors on stderr.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// The process's arguments as a [`Cli`]. `taskcell run ...`, the launch path, is parsed
    /// with the `run` subcommand's own definition first: building (and dropping) the whole
    /// tree, every subcommand's arguments, is ~0.1 ms of every start. Whatever that does not
    /// take as it is (another subcommand, a global option, `--help`, an error) is parsed
    /// with the whole definition, so that help and error messages are the same.
    pub fn from_args() -> Cli {
        let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
        Cli::fast_run(&args).unwrap_or_else(|| Cli::parse_from(args))
    }

    /// Whether the process's arguments start with `run` (the launch path, see
    /// [`Cli::from_args`]): `main` starts the machine's probes before it parses them.
    pub fn starts_run() -> bool {
        std::env::args_os().nth(1).is_some_and(|a| a == "run")
    }

    /// `run`'s arguments parsed alone (None: not `run`, or not accepted as they are).
    fn fast_run(args: &[std::ffi::OsString]) -> Option<Cli> {
        use clap::FromArgMatches;
        if args.get(1).is_none_or(|a| a != "run") {
            return None;
        }
        let cmd = RunArgs::augment_args(clap::Command::new("run").no_binary_name(true));
        let m = cmd.try_get_matches_from(&args[2..]).ok()?;
        let run = RunArgs::from_arg_matches(&m).ok()?;
        Some(Cli {
            verbose: 0,
            quiet: false,
            command: Command::Run(run),
        })
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a command in a cell.
    #[command(
        after_help = "Examples:\n  taskcell run -p build -- npm ci\n  taskcell run -p review -w ~/src/pr-123 -- sh\n  taskcell run --net loopback --timeout 10m -- cargo test\n  taskcell run --secret GH_TOKEN=cmd:\"gh auth token\" --secret-opt GH_TOKEN.deliver=fd -- ./deploy.sh\n\nExit status: the command's own; 128+N when it was killed by signal N; 125 when taskcell failed before the command ran; 126 not executable; 127 not found; 120 when the command succeeded but leaked a secret declared on_leak = \"fail\"; 123 when it succeeded but the leak scan could not search everything (a bound or an unreadable file) and a secret is declared on_leak = \"fail\"."
    )]
    Run(RunArgs),
    /// Validate profile files; print every error with its line.
    #[command(after_help = "Example:\n  taskcell check profiles/*.toml")]
    Check {
        /// Profile files (or names).
        #[arg(required = true)]
        files: Vec<String>,
    },
    /// Pin profile files (and their `extends` chain) as they are now. A profile inside a
    /// path a cell can write (e.g. `./deploy.toml` in the workspace) is pinned at its first
    /// use; when its text changes, `run` refuses it until you read the change and trust it.
    #[command(after_help = "Example:\n  git diff -- deploy.toml && taskcell trust ./deploy.toml")]
    Trust {
        /// Profile files (or names).
        #[arg(required = true)]
        files: Vec<String>,
    },
    /// Show what a cell would see: every path with its mode, network, environment, limits.
    #[command(
        after_help = "Examples:\n  taskcell explain -p agent\n  taskcell explain -p build --write /var/cache/ccache --json"
    )]
    Explain {
        #[command(flatten)]
        cell: CellArgs,
        /// Print the plan as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List built-in and user profiles.
    #[command(after_help = "Example:\n  taskcell profiles")]
    Profiles,
    /// Check what this machine can enforce.
    #[command(
        after_help = "Example:\n  taskcell doctor\n\nExit status 0 when `run` can enforce every layer."
    )]
    Doctor {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Inside a `proxy` cell: open a tunnel to HOST PORT through the proxy on stdin/stdout
    /// (an ssh ProxyCommand).
    #[command(
        after_help = "Example (inside a cell):\n  ssh -o ProxyCommand='/run/taskcell/taskcell connect %h %p' git@HOST"
    )]
    Connect {
        host: String,
        port: u16,
        /// The proxy (default: $TASKCELL_PROXY, else 127.0.0.1:3128).
        #[arg(long, value_name = "ADDR:PORT")]
        proxy: Option<String>,
    },
    /// List running cells and their pending network requests.
    #[command(after_help = "Example:\n  taskcell sessions")]
    Sessions,
    /// Allow a pending (or future) request of a running cell for the cell's life.
    #[command(after_help = "Example:\n  taskcell approve 3f2a9c0d1e2b4a5c example.org:443")]
    Approve {
        session: String,
        #[arg(value_name = "HOST[:PORT]")]
        target: String,
    },
    /// Refuse a pending request of a running cell.
    #[command(after_help = "Example:\n  taskcell deny 3f2a9c0d1e2b4a5c example.org:443")]
    Deny {
        session: String,
        #[arg(value_name = "HOST[:PORT]")]
        target: String,
    },
    /// Print a shell completion script for taskcell.
    #[command(
        after_help = "Examples:\n  taskcell completions bash > ~/.local/share/bash-completion/completions/taskcell\n  taskcell completions zsh > ~/.zfunc/_taskcell\n  taskcell completions fish > ~/.config/fish/completions/taskcell.fish"
    )]
    Completions {
        /// The shell: bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

/// What defines a cell: the profile and the overrides (shared by `run` and `explain`).
#[derive(Debug, Args, Clone)]
pub struct CellArgs {
    /// Profile: a built-in name, a user profile name, or a path to a .toml file.
    #[arg(short, long, default_value = "build")]
    pub profile: String,
    /// Workspace directory (default: the current directory).
    #[arg(short, long)]
    pub workspace: Option<PathBuf>,
    /// Add a read-only path (repeatable).
    #[arg(long, value_name = "PATH")]
    pub read: Vec<PathBuf>,
    /// Add a read-write path (repeatable).
    #[arg(long, value_name = "PATH")]
    pub write: Vec<PathBuf>,
    /// Allow a host in `proxy` mode: HOST, *.DOMAIN, HOST:PORT, ADDRESS, CIDR (repeatable).
    #[arg(long, value_name = "RULE")]
    pub allow: Vec<String>,
    /// In `proxy` mode, ask (approval_command or `taskcell approve`) about unlisted hosts.
    #[arg(long)]
    pub ask: bool,
    /// In `proxy` mode, answer HOST with ADDRESS instead of DNS (like curl --resolve).
    #[arg(long, value_name = "HOST:ADDRESS")]
    pub resolve: Vec<String>,
    /// In `proxy` mode, also trust these CA certificates (PEM) for upstream TLS where the
    /// proxy injects credentials (private registries, tests); the system roots stay.
    #[arg(long, value_name = "PATH")]
    pub upstream_ca: Option<std::path::PathBuf>,
    /// Learn what the command needs: `proxy` mode allowing every host without asking,
    /// each connection audited; at the end, a `[network] allow = [...]` block naming every
    /// host:port used, ready to paste into a profile (also in the audit log).
    #[arg(long)]
    pub learn: bool,
    /// Network mode: none, loopback, proxy or host.
    #[arg(long, value_name = "MODE", value_parser = parse_net)]
    pub net: Option<NetMode>,
    /// Pass an environment variable (`K`) or set one (`K=V`) (repeatable).
    #[arg(short, long, value_name = "K[=V]")]
    pub env: Vec<String>,
    /// Wall-clock limit, e.g. 30s, 10m, 1h (SIGTERM, then SIGKILL after the grace period).
    #[arg(long, value_name = "DURATION", value_parser = parse_dur)]
    pub timeout: Option<Duration>,
    /// Declare a secret: NAME=env:VAR, NAME=file:PATH, NAME=cmd:COMMAND (quoted like a
    /// shell line, run without a shell) or NAME=generate:BYTES; delivered as a file in
    /// /run/secrets unless --secret-opt says otherwise (repeatable).
    #[arg(long, value_name = "NAME=PROVIDER:ARG")]
    pub secret: Vec<String>,
    /// Set a secret's option: NAME.deliver=file|fd|env, NAME.fd=N, NAME.var=VAR,
    /// NAME.revoke=COMMAND, NAME.ttl=DURATION, NAME.timeout=DURATION, NAME.mask=false,
    /// NAME.on_leak=warn|fail, NAME.optional=true (repeatable).
    #[arg(long, value_name = "NAME.KEY=VALUE")]
    pub secret_opt: Vec<String>,
    /// Processes and threads the cell may have at once (e.g. 4096, or "unlimited").
    #[arg(long, value_name = "N", value_parser = limit("processes"))]
    pub processes: Option<String>,
    /// Memory of the whole cell, swap counted (e.g. 512M, 4G, 75% of this machine's RAM).
    #[arg(long, value_name = "SIZE", value_parser = limit("memory"))]
    pub memory: Option<String>,
    /// Share of CPU cores (e.g. 1.5).
    #[arg(long, value_name = "CORES", value_parser = limit("cpu"))]
    pub cpu: Option<String>,
    /// Open files per process.
    #[arg(long, value_name = "N", value_parser = limit("open_files"))]
    pub open_files: Option<String>,
    /// Largest file a process may write (e.g. 1G); a write past it fails with EFBIG.
    #[arg(long, value_name = "SIZE", value_parser = limit("file_size"))]
    pub file_size: Option<String>,
    /// Core dump size (default 0: no core files).
    #[arg(long, value_name = "SIZE", value_parser = limit("core"))]
    pub core: Option<String>,
    /// Run even when a layer cannot be enforced; say what is missing.
    #[arg(long, conflicts_with = "strict")]
    pub best_effort: bool,
    /// Refuse to run when any layer cannot be enforced (the default).
    #[arg(long)]
    pub strict: bool,
    /// The lowest tier to run in: `full` (namespaces, Landlock, seccomp; the default),
    /// `container` (no user namespaces: Landlock, seccomp, egress only through the proxy)
    /// or `none` (like --best-effort). `taskcell doctor` names this machine's tier.
    #[arg(long, value_name = "TIER", value_parser = tier_arg)]
    pub require: Option<crate::profile::Tier>,
    /// Give the command its own pseudo-terminal (default when stdin and stdout are
    /// terminals): raw mode, resizes and Ctrl-C relayed, output masked.
    #[arg(long, conflicts_with = "no_pty")]
    pub pty: bool,
    /// Never give the command a pseudo-terminal (pipes instead).
    #[arg(long)]
    pub no_pty: bool,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub cell: CellArgs,
    /// Print the plan and exit without running anything.
    #[arg(long)]
    pub dry_run: bool,
    /// Append JSON audit lines to this file.
    #[arg(long, value_name = "FILE")]
    pub audit_log: Option<PathBuf>,
    /// The command and its arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

fn parse_net(s: &str) -> Result<NetMode, String> {
    NetMode::parse(s)
        .ok_or_else(|| format!("unknown network mode {s:?} (none, loopback, proxy, host)"))
}

fn limit(key: &'static str) -> impl Fn(&str) -> Result<String, String> + Clone {
    move |s: &str| crate::plan::limits::check(key, s).map(|()| s.to_string())
}

impl CellArgs {
    /// The resource-limit flags given, as (key, value).
    pub fn limit_overrides(&self) -> Vec<(String, String)> {
        [
            ("processes", &self.processes),
            ("memory", &self.memory),
            ("cpu", &self.cpu),
            ("open_files", &self.open_files),
            ("file_size", &self.file_size),
            ("core", &self.core),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| (k.to_string(), v.clone())))
        .collect()
    }
}

fn parse_dur(s: &str) -> Result<Duration, String> {
    crate::profile::parse_duration(s)
}

fn tier_arg(s: &str) -> Result<crate::profile::Tier, String> {
    crate::profile::Tier::parse(s)
        .ok_or_else(|| format!("{s:?} is not a tier (full, container or none)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `run` parsed alone gives what the whole definition gives, and leaves to it what it
    /// does not take as it is (global options, help, errors, other subcommands).
    #[test]
    fn run_parsed_alone_is_the_same_as_with_the_whole_definition() {
        let os = |v: &[&str]| -> Vec<std::ffi::OsString> {
            std::iter::once("taskcell")
                .chain(v.iter().copied())
                .map(Into::into)
                .collect()
        };
        for argv in [
            &["run", "--", "true"][..],
            &[
                "run", "-p", "build", "-w", "/tmp/x", "--", "make", "-j4", "--", "x",
            ],
            &[
                "run",
                "--net",
                "loopback",
                "--timeout",
                "10m",
                "--",
                "cargo",
                "test",
            ],
            &[
                "run",
                "--secret",
                "T=generate:16",
                "--secret-opt",
                "T.deliver=fd",
                "--",
                "sh",
            ],
            &[
                "run", "--read", "/a", "--read", "/b", "--write", "/c", "-e", "K=V", "--", "sh",
            ],
            &[
                "run",
                "--memory",
                "1G",
                "--processes",
                "64",
                "--strict",
                "--",
                "sh",
            ],
            &[
                "run",
                "--require",
                "container",
                "--dry-run",
                "--audit-log",
                "a.jsonl",
                "--",
                "x",
            ],
            &[
                "run",
                "--allow",
                "example.test:443",
                "--ask",
                "--learn",
                "--",
                "x",
            ],
        ] {
            let args = os(argv);
            let fast = Cli::fast_run(&args).unwrap_or_else(|| panic!("{argv:?} not taken"));
            let full = Cli::try_parse_from(&args).unwrap();
            assert_eq!(format!("{fast:?}"), format!("{full:?}"), "{argv:?}");
        }
        for argv in [
            &["run", "-v", "--", "true"][..],
            &["run", "--help"],
            &["run", "--version"],
            &["run", "--net", "nonsense", "--", "x"],
            &["run", "--best-effort", "--strict", "--", "x"],
            &["run"],
            &["explain", "-p", "build"],
            &["-q", "run", "--", "true"],
        ] {
            assert!(
                Cli::fast_run(&os(argv)).is_none(),
                "{argv:?} must go the full way"
            );
        }
    }
}
