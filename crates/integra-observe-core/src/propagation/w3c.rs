//! W3C Trace Context (<https://www.w3.org/TR/trace-context/>): `traceparent` and `tracestate`.

use super::{lower_hex, trim_ows};
use crate::{SpanId, TraceId};

/// A `traceparent` header: `{version}-{trace-id}-{parent-id}-{trace-flags}` in lowercase hex.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceParent {
    /// The format version; `0xff` is never valid, versions above `00` are read by the `00` rules.
    pub version: u8,
    /// The trace.
    pub trace_id: TraceId,
    /// The caller's span.
    pub parent_id: SpanId,
    /// The trace flags, every bit kept (`0x01` sampled, `0x02` random, others reserved).
    pub flags: u8,
}

impl TraceParent {
    /// The `sampled` flag bit.
    pub const FLAG_SAMPLED: u8 = 0x01;
    /// The `random` flag bit (Trace Context Level 2): the trace id's right 7 bytes are random.
    pub const FLAG_RANDOM: u8 = 0x02;

    /// Length of a version `00` header; the prefix every later version starts with.
    const V00_LEN: usize = 55;

    /// A version `00` header from its parts.
    pub fn new(trace_id: TraceId, parent_id: SpanId, flags: u8) -> Self {
        TraceParent {
            version: 0,
            trace_id,
            parent_id,
            flags,
        }
    }

    /// Parses one `traceparent` value; `None` if it breaks the specification.
    ///
    /// Spaces and tabs around the value are ignored. Version `00` must be exactly 55 characters;
    /// a later version (`01`-`fe`) must start with a valid version-`00` value followed by the end
    /// or by `-` and more data (which is ignored). Hex must be lowercase; the all-zero trace id
    /// and parent id are invalid; every flags byte is accepted.
    ///
    /// ```
    /// use integra_observe_core::propagation::TraceParent;
    /// let tp = TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03").unwrap();
    /// assert!(tp.sampled());
    /// assert_eq!(tp.to_header(), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03");
    /// assert!(TraceParent::parse("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").is_none());
    /// ```
    pub fn parse(value: &str) -> Option<Self> {
        let bytes = trim_ows(value).as_bytes();
        let (prefix, rest) = bytes.split_at_checked(Self::V00_LEN)?;
        let [version] = lower_hex::<1>(prefix.get(0..2)?)?;
        let delimiters = [2, 35, 52].map(|i| prefix.get(i) == Some(&b'-'));
        if version == 0xff || delimiters.contains(&false) {
            return None;
        }
        let trace_id = TraceId::from_bytes(lower_hex(prefix.get(3..35)?)?);
        let parent_id = SpanId::from_bytes(lower_hex(prefix.get(36..52)?)?);
        let [flags] = lower_hex::<1>(prefix.get(53..55)?)?;
        if !trace_id.is_valid() || !parent_id.is_valid() {
            return None;
        }
        let tail_ok = match (version, rest) {
            (_, []) => true,
            (0, _) => false,
            (_, [b'-', more @ ..]) => !more.is_empty(),
            _ => false,
        };
        tail_ok.then_some(TraceParent {
            version,
            trace_id,
            parent_id,
            flags,
        })
    }

    /// The header value, in the format of version `00` with this header's version number.
    ///
    /// A header parsed from a later version loses the fields after the version-`00` prefix;
    /// [`crate::propagation::inject`] always writes version `00`.
    pub fn to_header(&self) -> String {
        format!(
            "{:02x}-{}-{}-{:02x}",
            self.version, self.trace_id, self.parent_id, self.flags
        )
    }

    /// Whether the `sampled` flag is set.
    pub fn sampled(&self) -> bool {
        self.flags & Self::FLAG_SAMPLED != 0
    }
}

/// A `tracestate` header: up to 32 vendor `key=value` members, most recently updated first.
///
/// ```
/// use integra_observe_core::propagation::TraceState;
/// let mut ts = TraceState::parse(&["rojo=00f067aa0ba902b7", "congo=t61rcWkgMzE"]).unwrap();
/// ts.insert("congo", "ucfJifl5GOE");
/// assert_eq!(ts.to_header(), "congo=ucfJifl5GOE,rojo=00f067aa0ba902b7");
/// assert!(TraceState::parse(&["foo=1,foo=2"]).is_none());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TraceState {
    members: Vec<(String, String)>,
}

impl TraceState {
    /// The most members a `tracestate` may have.
    pub const MAX_MEMBERS: usize = 32;

    /// An empty state.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses the values of every `tracestate` header, combined as if joined with commas.
    ///
    /// Empty list members are skipped, spaces and tabs around members ignored. The whole state
    /// is invalid (`None`) if any member is malformed, a key repeats, or there are more than 32
    /// members; `None` also when there is no member at all.
    pub fn parse(values: &[&str]) -> Option<Self> {
        let mut members: Vec<(String, String)> = Vec::new();
        for member in values.iter().flat_map(|v| v.split(',')) {
            let member = trim_ows(member);
            if member.is_empty() {
                continue;
            }
            let (key, value) = member.split_once('=')?;
            if !Self::is_valid_key(key)
                || !Self::is_valid_value(value)
                || members.len() == Self::MAX_MEMBERS
                || members.iter().any(|(k, _)| k == key)
            {
                return None;
            }
            members.push((key.to_owned(), value.to_owned()));
        }
        (!members.is_empty()).then_some(TraceState { members })
    }

    /// Whether `key` is a valid key: `[a-z][a-z0-9_\-*/]{0,255}`, or `tenant@system` with a
    /// tenant of `[a-z0-9][a-z0-9_\-*/]{0,240}` and a system of `[a-z][a-z0-9_\-*/]{0,13}`.
    pub fn is_valid_key(key: &str) -> bool {
        fn key_char(c: &u8) -> bool {
            matches!(c, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'*' | b'/')
        }
        let bytes = key.as_bytes();
        match key.split_once('@') {
            None => {
                matches!(bytes.first(), Some(b'a'..=b'z'))
                    && bytes.len() <= 256
                    && bytes.iter().all(key_char)
            }
            Some((tenant, system)) => {
                let (tenant, system) = (tenant.as_bytes(), system.as_bytes());
                matches!(tenant.first(), Some(b'a'..=b'z' | b'0'..=b'9'))
                    && tenant.len() <= 241
                    && tenant.iter().all(key_char)
                    && matches!(system.first(), Some(b'a'..=b'z'))
                    && system.len() <= 14
                    && system.iter().all(key_char)
            }
        }
    }

    /// Whether `value` is a valid value: 1 to 256 printable ASCII characters (`0x20`-`0x7e`)
    /// other than `,` and `=`, not ending in a space.
    pub fn is_valid_value(value: &str) -> bool {
        let bytes = value.as_bytes();
        (1..=256).contains(&bytes.len())
            && bytes
                .iter()
                .all(|&c| (0x20..=0x7e).contains(&c) && c != b',' && c != b'=')
            && bytes.last() != Some(&b' ')
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.members
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Sets `key` to `value` and moves it to the front, as a vendor updating its entry must;
    /// when that would make 33 members the last one is dropped. Returns `false`, changing
    /// nothing, when the key or value is invalid.
    pub fn insert(&mut self, key: &str, value: &str) -> bool {
        if !Self::is_valid_key(key) || !Self::is_valid_value(value) {
            return false;
        }
        self.members.retain(|(k, _)| k != key);
        self.members.insert(0, (key.to_owned(), value.to_owned()));
        self.members.truncate(Self::MAX_MEMBERS);
        true
    }

    /// Removes `key`, returning its value.
    pub fn remove(&mut self, key: &str) -> Option<String> {
        let i = self.members.iter().position(|(k, _)| k == key)?;
        Some(self.members.remove(i).1)
    }

    /// The members, in header order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.members.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether there is no member.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The header value: the members joined with commas (empty for an empty state).
    pub fn to_header(&self) -> String {
        let mut out = String::new();
        for (k, v) in &self.members {
            if !out.is_empty() {
                out.push(',');
            }
            out.push_str(k);
            out.push('=');
            out.push_str(v);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "12345678901234567890123456789012";
    const P: &str = "1234567890123456";

    fn tp(s: &str) -> Option<TraceParent> {
        TraceParent::parse(s)
    }
    fn valid(s: &str) -> bool {
        tp(s).is_some()
    }

    #[test]
    fn traceparent_valid() {
        let v = tp(&format!("00-{T}-{P}-01")).unwrap();
        assert_eq!(v.version, 0);
        assert_eq!(v.trace_id.to_string(), T);
        assert_eq!(v.parent_id.to_string(), P);
        assert_eq!(v.flags, 1);
        assert!(v.sampled());
        assert_eq!(v.to_header(), format!("00-{T}-{P}-01"));
        assert!(!tp(&format!("00-{T}-{P}-00")).unwrap().sampled());
        assert_eq!(
            TraceParent::new(v.trace_id, v.parent_id, 0x03).to_header(),
            format!("00-{T}-{P}-03")
        );
    }

    #[test]
    fn traceparent_any_flags_kept() {
        for flags in ["00", "01", "02", "03", "09", "7f", "80", "fe", "ff"] {
            let s = format!("00-{T}-{P}-{flags}");
            let v = tp(&s).unwrap();
            assert_eq!(v.to_header(), s);
        }
        let v = tp(&format!("00-{T}-{P}-03")).unwrap();
        assert_eq!(v.flags & TraceParent::FLAG_RANDOM, TraceParent::FLAG_RANDOM);
        assert!(!tp(&format!("00-{T}-{P}-02")).unwrap().sampled());
    }

    #[test]
    fn traceparent_uppercase_hex_rejected() {
        assert!(!valid(&format!("0A-{T}-{P}-01")));
        assert!(!valid(&format!(
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-{P}-01"
        )));
        assert!(!valid(&format!("00-{T}-00F067AA0BA902B7-01")));
        assert!(!valid(&format!("00-{T}-{P}-0A")));
        assert!(valid(&format!("0a-{T}-{P}-0a")));
    }

    #[test]
    fn traceparent_version_ff_invalid() {
        assert!(!valid(&format!("ff-{T}-{P}-01")));
        assert!(!valid(&format!("ff-{T}-{P}-01-more")));
    }

    #[test]
    fn traceparent_version_illegal_characters_and_lengths() {
        assert!(!valid(&format!(".0-{T}-{P}-01")));
        assert!(!valid(&format!("0.-{T}-{P}-01")));
        assert!(!valid(&format!("000-{T}-{P}-01")));
        assert!(!valid(&format!("0000-{T}-{P}-01")));
        assert!(!valid(&format!("0-{T}-{P}-01")));
        assert!(!valid(&format!("-{T}-{P}-01")));
    }

    #[test]
    fn traceparent_trace_id_rules() {
        assert!(!valid(&format!(
            "00-00000000000000000000000000000000-{P}-01"
        )));
        assert!(!valid(&format!(
            "00-.2345678901234567890123456789012-{P}-01"
        )));
        assert!(!valid(&format!(
            "00-1234567890123456789012345678901.-{P}-01"
        )));
        assert!(!valid(&format!(
            "00-123456789012345678901234567890123-{P}-01"
        )));
        assert!(!valid(&format!(
            "00-1234567890123456789012345678901-{P}-01"
        )));
    }

    #[test]
    fn traceparent_parent_id_rules() {
        assert!(!valid(&format!("00-{T}-0000000000000000-01")));
        assert!(!valid(&format!("00-{T}-.234567890123456-01")));
        assert!(!valid(&format!("00-{T}-123456789012345.-01")));
        assert!(!valid(&format!("00-{T}-12345678901234567-01")));
        assert!(!valid(&format!("00-{T}-123456789012345-01")));
    }

    #[test]
    fn traceparent_flags_rules() {
        assert!(!valid(&format!("00-{T}-{P}-.0")));
        assert!(!valid(&format!("00-{T}-{P}-0.")));
        assert!(!valid(&format!("00-{T}-{P}-001")));
        assert!(!valid(&format!("00-{T}-{P}-1")));
        assert!(!valid(&format!("00-{T}-{P}-")));
        assert!(!valid(&format!("00-{T}-{P}")));
    }

    #[test]
    fn traceparent_delimiters() {
        assert!(!valid(&format!("00_{T}-{P}-01")));
        assert!(!valid(&format!("00-{T}_{P}-01")));
        assert!(!valid(&format!("00-{T}-{P}_01")));
        assert!(!valid(&format!("00-{T}--{P}01")));
    }

    #[test]
    fn traceparent_version_00_is_exactly_55_chars() {
        assert!(!valid(&format!("00-{T}-{P}-01.")));
        assert!(!valid(&format!("00-{T}-{P}-01-")));
        assert!(!valid(&format!(
            "00-{T}-{P}-01-what-the-future-will-be-like"
        )));
    }

    #[test]
    fn traceparent_future_version() {
        let v = tp(&format!("cc-{T}-{P}-01")).unwrap();
        assert_eq!(v.version, 0xcc);
        assert_eq!(v.to_header(), format!("cc-{T}-{P}-01"));
        let v = tp(&format!("cc-{T}-{P}-01-what-the-future-will-be-like")).unwrap();
        assert_eq!(v.trace_id.to_string(), T);
        assert_eq!(v.to_header(), format!("cc-{T}-{P}-01"));
        assert!(!valid(&format!(
            "cc-{T}-{P}-01.what-the-future-will-be-like"
        )));
        assert!(!valid(&format!("cc-{T}-{P}-01-")));
        assert!(valid(&format!("01-{T}-{P}-09")));
        assert!(valid(&format!("fe-{T}-{P}-09-x")));
        // The version-00 prefix rules still hold for later versions.
        assert!(!valid(&format!("cc-{T}-{P}-1-extra")));
        assert!(!valid(&format!(
            "cc-00000000000000000000000000000000-{P}-01"
        )));
    }

    #[test]
    fn traceparent_ows_handling() {
        let canon = format!("00-{T}-{P}-01");
        for s in [
            format!(" {canon}"),
            format!("\t{canon}"),
            format!("{canon} "),
            format!("{canon}\t"),
            format!("\t {canon} \t"),
        ] {
            assert_eq!(tp(&s).unwrap().to_header(), canon);
        }
        // Only spaces and tabs are optional whitespace.
        assert!(!valid(&format!("{canon}\n")));
        assert!(!valid(&format!("\r{canon}")));
        assert!(!valid(&format!("{canon}\u{a0}")));
    }

    #[test]
    fn traceparent_odd_input_never_panics() {
        for s in [
            "",
            "-",
            "00",
            "00-",
            "ééééééééééééééééééééééééééééééééééééééééééééééééééééééééé",
            "00-1234567890123456789012345678901é-1234567890123456-01",
            "00-12345678901234567890123456789012-123456789012345é-01",
            "00-12345678901234567890123456789012-1234567890123456-0é",
        ] {
            assert!(tp(s).is_none(), "{s}");
        }
    }

    fn ts(values: &[&str]) -> Option<TraceState> {
        TraceState::parse(values)
    }

    #[test]
    fn tracestate_combines_headers_in_order() {
        let s = ts(&["foo=1,bar=2", "rojo=1,congo=2", "baz=3"]).unwrap();
        assert_eq!(s.to_header(), "foo=1,bar=2,rojo=1,congo=2,baz=3");
        assert_eq!(s.len(), 5);
        assert_eq!(s.get("congo"), Some("2"));
        assert_eq!(s.get("nope"), None);
        assert_eq!(
            s.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            ["foo", "bar", "rojo", "congo", "baz"]
        );
    }

    #[test]
    fn tracestate_empty_members_skipped() {
        assert_eq!(ts(&[""]), None);
        assert_eq!(ts(&[]), None);
        assert_eq!(ts(&[" , ,\t"]), None);
        assert_eq!(ts(&["foo=1", ""]).unwrap().to_header(), "foo=1");
        assert_eq!(ts(&["", "foo=1"]).unwrap().to_header(), "foo=1");
        assert_eq!(ts(&[",foo=1,,bar=2,"]).unwrap().to_header(), "foo=1,bar=2");
    }

    #[test]
    fn tracestate_member_count_limit() {
        let members: Vec<String> = (1..=33).map(|i| format!("bar{i:02}={i:02}")).collect();
        let h32: Vec<&str> = members[..32].iter().map(String::as_str).collect();
        let s = ts(&h32).unwrap();
        assert_eq!((s.len(), s.get("bar01")), (32, Some("01")));
        let h33: Vec<&str> = members.iter().map(String::as_str).collect();
        assert_eq!(ts(&h33), None);
        assert_eq!(ts(&[&h33.join(",")]), None);
        // Empty members do not count.
        assert!(ts(&[&format!("{},,,", h32.join(","))]).is_some());
    }

    #[test]
    fn tracestate_duplicated_keys_invalid() {
        assert_eq!(ts(&["foo=1,foo=1"]), None);
        assert_eq!(ts(&["foo=1,foo=2"]), None);
        assert_eq!(ts(&["foo=1", "foo=1"]), None);
        assert_eq!(ts(&["foo=1", "foo=2"]), None);
        assert_eq!(ts(&["t@v=1", "t@v=2"]), None);
        assert!(ts(&["t@v=1", "t@w=2", "t=3"]).is_some());
    }

    #[test]
    fn tracestate_all_allowed_characters() {
        let key = "abcdefghijklmnopqrstuvwxyz0123456789_-*/";
        let value: String = (0x20u8..=0x7e)
            .filter(|c| *c != b',' && *c != b'=')
            .map(char::from)
            .collect();
        let s = ts(&[&format!("{key}={value}")]).unwrap();
        assert_eq!(s.get(key), Some(value.as_str()));
        let vendor_key = format!("{key}@a-z0-9_-*/");
        let s = ts(&[&format!("{vendor_key}={value}")]).unwrap();
        assert_eq!(s.get(&vendor_key), Some(value.as_str()));
        // A tenant may start with a digit, a simple key may not.
        assert!(ts(&["0tenant@sys=1"]).is_some());
        assert_eq!(ts(&["0foo=1"]), None);
    }

    #[test]
    fn tracestate_ows_handling() {
        for h in [
            "foo=1 \t , \t bar=2, \t baz=3",
            "foo=1\t \t,\t \tbar=2,\t \tbaz=3",
        ] {
            let s = ts(&[h]).unwrap();
            assert_eq!(s.to_header(), "foo=1,bar=2,baz=3");
        }
        for h in [" foo=1", "\tfoo=1", "foo=1 ", "foo=1\t", "\t foo=1 \t"] {
            assert_eq!(ts(&[h]).unwrap().get("foo"), Some("1"));
        }
        // Spaces inside a value are kept; around `=` they are not OWS.
        assert_eq!(ts(&["foo=a b"]).unwrap().get("foo"), Some("a b"));
        assert_eq!(ts(&["foo= 1"]).unwrap().get("foo"), Some(" 1"));
    }

    #[test]
    fn tracestate_key_illegal_characters() {
        assert_eq!(ts(&["foo =1"]), None);
        assert_eq!(ts(&["FOO=1"]), None);
        assert_eq!(ts(&["foo.bar=1"]), None);
        assert_eq!(ts(&["=1"]), None);
        assert_eq!(ts(&["foo"]), None);
        assert_eq!(ts(&["fóo=1"]), None);
    }

    #[test]
    fn tracestate_key_illegal_vendor_format() {
        for h in [
            "foo@=1,bar=2",
            "@foo=1,bar=2",
            "foo@@bar=1,bar=2",
            "foo@bar@baz=1,bar=2",
            "foo@0bar=1",
            "_foo@bar=1",
        ] {
            assert_eq!(ts(&[h]), None, "{h}");
        }
    }

    #[test]
    fn tracestate_key_length_limit() {
        let z256 = format!("{}=1", "z".repeat(256));
        assert_eq!(ts(&["foo=1", &z256]).unwrap().get("foo"), Some("1"));
        let z257 = format!("{}=1", "z".repeat(257));
        assert_eq!(ts(&["foo=1", &z257]), None);
        let tenant241 = format!("{}@{}=1", "t".repeat(241), "v".repeat(14));
        assert_eq!(ts(&["foo=1", &tenant241]).unwrap().len(), 2);
        let tenant242 = format!("{}@v=1", "t".repeat(242));
        assert_eq!(ts(&["foo=1", &tenant242]), None);
        let system15 = format!("t@{}=1", "v".repeat(15));
        assert_eq!(ts(&["foo=1", &system15]), None);
    }

    #[test]
    fn tracestate_value_rules() {
        assert_eq!(ts(&["foo=bar=baz"]), None);
        assert_eq!(ts(&["foo=,bar=3"]), None);
        assert_eq!(ts(&["foo=a\tb"]), None);
        assert_eq!(ts(&["foo=caf\u{e9}"]), None);
        assert_eq!(ts(&["foo=\u{7f}"]), None);
        let v256 = "v".repeat(256);
        assert!(ts(&[&format!("foo={v256}")]).is_some());
        assert_eq!(ts(&[&format!("foo={v256}v")]), None);
        assert!(!TraceState::is_valid_value("ends in space "));
        assert!(TraceState::is_valid_value(" starts with space"));
    }

    #[test]
    fn tracestate_insert_moves_to_front() {
        let mut s = ts(&["rojo=1,congo=2,foo=3"]).unwrap();
        assert!(s.insert("congo", "new"));
        assert_eq!(s.to_header(), "congo=new,rojo=1,foo=3");
        assert!(s.insert("zed", "4"));
        assert_eq!(s.to_header(), "zed=4,congo=new,rojo=1,foo=3");
        assert!(!s.insert("Bad", "1"));
        assert!(!s.insert("ok", "a,b"));
        assert!(!s.insert("ok", ""));
        assert_eq!(s.len(), 4);
        assert_eq!(s.remove("rojo").as_deref(), Some("1"));
        assert_eq!(s.remove("rojo"), None);
        assert_eq!(s.to_header(), "zed=4,congo=new,foo=3");
    }

    #[test]
    fn tracestate_insert_keeps_at_most_32() {
        let members: Vec<String> = (1..=32).map(|i| format!("k{i}={i}")).collect();
        let refs: Vec<&str> = members.iter().map(String::as_str).collect();
        let mut s = ts(&refs).unwrap();
        assert!(s.insert("new", "x"));
        assert_eq!(s.len(), 32);
        assert_eq!(s.get("k32"), None);
        assert_eq!(s.iter().next(), Some(("new", "x")));
        // Updating an existing key drops nothing.
        assert!(s.insert("k31", "y"));
        assert_eq!((s.len(), s.get("k1")), (32, Some("1")));
    }

    #[test]
    fn tracestate_new_is_empty() {
        let s = TraceState::new();
        assert!(s.is_empty());
        assert_eq!(s.to_header(), "");
    }
}
