#!/usr/bin/env bash
# Regenerate what the documentation derives from the code:
#   docs/taskcell.1           the man page, from the clap definition (src/cli.rs)
#   docs/profile.schema.json  the JSON Schema of profiles, from src/profile/raw.rs
# tests/docs.rs fails when a checked-in copy is stale; this runs those tests in write mode.
set -euo pipefail
cd "$(dirname "$0")/.."
TASKCELL_WRITE_DOCS=1 cargo test --quiet --test docs -- man_page_is_current profile_schema_is_current
echo "wrote docs/taskcell.1 and docs/profile.schema.json"
