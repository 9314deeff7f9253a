//! Placeholders for injected secrets (`deliver = "inject"`): random per cell, keeping
//! only what client-side format checks look at: a known token prefix (the table
//! [`PREFIXES`]), the length in bytes and the character class of the rest (hex, digits,
//! letters and digits, base64, ...). Everything else is random: no word, length of a
//! part or punctuation of the value survives. The cell only ever holds the placeholder;
//! the proxy swaps it for the value. Pure apart from the random source.

use zeroize::Zeroizing;

/// Token prefixes kept as they are (longest match wins). Only published, fixed prefixes
/// of well-known token formats: a prefix tells which service a token is for, nothing
/// about the token itself.
pub const PREFIXES: &[&str] = &[
    // GitHub
    "github_pat_",
    "ghp_",
    "gho_",
    "ghu_",
    "ghs_",
    "ghr_",
    // GitLab
    "glpat-",
    "gldt-",
    "glrt-",
    // OpenAI, Anthropic, other model APIs
    "sk-proj-",
    "sk-svcacct-",
    "sk-ant-api03-",
    "sk-ant-",
    "sk-or-v1-",
    "sk-",
    "gsk_",
    "xai-",
    "r8_",
    "hf_",
    // Stripe
    "sk_live_",
    "sk_test_",
    "rk_live_",
    "rk_test_",
    "pk_live_",
    "pk_test_",
    // Slack
    "xoxb-",
    "xoxp-",
    "xoxa-",
    "xoxe-",
    "xoxs-",
    "xapp-",
    // Package registries
    "npm_",
    "pypi-",
    // Cloud
    "AKIA",
    "ASIA",
    "AIza",
    "dop_v1_",
    "shpat_",
    "SG.",
];

/// Fewest characters that must be random (below this, a placeholder could be guessed
/// or collide with ordinary text).
pub const MIN_RANDOM: usize = 12;

/// Character classes, narrowest first: the rest of a value is replaced from the first
/// class that holds every one of its bytes.
const CLASSES: &[(&str, &[u8])] = &[
    ("digits", b"0123456789"),
    ("lowercase hex", b"0123456789abcdef"),
    ("uppercase hex", b"0123456789ABCDEF"),
    (
        "lowercase letters and digits",
        b"abcdefghijklmnopqrstuvwxyz0123456789",
    ),
    (
        "uppercase letters and digits",
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
    ),
    (
        "letters and digits",
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
    ),
    (
        "base64url",
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
    ),
    (
        "base64",
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
    ),
];

/// Printable ASCII other than space (the class of anything else).
fn printable() -> Vec<u8> {
    (0x21u8..0x7f).collect()
}

/// How many leading bytes of `value` are kept: the longest known prefix, or none.
pub fn prefix_len(value: &[u8]) -> usize {
    PREFIXES
        .iter()
        .filter(|p| value.starts_with(p.as_bytes()))
        .map(|p| p.len())
        .max()
        .unwrap_or(0)
}

/// The alphabet the rest of a value is drawn from.
fn alphabet(rest: &[u8]) -> Vec<u8> {
    CLASSES
        .iter()
        .find(|(_, set)| rest.iter().all(|b| set.contains(b)))
        .map(|(_, set)| set.to_vec())
        .unwrap_or_else(printable)
}

/// A placeholder for `value`, drawing randomness from `random` (fills its buffer).
/// Errors (never naming the value) when too few characters would be random.
pub fn make(
    value: &[u8],
    random: &mut dyn FnMut(&mut [u8]) -> std::io::Result<()>,
) -> Result<Vec<u8>, String> {
    let keep = prefix_len(value);
    let rest = &value[keep..];
    // Base64 padding stays at the end (a decoder checks it); it tells only the length
    // modulo 3, which the length already tells.
    let pad = if rest.iter().all(|b| !b" \t\r\n".contains(b)) {
        rest.iter().rev().take_while(|b| **b == b'=').count().min(2)
    } else {
        0
    };
    let body = &rest[..rest.len() - pad];
    if body.len() < MIN_RANDOM {
        return Err(format!(
            "its value has {} characters after its prefix; a placeholder needs at least {MIN_RANDOM} (inject only real tokens)",
            body.len()
        ));
    }
    let alpha = alphabet(body);
    for _ in 0..8 {
        let mut out = value[..keep].to_vec();
        let mut pool = Zeroizing::new(vec![0u8; body.len() * 2 + 16]);
        let mut at = pool.len();
        for _ in 0..body.len() {
            // Rejection sampling: no modulo bias.
            let limit = 256 - 256 % alpha.len();
            loop {
                if at == pool.len() {
                    random(&mut pool).map_err(|e| format!("getrandom: {e}"))?;
                    at = 0;
                }
                let r = pool[at] as usize;
                at += 1;
                if r < limit {
                    out.push(alpha[r % alpha.len()]);
                    break;
                }
            }
        }
        out.extend(std::iter::repeat_n(b'=', pad));
        if out != value {
            return Ok(out);
        }
    }
    Err("the random source keeps returning the value itself".into())
}

/// [`make`] with the kernel's random source.
pub fn generate(value: &[u8]) -> Result<Vec<u8>, String> {
    make(value, &mut |b| super::provider::getrandom(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_prefix_length_and_class_only() {
        for v in [
            "ghp_16C7e42F292c6912E7710c838347Ae178B4a",
            "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz",
            "sk-proj-abcDEF0123456789abcdefXYZ",
            "sk-ant-api03-abcDEF0123456789-abcdef_XYZ",
            "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
            "glpat-xxxxxxxxxxxxxxxxxxxx",
            "AKIAIOSFODNN7EXAMPLE",
            "npm_abcdefghijklmnopqrstuvwxyz0123456789",
            "plain0123456789TOKENvalue",
        ] {
            let p = generate(v.as_bytes()).unwrap();
            assert_eq!(p.len(), v.len(), "{v}");
            assert_ne!(p, v.as_bytes());
            let k = prefix_len(v.as_bytes());
            assert!(k > 0 || v.starts_with("plain"), "{v}");
            assert_eq!(&p[..k], &v.as_bytes()[..k]);
            let alpha = alphabet(&v.as_bytes()[k..]);
            assert!(p[k..].iter().all(|b| alpha.contains(b)), "{v}");
        }
        assert_eq!(prefix_len(b"ghp_abc"), 4);
        assert_eq!(prefix_len(b"sk-proj-abc"), 8);
        assert_eq!(prefix_len(b"github_pat_11AAA"), 11);
        // No made-up prefixes: a word before `_` is not kept.
        assert_eq!(prefix_len(b"mytool_0123456789abcdef0123456789abcdef"), 0);
        assert_eq!(prefix_len(b"0123456789abcdef"), 0);
    }

    /// The example: a passphrase kept its first word, its word lengths and its
    /// punctuation. Now nothing of it is left but the length and the class.
    #[test]
    fn passphrase_shape_is_not_kept() {
        let v = b"correct-horse-battery-staple-2024";
        let mut dashes_kept = 0;
        for _ in 0..20 {
            let p = generate(v).unwrap();
            assert_eq!(p.len(), v.len());
            assert!(
                !p.starts_with(b"correct"),
                "{}",
                String::from_utf8_lossy(&p)
            );
            assert!(!p.ends_with(b"2024"));
            let same: Vec<usize> = (0..v.len()).filter(|i| p[*i] == v[*i]).collect();
            if [7, 13, 21, 28].iter().all(|i| same.contains(i)) {
                dashes_kept += 1;
            }
            // Drawn from base64url (letters, digits, - and _), not per position.
            assert!(p
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_'));
        }
        assert!(dashes_kept < 2, "the dashes stayed in place");
    }

    #[test]
    fn classes_and_padding() {
        let v = b"0123456789abcdef0123456789abcdef";
        let a = generate(v).unwrap();
        let b = generate(v).unwrap();
        assert!(a.iter().all(|c| b"0123456789abcdef".contains(c)));
        assert_ne!(a, b);
        let d = generate(b"12345678901234567890").unwrap();
        assert!(d.iter().all(u8::is_ascii_digit));
        let p = generate(b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldY+/ab==").unwrap();
        assert!(p.ends_with(b"==") && !p[..p.len() - 2].contains(&b'='));
    }

    #[test]
    fn too_short_is_refused_without_the_value() {
        let e = generate(b"ghp_short").unwrap_err();
        assert!(!e.contains("short"), "{e}");
        assert!(generate(b"-----").is_err());
    }

    #[test]
    fn broken_random_source_is_an_error() {
        let v = b"abcdefghijklmnopqrstuvwxyz";
        let mut fail = |_: &mut [u8]| Err(std::io::Error::other("no"));
        assert!(make(v, &mut fail).is_err());
    }
}
