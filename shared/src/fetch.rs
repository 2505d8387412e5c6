//! SSRF-safe download of customers' photo URLs.
//!
//! Threat model: an API caller controls the photo URL, and the render worker
//! runs inside the VPC with access to instance metadata (169.254.169.254,
//! fd00:ec2::254), loopback services and private subnets. A hostile URL must
//! not turn the worker into a proxy to any of those, whether directly (an IP
//! literal), through DNS (a name resolving to a private address, or
//! re-resolving differently between check and connect: DNS rebinding) or
//! through a redirect chain. It must also not pin the worker with an endless
//! or huge body.
//!
//! Enforcement: only `https` URLs without userinfo are accepted. Names are
//! resolved by our own [`reqwest::dns::Resolve`] implementation, which drops
//! every address that is not [`is_public`] and fails when none remain, so the
//! connector can only ever connect to an address that passed the check (no
//! gap between check and connect). IP-literal hosts never reach a resolver, so
//! they are checked explicitly. Redirects are not followed by reqwest: we
//! follow `Location` ourselves, up to `max_redirects`, and every hop goes
//! through the same scheme, userinfo, host and address checks. Proxies are
//! disabled (a proxy would resolve names on our behalf). Bodies are streamed
//! and cut off as soon as they exceed `max_bytes`, and the whole fetch,
//! redirects included, runs under `total_timeout`.

use std::error::Error as StdError;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::LOCATION;
use url::{Host, Url};

/// Limits and test-only allowances of a [`UrlFetcher`].
#[derive(Debug, Clone)]
pub struct FetchPolicy {
    /// Largest body accepted, in bytes (default 64 MiB).
    pub max_bytes: u64,
    /// Deadline for the whole fetch, redirects and body included (default 30 s).
    pub total_timeout: Duration,
    /// Deadline for resolving and connecting to one host (default 5 s).
    pub connect_timeout: Duration,
    /// Redirects followed before giving up (default 5).
    pub max_redirects: usize,
    /// Tests only: allow plain `http` URLs.
    pub allow_http: bool,
    /// Tests only: these exact addresses are allowed even if not public.
    pub allow_ips: Vec<IpAddr>,
}

impl Default for FetchPolicy {
    fn default() -> Self {
        Self {
            max_bytes: 64 * 1024 * 1024,
            total_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            max_redirects: 5,
            allow_http: false,
            allow_ips: Vec::new(),
        }
    }
}

/// Why a fetch failed. See [`FetchError::is_permanent`] for retry advice.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("only https URLs are accepted")]
    NotHttps,
    #[error("bad URL: {0}")]
    BadUrl(String),
    #[error("refusing to connect to {host} at {addr}: not a public address")]
    Refused { host: String, addr: IpAddr },
    #[error("no address found for {0}")]
    NoAddress(String),
    #[error("body larger than {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("HTTP status {0}")]
    Status(u16),
    #[error("too many redirects")]
    TooManyRedirects,
    #[error("timed out")]
    Timeout,
    #[error("network error: {0}")]
    Network(String),
}

impl FetchError {
    /// True when retrying the same URL cannot help (the order should fail);
    /// false for timeouts, network errors, 5xx, 408 and 429.
    pub fn is_permanent(&self) -> bool {
        match self {
            Self::NotHttps
            | Self::BadUrl(_)
            | Self::Refused { .. }
            | Self::NoAddress(_)
            | Self::TooLarge { .. }
            | Self::TooManyRedirects => true,
            Self::Status(code) => !(*code >= 500 || *code == 429 || *code == 408),
            Self::Timeout | Self::Network(_) => false,
        }
    }
}

/// Downloads photo URLs under a [`FetchPolicy`]. Build once and reuse: it
/// holds a connection pool.
#[derive(Debug, Clone)]
pub struct UrlFetcher {
    client: reqwest::Client,
    policy: Arc<FetchPolicy>,
}

/// Preallocation cap for an announced Content-Length.
const PREALLOC_CAP: u64 = 8 * 1024 * 1024;

impl UrlFetcher {
    pub fn new(policy: FetchPolicy) -> Result<Self, FetchError> {
        let resolver = CheckedResolver {
            allow_ips: policy.allow_ips.clone().into(),
        };
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .https_only(!policy.allow_http)
            .dns_resolver(resolver)
            .connect_timeout(policy.connect_timeout)
            .timeout(policy.total_timeout)
            .user_agent(concat!("printworks-fetch/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| FetchError::Network(format!("building the HTTP client: {e}")))?;
        Ok(Self {
            client,
            policy: Arc::new(policy),
        })
    }

    /// Downloads `url`, following up to `max_redirects` checked redirects.
    pub async fn fetch(&self, url: &str) -> Result<Vec<u8>, FetchError> {
        tokio::time::timeout(self.policy.total_timeout, self.fetch_inner(url))
            .await
            .unwrap_or(Err(FetchError::Timeout))
    }

    async fn fetch_inner(&self, url: &str) -> Result<Vec<u8>, FetchError> {
        let mut current =
            Url::parse(url).map_err(|e| FetchError::BadUrl(format!("{}: {e}", clip(url))))?;
        let mut redirects = 0usize;
        loop {
            self.check_url(&current)?;
            let response = self
                .client
                .get(current.clone())
                .send()
                .await
                .map_err(map_reqwest_error)?;
            let status = response.status().as_u16();
            if matches!(status, 301 | 302 | 303 | 307 | 308) {
                if redirects >= self.policy.max_redirects {
                    return Err(FetchError::TooManyRedirects);
                }
                redirects += 1;
                current = redirect_target(&current, &response)?;
                continue;
            }
            if !response.status().is_success() {
                return Err(FetchError::Status(status));
            }
            return self.read_body(response).await;
        }
    }

    /// POSTs `body` as JSON with `headers` to `url` under the same checks
    /// as a download (https only, public addresses only, checked at connect
    /// time). A redirect is not followed: it is answered as its status. The
    /// response body is read up to `max_bytes` and dropped; the answer is
    /// the status.
    pub async fn post_json(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Result<u16, FetchError> {
        let url = Url::parse(url).map_err(|e| FetchError::BadUrl(format!("{}: {e}", clip(url))))?;
        self.check_url(&url)?;
        let mut request = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let send = async {
            let response = request.send().await.map_err(map_reqwest_error)?;
            let status = response.status().as_u16();
            // Drain (bounded) so the connection can be reused.
            let _ = self.read_body(response).await;
            Ok(status)
        };
        tokio::time::timeout(self.policy.total_timeout, send)
            .await
            .unwrap_or(Err(FetchError::Timeout))
    }

    /// Scheme, userinfo and (for IP literals) address checks; names are
    /// checked by [`CheckedResolver`] at connect time.
    fn check_url(&self, url: &Url) -> Result<(), FetchError> {
        match url.scheme() {
            "https" => {}
            "http" if self.policy.allow_http => {}
            _ => return Err(FetchError::NotHttps),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(FetchError::BadUrl("credentials in URL".into()));
        }
        let literal = match url.host() {
            None => {
                return Err(FetchError::BadUrl(format!(
                    "no host: {}",
                    clip(url.as_str())
                )));
            }
            Some(Host::Ipv4(v4)) => Some(IpAddr::V4(v4)),
            Some(Host::Ipv6(v6)) => Some(IpAddr::V6(v6)),
            // The url crate turns numeric hosts into Ipv4/Ipv6; parse anyway
            // in case a name still reads as an address to the connector.
            Some(Host::Domain(name)) => name.parse::<IpAddr>().ok(),
        };
        if let Some(addr) = literal
            && !allowed(addr, &self.policy.allow_ips)
        {
            return Err(FetchError::Refused {
                host: url.host_str().unwrap_or_default().to_owned(),
                addr,
            });
        }
        Ok(())
    }

    async fn read_body(&self, mut response: reqwest::Response) -> Result<Vec<u8>, FetchError> {
        let limit = self.policy.max_bytes;
        let announced = response.content_length();
        if announced.is_some_and(|len| len > limit) {
            return Err(FetchError::TooLarge { limit });
        }
        let capacity = announced.unwrap_or(0).min(limit).min(PREALLOC_CAP);
        let mut body = Vec::with_capacity(usize::try_from(capacity).unwrap_or(0));
        while let Some(chunk) = response.chunk().await.map_err(map_reqwest_error)? {
            let total = (body.len() as u64).saturating_add(chunk.len() as u64);
            if total > limit {
                return Err(FetchError::TooLarge { limit });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

/// The next URL of a redirect: `Location` resolved against the current URL.
fn redirect_target(current: &Url, response: &reqwest::Response) -> Result<Url, FetchError> {
    let location = response
        .headers()
        .get(LOCATION)
        .ok_or_else(|| FetchError::BadUrl("redirect without Location".into()))?;
    let location = std::str::from_utf8(location.as_bytes())
        .map_err(|_| FetchError::BadUrl("redirect Location is not UTF-8".into()))?;
    current
        .join(location)
        .map_err(|e| FetchError::BadUrl(format!("redirect to {}: {e}", clip(location))))
}

/// At most 200 characters of untrusted text, for error messages.
fn clip(text: &str) -> String {
    text.chars().take(200).collect()
}

fn allowed(addr: IpAddr, allow_ips: &[IpAddr]) -> bool {
    allow_ips.contains(&addr) || is_public(addr)
}

/// Turns a reqwest error into a [`FetchError`], recovering refusals raised by
/// [`CheckedResolver`] from the error chain.
fn map_reqwest_error(error: reqwest::Error) -> FetchError {
    let mut source: Option<&(dyn StdError + 'static)> = Some(&error);
    while let Some(err) = source {
        if let Some(refusal) = err.downcast_ref::<ResolveError>() {
            return refusal.to_fetch_error();
        }
        source = err.source();
    }
    if error.is_timeout() {
        return FetchError::Timeout;
    }
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(err) = source {
        message.push_str(": ");
        message.push_str(&err.to_string());
        source = err.source();
    }
    FetchError::Network(message)
}

/// Resolves names with the system resolver and hands the connector only the
/// addresses that pass [`is_public`] (or are in `allow_ips`).
struct CheckedResolver {
    allow_ips: Arc<[IpAddr]>,
}

impl Resolve for CheckedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_ips = Arc::clone(&self.allow_ips);
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs = resolve_checked(&host, &allow_ips).await?;
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// A resolution failure, carried through reqwest's error chain.
#[derive(Debug, thiserror::Error)]
enum ResolveError {
    #[error("{host} resolves only to non-public addresses ({addr})")]
    Refused { host: String, addr: IpAddr },
    #[error("no address found for {0}")]
    NoAddress(String),
    #[error("resolving {host}: {message}")]
    Lookup { host: String, message: String },
}

impl ResolveError {
    fn to_fetch_error(&self) -> FetchError {
        match self {
            Self::Refused { host, addr } => FetchError::Refused {
                host: host.clone(),
                addr: *addr,
            },
            Self::NoAddress(host) => FetchError::NoAddress(host.clone()),
            Self::Lookup { .. } => FetchError::Network(self.to_string()),
        }
    }
}

async fn resolve_checked(
    host: &str,
    allow_ips: &[IpAddr],
) -> Result<Vec<SocketAddr>, ResolveError> {
    // Port 0: the connector substitutes the URL's port.
    let resolved = match tokio::net::lookup_host((host, 0u16)).await {
        Ok(addrs) => addrs.collect::<Vec<_>>(),
        Err(e) if is_no_such_host(&e) => return Err(ResolveError::NoAddress(host.to_owned())),
        Err(e) => {
            return Err(ResolveError::Lookup {
                host: host.to_owned(),
                message: e.to_string(),
            });
        }
    };
    let Some(first) = resolved.first() else {
        return Err(ResolveError::NoAddress(host.to_owned()));
    };
    let first_ip = first.ip();
    let usable: Vec<SocketAddr> = resolved
        .iter()
        .copied()
        .filter(|addr| allowed(addr.ip(), allow_ips))
        .collect();
    if usable.is_empty() {
        let addr = resolved
            .iter()
            .map(SocketAddr::ip)
            .find(|ip| !allowed(*ip, allow_ips))
            .unwrap_or(first_ip);
        return Err(ResolveError::Refused {
            host: host.to_owned(),
            addr,
        });
    }
    Ok(usable)
}

/// Whether a lookup error says the name does not exist (permanent), as
/// opposed to a resolver failure (transient). getaddrinfo only reports this
/// through the message: glibc, musl and macOS wordings.
fn is_no_such_host(error: &std::io::Error) -> bool {
    let message = error.to_string();
    [
        "Name or service not known",
        "No address associated with hostname",
        "Name does not resolve",
        "nodename nor servname provided",
    ]
    .iter()
    .any(|needle| message.contains(needle))
}

/// Whether `ip` is a public unicast address a photo may be fetched from.
///
/// Refused: unspecified, loopback, private, link-local (metadata), CGNAT,
/// `0/8`, broadcast, multicast, documentation, benchmarking, `192.0.0/24`,
/// `240/4`; for IPv6 everything outside global unicast `2000::/3` (which
/// covers `::`, `::1`, `fc00::/7` incl. `fd00:ec2::254`, `fe80::/10`,
/// multicast), plus `2001::/23` (Teredo, benchmarking, ORCHID),
/// `2001:db8::/32` and `3fff::/20`. Addresses embedding an IPv4 address
/// (IPv4-mapped/compatible `::/96`, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`)
/// are judged by that IPv4 address.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    let refused = a == 0 // "this network", incl. unspecified
        || a == 10 // private
        || (a == 100 && (b & 0xc0) == 64) // CGNAT 100.64/10
        || a == 127 // loopback
        || (a == 169 && b == 254) // link-local, incl. instance metadata
        || (a == 172 && (b & 0xf0) == 16) // private 172.16/12
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 192 && b == 0 && c == 2) // TEST-NET-1
        || (a == 192 && b == 88 && c == 99) // 6to4 relay anycast (deprecated)
        || (a == 192 && b == 168) // private
        || (a == 198 && (b & 0xfe) == 18) // benchmarking 198.18/15
        || (a == 198 && b == 51 && c == 100) // TEST-NET-2
        || (a == 203 && b == 0 && c == 113) // TEST-NET-3
        || a >= 224; // multicast 224/4, reserved 240/4, broadcast
    !refused
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let seg = ip.segments();
    let low_v4 = || Ipv4Addr::from((u32::from(seg[6]) << 16) | u32::from(seg[7]));
    // IPv4-mapped ::ffff:0:0/96.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    // IPv4-compatible ::/96 (deprecated); `::` and `::1` map into 0/8.
    if seg[..6] == [0; 6] {
        return is_public_v4(low_v4());
    }
    // NAT64 well-known prefix 64:ff9b::/96.
    if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return is_public_v4(low_v4());
    }
    // 6to4 2002::/16: the IPv4 address is in bits 16..48.
    if seg[0] == 0x2002 {
        let v4 = Ipv4Addr::from((u32::from(seg[1]) << 16) | u32::from(seg[2]));
        return is_public_v4(v4);
    }
    // Only global unicast from here on.
    if seg[0] & 0xe000 != 0x2000 {
        return false;
    }
    match seg[0] {
        // 2001::/23 IETF protocol assignments (Teredo, benchmarking, ORCHID)
        // and 2001:db8::/32 documentation.
        0x2001 => seg[1] >= 0x0200 && seg[1] != 0x0db8,
        // 3fff::/20 documentation (RFC 9637).
        0x3fff => seg[1] >= 0x1000,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    fn test_policy() -> FetchPolicy {
        FetchPolicy {
            allow_http: true,
            allow_ips: vec![LOCAL],
            total_timeout: Duration::from_secs(10),
            ..FetchPolicy::default()
        }
    }

    fn fetcher(policy: FetchPolicy) -> UrlFetcher {
        UrlFetcher::new(policy).expect("client builds")
    }

    /// What the test server answers to one request.
    enum Reply {
        Full {
            status: u16,
            headers: Vec<(&'static str, String)>,
            body: Vec<u8>,
        },
        /// 200 with chunked encoding and no end.
        ChunkedForever,
        /// Accept, read the request, never answer.
        Hang,
    }

    fn ok(body: &[u8]) -> Reply {
        Reply::Full {
            status: 200,
            headers: vec![],
            body: body.to_vec(),
        }
    }

    fn redirect(location: impl Into<String>) -> Reply {
        Reply::Full {
            status: 302,
            headers: vec![("Location", location.into())],
            body: vec![],
        }
    }

    fn status(code: u16) -> Reply {
        Reply::Full {
            status: code,
            headers: vec![],
            body: b"nope".to_vec(),
        }
    }

    /// A one-request-per-connection HTTP/1.1 server on 127.0.0.1; the
    /// handler maps the request path to a reply.
    async fn serve<F>(handler: F) -> SocketAddr
    where
        F: Fn(&str) -> Reply + Send + Sync + 'static,
    {
        let listener = TcpListener::bind((LOCAL, 0)).await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let handler = Arc::new(handler);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let handler = Arc::clone(&handler);
                tokio::spawn(async move { answer(stream, &*handler).await });
            }
        });
        addr
    }

    async fn answer(mut stream: TcpStream, handler: &(dyn Fn(&str) -> Reply + Send + Sync)) {
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        let head = String::from_utf8_lossy(&head);
        let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
        match handler(&path) {
            Reply::Full {
                status,
                headers,
                body,
            } => {
                let mut out = format!(
                    "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n",
                    body.len()
                );
                for (name, value) in headers {
                    out.push_str(&format!("{name}: {value}\r\n"));
                }
                out.push_str("\r\n");
                let mut bytes = out.into_bytes();
                bytes.extend_from_slice(&body);
                let _ = stream.write_all(&bytes).await;
                let _ = stream.shutdown().await;
            }
            Reply::ChunkedForever => {
                let head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
                if stream.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let mut chunk = b"400\r\n".to_vec();
                chunk.extend_from_slice(&[0xAB; 0x400]);
                chunk.extend_from_slice(b"\r\n");
                // Bounded so a broken client cannot keep the test running.
                for _ in 0..100_000 {
                    if stream.write_all(&chunk).await.is_err() {
                        return;
                    }
                }
            }
            Reply::Hang => {
                tokio::time::sleep(Duration::from_secs(30)).await;
                drop(stream);
            }
        }
    }

    #[tokio::test]
    async fn fetches_photo_over_http_from_allowed_ip() {
        let photo: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
        let served = photo.clone();
        let addr = serve(move |path| match path {
            "/photo.jpg" => ok(&served),
            _ => status(404),
        })
        .await;
        let bytes = fetcher(test_policy())
            .fetch(&format!("http://{addr}/photo.jpg"))
            .await
            .expect("fetched");
        assert_eq!(bytes, photo);
    }

    #[tokio::test]
    async fn hostname_is_resolved_and_checked() {
        let addr = serve(|_| ok(b"by name")).await;
        // localhost may also resolve to ::1, which is not allowed: dropped.
        let bytes = fetcher(test_policy())
            .fetch(&format!("http://localhost:{}/p", addr.port()))
            .await
            .expect("fetched via the checked resolver");
        assert_eq!(bytes, b"by name");
        // Without the allowance the same name is refused at resolution.
        let policy = FetchPolicy {
            allow_ips: vec![],
            ..test_policy()
        };
        let err = fetcher(policy)
            .fetch(&format!("http://localhost:{}/p", addr.port()))
            .await
            .expect_err("refused");
        assert!(
            matches!(&err, FetchError::Refused { host, addr } if host == "localhost" && addr.is_loopback()),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn default_policy_refuses_internal_targets() {
        let f = fetcher(FetchPolicy::default());
        for url in [
            "https://127.0.0.1/x",
            "https://localhost/x",
            "https://10.0.0.1/x",
            "https://169.254.169.254/latest/meta-data/",
            "https://[::1]/x",
            "https://[fd00:ec2::254]/x",
            "https://[::ffff:127.0.0.1]/x",
            "https://[::ffff:169.254.169.254]/x",
            "https://[64:ff9b::a9fe:a9fe]/x",
            "https://0x7f.1/x",
            "https://2130706433/x",
        ] {
            let err = f.fetch(url).await.expect_err(url);
            assert!(matches!(err, FetchError::Refused { .. }), "{url}: {err:?}");
            assert!(err.is_permanent(), "{url}");
        }
    }

    #[tokio::test]
    async fn rejects_non_https_and_malformed_urls() {
        let f = fetcher(FetchPolicy::default());
        for url in [
            "http://example.com/x",
            "ftp://example.com/x",
            "file:///etc/passwd",
        ] {
            assert_eq!(f.fetch(url).await, Err(FetchError::NotHttps), "{url}");
        }
        for url in [
            "",
            "not a url",
            "https://",
            "https://[::1/x",
            "https://exa mple.com/",
            "https://user:pw@example.com/x",
            "https://user@example.com/x",
        ] {
            let err = f.fetch(url).await.expect_err(url);
            assert!(matches!(err, FetchError::BadUrl(_)), "{url}: {err:?}");
        }
        // Even with allow_http, other schemes stay refused.
        let err = fetcher(test_policy()).fetch("ftp://127.0.0.1/x").await;
        assert_eq!(err, Err(FetchError::NotHttps));
    }

    #[tokio::test]
    async fn redirects_to_internal_targets_are_refused() {
        let trap = TcpListener::bind((Ipv4Addr::new(127, 0, 0, 2), 0))
            .await
            .expect("bind 127.0.0.2");
        let trap_port = trap.local_addr().expect("trap addr").port();
        let addr = serve(move |path| match path {
            "/metadata" => redirect("http://169.254.169.254/latest/meta-data/"),
            "/loopback" => redirect(format!("http://127.0.0.2:{trap_port}/")),
            "/mapped" => redirect(format!("http://[::ffff:127.0.0.2]:{trap_port}/")),
            "/https-metadata" => redirect("https://[fd00:ec2::254]/"),
            _ => status(404),
        })
        .await;
        let f = fetcher(test_policy());
        for (path, refused) in [
            ("/metadata", "169.254.169.254"),
            ("/loopback", "127.0.0.2"),
            ("/mapped", "::ffff:127.0.0.2"),
            ("/https-metadata", "fd00:ec2::254"),
        ] {
            let err = f.fetch(&format!("http://{addr}{path}")).await;
            let want: IpAddr = refused.parse().expect("ip");
            assert!(
                matches!(&err, Err(FetchError::Refused { addr, .. }) if *addr == want),
                "{path}: {err:?}"
            );
        }
        // Nothing ever connected to 127.0.0.2: a connection would be queued.
        let accepted = tokio::time::timeout(Duration::from_millis(200), trap.accept()).await;
        assert!(accepted.is_err(), "127.0.0.2 got a connection");
    }

    #[tokio::test]
    async fn redirect_chain_longer_than_limit_fails() {
        let addr = serve(|path| {
            let n: usize = path.trim_start_matches("/r/").parse().unwrap_or(0);
            if n == 0 {
                ok(b"end")
            } else {
                redirect(format!("/r/{}", n - 1))
            }
        })
        .await;
        let policy = FetchPolicy {
            max_redirects: 3,
            ..test_policy()
        };
        let f = fetcher(policy);
        // Exactly max_redirects hops is fine, one more is not.
        assert_eq!(
            f.fetch(&format!("http://{addr}/r/3")).await,
            Ok(b"end".to_vec())
        );
        let err = f.fetch(&format!("http://{addr}/r/4")).await;
        assert_eq!(err, Err(FetchError::TooManyRedirects));
        assert!(FetchError::TooManyRedirects.is_permanent());
    }

    #[tokio::test]
    async fn relative_and_odd_redirects() {
        let addr = serve(|path| match path {
            "/old" => redirect("/photo.jpg"),
            "/dir/old" => redirect("photo.jpg"),
            "/dir/photo.jpg" => ok(b"dir photo"),
            "/photo.jpg" => ok(b"photo"),
            "/no-location" => Reply::Full {
                status: 302,
                headers: vec![],
                body: vec![],
            },
            "/broken" => redirect("http://[::1"),
            "/to-ftp" => redirect("ftp://127.0.0.1/x"),
            "/userinfo" => redirect("http://user:pw@127.0.0.1/x"),
            _ => status(404),
        })
        .await;
        let f = fetcher(test_policy());
        let get = |path: &str| {
            let url = format!("http://{addr}{path}");
            let f = f.clone();
            async move { f.fetch(&url).await }
        };
        assert_eq!(get("/old").await, Ok(b"photo".to_vec()));
        assert_eq!(get("/dir/old").await, Ok(b"dir photo".to_vec()));
        assert!(matches!(
            get("/no-location").await,
            Err(FetchError::BadUrl(_))
        ));
        assert!(matches!(get("/broken").await, Err(FetchError::BadUrl(_))));
        assert_eq!(get("/to-ftp").await, Err(FetchError::NotHttps));
        assert!(matches!(get("/userinfo").await, Err(FetchError::BadUrl(_))));
    }

    #[tokio::test]
    async fn body_over_limit_is_too_large() {
        let addr = serve(|path| match path {
            "/big" => ok(&[7u8; 5000]),
            "/exact" => ok(&[7u8; 1000]),
            "/endless" => Reply::ChunkedForever,
            _ => status(404),
        })
        .await;
        let policy = FetchPolicy {
            max_bytes: 1000,
            ..test_policy()
        };
        let f = fetcher(policy);
        let too_large = Err(FetchError::TooLarge { limit: 1000 });
        // Honest Content-Length.
        assert_eq!(f.fetch(&format!("http://{addr}/big")).await, too_large);
        // Chunked, no Content-Length, never ending: cut off while streaming.
        let started = Instant::now();
        assert_eq!(f.fetch(&format!("http://{addr}/endless")).await, too_large);
        assert!(started.elapsed() < Duration::from_secs(5));
        // The limit itself is accepted.
        let exact = f.fetch(&format!("http://{addr}/exact")).await;
        assert_eq!(exact.map(|b| b.len()), Ok(1000));
    }

    #[tokio::test]
    async fn unresponsive_server_times_out() {
        let addr = serve(|_| Reply::Hang).await;
        let policy = FetchPolicy {
            total_timeout: Duration::from_millis(300),
            ..test_policy()
        };
        let started = Instant::now();
        let err = fetcher(policy).fetch(&format!("http://{addr}/slow")).await;
        assert_eq!(err, Err(FetchError::Timeout));
        assert!(started.elapsed() < Duration::from_secs(3));
        assert!(!FetchError::Timeout.is_permanent());
    }

    #[tokio::test]
    async fn statuses_map_to_permanence() {
        let addr = serve(|path| match path {
            "/missing" => status(404),
            "/down" => status(503),
            "/busy" => status(429),
            _ => status(500),
        })
        .await;
        let f = fetcher(test_policy());
        let missing = f
            .fetch(&format!("http://{addr}/missing"))
            .await
            .unwrap_err();
        assert_eq!(missing, FetchError::Status(404));
        assert!(missing.is_permanent());
        let down = f.fetch(&format!("http://{addr}/down")).await.unwrap_err();
        assert_eq!(down, FetchError::Status(503));
        assert!(!down.is_permanent());
        let busy = f.fetch(&format!("http://{addr}/busy")).await.unwrap_err();
        assert_eq!(busy, FetchError::Status(429));
        assert!(!busy.is_permanent());
    }

    #[tokio::test]
    async fn connection_refused_is_transient_network_error() {
        // Bind then drop to get a port nobody listens on.
        let port = TcpListener::bind((LOCAL, 0))
            .await
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let err = fetcher(test_policy())
            .fetch(&format!("http://127.0.0.1:{port}/x"))
            .await
            .unwrap_err();
        assert!(matches!(err, FetchError::Network(_)), "{err:?}");
        assert!(!err.is_permanent());
    }

    #[tokio::test]
    async fn resolver_drops_disallowed_addresses() {
        let addrs = resolve_checked("localhost", &[LOCAL])
            .await
            .expect("resolves");
        assert!(!addrs.is_empty());
        assert!(addrs.iter().all(|a| a.ip() == LOCAL), "{addrs:?}");
        let err = resolve_checked("localhost", &[]).await.unwrap_err();
        assert!(matches!(err, ResolveError::Refused { .. }), "{err:?}");
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect(text)
    }

    #[test]
    fn is_public_refuses_special_ipv4() {
        for text in [
            "0.0.0.0",
            "0.1.2.3",
            "10.0.0.1",
            "10.255.255.255",
            "100.64.0.1",
            "100.127.255.254",
            "127.0.0.1",
            "127.1.2.3",
            "169.254.169.254",
            "169.254.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.1",
            "192.0.2.1",
            "192.88.99.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
        ] {
            assert!(!is_public(ip(text)), "{text} must be refused");
        }
    }

    #[test]
    fn is_public_refuses_special_ipv6() {
        for text in [
            "::",
            "::1",
            "fc00::1",
            "fd00:ec2::254",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "2001:db8::1",
            "2001::1",
            "2001:2::1",
            "3fff::1",
            "100::1",
            "64:ff9b:1::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::7f00:1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::1",
            "2002:c0a8:101::1",
            "::ffff:0:7f00:1",
        ] {
            assert!(!is_public(ip(text)), "{text} must be refused");
        }
    }

    #[test]
    fn is_public_accepts_public_addresses() {
        for text in [
            "1.1.1.1",
            "8.8.8.8",
            "52.95.110.1",
            "100.63.255.255",
            "100.128.0.1",
            "172.15.255.255",
            "172.32.0.1",
            "169.253.0.1",
            "198.17.255.255",
            "198.20.0.1",
            "223.255.255.255",
            "2606:4700::1111",
            "2a00:1450:4001::200e",
            "2001:4860:4860::8888",
            "::ffff:1.1.1.1",
            "64:ff9b::101:101",
            "2002:101:101::1",
        ] {
            assert!(is_public(ip(text)), "{text} must be public");
        }
    }

    #[test]
    fn allow_ips_is_exact() {
        let allow = [LOCAL];
        assert!(allowed(LOCAL, &allow));
        assert!(!allowed(ip("127.0.0.2"), &allow));
        assert!(!allowed(ip("::ffff:127.0.0.1"), &allow));
        assert!(allowed(ip("1.1.1.1"), &[]));
    }

    #[test]
    fn permanence() {
        for err in [
            FetchError::NotHttps,
            FetchError::BadUrl("x".into()),
            FetchError::Refused {
                host: "h".into(),
                addr: LOCAL,
            },
            FetchError::NoAddress("h".into()),
            FetchError::TooLarge { limit: 1 },
            FetchError::Status(400),
            FetchError::Status(403),
            FetchError::TooManyRedirects,
        ] {
            assert!(err.is_permanent(), "{err:?}");
        }
        for err in [
            FetchError::Timeout,
            FetchError::Network("x".into()),
            FetchError::Status(429),
            FetchError::Status(408),
            FetchError::Status(500),
            FetchError::Status(503),
        ] {
            assert!(!err.is_permanent(), "{err:?}");
        }
    }
}
