//! `webhook`: an HTTP call with a templated JSON body, the step's
//! idempotency key in an `Idempotency-Key` header, a timeout, and the
//! address guard of DESIGN.md.
//!
//! ```json
//! {"id": "crm", "type": "webhook", "method": "POST", "url": "https://crm.example.com/hooks/signup",
//!  "headers": {"X-Source": "flowpilot"}, "body": {"email": "{{contact.email}}"}, "timeout": "10s"}
//! ```
//!
//! The guard refuses loopback, private, link-local (cloud metadata
//! included), unique-local, CGNAT, multicast and unspecified addresses
//! unless allow-listed, in every IPv6 form that carries an IPv4 address
//! (mapped, compatible, NAT64, 6to4, Teredo, ISATAP). It checks in the
//! resolver the client connects through, so a name that resolves
//! differently a second time (DNS rebinding) is caught too; redirects are
//! not followed.
//!
//! The answer is read up to [`MAX_BODY`]; a step that fails on it keeps
//! its status, the headers of [`KEPT_HEADERS`] and the first
//! [`FAILED_BODY_BYTES`] of its body in the attempt's log row.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use serde::Deserialize;
use serde_json::{Value as Json, json};

use super::{ActionError, FieldError, template};

/// Default request timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest timeout a step may ask for.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(120);
/// Most bytes of an answer's body read and kept (the step's response).
pub const MAX_BODY: usize = 64 * 1024;
/// Bytes of an answer's body kept in the log row of a failed attempt.
pub const FAILED_BODY_BYTES: usize = 4 * 1024;
/// Answer headers kept with the response: what tells why a call failed or
/// when to call again.
pub const KEPT_HEADERS: [&str; 8] = [
    "content-type",
    "retry-after",
    "location",
    "x-request-id",
    "request-id",
    "ratelimit-remaining",
    "ratelimit-reset",
    "www-authenticate",
];
/// Headers flowpilot sets itself: a step may not.
const RESERVED_HEADERS: [&str; 6] = [
    "idempotency-key",
    "content-length",
    "transfer-encoding",
    "host",
    "connection",
    "upgrade",
];
const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

/// Configuration of a `webhook` step.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// `http(s)://` URL template.
    pub url: String,
    /// GET, POST (default), PUT, PATCH or DELETE.
    #[serde(default = "default_method")]
    pub method: String,
    /// Extra headers; values are templates.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// JSON body template, sent as `application/json`.
    #[serde(default)]
    pub body: Option<Json>,
    /// Timeout like `10s`; default 10 s, at most 120 s.
    #[serde(default)]
    pub timeout: Option<String>,
}

fn default_method() -> String {
    "POST".into()
}

/// A rendered request.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// Method.
    pub method: String,
    /// Full URL.
    pub url: String,
    /// Headers, `Idempotency-Key` included.
    pub headers: Vec<(String, String)>,
    /// JSON body.
    pub body: Option<Json>,
    /// Timeout.
    pub timeout: Duration,
}

/// What came back.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// The headers of [`KEPT_HEADERS`] that were there, lower-case names.
    pub headers: BTreeMap<String, String>,
    /// Body as JSON when it parses, else as text (lossy UTF-8).
    pub body: Json,
    /// Whether the body was longer than [`MAX_BODY`] and cut there.
    pub truncated: bool,
    /// Time taken.
    pub duration_ms: u64,
}

impl Response {
    /// What the log keeps: status, headers, body, time; `body_bytes` at
    /// most of the body (as text when cut).
    fn summary(&self, body_bytes: usize) -> Json {
        let text = self.body.to_string();
        let (body, truncated) = if text.len() <= body_bytes {
            (self.body.clone(), self.truncated)
        } else {
            let cut = match &self.body {
                Json::String(s) => s.as_str(),
                _ => text.as_str(),
            };
            (Json::String(prefix(cut, body_bytes).to_owned()), true)
        };
        let mut summary = json!({
            "status": self.status,
            "headers": self.headers,
            "body": body,
            "duration_ms": self.duration_ms,
        });
        if truncated {
            summary["body_truncated"] = json!(true);
        }
        summary
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a
/// character boundary.
fn prefix(s: &str, max: usize) -> &str {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl Webhook {
    fn timeout(&self) -> Result<Duration, String> {
        match &self.timeout {
            None => Ok(DEFAULT_TIMEOUT),
            Some(t) => {
                let d = humantime::parse_duration(t).map_err(|e| e.to_string())?;
                if d.is_zero() || d > MAX_TIMEOUT {
                    return Err(format!(
                        "must be between 1ms and {}s",
                        MAX_TIMEOUT.as_secs()
                    ));
                }
                Ok(d)
            }
        }
    }

    pub(super) fn validate(&self) -> Result<(), FieldError> {
        if !(self.url.starts_with("https://") || self.url.starts_with("http://")) {
            return Err(FieldError::new(
                "url",
                "must start with http:// or https://",
            ));
        }
        template::check(&self.url).map_err(|m| FieldError::new("url", m))?;
        if !METHODS.contains(&self.method.as_str()) {
            return Err(FieldError::new(
                "method",
                format!("must be one of {}", METHODS.join(", ")),
            ));
        }
        for (name, value) in &self.headers {
            let field = || format!("headers.{name}");
            reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| FieldError::new(field(), "not a valid header name"))?;
            if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
                return Err(FieldError::new(
                    field(),
                    "set by flowpilot; a step may not set it",
                ));
            }
            header_value(value).map_err(|m| FieldError::new(field(), m))?;
            template::check(value).map_err(|m| FieldError::new(field(), m))?;
        }
        self.timeout().map_err(|m| FieldError::new("timeout", m))?;
        Ok(())
    }

    pub(super) fn render(
        &self,
        scope: &Json,
        idempotency_key: String,
    ) -> Result<Request, ActionError> {
        let mut headers = Vec::with_capacity(self.headers.len() + 1);
        for (name, value) in &self.headers {
            let field = format!("headers.{name}");
            let value = super::render(&field, value, scope)?;
            header_value(&value)
                .map_err(|m| ActionError::permanent(format!("`{field}` as rendered {m}")))?;
            headers.push((name.clone(), value));
        }
        headers.push(("Idempotency-Key".into(), idempotency_key));
        let body = match &self.body {
            Some(b) => Some(super::render_json("body", b, scope)?),
            None => None,
        };
        Ok(Request {
            method: self.method.clone(),
            url: super::render("url", &self.url, scope)?,
            headers,
            body,
            timeout: self.timeout().map_err(ActionError::permanent)?,
        })
    }

    /// 2xx is done; 408, 425, 429 and 5xx are worth a retry; the rest is
    /// not. A failure keeps the answer (status, headers, the first
    /// [`FAILED_BODY_BYTES`] of the body) for the attempt's log row.
    pub(super) fn judge(&self, resp: Response) -> Result<Json, ActionError> {
        let failed = |e: ActionError| Err(e.with_response(resp.summary(FAILED_BODY_BYTES)));
        match resp.status {
            200..=299 => Ok(resp.summary(MAX_BODY)),
            408 | 425 | 429 | 500..=599 => failed(ActionError::transient(format!(
                "webhook answered HTTP {}",
                resp.status
            ))),
            s => failed(ActionError::permanent(format!("webhook answered HTTP {s}"))),
        }
    }
}

/// Whether `value` may be sent as a header value: no CR, LF, NUL or other
/// control character (a tab is fine), so that it cannot split the header.
fn header_value(value: &str) -> Result<(), &'static str> {
    reqwest::header::HeaderValue::from_bytes(value.as_bytes())
        .map(drop)
        .map_err(|_| "must not contain CR, LF or another control character")
}

// === guard ===

/// An allow-list entry: a network or a host name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allowed {
    /// Addresses in this network.
    Net(IpNet),
    /// This host name, whatever it resolves to.
    Host(String),
}

impl std::str::FromStr for Allowed {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Ok(net) = s.parse::<IpNet>() {
            return Ok(Allowed::Net(net));
        }
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(Allowed::Net(IpNet::from(ip)));
        }
        if !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        {
            return Ok(Allowed::Host(s.to_ascii_lowercase()));
        }
        Err(format!(
            "`{s}` is neither an IP address, a CIDR network nor a host name"
        ))
    }
}

/// Decides which addresses webhooks may reach.
#[derive(Debug, Clone, Default)]
pub struct Guard {
    allow: Vec<Allowed>,
}

impl Guard {
    /// A guard that refuses internal addresses except `allow`.
    pub fn new(allow: Vec<Allowed>) -> Self {
        Guard { allow }
    }

    fn host_allowed(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        self.allow
            .iter()
            .any(|a| matches!(a, Allowed::Host(h) if *h == host))
    }

    /// Whether `ip` may be called: public, or allow-listed (an IPv6 form
    /// of an allow-listed IPv4 address too: it reaches the same host).
    pub fn ip_allowed(&self, ip: IpAddr) -> bool {
        let listed = |ip: IpAddr| {
            self.allow
                .iter()
                .any(|a| matches!(a, Allowed::Net(n) if n.contains(&ip)))
        };
        let embedded = match ip {
            IpAddr::V6(v6) => embedded_ipv4(v6),
            IpAddr::V4(_) => Vec::new(),
        };
        !is_internal(ip)
            || listed(ip)
            || (!embedded.is_empty() && embedded.into_iter().all(|v4| listed(IpAddr::V4(v4))))
    }
}

/// The IPv4 addresses an IPv6 address carries, in every form that routes
/// to them: IPv4-mapped (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`),
/// NAT64 (`64:ff9b::a.b.c.d`), 6to4 (`2002:AABB:CCDD::`), Teredo (server
/// and obfuscated client) and ISATAP (`…:0:5efe:a.b.c.d`).
fn embedded_ipv4(v6: Ipv6Addr) -> Vec<Ipv4Addr> {
    let s = v6.segments();
    let v4 = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    if let Some(v4) = v6.to_ipv4_mapped() {
        return vec![v4];
    }
    match s {
        [0, 0, 0, 0, 0, 0, hi, lo] => vec![v4(hi, lo)],
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => vec![v4(hi, lo)],
        [0x2002, hi, lo, ..] => vec![v4(hi, lo)],
        [0x2001, 0, server_hi, server_lo, _, _, client_hi, client_lo] => {
            vec![v4(server_hi, server_lo), v4(!client_hi, !client_lo)]
        }
        [_, _, _, _, id, 0x5efe, hi, lo] if id & 0xfdff == 0 => vec![v4(hi, lo)],
        _ => Vec::new(),
    }
}

/// Loopback, private, link-local (169.254.169.254 and fd00:ec2::254, the
/// cloud metadata services, included), unique-local, CGNAT, multicast,
/// broadcast, documentation and unspecified addresses.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_unspecified()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link local
                || (s[0] & 0xffc0) == 0xfec0 // site local (deprecated)
                || (s[0] == 0x2001 && s[1] == 0xdb8) // documentation
                || (s[0] == 0x100 && s[1..4] == [0, 0, 0]) // discard only
                || (s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1) // local-use NAT64
                || embedded_ipv4(v6)
                    .into_iter()
                    .any(|v4| is_internal(IpAddr::V4(v4)))
        }
    }
}

/// The resolver the webhook client connects through: drops refused
/// addresses, so nothing the guard refuses is ever connected to.
struct GuardResolver(Arc<Guard>);

impl Resolve for GuardResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let guard = Arc::clone(&self.0);
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed_host = guard.host_allowed(&host);
            let kept: Vec<SocketAddr> = addrs
                .into_iter()
                .filter(|a| allowed_host || guard.ip_allowed(a.ip()))
                .collect();
            if kept.is_empty() {
                return Err(
                    format!("{host} resolves only to addresses the webhook guard refuses").into(),
                );
            }
            Ok(Box::new(kept.into_iter()) as Addrs)
        })
    }
}

/// The webhook HTTP client.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    guard: Arc<Guard>,
}

impl Client {
    /// A client enforcing `guard`.
    ///
    /// # Errors
    /// When the TLS stack cannot be set up.
    pub fn new(guard: Guard) -> Result<Self, reqwest::Error> {
        crate::tls::install_crypto_provider();
        let guard = Arc::new(guard);
        let http = reqwest::Client::builder()
            .dns_resolver(Arc::new(GuardResolver(Arc::clone(&guard))))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("flowpilot/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Client { http, guard })
    }

    /// Checks the URL against the guard before any connection: a literal
    /// address is judged here, a name by the resolver as well.
    ///
    /// # Errors
    /// Permanent: the URL is invalid or its address refused.
    pub async fn check(&self, url: &str) -> Result<(), ActionError> {
        let parsed = reqwest::Url::parse(url)
            .map_err(|e| ActionError::permanent(format!("invalid url: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(ActionError::permanent("url must be http or https"));
        }
        let refused =
            || ActionError::permanent(format!("address refused by the webhook guard: {url}"));
        match parsed.host() {
            Some(url::Host::Ipv4(ip)) if !self.guard.ip_allowed(IpAddr::V4(ip)) => Err(refused()),
            Some(url::Host::Ipv6(ip)) if !self.guard.ip_allowed(IpAddr::V6(ip)) => Err(refused()),
            Some(url::Host::Domain(host)) if !self.guard.host_allowed(host) => {
                let port = parsed.port_or_known_default().unwrap_or(443);
                let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
                    .await
                    .map_err(|e| ActionError::transient(format!("resolving {host}: {e}")))?
                    .collect();
                if addrs.iter().any(|a| !self.guard.ip_allowed(a.ip())) {
                    return Err(refused());
                }
                Ok(())
            }
            None => Err(ActionError::permanent("url has no host")),
            _ => Ok(()),
        }
    }

    /// Sends `req`.
    ///
    /// # Errors
    /// Permanent when the guard refuses; transient on timeouts and
    /// connection errors.
    pub async fn call(&self, req: &Request) -> Result<Response, ActionError> {
        self.check(&req.url).await?;
        let method = reqwest::Method::from_bytes(req.method.as_bytes())
            .map_err(|_| ActionError::permanent(format!("invalid method {}", req.method)))?;
        let mut builder = self.http.request(method, &req.url).timeout(req.timeout);
        for (k, v) in &req.headers {
            builder = builder.header(k, v);
        }
        if let Some(body) = &req.body {
            builder = builder.json(body);
        }
        let started = Instant::now();
        let mut resp = builder.send().await.map_err(|e| {
            ActionError::transient(format!("webhook {}", super::sms::without_url(&e)))
        })?;
        let status = resp.status().as_u16();
        let headers = KEPT_HEADERS
            .iter()
            .filter_map(|name| {
                let value = resp.headers().get(*name)?;
                Some((
                    (*name).to_owned(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                ))
            })
            .collect();
        // Read no more than we keep: a receiver cannot make us buffer a
        // gigabyte it sends back.
        let mut bytes = Vec::new();
        let mut truncated = false;
        while let Some(chunk) = resp.chunk().await.map_err(|e| {
            ActionError::transient(format!("webhook body {}", super::sms::without_url(&e)))
        })? {
            let room = MAX_BODY - bytes.len();
            bytes.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if chunk.len() > room {
                truncated = true;
                break;
            }
        }
        let body = match serde_json::from_slice(&bytes) {
            Ok(json) if !truncated => json,
            _ => Json::String(String::from_utf8_lossy(&bytes).into_owned()),
        };
        Ok(Response {
            status,
            headers,
            body,
            truncated,
            duration_ms: started.elapsed().as_millis() as u64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_refused_unless_allow_listed() {
        let guard = Guard::new(vec![
            "127.0.0.1".parse().unwrap(),
            "10.1.0.0/16".parse().unwrap(),
        ]);
        for refused in [
            "169.254.169.254",
            "10.0.0.1",
            "192.168.1.1",
            "172.16.0.1",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00:ec2::254",
            "::ffff:192.168.0.1",
            "127.0.0.2",
        ] {
            assert!(!guard.ip_allowed(refused.parse().unwrap()), "{refused}");
        }
        for allowed in ["127.0.0.1", "10.1.2.3", "93.184.216.34", "2606:4700::1111"] {
            assert!(guard.ip_allowed(allowed.parse().unwrap()), "{allowed}");
        }
    }

    #[test]
    fn allow_list_entries_parse_as_ips_networks_or_hosts() {
        assert_eq!(
            "hooks.internal".parse::<Allowed>(),
            Ok(Allowed::Host("hooks.internal".into()))
        );
        assert!("10.0.0.0/8".parse::<Allowed>().is_ok());
        assert!("not a host!".parse::<Allowed>().is_err());
    }

    #[tokio::test]
    async fn a_literal_metadata_address_is_refused_before_any_connection() {
        let client = Client::new(Guard::default()).unwrap();
        let err = client
            .check("http://169.254.169.254/latest/meta-data")
            .await
            .unwrap_err();
        assert!(!err.retryable && err.message.contains("refused"), "{err}");
        let err = client.check("http://localhost:8080/").await.unwrap_err();
        assert!(!err.retryable, "{err}");
    }

    #[test]
    fn every_ipv6_encoding_of_a_refused_ipv4_address_is_refused() {
        let guard = Guard::default();
        for refused in [
            "::127.0.0.1",                          // IPv4-compatible
            "::ffff:127.0.0.1",                     // IPv4-mapped
            "64:ff9b::7f00:1",                      // NAT64, well-known prefix
            "64:ff9b:1::7f00:1",                    // NAT64, local-use prefix
            "2002:7f00:1::1",                       // 6to4
            "2001:0:4136:e378:8000:63bf:80ff:fffe", // Teredo, client 127.0.0.1
            "2001:0:7f00:1::1",                     // Teredo, server 127.0.0.1
            "fe80::5efe:7f00:1",                    // ISATAP
            "2001:db8::1",                          // documentation
            "fec0::1",                              // site-local
        ] {
            assert!(!guard.ip_allowed(refused.parse().unwrap()), "{refused}");
        }
        for public in [
            "::ffff:93.184.216.34",
            "2002:5db8:d822::1",
            "64:ff9b::5db8:d822",
        ] {
            assert!(guard.ip_allowed(public.parse().unwrap()), "{public}");
        }
        // Allow-listing an IPv4 address allows its IPv6 forms: same host.
        let allowed = Guard::new(vec!["127.0.0.1".parse().unwrap()]);
        assert!(allowed.ip_allowed("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!allowed.ip_allowed("::ffff:127.0.0.2".parse().unwrap()));
    }

    #[tokio::test]
    async fn an_ipv4_compatible_loopback_literal_is_refused_before_any_connection() {
        let client = Client::new(Guard::default()).unwrap();
        let err = client.check("http://[::127.0.0.1]:9/").await.unwrap_err();
        assert!(!err.retryable && err.message.contains("refused"), "{err}");
    }

    #[test]
    fn header_values_that_could_split_the_header_are_refused_naming_it() {
        for bad in ["a\r\nX-Evil: 1", "a\nb", "nul\u{0}"] {
            let w: Webhook = serde_json::from_value(
                json!({"url": "https://x.test", "headers": {"X-Trace": bad}}),
            )
            .unwrap();
            let e = w.validate().unwrap_err();
            assert_eq!(e.field, "headers.X-Trace", "{bad:?}");
        }
        let w: Webhook = serde_json::from_value(
            json!({"url": "https://x.test", "headers": {"Idempotency-Key": "mine"}}),
        )
        .unwrap();
        assert_eq!(w.validate().unwrap_err().field, "headers.Idempotency-Key");
        // A value that only renders badly fails the step, naming the header.
        let w: Webhook = serde_json::from_value(
            json!({"url": "https://x.test", "headers": {"X-Name": "{{contact.attributes.name}}"}}),
        )
        .unwrap();
        w.validate().unwrap();
        let scope = json!({"contact": {"attributes": {"name": "a\r\nb"}}});
        let err = w.render(&scope, "k".into()).unwrap_err();
        assert!(
            !err.retryable && err.message.contains("headers.X-Name"),
            "{err}"
        );
    }

    #[test]
    fn a_failed_answer_keeps_its_status_headers_and_first_kib() {
        let w: Webhook = serde_json::from_value(json!({"url": "https://x.test"})).unwrap();
        let resp = Response {
            status: 400,
            headers: BTreeMap::from([("content-type".into(), "text/plain".into())]),
            body: Json::String("e".repeat(10_000)),
            truncated: false,
            duration_ms: 3,
        };
        let err = w.judge(resp).unwrap_err();
        let kept = err.response.unwrap();
        assert_eq!(kept["status"], 400);
        assert_eq!(kept["headers"]["content-type"], "text/plain");
        assert_eq!(kept["body"].as_str().unwrap().len(), FAILED_BODY_BYTES);
        assert_eq!(kept["body_truncated"], true);
    }

    #[test]
    fn responses_are_judged_by_status_class() {
        let w: Webhook = serde_json::from_value(json!({"url": "https://x.test"})).unwrap();
        let resp = |status| Response {
            status,
            headers: BTreeMap::new(),
            body: Json::Null,
            truncated: false,
            duration_ms: 1,
        };
        assert!(w.judge(resp(204)).is_ok());
        assert!(w.judge(resp(503)).unwrap_err().retryable);
        assert!(w.judge(resp(429)).unwrap_err().retryable);
        assert!(!w.judge(resp(404)).unwrap_err().retryable);
    }
}
