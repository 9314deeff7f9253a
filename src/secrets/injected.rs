//! What the supervisor hands the proxy for each injected secret (`deliver = "inject"`):
//! the value and the placeholder the cell got. Made by the secrets session, used by
//! `net::inject`.

use zeroize::Zeroizing;

/// One injected secret as the proxy holds it: the value (zeroized on drop, never in
/// Debug) and the placeholder the cell got.
pub struct Secret {
    pub name: String,
    pub value: Zeroizing<Vec<u8>>,
    pub placeholder: Vec<u8>,
    /// Substitute in request bodies too.
    pub body: bool,
}

impl Secret {
    pub fn new(name: &str, value: Vec<u8>, placeholder: Vec<u8>, body: bool) -> Secret {
        Secret {
            name: name.into(),
            value: Zeroizing::new(value),
            placeholder,
            body,
        }
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secret")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}
