//! Real package managers fetch through the proxy of a `build` cell, into taskcell's own
//! caches: `npm install` of a package with an install script, `cargo build` of a crate
//! with one dependency, `pip install` into a workspace virtualenv. Each is timed out of a
//! cell and in one (printed; run with --nocapture to see the numbers).
//!
//! The registries' hosts are read at run time from each tool's own configuration (never
//! written here). A test is skipped, with a notice saying why, when its tool is missing or
//! its registry cannot be reached from this machine.

mod common;
use common::*;

use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn skip(what: &str, why: &str) {
    eprintln!("SKIPPED {what}: {why}");
}

/// `(host, port)` of an http(s) URL.
fn host_port(url: &str) -> Option<(String, u16)> {
    let (scheme, rest) = url.trim().split_once("://")?;
    let authority = rest.split('/').next()?;
    let default = if scheme == "http" { 80 } else { 443 };
    match authority.rsplit_once(':') {
        Some((h, p)) => Some((h.to_string(), p.parse().ok()?)),
        None => Some((authority.to_string(), default)),
    }
}

/// Whether this machine reaches `host:port` at all (else the test is skipped).
fn reachable(host: &str, port: u16) -> bool {
    // As taskcell does (this test binary is linked statically too: see src/names.rs).
    taskcell::names::pin();
    let Ok(addrs) = (host, port).to_socket_addrs() else {
        return false;
    };
    addrs
        .into_iter()
        .any(|a| TcpStream::connect_timeout(&a, Duration::from_secs(5)).is_ok())
}

/// `--allow` arguments for each host, plus an address rule for each of its addresses
/// (a registry mirror on a private or reserved address needs one; a public one does not).
fn allow_args(hosts: &[(String, u16)]) -> Vec<String> {
    taskcell::names::pin();
    let mut v = Vec::new();
    for (h, p) in hosts {
        v.push("--allow".to_string());
        v.push(format!("{h}:{p}"));
        for a in (h.as_str(), *p).to_socket_addrs().into_iter().flatten() {
            let rule = match a.ip() {
                std::net::IpAddr::V4(ip) => format!("{ip}:{p}"),
                std::net::IpAddr::V6(ip) => format!("[{ip}]:{p}"),
            };
            if !v.contains(&rule) {
                v.push("--allow".to_string());
                v.push(rule);
            }
        }
    }
    v
}

fn timed(c: &mut Command) -> (Output, Duration) {
    let t = Instant::now();
    let o = c.output().expect("running a package manager");
    (o, t.elapsed())
}

fn user_path() -> String {
    let home = std::env::var("HOME").unwrap_or_default();
    format!("{home}/.cargo/bin:/usr/local/bin:/usr/bin:/bin")
}

/// Run `script` in a `build` cell in `ws` with the given extra taskcell arguments.
fn in_cell(ws: &Path, extra: &[String], script: &str) -> (Output, Duration) {
    let mut args: Vec<&str> = vec!["run", "-p", "build", "--no-pty"];
    args.extend(extra.iter().map(String::as_str));
    args.extend(["--", "/bin/sh", "-c", script]);
    let mut c = taskcell(ws, &args);
    c.env("PATH", user_path());
    timed(&mut c)
}

fn report(what: &str, outside: Duration, inside: Duration) {
    eprintln!(
        "timing {what}: outside a cell {:.2}s, in a build cell through the proxy {:.2}s",
        outside.as_secs_f64(),
        inside.as_secs_f64()
    );
}

#[test]
fn npm_installs_a_package_with_an_install_script_through_the_proxy() {
    let Ok(o) = Command::new("npm")
        .args(["config", "get", "registry"])
        .output()
    else {
        return skip("npm", "npm is not installed");
    };
    let Some((host, port)) = host_port(&String::from_utf8_lossy(&o.stdout)) else {
        return skip("npm", "`npm config get registry` names no http(s) registry");
    };
    if !reachable(&host, port) {
        return skip(
            "npm",
            "the registry of `npm config get registry` is unreachable",
        );
    }
    let setup = |ws: &Ws| {
        std::fs::create_dir_all(ws.join("withscript")).unwrap();
        std::fs::write(
            ws.join("withscript/package.json"),
            r#"{"name":"with-script","version":"1.0.0","dependencies":{"is-number":"^7.0.0"},
"scripts":{"postinstall":"node -e \"require('fs').writeFileSync(process.env.INIT_CWD + '/install-script-ran', require('is-number')(5) ? 'yes' : 'no')\""}}"#,
        )
        .unwrap();
        std::fs::write(
            ws.join("package.json"),
            r#"{"name":"app","version":"1.0.0"}"#,
        )
        .unwrap();
    };
    let install = "npm install --no-audit --no-fund --foreground-scripts ./withscript";
    let out_ws = Ws::new();
    setup(&out_ws);
    let cache = Ws::new();
    let (o, outside) = timed(
        Command::new("/bin/sh")
            .args(["-c", install])
            .current_dir(out_ws.path())
            .env("npm_config_cache", cache.path()),
    );
    if !o.status.success() {
        return skip(
            "npm",
            &format!("npm install fails outside a cell too: {}", stderr(&o)),
        );
    }
    let ws = Ws::new();
    setup(&ws);
    let (o, inside) = in_cell(
        ws.path(),
        &allow_args(&[(host, port)]),
        &format!("{install} && test -d node_modules/is-number && ls \"$npm_config_cache\""),
    );
    let out = ok(&o);
    assert!(!out.trim().is_empty(), "the cache is empty: {out}");
    assert_eq!(
        std::fs::read_to_string(ws.join("install-script-ran")).unwrap_or_default(),
        "yes",
        "{}",
        stderr(&o)
    );
    report("npm install", outside, inside);
}

#[test]
fn cargo_builds_a_crate_with_one_dependency_through_the_proxy() {
    let has_cargo = Command::new("cargo")
        .arg("--version")
        .env("PATH", user_path())
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_cargo {
        return skip("cargo", "cargo is not installed for this user");
    }
    let setup = |ws: &Ws| {
        std::fs::create_dir_all(ws.join("src")).unwrap();
        std::fs::write(
            ws.join("Cargo.toml"),
            "[package]\nname = \"one-dep\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\nitoa = \"1\"\n",
        )
        .unwrap();
        std::fs::write(
            ws.join("src/main.rs"),
            "fn main() { println!(\"built {}\", itoa::Buffer::new().format(42)); }\n",
        )
        .unwrap();
    };
    // Outside a cell, with a fresh CARGO_HOME: the time to compare, and the registry's
    // hosts as cargo itself recorded them (its index directory and the index's config).
    let out_ws = Ws::new();
    setup(&out_ws);
    let cargo_home = Ws::new();
    let (o, outside) = timed(
        Command::new("cargo")
            .args(["run", "-q"])
            .current_dir(out_ws.path())
            .env("PATH", user_path())
            .env("CARGO_HOME", cargo_home.path())
            .env("CARGO_TARGET_DIR", out_ws.join("target")),
    );
    if !o.status.success() {
        return skip(
            "cargo",
            &format!(
                "the crate registry is unreachable from this machine: {}",
                stderr(&o)
            ),
        );
    }
    let mut hosts: Vec<(String, u16)> = Vec::new();
    for e in std::fs::read_dir(cargo_home.join("registry/index"))
        .into_iter()
        .flatten()
    {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some((h, _)) = name.rsplit_once('-') {
            hosts.push((h.to_string(), 443));
        }
        let config = std::fs::read_to_string(e.path().join("config.json")).unwrap_or_default();
        if let Some(dl) = serde_json::from_str::<serde_json::Value>(&config)
            .ok()
            .and_then(|v| v["dl"].as_str().and_then(host_port))
        {
            hosts.push(dl);
        }
    }
    assert!(!hosts.is_empty(), "cargo left no index directory");
    let ws = Ws::new();
    setup(&ws);
    let (o, inside) = in_cell(
        ws.path(),
        &allow_args(&hosts),
        "cargo run -q && ls \"$CARGO_HOME/registry\"",
    );
    let out = ok(&o);
    assert!(out.contains("built 42"), "{out}");
    assert!(out.contains("cache") || out.contains("index"), "{out}");
    report("cargo build", outside, inside);
}

#[test]
fn pip_installs_into_a_workspace_venv_through_the_proxy() {
    let Ok(o) = Command::new("python3")
        .args([
            "-c",
            "from pip._internal.models.index import PyPI; print(PyPI.pypi_url); print(PyPI.file_storage_domain)",
        ])
        .output()
    else {
        return skip("pip", "python3 is not installed");
    };
    if !o.status.success() {
        return skip("pip", "python3 has no pip");
    }
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let mut lines = text.lines();
    let (Some(index), Some(files)) = (lines.next().and_then(host_port), lines.next()) else {
        return skip("pip", "pip names no index");
    };
    let hosts = vec![index.clone(), (files.trim().to_string(), 443)];
    if !reachable(&index.0, index.1) {
        return skip("pip", "pip's index is unreachable");
    }
    let script = "python3 -m venv .venv && .venv/bin/pip install -q --disable-pip-version-check six && .venv/bin/python -c 'import six; print(\"six\", six.__version__)'";
    let out_ws = Ws::new();
    let cache = Ws::new();
    let (o, outside) = timed(
        Command::new("/bin/sh")
            .args(["-c", script])
            .current_dir(out_ws.path())
            .env_remove("PIP_FIND_LINKS")
            .env("PIP_CACHE_DIR", cache.path()),
    );
    if !o.status.success() {
        return skip(
            "pip",
            &format!("pip install fails outside a cell too: {}", stderr(&o)),
        );
    }
    let ws = Ws::new();
    let (o, inside) = in_cell(
        ws.path(),
        &allow_args(&hosts),
        &format!("{script} && ls \"$PIP_CACHE_DIR\""),
    );
    let out = ok(&o);
    assert!(out.contains("six 1."), "{out}");
    assert!(ws.join(".venv/bin/python").exists());
    report("pip install", outside, inside);
}
