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

/// Query parameters whose values are secrets.
const SECRET_PARAMS: &[&str] = &[
    "token",
    "key",
    "secret",
    "password",
    "passwd",
    "auth",
    "sig",
    "signature",
    "credential",
    "session",
];

/// A URL safe to record: user info removed and the values of secret-looking query parameters
/// (token, key, secret, password, auth, signature, …) replaced by `REDACTED`.
pub fn redact_url(url: &str) -> String {
    let (base, fragment) = url
        .split_once('#')
        .map_or((url, None), |(b, f)| (b, Some(f)));
    let (base, query) = base
        .split_once('?')
        .map_or((base, None), |(b, q)| (b, Some(q)));
    let mut out = match base.find("://") {
        Some(s) => {
            let rest = &base[s + 3..];
            let authority_end = rest.find('/').unwrap_or(rest.len());
            match rest[..authority_end].rfind('@') {
                Some(at) => format!("{}{}", &base[..s + 3], &rest[at + 1..]),
                None => base.to_owned(),
            }
        }
        None => base.to_owned(),
    };
    if let Some(q) = query {
        let pairs: Vec<String> = q
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, _))
                    if SECRET_PARAMS
                        .iter()
                        .any(|p| k.to_ascii_lowercase().contains(p)) =>
                {
                    format!("{k}=REDACTED")
                }
                _ => pair.to_owned(),
            })
            .collect();
        out.push('?');
        out.push_str(&pairs.join("&"));
    }
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(f);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_credentials_and_secret_query_values() {
        assert_eq!(
            redact_url("https://user:pw@h.example/a?id=1&access_token=abc#x"),
            "https://h.example/a?id=1&access_token=REDACTED#x"
        );
        assert_eq!(
            redact_url("http://h/p?apiKey=1&q=ok"),
            "http://h/p?apiKey=REDACTED&q=ok"
        );
        assert_eq!(redact_url("/relative?x=1"), "/relative?x=1");
    }

    #[test]
    fn dsn_keys_are_masked() {
        assert_eq!(redact_dsn("https://abc:def@host/1"), "https://****@host/1");
        assert_eq!(redact_dsn("abc@host/1"), "****@host/1");
        assert_eq!(redact_dsn("not-a-dsn"), "not-a-dsn");
    }
}
