//! Outbound allow-list: which scheme/host/port a kmsID's plugin may reach.
//!
//! Pure logic with no wasm dependency, table-tested below. Matching is on the
//! literal host the plugin names — never on DNS answers — so an allowed name
//! does not let a plugin reach that name's IP address by writing it as a
//! literal, and anything ambiguous (user-info, percent-escapes, numeric hosts
//! that resolvers read as IPv4 in odd notations) is rejected outright.
//! An empty list allows nothing.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// URL scheme of an allowed endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plain HTTP.
    Http,
    /// HTTPS (TLS done by the host).
    Https,
    /// A TLS byte stream (`kmshost:plugin/tls-stream`, TLS done by the
    /// host), for protocols other than HTTP such as KMIP.
    Tls,
}

impl Scheme {
    /// The default port.
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
            // KMIP over TLS, the protocol streams exist for.
            Scheme::Tls => 5696,
        }
    }
    fn parse(s: &str) -> Option<Scheme> {
        match s.to_ascii_lowercase().as_str() {
            "http" => Some(Scheme::Http),
            "https" => Some(Scheme::Https),
            "tls" => Some(Scheme::Tls),
            _ => None,
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
            Scheme::Tls => "tls",
        })
    }
}

/// A host as written in a URL, normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// A DNS name, lower-case, without a trailing dot.
    Name(String),
    /// An IPv4 literal in dotted-quad form.
    V4(Ipv4Addr),
    /// An IPv6 literal (written in brackets in URLs).
    V6(Ipv6Addr),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(n) => f.write_str(n),
            Host::V4(a) => write!(f, "{a}"),
            Host::V6(a) => write!(f, "[{a}]"),
        }
    }
}

/// Why a host or URL could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The scheme is not http or https.
    #[error("scheme must be http or https in {0:?}")]
    Scheme(String),
    /// The authority carries user-info (`user@host`).
    #[error("user-info (`@`) is not allowed in {0:?}")]
    UserInfo(String),
    /// The host is empty or has characters a DNS name cannot have.
    #[error("invalid host in {0:?}")]
    Host(String),
    /// A host made only of digits/dots/hex that is not a dotted quad.
    #[error("ambiguous numeric host in {0:?}: write IPv4 as a dotted quad")]
    AmbiguousNumeric(String),
    /// The port is not a number in 1..=65535.
    #[error("invalid port in {0:?}")]
    Port(String),
    /// A wildcard anywhere but as the whole first label.
    #[error("a wildcard must be the whole first label (`*.example.com`) in {0:?}")]
    Wildcard(String),
    /// A wildcard over a single label (`*.com`): every name of a top-level
    /// domain.
    #[error(
        "a wildcard over a top-level domain allows too much in {0:?}: name a domain under it (`*.example.com`)"
    )]
    WildcardTld(String),
}

/// Parses a URL host (without port). Rejects ambiguous forms.
pub fn parse_host(raw: &str) -> Result<Host, ParseError> {
    let err = || ParseError::Host(raw.to_string());
    if raw.is_empty() {
        return Err(err());
    }
    if let Some(inner) = raw.strip_prefix('[') {
        let inner = inner.strip_suffix(']').ok_or_else(err)?;
        return inner.parse::<Ipv6Addr>().map(Host::V6).map_err(|_| err());
    }
    let name = raw.strip_suffix('.').unwrap_or(raw).to_ascii_lowercase();
    if name.is_empty() || name.len() > 253 {
        return Err(err());
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        return Err(err());
    }
    if name.split('.').any(|l| l.is_empty() || l.len() > 63) {
        return Err(err());
    }
    // Anything whose last label is numeric (or hex) is read as an IPv4
    // address by common resolvers (`127.1`, `2130706433`, `0x7f.0.0.1`):
    // accept only the canonical dotted quad.
    let last = name.rsplit('.').next().unwrap_or("");
    let numeric_like = last.bytes().all(|b| b.is_ascii_digit())
        || (last.starts_with("0x") && last[2..].bytes().all(|b| b.is_ascii_hexdigit()));
    if numeric_like {
        return match name.parse::<Ipv4Addr>() {
            Ok(a) if a.to_string() == name => Ok(Host::V4(a)),
            _ => Err(ParseError::AmbiguousNumeric(raw.to_string())),
        };
    }
    Ok(Host::Name(name))
}

/// Splits `host[:port]` (with bracketed IPv6) into host and optional port.
fn split_authority(auth: &str) -> Result<(&str, Option<u16>), ParseError> {
    if auth.contains('@') {
        return Err(ParseError::UserInfo(auth.to_string()));
    }
    if auth.contains('%') {
        return Err(ParseError::Host(auth.to_string()));
    }
    let (host, port) = if auth.starts_with('[') {
        match auth.find(']') {
            Some(i) => {
                let rest = &auth[i + 1..];
                match rest.strip_prefix(':') {
                    Some(p) => (&auth[..=i], Some(p)),
                    None if rest.is_empty() => (&auth[..=i], None),
                    None => return Err(ParseError::Host(auth.to_string())),
                }
            }
            None => return Err(ParseError::Host(auth.to_string())),
        }
    } else {
        match auth.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (auth, None),
        }
    };
    let port = match port {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 && !p.starts_with('+') => Some(n),
            _ => return Err(ParseError::Port(auth.to_string())),
        },
    };
    Ok((host, port))
}

/// A request target: what a plugin asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Scheme.
    pub scheme: Scheme,
    /// Host.
    pub host: Host,
    /// Port (the scheme's default if the URL had none).
    pub port: u16,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
    }
}

impl Target {
    /// Parses a request's scheme and authority.
    pub fn parse(scheme: &str, authority: &str) -> Result<Target, ParseError> {
        let scheme = Scheme::parse(scheme).ok_or_else(|| ParseError::Scheme(scheme.to_string()))?;
        let (host, port) = split_authority(authority)?;
        let host = parse_host(host)?;
        Ok(Target {
            scheme,
            host,
            port: port.unwrap_or(scheme.default_port()),
        })
    }

    /// Parses a whole URL (`https://host:port/path`), ignoring the path.
    pub fn parse_url(url: &str) -> Result<Target, ParseError> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| ParseError::Scheme(url.to_string()))?;
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        Target::parse(scheme, authority)
    }
}

/// The host part of an allow-list entry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Exact(Host),
    /// `*.suffix`: any name with at least one more label before `suffix`.
    Subdomains(String),
}

/// One allowed endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedHost {
    scheme: Scheme,
    host: HostPattern,
    port: u16,
}

impl fmt::Display for AllowedHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            HostPattern::Exact(h) => write!(f, "{}://{}:{}", self.scheme, h, self.port),
            HostPattern::Subdomains(s) => write!(f, "{}://*.{}:{}", self.scheme, s, self.port),
        }
    }
}

impl AllowedHost {
    /// Parses `[scheme://]host[:port][/path]`; the scheme defaults to https.
    /// The host may be `*.example.com` to allow every subdomain.
    pub fn parse(entry: &str) -> Result<AllowedHost, ParseError> {
        let entry = entry.trim();
        let (scheme, rest) = match entry.split_once("://") {
            Some((s, r)) => (
                Scheme::parse(s).ok_or_else(|| ParseError::Scheme(entry.to_string()))?,
                r,
            ),
            None => (Scheme::Https, entry),
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        let (host, port) = split_authority(authority)?;
        let port = port.unwrap_or(scheme.default_port());
        let host = if let Some(suffix) = host.strip_prefix("*.") {
            match parse_host(suffix)? {
                Host::Name(n) if n.contains('.') => HostPattern::Subdomains(n),
                Host::Name(_) => return Err(ParseError::WildcardTld(entry.to_string())),
                _ => return Err(ParseError::Wildcard(entry.to_string())),
            }
        } else if host.contains('*') {
            return Err(ParseError::Wildcard(entry.to_string()));
        } else {
            HostPattern::Exact(parse_host(host)?)
        };
        Ok(AllowedHost { scheme, host, port })
    }

    /// Whether `target` matches this entry exactly (scheme, host, port).
    pub fn matches(&self, target: &Target) -> bool {
        if self.scheme != target.scheme || self.port != target.port {
            return false;
        }
        match (&self.host, &target.host) {
            (HostPattern::Exact(h), t) => h == t,
            (HostPattern::Subdomains(suffix), Host::Name(n)) => n
                .strip_suffix(suffix.as_str())
                .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
            (HostPattern::Subdomains(_), _) => false,
        }
    }
}

/// Why a target was denied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denial {
    /// The list is empty: this kmsID may not use the network.
    #[error("no outbound hosts are allowed for this kmsID")]
    NothingAllowed,
    /// No entry matches.
    #[error("{0} is not on the allow-list")]
    NotAllowed(String),
    /// The request's authority could not be parsed.
    #[error("{0}")]
    Malformed(#[from] ParseError),
    /// The request's Host header differs from its URL authority.
    #[error("Host header {header:?} differs from the URL authority {authority:?}")]
    HostHeaderMismatch {
        /// The header.
        header: String,
        /// The authority.
        authority: String,
    },
}

/// The endpoints a kmsID may reach. Empty means none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    entries: Vec<AllowedHost>,
}

impl AllowList {
    /// An empty list: nothing allowed.
    pub fn none() -> Self {
        AllowList::default()
    }

    /// Adds an entry.
    pub fn push(&mut self, entry: AllowedHost) {
        if !self.entries.contains(&entry) {
            self.entries.push(entry);
        }
    }

    /// Parses a comma- or whitespace-separated list (the `allowedHosts`
    /// option). An empty string is an empty list.
    pub fn parse_list(list: &str) -> Result<AllowList, ParseError> {
        let mut out = AllowList::none();
        for entry in list
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|s| !s.is_empty())
        {
            out.push(AllowedHost::parse(entry)?);
        }
        Ok(out)
    }

    /// The entries.
    pub fn entries(&self) -> &[AllowedHost] {
        &self.entries
    }

    /// Whether nothing is allowed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Decides on a request given its scheme, URL authority and (if the
    /// plugin set one) Host header.
    pub fn check(
        &self,
        scheme: &str,
        authority: &str,
        host_header: Option<&str>,
    ) -> Result<Target, Denial> {
        if let Some(h) = host_header
            && !h.eq_ignore_ascii_case(authority)
        {
            return Err(Denial::HostHeaderMismatch {
                header: h.to_string(),
                authority: authority.to_string(),
            });
        }
        let target = Target::parse(scheme, authority)?;
        if self.entries.is_empty() {
            return Err(Denial::NothingAllowed);
        }
        if self.entries.iter().any(|e| e.matches(&target)) {
            Ok(target)
        } else {
            Err(Denial::NotAllowed(target.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(s: &str) -> AllowList {
        AllowList::parse_list(s).unwrap()
    }

    /// One row per allow-list entry and request: long because it is the
    /// table of cases (Spin's style), not logic.
    #[test]
    fn table() {
        // (allow-list, scheme, authority, host header, allowed?)
        let cases: &[(&str, &str, &str, Option<&str>, bool)] = &[
            (
                "https://vault.example.com:8200",
                "https",
                "vault.example.com:8200",
                None,
                true,
            ),
            (
                "https://vault.example.com:8200",
                "https",
                "VAULT.example.com.:8200",
                None,
                true,
            ),
            (
                "https://vault.example.com:8200",
                "http",
                "vault.example.com:8200",
                None,
                false,
            ),
            (
                "https://vault.example.com:8200",
                "https",
                "vault.example.com",
                None,
                false,
            ),
            (
                "https://vault.example.com:8200",
                "https",
                "vault.example.com:8201",
                None,
                false,
            ),
            (
                "https://vault.example.com:8200",
                "https",
                "evil.example.com:8200",
                None,
                false,
            ),
            (
                "https://vault.example.com:8200",
                "https",
                "vault.example.com.evil.io:8200",
                None,
                false,
            ),
            (
                "vault.example.com",
                "https",
                "vault.example.com",
                None,
                true,
            ),
            (
                "vault.example.com",
                "https",
                "vault.example.com:443",
                None,
                true,
            ),
            (
                "vault.example.com",
                "http",
                "vault.example.com:80",
                None,
                false,
            ),
            (
                "http://127.0.0.1:8200",
                "http",
                "127.0.0.1:8200",
                None,
                true,
            ),
            (
                "http://127.0.0.1:8200",
                "http",
                "localhost:8200",
                None,
                false,
            ),
            (
                "http://localhost:8200",
                "http",
                "127.0.0.1:8200",
                None,
                false,
            ),
            ("http://[::1]:8200", "http", "[::1]:8200", None, true),
            (
                "http://[::1]:8200",
                "http",
                "[0:0:0:0:0:0:0:1]:8200",
                None,
                true,
            ),
            (
                "https://*.vault.azure.net",
                "https",
                "myvault.vault.azure.net",
                None,
                true,
            ),
            (
                "https://*.vault.azure.net",
                "https",
                "a.b.vault.azure.net",
                None,
                true,
            ),
            (
                "https://*.vault.azure.net",
                "https",
                "vault.azure.net",
                None,
                false,
            ),
            (
                "https://*.vault.azure.net",
                "https",
                "evilvault.azure.net",
                None,
                false,
            ),
            ("", "https", "vault.example.com", None, false),
            // Host header must match the authority.
            ("http://a.test:80", "http", "a.test", Some("a.test"), true),
            ("http://a.test:80", "http", "a.test", Some("b.test"), false),
            // user-info and escapes are never allowed
            ("http://a.test", "http", "a.test@b.test", None, false),
            ("http://a.test", "http", "a%2etest", None, false),
            // numeric forms of 127.0.0.1 are ambiguous and refused
            ("http://127.0.0.1", "http", "2130706433", None, false),
            ("http://127.0.0.1", "http", "127.1", None, false),
            ("http://127.0.0.1", "http", "0x7f.0.0.1", None, false),
            ("http://127.0.0.1", "http", "0177.0.0.1", None, false),
            // TLS streams (KMIP): their own scheme, 5696 by default; an
            // https entry does not allow a stream, nor a stream entry https.
            (
                "tls://kmip.example:5696",
                "tls",
                "kmip.example:5696",
                None,
                true,
            ),
            ("tls://kmip.example", "tls", "kmip.example:5696", None, true),
            (
                "tls://kmip.example:5696",
                "tls",
                "kmip.example:5697",
                None,
                false,
            ),
            (
                "https://kmip.example:5696",
                "tls",
                "kmip.example:5696",
                None,
                false,
            ),
            (
                "tls://kmip.example:5696",
                "https",
                "kmip.example:5696",
                None,
                false,
            ),
            ("tls://127.0.0.1:5696", "tls", "127.0.0.1:5696", None, true),
        ];
        for (allow, scheme, auth, header, want) in cases {
            let got = list(allow).check(scheme, auth, *header);
            assert_eq!(
                got.is_ok(),
                *want,
                "allow={allow:?} {scheme}://{auth} host={header:?}: {got:?}"
            );
        }
    }

    #[test]
    fn denials_name_their_root_cause() {
        assert_eq!(
            list("").check("https", "a.test", None),
            Err(Denial::NothingAllowed)
        );
        assert!(matches!(
            list("https://a.test").check("https", "b.test", None),
            Err(Denial::NotAllowed(t)) if t == "https://b.test:443"
        ));
        assert!(matches!(
            list("https://a.test").check("https", "a.test", Some("b.test")),
            Err(Denial::HostHeaderMismatch { .. })
        ));
        assert!(matches!(
            list("http://127.0.0.1").check("http", "2130706433", None),
            Err(Denial::Malformed(ParseError::AmbiguousNumeric(_)))
        ));
        assert!(matches!(
            list("http://a.test").check("http", "u@a.test", None),
            Err(Denial::Malformed(ParseError::UserInfo(_)))
        ));
    }

    #[test]
    fn bad_entries_are_rejected() {
        for bad in [
            "ftp://a.test",
            "https://a.*.test",
            "https://*",
            "https://*.com",
            "*.test",
            "https://*.com.",
            "https://*.1.2.3.4",
            "a.test:0",
            "a.test:99999",
            "u@a.test",
            "http://",
        ] {
            assert!(AllowList::parse_list(bad).is_err(), "{bad:?} accepted");
        }
        assert!(matches!(
            AllowedHost::parse("https://*.com"),
            Err(ParseError::WildcardTld(_))
        ));
        assert!(AllowedHost::parse("https://*.example.com").is_ok());
        assert!(AllowList::parse_list("  ").unwrap().is_empty());
        assert_eq!(
            list("https://a.test, http://b.test:8080 https://a.test")
                .entries()
                .len(),
            2
        );
    }
}
