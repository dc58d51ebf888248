//! Balancing over every address a DNS name resolves to. Behind a headless Kubernetes
//! Service the name lists each ready replica; one HTTP/2 connection per address and
//! tonic's power-of-two-choices balancer spread calls over all of them, where a single
//! connection would pin every call to one replica. The name is resolved again every
//! `resolve_every_ms`, so replicas that come and go are added and dropped.
//!
//! A failed or empty resolution keeps the last known addresses: a DNS blip must not empty
//! the pool.

use std::collections::BTreeSet;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::Sender;
use tonic::transport::channel::Change;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use super::{ClientError, ClientSettings};

/// Turns a host name into addresses. The system resolver in production; tests hand one
/// name three loopback addresses.
pub trait Resolve: Send + Sync + std::fmt::Debug + 'static {
    /// Every address `host:port` resolves to now.
    fn resolve<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<SocketAddr>>> + Send + 'a>>;
}

/// The operating system's resolver (`getaddrinfo`: /etc/hosts, then DNS).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<SocketAddr>>> + Send + 'a>> {
        Box::pin(async move { Ok(tokio::net::lookup_host((host, port)).await?.collect()) })
    }
}

/// Where a balanced endpoint points: scheme, the name to resolve, and the port.
#[derive(Debug, Clone)]
struct Target {
    scheme: String,
    host: String,
    port: u16,
}

fn target(endpoint: &str) -> Result<Target, ClientError> {
    let bad = |why: &str| ClientError::Balance(format!("{endpoint:?}: {why}"));
    let uri: http::Uri = endpoint.parse().map_err(|_| bad("not a URI"))?;
    let scheme = uri.scheme_str().ok_or_else(|| bad("no scheme"))?.to_owned();
    let host = uri
        .host()
        .ok_or_else(|| bad("no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri.port_u16().ok_or_else(|| bad("no port"))?;
    Ok(Target { scheme, host, port })
}

/// A channel over every address of the endpoint's host, kept up to date by a task that
/// ends when the channel is dropped.
pub(crate) fn balanced(
    settings: &ClientSettings,
    tls: Option<ClientTlsConfig>,
    resolver: Arc<dyn Resolve>,
) -> Result<Channel, ClientError> {
    let target = target(&settings.endpoint)?;
    // Each connection dials an IP address, so the certificate is checked against the name
    // the caller asked for (or the configured override).
    let tls = tls.map(|tls| match &settings.tls_server_name {
        Some(_) => tls,
        None => tls.domain_name(target.host.clone()),
    });
    // Fail now, not in the background, when the endpoint cannot be built at all.
    settings.endpoint_for(
        format!("{}://127.0.0.1:{}", target.scheme, target.port),
        tls.clone(),
    )?;
    let (channel, changes) = Channel::balance_channel::<SocketAddr>(16);
    tokio::spawn(follow(settings.clone(), target, tls, resolver, changes));
    Ok(channel)
}

/// Resolves the name now and then, inserting new addresses and removing vanished ones.
async fn follow(
    settings: ClientSettings,
    target: Target,
    tls: Option<ClientTlsConfig>,
    resolver: Arc<dyn Resolve>,
    changes: Sender<Change<SocketAddr, Endpoint>>,
) {
    let every = Duration::from_millis(settings.resolve_every_ms.max(100));
    let mut current: BTreeSet<SocketAddr> = BTreeSet::new();
    loop {
        match resolver.resolve(&target.host, target.port).await {
            Ok(addrs) if !addrs.is_empty() => {
                let fresh: BTreeSet<SocketAddr> = addrs.into_iter().collect();
                for gone in current.difference(&fresh) {
                    if changes.send(Change::Remove(*gone)).await.is_err() {
                        return;
                    }
                }
                for new in fresh.difference(&current) {
                    let uri = format!("{}://{new}", target.scheme);
                    let Ok(endpoint) = settings.endpoint_for(uri, tls.clone()) else {
                        continue;
                    };
                    if changes.send(Change::Insert(*new, endpoint)).await.is_err() {
                        return;
                    }
                }
                if fresh != current {
                    tracing::info!(host = %target.host, addresses = fresh.len(), "balanced endpoint resolved");
                }
                current = fresh;
            }
            Ok(_) => {
                tracing::warn!(host = %target.host, "resolved to no address; keeping the last ones");
            }
            Err(error) => {
                tracing::warn!(host = %target.host, %error, "resolution failed; keeping the last addresses");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = changes.closed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_balanced_endpoint_names_scheme_host_and_port() {
        let t = target("https://keystore.kagi.svc:50051").unwrap();
        assert_eq!(
            (t.scheme.as_str(), t.host.as_str(), t.port),
            ("https", "keystore.kagi.svc", 50051)
        );
        assert_eq!(target("http://[::1]:7").unwrap().host, "::1");
        assert!(target("http://keystore").is_err());
    }
}
