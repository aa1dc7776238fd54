//! Masking of secrets in values that may be logged.
//!
//! Used by error messages and `Debug` output; it must never return the secret it was given.

/// Masks the public key (and any secret) of a DSN-like string: `https://****@host/1`.
/// Strings without credentials are returned unchanged.
pub fn redact_dsn(raw: &str) -> String {
    match (raw.find("://"), raw.rfind('@')) {
        (Some(s), Some(at)) if at > s + 3 => format!("{}****{}", &raw[..s + 3], &raw[at..]),
        (None, Some(at)) => format!("****{}", &raw[at..]),
        _ => raw.to_owned(),
    }
}

/// Masks a secret value entirely, keeping only its length, for logs.
pub fn redact_secret_value(raw: &str) -> String {
    format!("<redacted, {} bytes>", raw.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dsn_keys_are_masked() {
        assert_eq!(redact_dsn("https://abc:def@host/1"), "https://****@host/1");
        assert_eq!(redact_dsn("abc@host/1"), "****@host/1");
        assert_eq!(redact_dsn("not-a-dsn"), "not-a-dsn");
    }
}
