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

/// Keys whose values are secrets, by default: matched as whole `_`-separated words of the
/// lowercased key (`.` and `-` count as `_`), so `http.request.header.authorization` and
/// `db_password` are secrets while `author` is not.
pub const DEFAULT_SECRET_KEYS: &[&str] = &[
    "authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
    "password",
    "passwd",
    "secret",
    "token",
    "api_key",
    "apikey",
    "auth",
    "credentials",
    "bearer",
    "private_key",
];

/// What a redacted value is replaced with.
pub const REDACTED: &str = "[redacted]";

fn normalize(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 2);
    out.push('_');
    for c in key.chars() {
        out.push(match c {
            '.' | '-' | ' ' | ':' => '_',
            c => c.to_ascii_lowercase(),
        });
    }
    out.push('_');
    out
}

/// Whether the value of `key` is a secret by [`DEFAULT_SECRET_KEYS`] plus `extra` keys.
pub fn is_secret_key(key: &str, extra: &[String]) -> bool {
    Redactor::new(extra.to_vec()).is_secret(key)
}

/// The secret keys, normalized once: a redactor checks many keys per span.
fn patterns(extra: &[String]) -> std::sync::Arc<[String]> {
    DEFAULT_SECRET_KEYS
        .iter()
        .map(|k| normalize(k))
        .chain(extra.iter().map(|k| normalize(k)))
        .collect()
}

/// The one redaction step both pipelines use (span attributes and events, Sentry event fields,
/// breadcrumbs and HTTP data): by key ([`DEFAULT_SECRET_KEYS`], extensible) and by value
/// (`Bearer`/`Basic` credentials, user info in URLs, secret query parameters).
#[derive(Debug, Clone)]
pub struct Redactor {
    /// Default and extra keys, normalized.
    patterns: std::sync::Arc<[String]>,
    max_value_len: usize,
}

impl Default for Redactor {
    fn default() -> Self {
        Redactor {
            patterns: patterns(&[]),
            max_value_len: usize::MAX,
        }
    }
}

impl Redactor {
    /// A redactor with the default keys plus `extra_keys`.
    pub fn new(extra_keys: Vec<String>) -> Self {
        Redactor {
            patterns: patterns(&extra_keys),
            max_value_len: usize::MAX,
        }
    }

    /// Also truncates every value to `max` characters (`OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT`).
    pub fn with_max_value_len(mut self, max: usize) -> Self {
        self.max_value_len = max;
        self
    }

    /// Whether the value of `key` is a secret.
    pub fn is_secret(&self, key: &str) -> bool {
        let key = normalize(key);
        self.patterns.iter().any(|k| key.contains(k.as_str()))
    }

    /// The value to keep for `key` (secrets masked, then truncated to the length limit): `None`
    /// when it needs no change.
    pub fn redact(&self, key: &str, value: &str) -> Option<String> {
        if self.is_secret(key) {
            return (value != REDACTED).then(|| REDACTED.to_owned());
        }
        match redact_value(value) {
            Some(v) => Some(self.truncate(&v).unwrap_or(v)),
            None => self.truncate(value),
        }
    }

    /// `value` cut to the length limit (on a character boundary), or `None` when it fits.
    pub fn truncate(&self, value: &str) -> Option<String> {
        if value.len() <= self.max_value_len {
            return None;
        }
        value
            .char_indices()
            .nth(self.max_value_len)
            .map(|(i, _)| value[..i].to_owned())
    }
}

/// Redacts secrets inside a free-text value: `Bearer …`/`Basic …` credentials and URLs with user
/// info or secret query parameters. `None` when nothing was found.
pub fn redact_value(value: &str) -> Option<String> {
    let mut changed = false;
    let mut words: Vec<String> = Vec::new();
    let mut after_scheme = false;
    for word in value.split(' ') {
        let lower = word.to_ascii_lowercase();
        if after_scheme && !word.is_empty() {
            words.push(REDACTED.to_owned());
            changed = true;
            after_scheme = false;
            continue;
        }
        after_scheme = lower == "bearer" || lower == "basic";
        if word.contains("://") || word.contains('?') {
            let r = redact_url(word);
            if r != word {
                changed = true;
                words.push(r);
                continue;
            }
        }
        words.push(word.to_owned());
    }
    changed.then(|| words.join(" "))
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
    fn secret_keys_are_whole_words() {
        for k in [
            "password",
            "http.request.header.authorization",
            "db_password",
            "X-Api-Key",
            "user.auth",
            "session_token",
            "Set-Cookie",
        ] {
            assert!(is_secret_key(k, &[]), "{k}");
        }
        for k in ["author", "user.id", "tokenizer", "http.route"] {
            assert!(!is_secret_key(k, &[]), "{k}");
        }
        assert!(is_secret_key(
            "x-tenant-signature",
            &["signature".to_owned()]
        ));
    }

    #[test]
    fn values_lose_bearer_tokens_and_url_secrets() {
        let r = Redactor::default();
        assert_eq!(r.redact("password", "hunter2").as_deref(), Some(REDACTED));
        assert_eq!(
            r.redact("message", "sent Bearer abc.def.ghi to x")
                .as_deref(),
            Some("sent Bearer [redacted] to x")
        );
        assert_eq!(
            r.redact("url.full", "https://bob:pw@h/x?token=t0k&id=1")
                .as_deref(),
            Some("https://h/x?token=REDACTED&id=1")
        );
        assert_eq!(r.redact("user.id", "42"), None);
        let short = Redactor::default().with_max_value_len(4);
        assert_eq!(short.redact("note", "héllo world").as_deref(), Some("héll"));
        assert_eq!(short.redact("note", "ok"), None);
    }

    #[test]
    fn dsn_keys_are_masked() {
        assert_eq!(redact_dsn("https://abc:def@host/1"), "https://****@host/1");
        assert_eq!(redact_dsn("abc@host/1"), "****@host/1");
        assert_eq!(redact_dsn("not-a-dsn"), "not-a-dsn");
    }
}
