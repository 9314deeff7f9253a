//! Generated documentation stays true to the code.
//!
//! The man page (`docs/taskcell.1`, from the clap definition), the profile schema
//! (`docs/profile.schema.json`, from the raw profile types) and the built-in profiles as
//! parsed at build time (`profiles/parsed/*.json`) are checked in; a test here fails
//! when one differs from what the code generates now, and says how to regenerate them
//! (`scripts/gen-docs.sh`, which runs these tests with `TASKCELL_WRITE_DOCS=1`). Every
//! built-in profile and every TOML example in the documentation must match the schema, and
//! the completion scripts must complete real commands and flags in a real shell.

use std::path::{Path, PathBuf};
use std::process::Command;

use clap::CommandFactory;
use serde_json::Value;
use taskcell::cli::Cli;

const REGEN: &str = "run scripts/gen-docs.sh to regenerate it";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Compare `rel` with what the code generates, or write it under `TASKCELL_WRITE_DOCS=1`.
fn check_generated(rel: &str, want: &str) {
    let path = root().join(rel);
    if std::env::var_os("TASKCELL_WRITE_DOCS").is_some() {
        std::fs::write(&path, want)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        return;
    }
    let have = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}; {REGEN}", path.display()));
    if have != want {
        let line = have
            .lines()
            .zip(want.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| have.lines().count().min(want.lines().count()));
        panic!(
            "{rel} is stale: it differs from what the code generates from line {} on \
             (have {:?}, generated {:?}); {REGEN}",
            line + 1,
            have.lines().nth(line).unwrap_or("<end of file>"),
            want.lines().nth(line).unwrap_or("<end of file>"),
        );
    }
}

// ---------------------------------------------------------------------------------------
// The built-in profiles, parsed at build time

/// Each built-in profile, parsed and merged from its TOML now, as `profiles/parsed/` must
/// hold it; and what taskcell reads back from that JSON is the same profile.
#[test]
fn parsed_builtin_profiles_are_current() {
    let names: Vec<&str> = taskcell::profile::BUILTIN.iter().map(|(n, _)| *n).collect();
    let parsed: Vec<&str> = taskcell::profile::PARSED.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        names, parsed,
        "PARSED lists the built-in profiles of BUILTIN"
    );
    let loader = taskcell::profile::Loader { user_dir: None };
    for name in names {
        let profile = loader
            .parse(name)
            .unwrap_or_else(|e| panic!("built-in profile {name}: {e}"));
        let json = serde_json::to_string_pretty(&profile).expect("a profile serializes") + "\n";
        let back: taskcell::profile::Profile = serde_json::from_str(&json)
            .unwrap_or_else(|e| panic!("built-in profile {name} does not read back: {e}"));
        assert_eq!(back, profile, "built-in profile {name} reads back the same");
        check_generated(&format!("profiles/parsed/{name}.json"), &json);
        // What `load` gives (the JSON compiled in) is what parsing the TOML gives.
        assert_eq!(
            loader.load(name).expect("a built-in profile loads"),
            profile,
            "built-in profile {name}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// The man page

/// The roff of one section rendered by clap_mangen, without the string definitions every
/// render starts with and without its `.SH` heading, so sections can be nested and renamed.
fn body(render: impl FnOnce(&mut Vec<u8>) -> std::io::Result<()>) -> String {
    let mut out = Vec::new();
    render(&mut out).expect("rendering into memory cannot fail");
    let text = String::from_utf8(out).expect("clap_mangen writes UTF-8");
    let mut lines = text
        .lines()
        .skip_while(|l| l.starts_with(".ie \\n(.g .ds Aq") || l.starts_with(".el .ds Aq"))
        .peekable();
    if lines.peek().is_some_and(|l| l.starts_with(".SH")) {
        lines.next();
    }
    lines.map(|l| format!("{l}\n")).collect()
}

/// One page for the whole CLI: the global part as clap_mangen renders it, then every
/// subcommand (synopsis, description, options, examples) under COMMANDS, so `man taskcell`
/// shows everything without a page per subcommand.
fn man_page() -> String {
    let mut cmd = Cli::command();
    cmd.build();
    let man = clap_mangen::Man::new(cmd.clone()).manual("taskcell manual");
    let mut title = Vec::new();
    man.render_title(&mut title)
        .expect("rendering into memory cannot fail");
    let mut page = String::from_utf8(title).expect("clap_mangen writes UTF-8");
    page.push_str(".SH NAME\n");
    page.push_str(&body(|w| man.render_name_section(w)));
    page.push_str(".SH SYNOPSIS\n");
    page.push_str(&body(|w| man.render_synopsis_section(w)));
    page.push_str(".SH DESCRIPTION\n");
    page.push_str(&body(|w| man.render_description_section(w)));
    page.push_str(".SH OPTIONS\n");
    page.push_str(&body(|w| man.render_options_section(w)));
    page.push_str(".SH COMMANDS\n");
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        if sub.get_name() == "help" {
            continue;
        }
        let name = sub.get_bin_name().unwrap_or_else(|| sub.get_name());
        page.push_str(&format!(".SS \"{name}\"\n"));
        let m = clap_mangen::Man::new(sub.clone());
        page.push_str(&body(|w| m.render_synopsis_section(w)));
        page.push_str(".PP\n");
        page.push_str(&body(|w| m.render_description_section(w)));
        page.push_str(".PP\nOptions:\n");
        page.push_str(&body(|w| m.render_options_section(w)));
        if sub.get_after_help().is_some() {
            page.push_str(".PP\n");
            page.push_str(&body(|w| m.render_extra_section(w)));
        }
    }
    page.push_str(".SH EXAMPLES\n");
    page.push_str(&body(|w| man.render_extra_section(w)));
    page.push_str(
        ".SH \"SEE ALSO\"\n\
         The reference is in the source tree: README.md and docs/*.md (profile format, \
         secrets, network, injection, limits, threat model). \
         docs/profile.schema.json is the JSON Schema of the profile format.\n",
    );
    page.push_str(".SH VERSION\n");
    page.push_str(&body(|w| man.render_version_section(w)));
    page
}

#[test]
fn man_page_is_current() {
    check_generated("docs/taskcell.1", &man_page());
}

/// The assembled page really documents every subcommand and every long flag (the
/// assembly above picks sections by hand, so it could drop one).
#[test]
fn man_page_documents_every_command_and_flag() {
    let page = man_page();
    let mut cmd = Cli::command();
    cmd.build();
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        let name = sub.get_bin_name().unwrap_or_else(|| sub.get_name());
        assert!(
            page.contains(&format!(".SS \"{name}\"")),
            "the man page has no section for {name}"
        );
        for arg in sub.get_arguments() {
            if let Some(long) = arg.get_long() {
                let roff = format!("\\-\\-{}", long.replace('-', "\\-"));
                assert!(
                    page.contains(&roff),
                    "the man page does not document {name} --{long}"
                );
            }
        }
    }
    assert!(page.contains("\\-\\-best\\-effort"), "{page}");
}

// ---------------------------------------------------------------------------------------
// The profile schema

fn schema_text() -> String {
    let schema = taskcell::profile::json_schema();
    serde_json::to_string_pretty(&schema).expect("a JSON value serializes") + "\n"
}

fn validator() -> jsonschema::Validator {
    jsonschema::validator_for(&taskcell::profile::json_schema())
        .unwrap_or_else(|e| panic!("the generated profile schema is not a valid schema: {e}"))
}

fn toml_to_json(file: &str, text: &str) -> Value {
    let v: toml::Value =
        toml::from_str(text).unwrap_or_else(|e| panic!("{file}: not valid TOML: {e}"));
    serde_json::to_value(v).unwrap_or_else(|e| panic!("{file}: cannot convert to JSON: {e}"))
}

/// Every schema violation of `text`, one per line with the key's path.
fn violations(v: &jsonschema::Validator, file: &str, text: &str) -> Vec<String> {
    let instance = toml_to_json(file, text);
    v.iter_errors(&instance)
        .map(|e| format!("{file}: {}: {e}", e.instance_path()))
        .collect()
}

#[test]
fn profile_schema_is_current() {
    check_generated("docs/profile.schema.json", &schema_text());
}

#[test]
fn profile_schema_is_a_valid_draft_2020_12_schema() {
    let schema = taskcell::profile::json_schema();
    assert_eq!(
        schema["$schema"], "https://json-schema.org/draft/2020-12/schema",
        "{schema}"
    );
    jsonschema::meta::validate(&schema)
        .unwrap_or_else(|e| panic!("the profile schema fails its meta-schema: {e}"));
}

#[test]
fn every_builtin_profile_matches_the_schema() {
    let v = validator();
    let dir = root().join("profiles");
    let mut checked = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("profiles/ exists") {
        let path = entry.expect("readable directory entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("readable profile");
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let errors = violations(&v, &name, &text);
        assert!(errors.is_empty(), "{}", errors.join("\n"));
        checked.push(name.into_owned());
    }
    for builtin in taskcell::profile::BUILTIN.iter().map(|(n, _)| *n) {
        assert!(
            checked.contains(&format!("{builtin}.toml")),
            "built-in profile {builtin} was not checked (have {checked:?})"
        );
    }
}

/// The TOML examples of the documentation are profiles (or parts of one) as the schema
/// describes them: an example with a misspelt key or a value of the wrong type fails.
#[test]
fn every_toml_example_in_the_docs_matches_the_schema() {
    let v = validator();
    let mut files = vec![root().join("README.md")];
    for entry in std::fs::read_dir(root().join("docs")).expect("docs/ exists") {
        let path = entry.expect("readable directory entry").path();
        if path.extension().and_then(|e| e.to_str()) == Some("md") {
            files.push(path);
        }
    }
    let mut blocks = 0;
    for path in &files {
        let text = std::fs::read_to_string(path).expect("readable doc");
        let name = path
            .strip_prefix(root())
            .unwrap_or(path)
            .display()
            .to_string();
        for (i, block) in toml_blocks(&text).into_iter().enumerate() {
            let errors = violations(&v, &format!("{name} (TOML example {})", i + 1), &block);
            assert!(errors.is_empty(), "{}", errors.join("\n"));
            blocks += 1;
        }
    }
    assert!(
        blocks >= 8,
        "only {blocks} TOML examples found in {files:?}"
    );
}

fn toml_blocks(markdown: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur: Option<String> = None;
    for line in markdown.lines() {
        match (&mut cur, line.trim_end()) {
            (None, "```toml") => cur = Some(String::new()),
            (Some(_), "```") => out.extend(cur.take()),
            (Some(block), l) => {
                block.push_str(l);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    out
}

/// The schema is strict where the parser is: misspelt keys, wrong types, bad secret names
/// and unknown tables are errors an editor shows.
#[test]
fn profile_schema_rejects_what_the_parser_rejects() {
    let v = validator();
    let bad = [
        ("misspelt key", "[filesystem]\nreed = [\"/usr\"]\n"),
        ("unknown table", "[filesystm]\nread = [\"/usr\"]\n"),
        ("unknown top-level key", "descripton = \"x\"\n"),
        ("path entry of the wrong type", "[filesystem]\nread = [5]\n"),
        (
            "path table with an unknown key",
            "[filesystem]\nread = [{ path = \"/usr\", optinal = true }]\n",
        ),
        ("limit of the wrong type", "[limits]\nmemory = true\n"),
        ("strict as a string", "strict = \"yes\"\n"),
        (
            "secret without a provider",
            "[secrets.TOKEN]\ndeliver = \"env\"\n",
        ),
        (
            "secret name in lower case",
            "[secrets.token]\nfrom = { env = \"TOKEN\" }\n",
        ),
        (
            "forward without a target",
            "[network]\nmode = \"proxy\"\n[[network.forward]]\nlisten = 5432\n",
        ),
    ];
    for (what, text) in bad {
        assert!(
            !violations(&v, what, text).is_empty(),
            "the schema accepts a profile with a {what}:\n{text}"
        );
        let parsed = Command::new(env!("CARGO_BIN_EXE_taskcell"))
            .arg("check")
            .arg(write_temp(text).path())
            .output()
            .expect("run taskcell check");
        assert!(
            !parsed.status.success(),
            "taskcell check accepts a profile with a {what} that the schema rejects"
        );
    }
    let good = "[limits]\nmemory = \"4G\"\ncpu = 1.5\nprocesses = 64\n\
                [secrets.TOKEN]\nfrom = { env = \"TOKEN\" }\noptional = true\n";
    let errors = violations(&v, "good", good);
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}

fn write_temp(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new()
        .suffix(".toml")
        .tempfile()
        .expect("temp file");
    std::io::Write::write_all(&mut f, text.as_bytes()).expect("write temp profile");
    f
}

// ---------------------------------------------------------------------------------------
// Shell completions

fn completion_script(shell: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_taskcell"))
        .args(["completions", shell])
        .output()
        .expect("run taskcell completions");
    assert!(
        out.status.success(),
        "taskcell completions {shell} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("the script is UTF-8")
}

/// What bash completes for the words of `line` (the last word is the one being completed),
/// with the script loaded as bash-completion would load it.
fn bash_complete(script: &Path, words: &[&str]) -> Vec<String> {
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let program = format!(
        "source '{}'\n\
         COMP_WORDS=({})\n\
         COMP_CWORD={}\n\
         COMP_LINE=\"${{COMP_WORDS[*]}}\"\n\
         COMP_POINT=${{#COMP_LINE}}\n\
         _taskcell taskcell \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"\n\
         printf '%s\\n' \"${{COMPREPLY[@]}}\"\n",
        script.display(),
        quoted.join(" "),
        words.len() - 1,
    );
    let out = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", &program])
        .output()
        .expect("run bash");
    assert!(
        out.status.success(),
        "bash failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn bash_completion_completes_commands_and_flags() {
    let dir = tempfile::tempdir().expect("temp dir");
    let script = dir.path().join("taskcell.bash");
    std::fs::write(&script, completion_script("bash")).expect("write script");

    let got = bash_complete(&script, &["taskcell", "ru"]);
    assert_eq!(got, ["run"], "taskcell ru<TAB>");
    let got = bash_complete(&script, &["taskcell", "run", "--best"]);
    assert_eq!(got, ["--best-effort"], "taskcell run --best<TAB>");
    let got = bash_complete(&script, &["taskcell", "explain", "--ne"]);
    assert_eq!(got, ["--net"], "taskcell explain --ne<TAB>");
    let got = bash_complete(&script, &["taskcell", "completions", ""]);
    for shell in ["bash", "zsh", "fish"] {
        assert!(got.iter().any(|g| g == shell), "completions <TAB>: {got:?}");
    }
}

#[test]
fn zsh_and_fish_completions_name_every_command() {
    let mut cmd = Cli::command();
    cmd.build();
    for (shell, check) in [("zsh", ["zsh", "-n"]), ("fish", ["fish", "--no-execute"])] {
        let script = completion_script(shell);
        for sub in cmd.get_subcommands() {
            assert!(
                script.contains(sub.get_name()),
                "the {shell} script lacks {}",
                sub.get_name()
            );
        }
        assert!(
            script.contains("best-effort"),
            "the {shell} script lacks --best-effort"
        );
        // Where the shell is installed, it must accept the script's syntax.
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join(format!("taskcell.{shell}"));
        std::fs::write(&file, &script).expect("write script");
        match Command::new(check[0]).arg(check[1]).arg(&file).output() {
            Ok(out) => assert!(
                out.status.success(),
                "{shell} rejects the script: {}",
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                eprintln!("{shell} is not installed: its syntax check is skipped")
            }
            Err(e) => panic!("cannot run {shell}: {e}"),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Links between the documents

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces to dashes.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == '-' || *c == '_' || *c == ' ')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(markdown: &str) -> Vec<String> {
    let mut fence = false;
    let mut out = Vec::new();
    for line in markdown.lines() {
        if line.starts_with("```") {
            fence = !fence;
        } else if !fence && line.starts_with('#') {
            out.push(anchor(line.trim_start_matches('#')));
        }
    }
    out
}

/// Every relative link in README.md, ARCHITECTURE.md and docs/*.md points at a file that
/// exists and, with `#anchor`, at a heading it has: moving or renaming a section breaks this.
#[test]
fn every_relative_link_in_the_docs_resolves() {
    let mut files = vec![root().join("README.md"), root().join("ARCHITECTURE.md")];
    for entry in std::fs::read_dir(root().join("docs")).expect("docs/ exists") {
        let path = entry.expect("readable directory entry").path();
        if path.extension().and_then(|e| e.to_str()) == Some("md") {
            files.push(path);
        }
    }
    let mut broken = Vec::new();
    let mut links = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).expect("readable doc");
        let dir = file.parent().expect("a file has a directory");
        for (start, _) in text.match_indices("](") {
            let rest = &text[start + 2..];
            let Some(end) = rest.find(')') else { continue };
            let target = &rest[..end];
            if target.contains("://") || target.starts_with("mailto:") || target.contains(' ') {
                continue;
            }
            links += 1;
            let (path, frag) = target.split_once('#').unwrap_or((target, ""));
            let dest = if path.is_empty() {
                file.clone()
            } else {
                dir.join(path)
            };
            let name = file.strip_prefix(root()).unwrap_or(file).display();
            if !dest.exists() {
                broken.push(format!("{name}: {target}: no such file"));
            } else if !frag.is_empty() && dest.extension().and_then(|e| e.to_str()) == Some("md") {
                let md = std::fs::read_to_string(&dest).expect("readable doc");
                if !anchors(&md).iter().any(|a| a == frag) {
                    broken.push(format!("{name}: {target}: no heading with that anchor"));
                }
            }
        }
    }
    assert!(links >= 20, "only {links} relative links found");
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}
