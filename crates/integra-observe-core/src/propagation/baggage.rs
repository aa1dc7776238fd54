//! W3C Baggage (<https://www.w3.org/TR/baggage/>): application key-value pairs.

use super::{any_hex_digit, trim_ows};

/// One list member; the value is held decoded, the properties as received (normalised).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Member {
    key: String,
    value: String,
    /// `;`-separated properties (`key` or `key=value`), without surrounding whitespace.
    properties: String,
}

impl Member {
    /// The member's length in a header.
    fn encoded_len(&self) -> usize {
        let props = if self.properties.is_empty() {
            0
        } else {
            1 + self.properties.len()
        };
        self.key.len() + 1 + encoded_len(&self.value) + props
    }

    fn write(&self, out: &mut String) {
        out.push_str(&self.key);
        out.push('=');
        percent_encode(&self.value, out);
        if !self.properties.is_empty() {
            out.push(';');
            out.push_str(&self.properties);
        }
    }
}

/// A `baggage` header: `key=value;property` members, values percent-decoded.
///
/// Limits follow W3C Baggage and OpenTelemetry: at most [`Self::MAX_MEMBERS`] members and
/// [`Self::MAX_BYTES`] bytes per header. Members beyond the limits are dropped one by one, never
/// the whole baggage.
///
/// ```
/// use integra_observe_core::propagation::Baggage;
/// let mut b = Baggage::parse(&["userId=alice, serverNode = DF%2028;ttl=60"]).unwrap();
/// assert_eq!(b.get("serverNode"), Some("DF 28"));
/// b.insert("cart", "a,b");
/// assert_eq!(b.to_header(), "userId=alice,serverNode=DF%2028;ttl=60,cart=a%2Cb");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Baggage {
    members: Vec<Member>,
}

impl Baggage {
    /// The most members kept (W3C asks for at least 64; OpenTelemetry allows 180).
    pub const MAX_MEMBERS: usize = 180;
    /// The most bytes in a `baggage` header.
    pub const MAX_BYTES: usize = 8192;

    /// An empty baggage.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses the values of every `baggage` header, combined as if joined with commas.
    ///
    /// Each invalid member (key not a token, value with characters outside the baggage-octet
    /// range, malformed property) is dropped alone; empty members are skipped. Values are
    /// percent-decoded (a malformed escape stays as it is, bytes that are not UTF-8 become
    /// U+FFFD, as the specification says). A repeated key keeps the last value. Members that
    /// would take the baggage past [`Self::MAX_MEMBERS`] or [`Self::MAX_BYTES`] (measured as
    /// [`Self::to_header`] writes them) are dropped. `None` when no member is left.
    pub fn parse(values: &[&str]) -> Option<Self> {
        let mut out = Baggage::new();
        let mut total = 0usize;
        for raw in values.iter().flat_map(|v| v.split(',')) {
            let Some(member) = parse_member(raw) else {
                continue;
            };
            let len = member.encoded_len();
            if let Some(slot) = out.members.iter_mut().find(|m| m.key == member.key) {
                let replaced = total.saturating_sub(slot.encoded_len()) + len;
                if replaced <= Self::MAX_BYTES {
                    total = replaced;
                    *slot = member;
                }
            } else {
                let grown = total + usize::from(!out.members.is_empty()) + len;
                if out.members.len() < Self::MAX_MEMBERS && grown <= Self::MAX_BYTES {
                    total = grown;
                    out.members.push(member);
                }
            }
        }
        (!out.is_empty()).then_some(out)
    }

    /// The decoded value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.member(key).map(|m| m.value.as_str())
    }

    /// The properties of `key` as written in the header (`;`-separated, possibly empty).
    pub fn properties(&self, key: &str) -> Option<&str> {
        self.member(key).map(|m| m.properties.as_str())
    }

    fn member(&self, key: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.key == key)
    }

    /// Sets `key` to `value` (any text: it is percent-encoded when written), in place if the key
    /// exists (its properties are cleared), else at the end. Returns `false`, changing nothing,
    /// when the key is not an HTTP token. Limits apply when writing ([`Self::to_header`]).
    pub fn insert(&mut self, key: &str, value: &str) -> bool {
        if !is_token(key) {
            return false;
        }
        let member = Member {
            key: key.to_owned(),
            value: value.to_owned(),
            properties: String::new(),
        };
        match self.members.iter_mut().find(|m| m.key == key) {
            Some(slot) => *slot = member,
            None => self.members.push(member),
        }
        true
    }

    /// Removes `key`, returning its value.
    pub fn remove(&mut self, key: &str) -> Option<String> {
        let i = self.members.iter().position(|m| m.key == key)?;
        Some(self.members.remove(i).value)
    }

    /// Keeps the members for which `keep(key, value)` is true.
    pub fn retain(&mut self, mut keep: impl FnMut(&str, &str) -> bool) {
        self.members.retain(|m| keep(&m.key, &m.value));
    }

    /// Puts `pairs` first, in order, replacing members with the same keys; pairs whose key is
    /// not a token are skipped.
    pub(crate) fn prepend(&mut self, pairs: Vec<(String, String)>) {
        let front: Vec<Member> = pairs
            .into_iter()
            .filter(|(k, _)| is_token(k))
            .map(|(key, value)| Member {
                key,
                value,
                properties: String::new(),
            })
            .collect();
        self.members
            .retain(|m| !front.iter().any(|f| f.key == m.key));
        self.members.splice(0..0, front);
    }

    /// The members as `(key, decoded value)`, in header order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.members
            .iter()
            .map(|m| (m.key.as_str(), m.value.as_str()))
    }

    /// The number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether there is no member.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The header value: members in order, values percent-encoded where needed (anything that is
    /// not a baggage-octet, and `%` itself), skipping any member that would take the header past
    /// [`Self::MAX_BYTES`] or [`Self::MAX_MEMBERS`]. Empty when there is no member.
    pub fn to_header(&self) -> String {
        let mut out = String::new();
        let mut count = 0;
        for m in &self.members {
            if count == Self::MAX_MEMBERS {
                break;
            }
            let sep = usize::from(!out.is_empty());
            if out.len() + sep + m.encoded_len() > Self::MAX_BYTES {
                continue;
            }
            if sep == 1 {
                out.push(',');
            }
            m.write(&mut out);
            count += 1;
        }
        out
    }
}

/// `key OWS "=" OWS value *( OWS ";" OWS property )`, surrounded by OWS.
fn parse_member(raw: &str) -> Option<Member> {
    let (kv, props) = match raw.split_once(';') {
        Some((kv, props)) => (kv, Some(props)),
        None => (raw, None),
    };
    let (key, value) = kv.split_once('=')?;
    let (key, value) = (trim_ows(key), trim_ows(value));
    if !is_token(key) || !value.bytes().all(is_baggage_octet) {
        return None;
    }
    let properties = match props {
        Some(p) => normalize_properties(p)?,
        None => String::new(),
    };
    Some(Member {
        key: key.to_owned(),
        value: percent_decode_lossy(value),
        properties,
    })
}

/// Properties as `key` or `key=value`, whitespace removed; empty ones (`;;`, a trailing `;`)
/// are skipped, a malformed one invalidates the member.
fn normalize_properties(raw: &str) -> Option<String> {
    let mut out = String::new();
    for prop in raw.split(';').map(trim_ows).filter(|p| !p.is_empty()) {
        if !out.is_empty() {
            out.push(';');
        }
        match prop.split_once('=') {
            None if is_token(prop) => out.push_str(prop),
            Some((k, v)) => {
                let (k, v) = (trim_ows(k), trim_ows(v));
                if !is_token(k) || !v.bytes().all(is_baggage_octet) {
                    return None;
                }
                out.push_str(k);
                out.push('=');
                out.push_str(v);
            }
            None => return None,
        }
    }
    Some(out)
}

/// An HTTP token (RFC 9110 `tchar`s), not empty.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|c| {
            c.is_ascii_alphanumeric()
                || matches!(
                    c,
                    b'!' | b'#'
                        | b'$'
                        | b'%'
                        | b'&'
                        | b'\''
                        | b'*'
                        | b'+'
                        | b'-'
                        | b'.'
                        | b'^'
                        | b'_'
                        | b'`'
                        | b'|'
                        | b'~'
                )
        })
}

/// `%x21 / %x23-2B / %x2D-3A / %x3C-5B / %x5D-7E`: printable ASCII without space, `"`, `,`,
/// `;` and `\`.
fn is_baggage_octet(c: u8) -> bool {
    matches!(c, 0x21 | 0x23..=0x2b | 0x2d..=0x3a | 0x3c..=0x5b | 0x5d..=0x7e)
}

/// Bytes written as they are; the rest (and `%`, so that decoding gives back the text) as `%XX`.
fn is_unreserved(c: u8) -> bool {
    is_baggage_octet(c) && c != b'%'
}

fn encoded_len(s: &str) -> usize {
    s.bytes()
        .map(|c| if is_unreserved(c) { 1 } else { 3 })
        .sum()
}

fn percent_encode(s: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for c in s.bytes() {
        if is_unreserved(c) {
            out.push(char::from(c));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(c >> 4)]));
            out.push(char::from(HEX[usize::from(c & 0x0f)]));
        }
    }
}

/// Decodes `%XX` escapes; a `%` not followed by two hex digits stays, invalid UTF-8 becomes
/// U+FFFD.
fn percent_decode_lossy(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&c) = bytes.get(i) {
        let escaped = match (c, bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&hi), Some(&lo)) => any_hex_digit(hi).zip(any_hex_digit(lo)),
            _ => None,
        };
        match escaped {
            Some((hi, lo)) => {
                out.push((hi << 4) | lo);
                i += 3;
            }
            None => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(values: &[&str]) -> Baggage {
        Baggage::parse(values).unwrap()
    }

    #[test]
    fn members_with_ows_and_properties() {
        let b = parse(&["key1 = value1 ;  p1 ; p2 = v2 ,key2=value2,\tkey3=\t"]);
        assert_eq!(b.len(), 3);
        assert_eq!(b.get("key1"), Some("value1"));
        assert_eq!(b.properties("key1"), Some("p1;p2=v2"));
        assert_eq!(b.get("key3"), Some(""));
        assert_eq!(b.properties("key2"), Some(""));
        assert_eq!(b.to_header(), "key1=value1;p1;p2=v2,key2=value2,key3=");
        assert_eq!(b.iter().count(), 3);
        assert_eq!(b.get("nope"), None);
    }

    #[test]
    fn repeated_headers_combine() {
        let b = parse(&["a=1,b=2", "", "c=3"]);
        assert_eq!(b.to_header(), "a=1,b=2,c=3");
        assert_eq!(Baggage::parse(&[""]), None);
        assert_eq!(Baggage::parse(&[]), None);
        assert_eq!(Baggage::parse(&[",, ,"]), None);
    }

    #[test]
    fn invalid_members_dropped_individually() {
        let b = parse(&[
            "ok=1,no-equals,=novalue,bad key=1,k=a b,k2=\"q\",k3=a\\b,k4=é,(k)=1,k5=1;p=,k6=1;bad p,k7=1;;,good=2",
        ]);
        let keys: Vec<_> = b.iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["ok", "k5", "k7", "good"]);
        assert_eq!(b.properties("k5"), Some("p="));
        assert_eq!(b.properties("k7"), Some(""));
    }

    #[test]
    fn values_are_percent_decoded() {
        let b = parse(&["a=%20x%2Cy%3b,b=caf%C3%A9,c=100%25,d=50%off,e=%zz%4,f=%FF"]);
        assert_eq!(b.get("a"), Some(" x,y;"));
        assert_eq!(b.get("b"), Some("café"));
        assert_eq!(b.get("c"), Some("100%"));
        assert_eq!(b.get("d"), Some("50%off"));
        assert_eq!(b.get("e"), Some("%zz%4"));
        assert_eq!(b.get("f"), Some("\u{fffd}"));
        // Keys are tokens, not decoded.
        assert_eq!(parse(&["k%41=1"]).get("k%41"), Some("1"));
    }

    #[test]
    fn to_header_percent_encodes_what_needs_it() {
        let mut b = Baggage::new();
        for (k, v) in [
            ("space", "a b"),
            ("punct", ",;\\\"="),
            ("pct", "100%"),
            ("utf8", "café"),
            ("plain", "A-z_0.9~!#$&'()*+/:<>?@[]^`{|}"),
            ("empty", ""),
        ] {
            assert!(b.insert(k, v));
        }
        assert_eq!(
            b.to_header(),
            "space=a%20b,punct=%2C%3B%5C%22=,pct=100%25,utf8=caf%C3%A9,\
             plain=A-z_0.9~!#$&'()*+/:<>?@[]^`{|},empty="
        );
        assert_eq!(Baggage::parse(&[&b.to_header()]), Some(b));
    }

    #[test]
    fn duplicate_keys_last_wins() {
        let b = parse(&["a=1,b=2", "a=3"]);
        assert_eq!(b.to_header(), "a=3,b=2");
    }

    #[test]
    fn at_least_64_and_at_most_180_members() {
        let members: Vec<String> = (0..200).map(|i| format!("k{i}=v{i}")).collect();
        let b = parse(&[&members[..64].join(",")]);
        assert_eq!(b.len(), 64);
        let b = parse(&[&members.join(",")]);
        assert_eq!(b.len(), Baggage::MAX_MEMBERS);
        assert_eq!(b.get("k179"), Some("v179"));
        assert_eq!(b.get("k180"), None);
        // A duplicate past the limit still updates its member.
        let b = parse(&[&members.join(","), "k0=new"]);
        assert_eq!(b.get("k0"), Some("new"));
        // Inserting past the limit: to_header writes the first 180.
        let mut b = Baggage::new();
        for i in 0..200 {
            assert!(b.insert(&format!("k{i}"), "v"));
        }
        let again = parse(&[&b.to_header()]);
        assert_eq!((again.len(), again.get("k199")), (180, None));
    }

    #[test]
    fn total_size_limit_drops_members_that_do_not_fit() {
        let big = "x".repeat(4000);
        let header = format!("a={big},b={big},c={big},d=small");
        let b = parse(&[&header]);
        let keys: Vec<_> = b.iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["a", "b", "d"]);
        assert!(b.to_header().len() <= Baggage::MAX_BYTES);
        // One member alone too big.
        let too_big = format!("a={},b=1", "x".repeat(8191));
        assert_eq!(parse(&[&too_big]).to_header(), "b=1");
        // Exactly 8192 bytes fits.
        let exact = format!("a={}", "x".repeat(8190));
        assert_eq!(parse(&[&exact]).to_header().len(), 8192);
        // Encoding counts: 3000 spaces are 9000 bytes once encoded.
        let mut b = Baggage::new();
        assert!(b.insert("s", &" ".repeat(3000)));
        assert!(b.insert("t", "1"));
        assert_eq!(b.to_header(), "t=1");
        // A replacement that would not fit keeps the old value.
        let b = parse(&[&format!("a={big},b={big}"), &format!("a={big}{big}")]);
        assert_eq!(b.get("a"), Some(big.as_str()));
    }

    #[test]
    fn insert_remove_retain() {
        let mut b = parse(&["a=1;p,b=2"]);
        assert!(!b.insert("bad key", "1"));
        assert!(!b.insert("", "1"));
        assert!(b.insert("a", "x"));
        assert_eq!(b.to_header(), "a=x,b=2");
        assert_eq!(b.remove("a").as_deref(), Some("x"));
        assert_eq!(b.remove("a"), None);
        assert!(b.insert("c", "3"));
        b.retain(|k, _| k != "b");
        assert_eq!(b.to_header(), "c=3");
        b.prepend(vec![
            ("z".into(), "1".into()),
            ("c".into(), "0".into()),
            ("bad key".into(), "x".into()),
        ]);
        assert_eq!(b.to_header(), "z=1,c=0");
        b.retain(|_, _| false);
        assert!(b.is_empty());
        assert_eq!(b.to_header(), "");
    }

    #[test]
    fn helpers() {
        assert!(is_token("!#$%&'*+-.^_`|~09azAZ"));
        assert!(!is_token("a b") && !is_token("a,b") && !is_token("a=b") && !is_token(""));
        assert_eq!(percent_decode_lossy("%"), "%");
        assert_eq!(percent_decode_lossy("%4"), "%4");
        assert_eq!(percent_decode_lossy("%41%4a"), "AJ");
        let mut s = String::new();
        percent_encode("a%\u{0}\u{7f}", &mut s);
        assert_eq!(s, "a%25%00%7F");
        assert_eq!(encoded_len("a%\u{0}\u{7f}"), s.len());
    }
}
