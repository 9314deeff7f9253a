//! taskcell's binary: parse, run, map errors to exit codes.

use std::process::ExitCode;

use taskcell::cli::{CellArgs, Cli, Command};
use taskcell::plan::{self, Context, Overrides};
use taskcell::profile::Loader;
use taskcell::{audit, doctor, explain, supervisor, EXIT_SETUP};

fn main() -> ExitCode {
    // One malloc arena: a second thread's arena (the probes') would reserve 64 MB and
    // fault in pages that the clone then copies into the cell's init.
    // SAFETY: mallopt with an integer parameter, before any thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
    // First: no terminating signal may end the supervisor between two steps (a secret
    // fetched and not yet revoked); `run` turns each into an orderly ending.
    let blocked = taskcell::signals::block_at_start();
    // Before any lookup of a user or a host.
    taskcell::names::pin();
    ensure_std_fds();
    // `taskcell run`: the machine's facts, probed by a thread beside the parsing of the
    // arguments, the profile and the plan (after the two steps above: the thread has the
    // signals blocked and no lookup loads a module).
    let probing = Cli::starts_run().then(taskcell::cell::confine::Probing::start);
    let cli = Cli::from_args();
    init_tracing(cli.verbose, cli.quiet);
    if !matches!(cli.command, Command::Run(_)) {
        taskcell::signals::unblock();
    }
    let code = match cli.command {
        Command::Run(args) => {
            if let Err(e) = blocked {
                return ExitCode::from(fail(&format!("blocking signals: {e}")) as u8);
            }
            taskcell::signals::harden_supervisor();
            run(args, probing)
        }
        Command::Explain { cell, json } => match load_plan(&cell, &[]) {
            Ok(p) => {
                if json {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&explain::json(&p)).unwrap_or_default()
                    );
                } else {
                    print!("{}", explain::text(&p));
                }
                0
            }
            Err(e) => fail(&e),
        },
        Command::Check { files } => check(&files),
        Command::Trust { files } => trust(&files),
        Command::Profiles => {
            for p in Loader::from_env().list() {
                println!("{:<10} {:<12} {}", p.name, p.source, p.description);
            }
            0
        }
        Command::Doctor { json } => {
            let r = doctor::run();
            if json {
                println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
            } else {
                print!("{}", doctor::text(&r));
            }
            if r.can_enforce_everything() {
                0
            } else {
                1
            }
        }
        Command::Connect { host, port, proxy } => {
            let proxy = proxy
                .or_else(|| std::env::var("TASKCELL_PROXY").ok())
                .unwrap_or_else(|| "127.0.0.1:3128".into());
            match taskcell::net::connect::run(&proxy, &host, port) {
                Ok(()) => 0,
                Err(e) => fail(&e.to_string()),
            }
        }
        Command::Sessions => match taskcell::net::control::list_all(&control_dirs()) {
            Ok(v) => {
                for s in v {
                    print!("{s}");
                }
                0
            }
            Err(e) => fail(&e.to_string()),
        },
        Command::Approve { session, target } => control(&session, "approve", &target),
        Command::Deny { session, target } => control(&session, "deny", &target),
        Command::Completions { shell } => completions(shell),
    };
    ExitCode::from(code.clamp(0, 255) as u8)
}

/// Where running sessions' control sockets may be (the same places the plan chooses
/// from).
fn control_dirs() -> Vec<std::path::PathBuf> {
    let xdg = std::env::var("XDG_RUNTIME_DIR").ok();
    taskcell::plan::net::control_dirs(xdg.as_deref(), nix::unistd::getuid().as_raw())
}

/// The first of them (where the launchers' state is kept).
fn control_dir() -> std::path::PathBuf {
    let xdg = std::env::var("XDG_RUNTIME_DIR").ok();
    taskcell::plan::net::control_dir(xdg.as_deref(), nix::unistd::getuid().as_raw())
}

fn control(session: &str, verb: &str, target: &str) -> i32 {
    if let Err(e) = taskcell::net::approve::parse_target(target) {
        return fail(&format!("{target:?}: {e} (write HOST or HOST:PORT)"));
    }
    match taskcell::net::control::request(&control_dirs(), session, &format!("{verb} {target}")) {
        Ok(a) if a.starts_with("ok") => {
            let n = a.trim().trim_start_matches("ok ").to_string();
            let done = if verb == "approve" {
                "approved"
            } else {
                "denied"
            };
            println!("{done} {target} in session {session} ({n} waiting request(s) answered)");
            0
        }
        Ok(a) => fail(a.trim()),
        Err(e) => fail(&e.to_string()),
    }
}

/// `taskcell completions SHELL`: the script clap_complete derives from the CLI definition.
fn completions(shell: clap_complete::Shell) -> i32 {
    use std::io::Write;
    let mut script = Vec::new();
    let mut cmd = <Cli as clap::CommandFactory>::command();
    clap_complete::generate(shell, &mut cmd, "taskcell", &mut script);
    match std::io::stdout().write_all(&script) {
        Ok(()) => 0,
        Err(e) => fail(&format!(
            "cannot write the completion script to stdout: {e}"
        )),
    }
}

fn fail(msg: &str) -> i32 {
    eprintln!("taskcell: {msg}");
    EXIT_SETUP
}

/// Make sure fds 0, 1 and 2 are open, so that no pipe or file we open lands on them.
fn ensure_std_fds() {
    for fd in 0..3 {
        // SAFETY: F_GETFD only queries; open of /dev/null returns the lowest free fd.
        unsafe {
            if libc::fcntl(fd, libc::F_GETFD) == -1 {
                libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
            }
        }
    }
}

fn init_tracing(verbose: u8, quiet: bool) {
    use tracing_subscriber::EnvFilter;
    let default = if quiet {
        "error"
    } else {
        match verbose {
            0 => "warn",
            1 => "info",
            2 => "debug",
            _ => "trace",
        }
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Cleaned (masked, escaped) line by line; held while a cell's UI owns the screen.
        .with_writer(taskcell::display::Diagnostics::default)
        .with_ansi(false)
        .with_target(false)
        .without_time()
        .try_init();
}

fn load_plan(cell: &CellArgs, argv: &[String]) -> Result<plan::Plan, String> {
    let profile = Loader::from_env()
        .load(&cell.profile)
        .map_err(|e| e.to_string())?;
    let ov = Overrides {
        workspace: cell.workspace.clone(),
        read: cell.read.clone(),
        write: cell.write.clone(),
        net: cell.net,
        env: cell.env.clone(),
        timeout: cell.timeout,
        netov: taskcell::plan::net::NetOverrides {
            allow: cell.allow.clone(),
            ask: cell.ask,
            resolve: cell.resolve.clone(),
            upstream_ca: cell.upstream_ca.clone(),
            learn: cell.learn,
        },
        secrets: cell.secret.clone(),
        secret_opts: cell.secret_opt.clone(),
        limits: cell.limit_overrides(),
        pty: if cell.pty {
            Some(true)
        } else if cell.no_pty {
            Some(false)
        } else {
            None
        },
        require: cell.require,
        strict: if cell.best_effort {
            Some(false)
        } else if cell.strict {
            Some(true)
        } else {
            None
        },
    };
    let ctx = Context::from_process().map_err(|e| e.to_string())?;
    plan::resolve(&profile, &ov, &ctx, argv).map_err(|e| e.to_string())
}

fn check(files: &[String]) -> i32 {
    let loader = Loader::from_env();
    let mut bad = 0;
    for f in files {
        match loader.load(f).map_err(|e| e.to_string()).and_then(|p| {
            plan::check::check(&p).map_err(|e| e.to_string())?;
            Ok(p)
        }) {
            Ok(p) => println!("{f}: ok ({})", p.sources.join(" <- ")),
            Err(e) => {
                eprintln!("{e}");
                bad += 1;
            }
        }
    }
    if bad == 0 {
        0
    } else {
        1
    }
}

fn pin_store() -> Option<std::path::PathBuf> {
    taskcell::pins::store_path(&|k| std::env::var(k).ok())
}

fn trust(files: &[String]) -> i32 {
    let loader = Loader::from_env();
    let store = pin_store();
    let mut bad = 0;
    for f in files {
        let pinned = loader.load(f).map_err(|e| e.to_string()).and_then(|p| {
            let files: Vec<plan::profiles::ProfileFile> = p
                .files
                .iter()
                .map(|s| plan::profiles::ProfileFile {
                    path: plan::normalize(&s.path),
                    sha256: s.sha256.clone(),
                    writable: None,
                })
                .collect();
            taskcell::pins::trust(&files, store.as_deref())?;
            Ok(files)
        });
        match pinned {
            Ok(files) if files.is_empty() => println!("{f}: built-in, nothing to pin"),
            Ok(files) => {
                for p in files {
                    println!(
                        "pinned {} (sha256 {})",
                        taskcell::display::clean_path(&p.path),
                        p.sha256
                    );
                }
            }
            Err(e) => {
                eprintln!("taskcell: {e}");
                bad += 1;
            }
        }
    }
    if bad == 0 {
        0
    } else {
        EXIT_SETUP
    }
}

/// Profile files inside a path the cell can write are trusted by content (`pins`).
fn check_pins(
    plan: &plan::Plan,
    writable: &[std::path::PathBuf],
    audit: &mut audit::Audit,
) -> Result<(), String> {
    use taskcell::pins::Verdict;
    let verdicts = taskcell::pins::check(&plan.profile_files, pin_store().as_deref(), writable)?;
    let mut refusal = None;
    for (f, v) in &verdicts {
        let path = f.path.display().to_string();
        match v {
            Verdict::Outside | Verdict::Same => {}
            Verdict::Pinned => {
                eprintln!(
                    "taskcell: profile {} lies inside {}, which cells can write: pinned its \
                     content; a change to it is refused until you `taskcell trust` it",
                    taskcell::display::clean_path(&f.path),
                    f.writable
                        .as_deref()
                        .map(taskcell::display::clean_path)
                        .unwrap_or_default()
                );
                audit.record(
                    "profile_pinned",
                    serde_json::json!({ "path": path, "sha256": f.sha256 }),
                );
            }
            Verdict::Changed(old) => {
                audit.record(
                    "profile_changed",
                    serde_json::json!({ "path": path, "sha256": f.sha256, "pinned": old }),
                );
                refusal.get_or_insert_with(|| taskcell::pins::changed_message(f, old));
            }
        }
    }
    refusal.map_or(Ok(()), Err)
}

fn run(args: taskcell::cli::RunArgs, probing: Option<taskcell::cell::confine::Probing>) -> i32 {
    // The machine's facts, probed beside the profile and the plan (started by `main`,
    // unless a global option came before `run`).
    let probing = probing.unwrap_or_else(taskcell::cell::confine::Probing::start);
    let plan = match load_plan(&args.cell, &args.command) {
        Ok(p) => p,
        Err(e) => return fail(&e),
    };
    if args.dry_run {
        print!("{}", explain::text(&plan));
        return 0;
    }
    for w in explain::warnings(&plan) {
        eprintln!("taskcell: warning: {w}");
    }
    // Resolved (realpath of each) only for an audit log, which may not lie in them.
    let writable = match args.audit_log {
        Some(_) => taskcell::hostfile::writable_roots(&plan),
        None => Vec::new(),
    };
    let mut audit = match audit::Audit::open(args.audit_log.as_deref(), &writable) {
        Ok(a) => a,
        Err(e) => return fail(&e),
    };
    let probed = probing.finish();
    let enforcement = taskcell::plan::limits::enforcement(
        &plan.limits.resources,
        plan.limits.timeout,
        &probed.cgroups,
    );
    // The tier this machine gives (a clone probe for user namespaces, Landlock, seccomp).
    let tier = plan::tier::decide(&probed.tier);
    audit.session_start(&plan, &enforcement, &tier);
    // The first record is the probe: a log that cannot be written (a full disk) is an
    // error before anything runs, not a session without records.
    if let Some(e) = audit.write_error() {
        return fail(&format!(
            "cannot write the audit log {}: {e} (free space on its disk, or choose another --audit-log)",
            args.audit_log.as_deref().map(|p| p.display().to_string()).unwrap_or_default()
        ));
    }
    if let Err(e) = check_pins(&plan, &writable, &mut audit) {
        audit.record("session_error", serde_json::json!({ "error": e }));
        return fail(&e);
    }
    // Finish what killed launchers of this user left, then record this session.
    let cdir = control_dir();
    for line in taskcell::state::recover(&cdir, &plan.secrets, &writable) {
        eprintln!("taskcell: {line}");
    }
    let state = taskcell::state::State {
        session: audit.session.clone(),
        audit_log: args.audit_log.as_deref().map(|p| {
            std::env::current_dir()
                .map(|d| d.join(p))
                .unwrap_or_else(|_| p.to_path_buf())
        }),
        // The control socket of a `proxy` cell, where the plan put it (out of the cell's
        // sight); no other cell has one.
        files: plan
            .net
            .proxy
            .as_ref()
            .map(|p| p.control_dir.join(format!("{}.sock", audit.session)))
            .into_iter()
            .collect(),
        ..Default::default()
    }
    .revocations(&plan.secrets);
    if let Err(e) = taskcell::state::begin(&cdir, state) {
        tracing::warn!(
            "cannot record the session's state in {}: {e}",
            cdir.display()
        );
    }
    let _state = taskcell::state::Guard;
    for w in enforcement.unenforced() {
        eprintln!("taskcell: warning: {w}");
    }
    if tier.tier < plan.security.require {
        let msg = plan::tier::refusal(&tier, plan.security.require);
        eprintln!("taskcell: {msg}");
        audit.record(
            "tier_refused",
            serde_json::json!({ "tier": tier.tier, "required": plan.security.require, "why": tier.why }),
        );
        return EXIT_SETUP;
    }
    let kernel = taskcell::cell::confine::kernel();
    let missing = taskcell::spec::layers::missing(&plan, &kernel);
    if plan.strict && !missing.is_empty() {
        for m in &missing {
            eprintln!("taskcell: {}", m.refusal());
            audit.record("layer_refused", serde_json::json!({ "missing": m }));
        }
        return EXIT_SETUP;
    }
    for m in &missing {
        eprintln!("taskcell: {}", m.degraded());
        audit.record("layer_missing", serde_json::json!({ "missing": m }));
    }
    match taskcell::prepare::create(&plan.create) {
        Ok(made) => {
            for p in made {
                audit.record(
                    "created",
                    serde_json::json!({ "path": p.display().to_string() }),
                );
            }
        }
        Err(e) => {
            audit.record("session_error", serde_json::json!({ "error": e }));
            return fail(&e);
        }
    }
    // A layer left out during the run (no user namespaces) is audited once it returns.
    let mut late: Vec<serde_json::Value> = Vec::new();
    // `--require container` accepted the container tier: one short line, not a warning.
    let accepted = plan.security.require == plan::tier::Tier::Container;
    let mut degraded = |m: &taskcell::spec::layers::Missing| {
        if accepted && m.layer == "userns" {
            eprintln!("taskcell: the container tier (no user namespaces; what it does not enforce: `taskcell explain`, docs/threat-model.md)");
        } else {
            eprintln!("taskcell: {}", m.degraded());
        }
        late.push(serde_json::json!({ "missing": m }));
    };
    let result = supervisor::run_with(&plan, &tier, &mut audit, &mut degraded);
    for m in late {
        audit.record("layer_missing", m);
    }
    let outcome = match result {
        Ok(o) => o,
        Err(e @ supervisor::RunError::Stopped(_)) => {
            eprintln!("taskcell: {e}");
            audit.session_stopped(&e.to_string(), e.exit_code());
            return e.exit_code();
        }
        Err(e) => {
            audit.record(
                "session_error",
                serde_json::json!({ "error": e.to_string() }),
            );
            return fail(&e.to_string());
        }
    };
    if outcome.enforcement != enforcement {
        // The cgroup could not be created after all: say what enforced the limits instead.
        for w in outcome.enforcement.unenforced() {
            eprintln!("taskcell: warning: {w}");
        }
        audit.record(
            "limits",
            serde_json::json!({ "limits": outcome.enforcement.rows, "fallback": true }),
        );
    }
    for hit in &outcome.limit_hits {
        eprintln!("taskcell: {}", hit.line());
        audit.record("limit_hit", serde_json::json!(hit));
    }
    if matches!(outcome.ending, supervisor::Ending::Lost)
        && !outcome.timed_out
        && outcome.stopped_by.is_none()
    {
        eprintln!(
            "taskcell: {}: the command's own exit status is unknown (exit {})",
            outcome.reason(),
            supervisor::EXIT_INIT_KILLED
        );
    }
    audit.session_end(&outcome);
    if let supervisor::Ending::NotStarted { message, .. } = &outcome.ending {
        eprintln!("taskcell: {}", taskcell::display::clean(message));
    }
    outcome.exit_code()
}
