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
