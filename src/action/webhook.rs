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
//! unless allow-listed. It checks in the resolver the client connects
//! through, so a name that resolves differently a second time (DNS
//! rebinding) is caught too; redirects are not followed.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
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
/// Response bodies kept in logs, bytes.
const MAX_BODY: usize = 64 * 1024;
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
    /// Body as JSON when it parses, else as (truncated) text.
    pub body: Json,
    /// Time taken.
    pub duration_ms: u64,
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
            reqwest::header::HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                FieldError::new(format!("headers.{name}"), "not a valid header name")
            })?;
            template::check(value).map_err(|m| FieldError::new(format!("headers.{name}"), m))?;
        }
        self.timeout().map_err(|m| FieldError::new("timeout", m))?;
        Ok(())
    }

    pub(super) fn render(
        &self,
        scope: &Json,
        idempotency_key: String,
    ) -> Result<Request, ActionError> {
        let mut headers: Vec<(String, String)> = self
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), template::render_str(v, scope)))
            .collect();
        headers.push(("Idempotency-Key".into(), idempotency_key));
        Ok(Request {
            method: self.method.clone(),
            url: template::render_str(&self.url, scope),
            headers,
            body: self.body.as_ref().map(|b| template::render_json(b, scope)),
            timeout: self.timeout().map_err(ActionError::Permanent)?,
        })
    }

    /// 2xx is done; 408, 425, 429 and 5xx are worth a retry; the rest is not.
    pub(super) fn judge(&self, resp: Response) -> Result<Json, ActionError> {
        let summary =
            json!({"status": resp.status, "body": resp.body, "duration_ms": resp.duration_ms});
        match resp.status {
            200..=299 => Ok(summary),
            408 | 425 | 429 | 500..=599 => Err(ActionError::Transient(format!(
                "webhook answered HTTP {}",
                resp.status
            ))),
            s => Err(ActionError::Permanent(format!("webhook answered HTTP {s}"))),
        }
    }
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

    /// Whether `ip` may be called: public, or allow-listed.
    pub fn ip_allowed(&self, ip: IpAddr) -> bool {
        !is_internal(ip)
            || self
                .allow
                .iter()
                .any(|a| matches!(a, Allowed::Net(n) if n.contains(&ip)))
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
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_internal(IpAddr::V4(v4));
            }
            let seg0 = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (seg0 & 0xfe00) == 0xfc00
                || (seg0 & 0xffc0) == 0xfe80
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
            .map_err(|e| ActionError::Permanent(format!("invalid url: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(ActionError::Permanent("url must be http or https".into()));
        }
        let refused =
            || ActionError::Permanent(format!("address refused by the webhook guard: {url}"));
        match parsed.host() {
            Some(url::Host::Ipv4(ip)) if !self.guard.ip_allowed(IpAddr::V4(ip)) => Err(refused()),
            Some(url::Host::Ipv6(ip)) if !self.guard.ip_allowed(IpAddr::V6(ip)) => Err(refused()),
            Some(url::Host::Domain(host)) if !self.guard.host_allowed(host) => {
                let port = parsed.port_or_known_default().unwrap_or(443);
                let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
                    .await
                    .map_err(|e| ActionError::Transient(format!("resolving {host}: {e}")))?
                    .collect();
                if addrs.iter().any(|a| !self.guard.ip_allowed(a.ip())) {
                    return Err(refused());
                }
                Ok(())
            }
            None => Err(ActionError::Permanent("url has no host".into())),
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
            .map_err(|_| ActionError::Permanent(format!("invalid method {}", req.method)))?;
        let mut builder = self.http.request(method, &req.url).timeout(req.timeout);
        for (k, v) in &req.headers {
            builder = builder.header(k, v);
        }
        if let Some(body) = &req.body {
            builder = builder.json(body);
        }
        let started = Instant::now();
        let resp = builder.send().await.map_err(|e| {
            ActionError::Transient(format!("webhook {}", super::sms::without_url(&e)))
        })?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(|e| {
            ActionError::Transient(format!("webhook body {}", super::sms::without_url(&e)))
        })?;
        let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
            let text = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_BODY)]).into_owned();
            Json::String(text)
        });
        Ok(Response {
            status,
            body,
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
        assert!(
            matches!(err, ActionError::Permanent(ref m) if m.contains("refused")),
            "{err}"
        );
        let err = client.check("http://localhost:8080/").await.unwrap_err();
        assert!(matches!(err, ActionError::Permanent(_)), "{err}");
    }

    #[test]
    fn responses_are_judged_by_status_class() {
        let w: Webhook = serde_json::from_value(json!({"url": "https://x.test"})).unwrap();
        let resp = |status| Response {
            status,
            body: Json::Null,
            duration_ms: 1,
        };
        assert!(w.judge(resp(204)).is_ok());
        assert!(matches!(w.judge(resp(503)), Err(ActionError::Transient(_))));
        assert!(matches!(w.judge(resp(429)), Err(ActionError::Transient(_))));
        assert!(matches!(w.judge(resp(404)), Err(ActionError::Permanent(_))));
    }
}
