//! Built-in profiles, compiled from `profiles/*.toml`.

/// (name, TOML source), in the order `taskcell profiles` lists them.
pub const BUILTIN: &[(&str, &str)] = &[
    ("base", include_str!("../../profiles/base.toml")),
    ("build", include_str!("../../profiles/build.toml")),
    ("review", include_str!("../../profiles/review.toml")),
    ("agent", include_str!("../../profiles/agent.toml")),
    ("codex", include_str!("../../profiles/codex.toml")),
    ("claude", include_str!("../../profiles/claude.toml")),
    ("aider", include_str!("../../profiles/aider.toml")),
    ("gemini", include_str!("../../profiles/gemini.toml")),
];

/// (name, the merged [`Profile`](super::Profile) as JSON): each built-in profile with its
/// `extends` chain, parsed and merged when the binary was built, so that a start does not
/// parse TOML (a tenth of the supervisor's work before the clone). Generated from
/// [`BUILTIN`] by `scripts/gen-docs.sh`; `tests/docs.rs` fails when one is stale. Used
/// only when no user profile shadows a name of the chain ([`super::Loader::load`]).
pub const PARSED: &[(&str, &str)] = &[
    ("base", include_str!("../../profiles/parsed/base.json")),
    ("build", include_str!("../../profiles/parsed/build.json")),
    ("review", include_str!("../../profiles/parsed/review.json")),
    ("agent", include_str!("../../profiles/parsed/agent.json")),
    ("codex", include_str!("../../profiles/parsed/codex.json")),
    ("claude", include_str!("../../profiles/parsed/claude.json")),
    ("aider", include_str!("../../profiles/parsed/aider.json")),
    ("gemini", include_str!("../../profiles/parsed/gemini.json")),
];
