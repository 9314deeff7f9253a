//! Built-in profiles, compiled from `profiles/*.toml`.

/// The built-in profiles' names, in the order `taskcell profiles` lists them: each is
/// `profiles/NAME.toml`, and `profiles/parsed/NAME.json` the same profile parsed and
/// merged with its parents at build time.
macro_rules! builtin {
    ($($name:literal),* $(,)?) => {
        /// (name, TOML source), in the order `taskcell profiles` lists them.
        pub const BUILTIN: &[(&str, &str)] = &[
            $(($name, include_str!(concat!("../../profiles/", $name, ".toml")))),*
        ];

        /// (name, the merged [`Profile`](super::Profile) as JSON): each built-in profile
        /// with its `extends` chain, parsed and merged when the binary was built, so that
        /// a start does not parse TOML (a tenth of the supervisor's work before the
        /// clone). Generated from [`BUILTIN`] by `scripts/gen-docs.sh`; `tests/docs.rs`
        /// fails when one is stale. Used only when no user profile shadows a name of the
        /// chain ([`super::Loader::load`]).
        pub const PARSED: &[(&str, &str)] = &[
            $(($name, include_str!(concat!("../../profiles/parsed/", $name, ".json")))),*
        ];
    };
}

builtin!("base", "build", "review", "agent", "codex", "claude", "aider", "gemini");
