//! `taskcell explain`: what a cell will see, in words or JSON.

use std::fmt::Write;

use serde_json::json;

use crate::cell::rootfs;
use crate::plan::{Access, NetMode, Plan};

/// Warnings about weak spots of a plan, shown by explain and `run`.
pub fn warnings(plan: &Plan) -> Vec<String> {
    let mut w = Vec::new();
    if plan.net.mode == NetMode::Host {
        w.push("network mode `host` is UNSAFE: the cell shares the host's network (every host, port and local service is reachable)".to_string());
    }
    if plan
        .paths
        .iter()
        .any(|r| r.access == Access::Write && r.path == std::path::Path::new("/"))
    {
        w.push("the whole filesystem is writable".into());
    }
    for sp in &plan.secrets {
        // An injected secret's environment variable holds only a placeholder.
        if let (crate::plan::secrets::Delivery::Env { var }, None) = (&sp.delivery, &sp.inject) {
            w.push(format!("secret {} is delivered in the environment (${var}), the weakest channel: every descendant inherits it and it is readable in /proc/PID/environ; prefer deliver = \"file\" or \"fd\"", sp.name));
        }
        if !sp.mask {
            w.push(format!(
                "secret {} is not masked in the output nor looked for by the leak scan (mask = false)",
                sp.name
            ));
        }
    }
    w
}

pub fn text(plan: &Plan) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "profile:   {} — {}", plan.profile, plan.description);
    let _ = writeln!(s, "sources:   {}", plan.sources.join(" <- "));
    let _ = writeln!(
        s,
        "workspace: {}{}",
        plan.workspace.display(),
        match plan.workspace_from {
            crate::plan::WorkspaceFrom::Flag => " (-w)",
            crate::plan::WorkspaceFrom::Cwd => " (the current directory)",
            crate::plan::WorkspaceFrom::GitRoot =>
                " (the root of the git repository around the current directory; -w to choose another)",
        }
    );
    let _ = writeln!(s, "cwd:       {}", plan.process.cwd.display());
    let _ = writeln!(
        s,
        "\nfilesystem (everything else does not exist in the cell):"
    );
    let _ = writeln!(s, "  {:<8} /proc (the cell's own processes only)", "proc");
    let _ = writeln!(
        s,
        "  {:<8} /dev (null zero full random urandom tty ptmx pts shm)",
        "dev"
    );
    let _ = writeln!(s, "  {:<8} /tmp (empty, private)", "tmpfs");
    for r in &plan.paths {
        let what = match (&r.symlink, r.access) {
            (Some(t), _) => format!("{} -> {}", r.path.display(), t.display()),
            (None, Access::Tmpfs) => format!("{} (empty, private)", r.path.display()),
            (None, Access::Hide) => format!("{} (hidden: empty)", r.path.display()),
            (None, _) => r.path.display().to_string(),
        };
        let mode = if r.symlink.is_some() {
            "symlink"
        } else {
            r.access.as_str()
        };
        let created = match plan.create.iter().find(|c| c.path == r.path) {
            Some(c) => format!(
                " (missing: created before the cell starts, {}, owned by you)",
                crate::prepare::kind_word(c.kind)
            ),
            None => String::new(),
        };
        let why = match plan.command_binds.iter().find(|b| b.dir == r.path) {
            Some(b) => format!(
                " (the command {} is a symlink to {})",
                b.command.display(),
                b.target.display()
            ),
            None => String::new(),
        };
        let _ = writeln!(s, "  {mode:<8} {what}{created}{why}");
    }
    let _ = writeln!(
        s,
        "\nnetwork:   {}",
        match plan.net.mode {
            NetMode::None => "none (own network namespace, no interface up)",
            NetMode::Loopback => "loopback (own network namespace, lo only)",
            NetMode::Proxy => "proxy (own network namespace, lo only; the supervisor's egress proxy is the only way out)",
            NetMode::Host => "host (UNSAFE: the host's network)",
        }
    );
    if let Some(flag) = &plan.net.implied_by {
        let _ = writeln!(s, "           (implied by {flag})");
    }
    if let Some(p) = &plan.net.proxy {
        s.push_str(&crate::net::describe(p));
    }
    let _ = writeln!(s, "hostname:  {}", plan.process.hostname);
    let _ = writeln!(
        s,
        "terminal:  {}",
        if plan.process.pty {
            "its own pseudo-terminal (raw mode relay, resizes, Ctrl-C as a byte, output masked)"
        } else {
            "none (stdin inherited, a new session without a controlling terminal)"
        }
    );
    let _ = writeln!(
        s,
        "ids:       uid {} gid {} (mapped 1:1; no capabilities, no_new_privs)",
        plan.process.uid, plan.process.gid
    );
    let _ = writeln!(s, "\nenvironment (nothing else is passed):");
    for (k, v) in &plan.process.env {
        let _ = writeln!(s, "  {k}={v}");
    }
    crate::plan::secrets::explain(plan, &mut s);
    let _ = writeln!(s, "\nlimits:");
    match plan.limits.timeout {
        Some(t) => {
            let _ = writeln!(
                s,
                "  timeout  {}s (then SIGTERM; SIGKILL after {}s)",
                t.as_secs_f64(),
                plan.limits.grace.as_secs_f64()
            );
        }
        None => {
            let _ = writeln!(s, "  timeout  none");
        }
    }
    let enf = limits_here(plan);
    for r in enf.rows.iter().filter(|r| r.limit != "timeout") {
        let _ = writeln!(
            s,
            "  {:<10} {:<28} {}{}{}",
            r.limit,
            r.value,
            if r.enforced { "" } else { "NOT ENFORCED: " },
            r.mechanism,
            r.note
                .as_deref()
                .map(|n| format!(" ({n})"))
                .unwrap_or_default()
        );
    }
    for r in &plan.limits.rlimits {
        let _ = writeln!(
            s,
            "  {:<10} {:<28} [limits.rlimits], set last",
            format!("rlimit {}", r.name),
            r.soft
        );
    }
    let _ = writeln!(
        s,
        "\nenforcement: {}",
        if plan.strict {
            "strict (refuse to run when a layer is missing)"
        } else {
            "best effort (run with what the kernel has; say what is missing)"
        }
    );
    for w in warnings(plan) {
        let _ = writeln!(s, "\nWARNING: {w}");
    }
    s.push_str(&crate::spec::layers::explain(plan));
    let _ = writeln!(s, "\nmount sequence:");
    for op in crate::supervisor::mount_ops(plan) {
        let _ = writeln!(s, "  {}", rootfs::describe(&op));
    }
    s
}

/// How this machine enforces the plan's resource limits.
fn limits_here(plan: &Plan) -> crate::plan::limits::Enforcement {
    crate::plan::limits::enforcement(
        &plan.limits.resources,
        plan.limits.timeout,
        &crate::cell::cgroup::machine(),
    )
}

pub fn json(plan: &Plan) -> serde_json::Value {
    json!({
        "limits": limits_here(plan).rows,
        "plan": plan,
        "plan_sha256": plan.digest(),
        "mounts": crate::supervisor::mount_ops(plan).iter().map(rootfs::describe).collect::<Vec<_>>(),
        "warnings": warnings(plan),
        "seccomp": crate::cell::seccomp::describe(&crate::cell::seccomp::filter(&crate::spec::layers::seccomp_policy(plan))),
        "landlock": crate::spec::layers::landlock_rules(plan),
        "no_userns_lost": crate::spec::layers::NO_USERNS_LOST,
    })
}
