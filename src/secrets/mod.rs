//! Secrets: masking of the cell's output ([`redact`]) and the leak scan of what it
//! wrote ([`scan`]).

pub mod redact;
pub mod scan;
