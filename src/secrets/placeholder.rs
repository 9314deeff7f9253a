//! Placeholders for injected secrets (`deliver = "inject"`): random per cell, of the
//! real value's shape (same length in bytes, a known token prefix kept, each other
//! character replaced by a random one of its class), so that client-side format checks
//! pass. The cell only ever holds the placeholder; the proxy swaps it for the value.
//! Pure apart from the random source.

use zeroize::Zeroizing;

/// Token prefixes kept as they are (longest match wins).
const PREFIXES: &[&str] = &[
    "github_pat_",
    "ghp_",
    "gho_",
    "ghu_",
    "ghs_",
    "ghr_",
    "glpat-",
    "sk-proj-",
    "sk-ant-",
    "sk-",
    "pk-",
    "rk_live_",
    "sk_live_",
    "sk_test_",
    "xoxb-",
    "xoxp-",
    "xoxa-",
    "xoxe-",
    "xapp-",
    "npm_",
    "pypi-",
    "hf_",
    "AKIA",
    "ASIA",
    "Bearer ",
];

/// Fewest characters that must be random (below this, a placeholder could be guessed
/// or collide with ordinary text).
pub const MIN_RANDOM: usize = 12;

const LOWER: &[u8] = b"abcdefghijklmnopqrstuvwxyz";
const UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ";
const DIGIT: &[u8] = b"0123456789";
const HEXL: &[u8] = b"0123456789abcdef";
const HEXU: &[u8] = b"0123456789ABCDEF";

/// How many leading bytes of `value` are kept: a known prefix, or a short alphabetic
/// word followed by `_` or `-` (e.g. `abc_`).
pub fn prefix_len(value: &[u8]) -> usize {
    if let Some(p) = PREFIXES
        .iter()
        .filter(|p| value.starts_with(p.as_bytes()))
        .max_by_key(|p| p.len())
    {
        return p.len();
    }
    let word = value.iter().take_while(|b| b.is_ascii_alphabetic()).count();
    if (1..=10).contains(&word)
        && matches!(value.get(word), Some(b'_' | b'-'))
        && value.len() - word > 2 * MIN_RANDOM
    {
        return word + 1;
    }
    0
}

/// The alphabet a character of the value is replaced from, or None to keep it
/// (punctuation such as `-`, `.`, `_`, `=` keeps the value's structure).
fn class(b: u8, hex: Option<&'static [u8]>) -> Option<&'static [u8]> {
    if let Some(h) = hex {
        return Some(h);
    }
    match b {
        b'a'..=b'z' => Some(LOWER),
        b'A'..=b'Z' => Some(UPPER),
        b'0'..=b'9' => Some(DIGIT),
        0x80..=0xff => Some(LOWER),
        _ => None,
    }
}

/// A placeholder for `value`, drawing randomness from `random` (fills its buffer).
/// Errors (never naming the value) when too few characters would be random.
pub fn make(
    value: &[u8],
    random: &mut dyn FnMut(&mut [u8]) -> std::io::Result<()>,
) -> Result<Vec<u8>, String> {
    let keep = prefix_len(value);
    let rest = &value[keep..];
    let hex = if rest.len() >= MIN_RANDOM && rest.iter().all(|b| HEXL.contains(b)) {
        Some(HEXL)
    } else if rest.len() >= MIN_RANDOM && rest.iter().all(|b| HEXU.contains(b)) {
        Some(HEXU)
    } else {
        None
    };
    let random_count = rest.iter().filter(|b| class(**b, hex).is_some()).count();
    if random_count < MIN_RANDOM {
        return Err(format!(
            "its value has {random_count} letters or digits after its prefix; a placeholder needs at least {MIN_RANDOM} (inject only real tokens)"
        ));
    }
    for _ in 0..8 {
        let mut out = value[..keep].to_vec();
        let mut pool = Zeroizing::new(vec![0u8; rest.len() * 2 + 16]);
        let mut at = pool.len();
        for &b in rest {
            let Some(alpha) = class(b, hex) else {
                out.push(b);
                continue;
            };
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

    fn class_of(b: u8) -> u8 {
        match b {
            b'a'..=b'z' => b'a',
            b'A'..=b'Z' => b'A',
            b'0'..=b'9' => b'0',
            x => x,
        }
    }

    #[test]
    fn keeps_shape_and_prefix() {
        for v in [
            "ghp_16C7e42F292c6912E7710c838347Ae178B4a",
            "sk-proj-abcDEF0123456789abcdefXYZ",
            "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
            "glpat-xxxxxxxxxxxxxxxxxxxx",
            "plain0123456789TOKENvalue",
        ] {
            let p = generate(v.as_bytes()).unwrap();
            assert_eq!(p.len(), v.len(), "{v}");
            assert_ne!(p, v.as_bytes());
            let k = prefix_len(v.as_bytes());
            assert_eq!(&p[..k], &v.as_bytes()[..k]);
            for (a, b) in v.bytes().zip(p.iter()) {
                assert_eq!(class_of(a), class_of(*b), "{v}");
            }
        }
        assert_eq!(prefix_len(b"ghp_abc"), 4);
        assert_eq!(prefix_len(b"sk-proj-abc"), 8);
        assert_eq!(prefix_len(b"github_pat_11AAA"), 11);
        assert_eq!(prefix_len(b"mytool_0123456789abcdef0123456789abcdef"), 7);
        assert_eq!(prefix_len(b"0123456789abcdef"), 0);
    }

    #[test]
    fn hex_stays_hex_and_differs_per_call() {
        let v = b"0123456789abcdef0123456789abcdef";
        let a = generate(v).unwrap();
        let b = generate(v).unwrap();
        assert!(a.iter().all(|c| HEXL.contains(c)));
        assert_ne!(a, b);
    }

    #[test]
    fn too_short_is_refused_without_the_value() {
        let e = generate(b"ghp_short").unwrap_err();
        assert!(!e.contains("short"), "{e}");
        assert!(generate(b"--------------------------").is_err());
    }

    #[test]
    fn broken_random_source_is_an_error() {
        let v = b"abcdefghijklmnopqrstuvwxyz";
        let mut fail = |_: &mut [u8]| Err(std::io::Error::other("no"));
        assert!(make(v, &mut fail).is_err());
    }
}
