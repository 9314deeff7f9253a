//! `taskcell explain`: what a cell will see, in words or JSON.

use std::fmt::Write;

use serde_json::json;

use crate::plan::net::{ProxyPlan, BINARY_IN_CELL, CA_BUNDLE_IN_CELL, SYSTEM_BUNDLE};
use crate::plan::secrets::{Delivery, OnLeak};
use crate::plan::{Access, NetMode, Plan};
use crate::spec::layers;
use crate::spec::mounts::MountOp;
use crate::spec::{self, landlock, seccomp, Handles, Spec};

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
        if let (Delivery::Env { var }, None) = (&sp.delivery, &sp.inject) {
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
    profile_files(plan, &mut s);
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
    filesystem(plan, &mut s);
    let offer = offer_here(plan);
    network_and_process(plan, &offer, &mut s);
    secrets(plan, &mut s);
    limits(plan, &mut s);
    for w in warnings(plan) {
        let _ = writeln!(s, "\nWARNING: {w}");
    }
    let spec = compiled(plan, &offer);
    layers(plan, &spec, &mut s);
    let _ = writeln!(s, "\nmount sequence:");
    for op in &spec.mounts {
        let _ = writeln!(s, "  {}", describe(op));
    }
    s
}

/// The profile files inside a writable path: protected in the cell, and whether their
/// content is the pinned one (`crate::pins`).
fn profile_files(plan: &Plan, s: &mut String) {
    use crate::pins::Verdict;
    let store = crate::pins::store_path(&|k| std::env::var(k).ok());
    let writable = crate::hostfile::writable_roots(plan);
    let status = match crate::pins::status(&plan.profile_files, store.as_deref(), &writable) {
        Ok(v) => v,
        Err(e) => {
            let _ = writeln!(s, "pin:       {e}");
            return;
        }
    };
    for (f, v) in status {
        let what = match v {
            Verdict::Outside => continue,
            Verdict::Same => "the pinned content".to_string(),
            Verdict::Pinned => "not pinned yet (pinned at its first run)".to_string(),
            Verdict::Changed(_) => {
                "CHANGED since it was pinned: `run` refuses it until `taskcell trust`".to_string()
            }
        };
        let _ = writeln!(
            s,
            "pin:       {} (in a writable path, read-only in the cell): {what}",
            crate::display::clean_path(&f.path)
        );
    }
}

/// Every path the cell gets, with its mode.
fn filesystem(plan: &Plan, s: &mut String) {
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
}

/// The network, hostname, terminal, ids and environment.
fn network_and_process(plan: &Plan, offer: &spec::Offer, s: &mut String) {
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
        s.push_str(&proxy(p));
    }
    if !plan.process.argv.is_empty() {
        // As it runs: with the profile's `[command] insert_args`.
        let _ = writeln!(
            s,
            "command:   {}",
            crate::display::clean(plan.process.argv.join(" "))
        );
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
    match &offer.host_ids {
        None => {
            let _ = writeln!(
                s,
                "ids:       uid {} gid {} (mapped 1:1; no capabilities, no_new_privs)",
                plan.process.uid, plan.process.gid
            );
        }
        Some(h) => {
            let _ = writeln!(
                s,
                "ids:       uid {} gid {} inside; on the host one free uid=gid of {}..{} ({}) per running cell, taken at start (the audit log's host_ids event names it); workspace and write paths idmapped to their owners; no capabilities, no_new_privs",
                plan.process.uid,
                plan.process.gid,
                h.range.start,
                h.range.last(),
                h.from
            );
        }
    }
    let _ = writeln!(s, "\nenvironment (nothing else is passed):");
    for (k, v) in &plan.process.env {
        let _ = writeln!(s, "  {k}={v}");
    }
}

/// The timeout, each resource limit with what enforces it here, the raw rlimits, and
/// whether a missing layer refuses the run.
fn limits(plan: &Plan, s: &mut String) {
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
            "strict (refuse to run when a layer of the required tier is missing)"
        } else {
            "best effort (run with what the kernel has; say what is missing)"
        }
    );
}

/// What this machine offers a cell of `plan`.
fn offer_here(plan: &Plan) -> spec::Offer {
    let (proxy, inject) = spec::Offer::wanted(plan);
    crate::cell::confine::offer(proxy, inject)
}

/// The spec `run` would execute here (the handles made at start shown by description):
/// with namespaces where this machine gives them, else the spec of the tier left without
/// them (the container tier's Landlock rules, filter and supervisor-made connects), as
/// `run` compiles it after its clone failed.
fn compiled(plan: &Plan, offer: &spec::Offer) -> Spec {
    let mut handles = Handles::planned(plan, limits_here(plan).rlimits);
    // Root-started: the cell runs as a host id of the offered range, taken at start.
    handles.host_ids = offer.host_ids.as_ref().map(|r| spec::HostIds {
        uid: r.range.start,
        gid: r.range.start,
    });
    let tier = tier_here();
    if tier.userns || tier.without_userns < plan.security.require {
        return spec::compile(plan, offer, &handles);
    }
    if let (Some(p), true) = (&plan.net.proxy, offer.user_notif) {
        // The supervisor binds its listeners on ports the kernel picks at start; shown
        // here as the full tier's fixed ports.
        handles.proxy_ports = Some(p.listen_ports());
    }
    let tmp = std::env::temp_dir().join(format!("{}XXXXXX", crate::state::private_tmp_prefix()));
    let home = spec::home_is_private(plan).then(|| tmp.join("home"));
    spec::without_namespaces(
        plan,
        offer,
        &handles,
        &tmp,
        home.as_deref(),
        &crate::cell::confine::list_dir,
    )
}

/// The filter the cell of `spec` gets: the container tier's (its connects go to the
/// supervisor) or the one for a cell with namespaces.
fn filter_of(plan: &Plan, spec: &Spec) -> seccomp::Filter {
    spec::seccomp_filter_for(plan, spec.connect.is_some())
}

/// The layers the cell gets: Landlock, seccomp, what this kernel lacks, what is lost
/// without user namespaces.
fn layers(plan: &Plan, spec: &Spec, s: &mut String) {
    let k = crate::cell::confine::kernel();
    let _ = writeln!(
        s,
        "\nlandlock (what may be opened, bound, connected, signalled):"
    );
    match (&spec.landlock, &k.landlock) {
        _ if !plan.security.landlock => {
            let _ = writeln!(s, "  off (security.landlock = false)");
        }
        (Some(r), _) => {
            for l in landlock::describe(r) {
                let _ = writeln!(s, "  {l}");
            }
        }
        (None, Err(e)) => {
            let _ = writeln!(s, "  not available: {e}");
        }
        (None, Ok(_)) => {}
    }
    let _ = writeln!(s, "\nseccomp (default allow; refused syscalls):");
    for l in seccomp::describe(&filter_of(plan, spec)) {
        let _ = writeln!(s, "  {l}");
    }
    let miss = layers::missing(plan, &k);
    if !miss.is_empty() {
        let _ = writeln!(s, "\nmissing on this kernel:");
        for m in &miss {
            let _ = writeln!(s, "  {}: {} (fix: {})", m.layer, m.detail, m.fix);
        }
    }
    let t = tier_here();
    let _ = writeln!(
        s,
        "\ntier: this machine gives `{}`; the plan requires `{}` ({}){}",
        t.tier,
        plan.security.require,
        if t.tier >= plan.security.require {
            "run starts here"
        } else {
            "run refuses here"
        },
        if t.tier == crate::plan::tier::Tier::Full {
            ""
        } else {
            "; see `taskcell doctor` for how to get a higher one"
        }
    );
    for w in &t.why {
        let _ = writeln!(s, "  why: {w}");
    }
    let _ = writeln!(
        s,
        "\nwithout user namespaces (the container tier, or --best-effort), these promises are lost:"
    );
    for l in layers::NO_USERNS_LOST {
        let _ = writeln!(s, "  - {l}");
    }
}

/// This machine's tier (probes user namespaces with a clone).
fn tier_here() -> crate::plan::tier::TierReport {
    crate::plan::tier::decide(&crate::cell::confine::machine(crate::cell::userns::probe()))
}

/// A mount op as `explain --json` gives it: what kind of mount, where in the cell, from
/// where on the host (binds), with which options.
pub fn mount_json(op: &MountOp) -> serde_json::Value {
    let p = |p: &std::path::Path| p.display().to_string();
    let (kind, target, source, options): (&str, String, Option<String>, Vec<String>) = match op {
        MountOp::Tmpfs {
            path,
            mode,
            readonly,
        } => (
            "tmpfs",
            p(path),
            None,
            [format!("mode={mode:o}")]
                .into_iter()
                .chain(readonly.then(|| "ro".to_string()))
                .collect(),
        ),
        MountOp::Bind {
            src,
            path,
            readonly,
            is_dir,
        } => (
            "bind",
            p(path),
            Some(p(src)),
            vec![
                if *readonly { "ro" } else { "rw" }.into(),
                "rec".into(),
                if *is_dir { "dir" } else { "file" }.into(),
            ],
        ),
        MountOp::Proc { path } => ("proc", p(path), None, vec![]),
        MountOp::Dev { src, path } => ("dev", p(path), Some(p(src)), vec![]),
        MountOp::Devpts { path } => ("devpts", p(path), None, vec!["newinstance".into()]),
        MountOp::Symlink { target, path } => ("symlink", p(path), Some(p(target)), vec![]),
        MountOp::RemountRo { path } => ("remount", p(path), None, vec!["ro".into()]),
        MountOp::SecretsTmpfs { path, size, .. } => (
            "secrets",
            p(path),
            None,
            vec![
                "mode=500".into(),
                "nosuid".into(),
                "nodev".into(),
                "noexec".into(),
                format!("size={size}"),
                "ro-once-filled".into(),
            ],
        ),
        MountOp::SelfRo { path } => (
            "bind",
            p(path),
            Some(p(path)),
            vec!["ro".into(), "if-present".into()],
        ),
        MountOp::Mask { path } => ("mask", p(path), None, vec!["if-present".into()]),
    };
    json!({ "kind": kind, "target": target, "source": source, "options": options })
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
    let offer = offer_here(plan);
    let spec = compiled(plan, &offer);
    json!({
        "host_ids": offer.host_ids,
        "limits": limits_here(plan).rows,
        "plan": plan,
        "plan_sha256": plan.digest(),
        "mounts": spec.mounts.iter().map(mount_json).collect::<Vec<_>>(),
        "warnings": warnings(plan),
        "seccomp": seccomp::describe(&filter_of(plan, &spec)),
        "landlock": spec.landlock,
        "no_userns_lost": crate::spec::layers::NO_USERNS_LOST,
        "tier": tier_here(),
        "tier_required": plan.security.require,
    })
}

/// A mount op in words (the mount sequence of `explain` and `run --dry-run`).
pub fn describe(op: &MountOp) -> String {
    match op {
        MountOp::Tmpfs {
            path,
            mode,
            readonly,
        } => format!(
            "tmpfs    {} (mode {mode:o}{})",
            path.display(),
            if *readonly { ", read-only" } else { "" }
        ),
        MountOp::Bind {
            src,
            path,
            readonly,
            ..
        } => {
            let mode = if *readonly { "ro" } else { "rw" };
            if src == path {
                format!("bind-{mode}  {}", path.display())
            } else {
                format!("bind-{mode}  {} <- {}", path.display(), src.display())
            }
        }
        MountOp::Proc { path } => format!("proc     {}", path.display()),
        MountOp::Dev { path, .. } => format!("dev      {}", path.display()),
        MountOp::Devpts { path } => format!("devpts   {} (new instance)", path.display()),
        MountOp::Symlink { target, path } => {
            format!("symlink  {} -> {}", path.display(), target.display())
        }
        MountOp::RemountRo { path } => format!("remount  {} read-only", path.display()),
        MountOp::SecretsTmpfs { path, size, .. } => format!(
            "tmpfs    {} (secrets: 0500, files 0400, nosuid,nodev,noexec, noswap if allowed, {} KiB, read-only once filled)",
            path.display(),
            size / 1024
        ),
        MountOp::SelfRo { path } => format!("bind-ro  {} (if present)", path.display()),
        MountOp::Mask { path } => format!("mask     {} (if present)", path.display()),
    }
}

/// The proxy plan in words, for `explain`.
fn proxy(p: &ProxyPlan) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "  proxy    http://127.0.0.1:{} (CONNECT and plain HTTP), socks5h://127.0.0.1:{}",
        p.http_port, p.socks_port
    );
    for r in &p.allowlist.allow {
        let _ = writeln!(s, "  allow    {:<28} ({})", r.text, r.origin);
    }
    for r in &p.allowlist.deny {
        let _ = writeln!(s, "  deny     {:<28} ({})", r.text, r.origin);
    }
    if p.allowlist.allow.is_empty() {
        let _ = writeln!(s, "  allow    (nothing)");
    }
    let _ = writeln!(
        s,
        "  private, loopback, link-local (metadata), CGNAT, multicast addresses: refused unless an address rule names them"
    );
    let _ = writeln!(
        s,
        "  unlisted {}",
        if p.learn {
            "allowed and audited (--learn: the hosts used are printed at the end as a [network] allow block)".into()
        } else if p.ask {
            match &p.approval_command {
                Some(c) => format!(
                    "ask: approval_command {:?}, else deny after {}s",
                    c,
                    p.ask_timeout.as_secs()
                ),
                None => format!(
                    "ask: `taskcell approve SESSION HOST[:PORT]`, else deny after {}s",
                    p.ask_timeout.as_secs()
                ),
            }
        } else {
            "refused (403)".into()
        }
    );
    for r in &p.inject {
        let _ = writeln!(
            s,
            "  inject   {} -> {} (TLS to these hosts is intercepted with the cell's own CA; placeholders elsewhere are blocked)",
            r.secret,
            r.hosts.join(", ")
        );
    }
    for h in &p.intercept {
        let _ = writeln!(
            s,
            "  intercept {h} (TLS intercepted with the cell's own CA, no secret injected: the secret firewall reads every request)"
        );
    }
    if p.intercepts_any() {
        let _ = writeln!(
            s,
            "  firewall {} (every declared secret and its encodings, in requests to intercepted hosts, except a secret injected for that host)",
            match p.firewall {
                crate::plan::net::Firewall::Redact => "redact: replaced by [secret NAME removed], lengths fixed up",
                crate::plan::net::Firewall::Block => "block: the request is refused (403)",
            }
        );
    }
    if p.intercepts_any() {
        let _ = writeln!(
            s,
            "  trust    {} (system roots + the cell CA, also over {}); upstream verified against the system roots{}",
            CA_BUNDLE_IN_CELL,
            SYSTEM_BUNDLE,
            match &p.upstream_ca {
                Some(c) => format!(" + {}", c.display()),
                None => String::new(),
            }
        );
    }
    for (h, a) in &p.resolve {
        let _ = writeln!(s, "  resolve  {h} -> {a} (fixed answer)");
    }
    for f in &p.forwards {
        let _ = writeln!(
            s,
            "  forward  127.0.0.1:{} -> {} ({})",
            f.listen,
            f.to.describe(),
            f.origin
        );
    }
    let _ = writeln!(
        s,
        "  connect  {BINARY_IN_CELL} connect HOST PORT (ssh ProxyCommand)"
    );
    s
}

/// The `secrets:` section of `taskcell explain`.
fn secrets(plan: &Plan, s: &mut String) {
    if plan.secrets.is_empty() {
        return;
    }
    let _ = writeln!(
        s,
        "\nsecrets (fetched when the cell starts; values never stored on disk):"
    );
    for sp in &plan.secrets {
        let how = match &sp.delivery {
            Delivery::File { path, var } => {
                format!(
                    "file {} (read-only tmpfs; ${var} has the path)",
                    path.display()
                )
            }
            Delivery::Fd { fd, var } => format!("fd {fd} (sealed memfd; ${var} has the number)"),
            Delivery::Env { var } if sp.inject.is_some() => format!("env ${var}"),
            Delivery::Env { var } => {
                format!("env ${var} (WEAKEST: inherited by every descendant, in /proc/PID/environ)")
            }
            Delivery::None => {
                "nowhere (watch-only: masked, scanned for, kept out of requests to intercepted hosts)".into()
            }
        };
        let _ = writeln!(s, "  {:<14} from {}", sp.name, sp.provider.describe());
        let _ = writeln!(s, "  {:<14} to   {how}", "");
        if let Some(i) = &sp.inject {
            let _ = writeln!(
                s,
                "  {:<14}      a PLACEHOLDER of the same shape; the proxy puts the value into requests to {} only{}",
                "",
                i.hosts.join(", "),
                if i.body { " (headers and bodies)" } else { " (request line and headers)" }
            );
        }
        let mut extra = vec![
            if sp.mask {
                "masked in output, leak scan".to_string()
            } else {
                "NOT masked, not scanned".to_string()
            },
            format!(
                "on leak: {}",
                if sp.on_leak == OnLeak::Fail {
                    "fail"
                } else {
                    "warn"
                }
            ),
        ];
        if let Some(r) = &sp.revoke {
            extra.push(format!("revoke {r:?}"));
        }
        if let Some(t) = sp.ttl {
            extra.push(format!("ttl {}s", t.as_secs_f64()));
        }
        let _ = writeln!(s, "  {:<14}      {}", "", extra.join("; "));
    }
}
