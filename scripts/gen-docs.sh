#!/usr/bin/env bash
# Regenerate what the documentation derives from the code:
#   docs/taskcell.1           the man page, from the clap definition (src/cli.rs)
#   docs/profile.schema.json  the JSON Schema of profiles, from src/profile/raw.rs
#   profiles/parsed/*.json    the built-in profiles parsed and merged (compiled into taskcell,
#                             so that a start parses no TOML), from profiles/*.toml
# tests/docs.rs fails when a checked-in copy is stale; this runs those tests in write mode.
set -euo pipefail
cd "$(dirname "$0")/.."
TASKCELL_WRITE_DOCS=1 cargo test --quiet --test docs -- man_page_is_current profile_schema_is_current parsed_builtin_profiles_are_current
echo "wrote docs/taskcell.1, docs/profile.schema.json and profiles/parsed/*.json"
