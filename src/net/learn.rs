//! `--learn`: the destinations a run connected to, and the profile block that allows them.

use std::collections::BTreeSet;
use std::sync::Mutex;

/// host:port pairs connected to, in order (deduplicated).
#[derive(Debug, Default)]
pub struct Learned(Mutex<BTreeSet<(String, u16)>>);

impl Learned {
    pub fn note(&self, host: &str, port: u16) {
        if let Ok(mut s) = self.0.lock() {
            s.insert((crate::plan::allowlist::normalize_host(host), port));
        }
    }

    /// The allow rules, as written in a profile (`HOST:PORT`, `[V6]:PORT`).
    pub fn rules(&self) -> Vec<String> {
        let Ok(s) = self.0.lock() else {
            return Vec::new();
        };
        s.iter().map(|(h, p)| rule(h, *p)).collect()
    }
}

fn rule(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{}]:{port}", host.trim_matches(|c| c == '[' || c == ']'))
    } else {
        format!("{host}:{port}")
    }
}

/// The `[network]` block to paste into a profile. Every string is a rule checked by
/// the allowlist parser; anything else (a name the cell made up that does not parse)
/// is left out, so the block never carries bytes the cell chose beyond a host name.
pub fn block(rules: &[String]) -> String {
    let good: Vec<&String> = rules
        .iter()
        .filter(|r| crate::plan::allowlist::Rule::parse(r, "learn").is_ok())
        .collect();
    let mut s = String::from("[network]\nmode = \"proxy\"\nallow = [\n");
    for r in good {
        s.push_str(&format!("  \"{r}\",\n"));
    }
    s.push_str("]\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_lists_each_destination_once_sorted_and_parses_as_a_profile() {
        let l = Learned::default();
        l.note("Registry.Example.", 443);
        l.note("registry.example", 443);
        l.note("static.example", 80);
        l.note("::1", 8080);
        let b = block(&l.rules());
        assert_eq!(
            b,
            "[network]\nmode = \"proxy\"\nallow = [\n  \"::1:8080\",\n  \"registry.example:443\",\n  \"static.example:80\",\n]\n"
                .replace("::1:8080", "[::1]:8080")
        );
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("learned.toml");
        std::fs::write(&f, &b).unwrap();
        let p = crate::profile::Loader { user_dir: None }
            .load(&f.display().to_string())
            .unwrap();
        assert_eq!(p.network.allow.len(), 3);
    }

    #[test]
    fn a_name_that_is_no_rule_is_left_out_of_the_block() {
        let b = block(&["evil\"]\n[filesystem]:443".into(), "ok.example:443".into()]);
        assert!(!b.contains("evil"), "{b}");
        assert!(b.contains("ok.example:443"));
    }
}
