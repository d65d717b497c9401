//! The webhook client and its address guard (DESIGN.md "Auth and safety").
//!
//! The guard refuses loopback, private, link-local (cloud metadata
//! included), unique-local, CGNAT, multicast and unspecified addresses
//! unless allow-listed, in every IPv6 form that carries an IPv4 address
//! (mapped, compatible, NAT64, 6to4, Teredo, ISATAP). It checks in the
//! resolver the client connects through, so a name that resolves
//! differently a second time (DNS rebinding) is caught too; redirects are
//! not followed. The answer is read up to [`MAX_BODY`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use serde_json::Value as Json;

use crate::action::ActionError;
use crate::action::webhook::{KEPT_HEADERS, MAX_BODY, Request, Response};
pub use crate::config::Allowed;

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

/// Calls `req` with `client` behind the breaker of its host, reading at
/// most `most` bytes of the answer: a 408 or a 5xx counts as the
/// provider's trouble; a 429 is it coping.
///
/// # Errors
/// As [`Client::call`], and an open breaker's refusal.
pub async fn call_guarded(
    client: &Client,
    breakers: &super::Breakers,
    req: &Request,
    most: usize,
) -> Result<Response, ActionError> {
    let key = breaker_key(&req.url);
    let troubled = |r: &Response| r.status == 408 || r.status >= 500;
    breakers
        .guard_judged(key.as_deref(), client.call_reading(req, most), troubled)
        .await
}

/// The key of the circuit breaker of the host `url` calls:
/// `webhook:<host>:<port>`; `None` for a URL that does not parse (the call
/// fails on it anyway).
pub fn breaker_key(url: &str) -> Option<String> {
    let u = reqwest::Url::parse(url).ok()?;
    Some(format!(
        "webhook:{}:{}",
        u.host_str()?,
        u.port_or_known_default()?
    ))
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
            .map_err(|e| ActionError::invalid_config(format!("invalid url: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(ActionError::invalid_config("url must be http or https"));
        }
        let refused =
            || ActionError::invalid_config(format!("address refused by the webhook guard: {url}"));
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
            None => Err(ActionError::invalid_config("url has no host")),
            _ => Ok(()),
        }
    }

    /// Sends `req`.
    ///
    /// # Errors
    /// Invalid config when the guard refuses or the request cannot be
    /// built; timeout or transient on connection errors.
    pub async fn call(&self, req: &Request) -> Result<Response, ActionError> {
        self.call_reading(req, MAX_BODY).await
    }

    /// [`Client::call`], reading at most `most` bytes of the answer's body.
    ///
    /// # Errors
    /// As [`Client::call`].
    pub async fn call_reading(&self, req: &Request, most: usize) -> Result<Response, ActionError> {
        self.check(&req.url).await?;
        let method = reqwest::Method::from_bytes(req.method.as_bytes())
            .map_err(|_| ActionError::invalid_config(format!("invalid method {}", req.method)))?;
        let mut builder = self.http.request(method, &req.url).timeout(req.timeout);
        for (k, v) in &req.headers {
            builder = builder.header(k, v);
        }
        if let Some(body) = &req.body {
            builder = builder.json(body);
        }
        let started = Instant::now();
        let mut resp = builder
            .send()
            .await
            .map_err(|e| super::http_failure("webhook", &e))?;
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
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| super::http_failure("webhook body", &e))?
        {
            let room = most - bytes.len();
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
            batch: None,
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
        assert!(!err.retryable() && err.message.contains("refused"), "{err}");
        assert_eq!(err.class, crate::action::ErrorClass::InvalidConfig);
        let err = client.check("http://localhost:8080/").await.unwrap_err();
        assert!(!err.retryable(), "{err}");
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
        assert!(!err.retryable() && err.message.contains("refused"), "{err}");
    }
}
