//! Secrets: masking of the cell's output ([`redact`]) and the leak scan of what it
//! wrote ([`scan`]); fetching values just in time ([`provider`]), delivering them into
//! the cell ([`deliver`]), relaying output through the masker ([`relay`]), revoking them
//! at the end ([`revoke`]); [`session`] ties these together for the supervisor.

pub mod deliver;
pub mod injected;
pub mod placeholder;
pub mod provider;
pub mod redact;
pub mod relay;
pub mod revoke;
pub mod scan;
pub mod session;
