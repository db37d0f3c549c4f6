//! DNS lookups for hostname egress rules, with hickory-resolver.
//!
//! By default the resolver reads the host's own configuration, as the
//! governed processes' libc does: every `nameserver` of /etc/resolv.conf (and
//! its search and ndots options) and /etc/hosts. `--dns-server` names one
//! server instead (/etc/hosts still counts). Each server is asked over UDP and,
//! when an answer is truncated, again over TCP. The answer's TTL says how long
//! its addresses may be trusted, so the daemon asks again in time.
//!
//! Lookups run on a small tokio runtime of their own for each batch, made on
//! the calling thread (the reload or DNS refresh thread), never while the
//! policy store is held. A fresh resolver per batch also rereads
//! /etc/resolv.conf and /etc/hosts when they change.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use hickory_resolver::config::{ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::NetError;
use hickory_resolver::{Resolver, TokioResolver};

/// The addresses a name has now, and for how long (seconds) they hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub addrs: Vec<IpAddr>,
    pub ttl: u32,
}

/// Which servers to ask, and how patiently.
#[derive(Debug, Clone)]
pub struct DnsClient {
    /// `None`: the host's own configuration (/etc/resolv.conf).
    server: Option<SocketAddr>,
    timeout: Duration,
}

impl DnsClient {
    /// The host's configuration: every nameserver of /etc/resolv.conf.
    pub fn system() -> Self {
        DnsClient { server: None, timeout: Duration::from_secs(2) }
    }

    /// One server (`--dns-server`).
    pub fn with_server(server: SocketAddr) -> Self {
        DnsClient { server: Some(server), timeout: Duration::from_secs(2) }
    }

    /// How long each query waits for its answer (each is tried twice).
    pub fn with_timeout(self, timeout: Duration) -> Self {
        DnsClient { timeout, ..self }
    }

    pub fn describe(&self) -> String {
        match self.server {
            Some(s) => format!("{s} (UDP, TCP on truncation) and /etc/hosts"),
            None => "the host's resolvers (every nameserver of /etc/resolv.conf, UDP and TCP) and /etc/hosts".into(),
        }
    }

    fn resolver(&self) -> Result<TokioResolver> {
        let provider = TokioRuntimeProvider::default();
        let mut builder = match self.server {
            Some(addr) => {
                let mut udp = ConnectionConfig::udp();
                udp.port = addr.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = addr.port();
                let server = NameServerConfig::new(addr.ip(), true, vec![udp, tcp]);
                Resolver::builder_with_config(ResolverConfig::from_parts(None, Vec::new(), vec![server]), provider)
            }
            None => Resolver::builder(provider).context("read the host's DNS configuration (/etc/resolv.conf)")?,
        };
        let opts: &mut ResolverOpts = builder.options_mut();
        opts.timeout = self.timeout;
        opts.attempts = 2;
        opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        opts.use_hosts_file = ResolveHosts::Always;
        // The daemon keeps answers itself, by their TTL; a second cache would only hide changes.
        opts.cache_size = 0;
        builder.build().context("set up the DNS resolver")
    }

    /// A and AAAA records of `host`. A name that does not exist (NXDOMAIN) or
    /// has no address records is an empty answer, not an error.
    pub fn resolve(&self, host: &str) -> Result<Answer> {
        self.resolve_all(&[host.to_string()]).pop().map(|(_, a)| a).unwrap_or_else(|| Err(anyhow!("no lookup ran")))
    }

    /// Resolves every name at once: a slow or dead server costs one timeout
    /// for the batch, not one per name. Callers hold no lock.
    pub fn resolve_all(&self, hosts: &[String]) -> Vec<(String, Result<Answer>)> {
        if hosts.is_empty() {
            return Vec::new();
        }
        let failed = |e: &anyhow::Error| hosts.iter().map(|h| (h.clone(), Err(anyhow!("{e:#}")))).collect();
        let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => return failed(&anyhow!(e).context("start the DNS runtime")),
        };
        rt.block_on(async {
            let resolver = match self.resolver() {
                Ok(r) => r,
                Err(e) => return failed(&e),
            };
            // Concurrent: each lookup's timeout runs beside the others'.
            let mut lookups = tokio::task::JoinSet::new();
            for (i, host) in hosts.iter().enumerate() {
                let (resolver, host) = (resolver.clone(), host.clone());
                lookups.spawn(async move {
                    let answer = answer_of(&host, resolver.lookup_ip(fqdn(&host)).await);
                    (i, host, answer)
                });
            }
            let mut answers: Vec<(usize, String, Result<Answer>)> = Vec::with_capacity(hosts.len());
            while let Some(done) = lookups.join_next().await {
                match done {
                    Ok(a) => answers.push(a),
                    Err(e) => tracing::error!("a DNS lookup task failed: {e}"),
                }
            }
            answers.sort_by_key(|(i, _, _)| *i);
            answers.into_iter().map(|(_, h, a)| (h, a)).collect()
        })
    }
}

/// Hostname rules name absolute names: no search domain is appended.
fn fqdn(host: &str) -> String {
    if host.ends_with('.') {
        host.to_string()
    } else {
        format!("{host}.")
    }
}

fn answer_of(host: &str, lookup: std::result::Result<hickory_resolver::lookup_ip::LookupIp, NetError>) -> Result<Answer> {
    match lookup {
        Ok(found) => {
            let mut addrs: Vec<IpAddr> = found.iter().collect();
            addrs.sort();
            addrs.dedup();
            // The smallest TTL of the chain (CNAMEs included) bounds how long the addresses hold.
            let ttl = found.as_lookup().answers().iter().map(|r| r.ttl).min().unwrap_or(0);
            Ok(Answer { addrs, ttl })
        }
        Err(e) if e.is_no_records_found() => Ok(Answer { addrs: Vec::new(), ttl: negative_ttl(&e) }),
        Err(e) => Err(anyhow!("no answer for {host}: {e}")),
    }
}

/// How long a "no such name" may be trusted, when the server said.
fn negative_ttl(e: &NetError) -> u32 {
    match e {
        NetError::Dns(hickory_resolver::net::DnsError::NoRecordsFound(n)) => n.negative_ttl.unwrap_or(0),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, UdpSocket};

    /// The answer to `query` (one question): for A, the address 192.0.2.7 with
    /// TTL 30 unless `truncated`, which sets TC and answers nothing.
    fn reply(query: &[u8], truncated: bool) -> Vec<u8> {
        let mut r = query.to_vec();
        // The question ends at the first 0 label after the header, then type and class.
        let end = 12 + r[12..].iter().position(|&b| b == 0).expect("a name") + 1 + 4;
        r.truncate(end);
        let qtype = u16::from_be_bytes([r[end - 4], r[end - 3]]);
        r[2] = 0x81 | if truncated { 0x02 } else { 0 };
        r[3] = 0x80;
        let answer = !truncated && qtype == 1;
        r[6..8].copy_from_slice(&u16::from(answer).to_be_bytes());
        r[8..12].copy_from_slice(&[0, 0, 0, 0]);
        if answer {
            r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4, 192, 0, 2, 7]);
        }
        r
    }

    #[test]
    fn a_truncated_answer_is_asked_again_over_tcp() {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("udp");
        let addr = udp.local_addr().expect("addr");
        let tcp = TcpListener::bind(addr).expect("tcp on the same port");
        udp.set_read_timeout(Some(Duration::from_millis(100))).expect("timeout");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let udp_server = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 512];
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if let Ok((n, peer)) = udp.recv_from(&mut buf) {
                        let _ = udp.send_to(&reply(&buf[..n], true), peer);
                    }
                }
            })
        };
        let tcp_server = std::thread::spawn(move || {
            let mut served = 0;
            // The client asks A and AAAA, each on a connection of its own or one shared.
            while served < 2 {
                let Ok((mut conn, _)) = tcp.accept() else {
                    break;
                };
                let mut len = [0u8; 2];
                while conn.read_exact(&mut len).is_ok() {
                    let mut query = vec![0u8; usize::from(u16::from_be_bytes(len))];
                    if conn.read_exact(&mut query).is_err() {
                        break;
                    }
                    let answer = reply(&query, false);
                    let _ = conn.write_all(&(answer.len() as u16).to_be_bytes());
                    let _ = conn.write_all(&answer);
                    served += 1;
                }
            }
            served
        });
        let answer = DnsClient::with_server(addr).with_timeout(Duration::from_secs(5)).resolve("svc.airlock.test").expect("an answer over TCP");
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        udp_server.join().expect("udp server");
        assert_eq!(answer, Answer { addrs: vec!["192.0.2.7".parse().unwrap()], ttl: 30 });
        assert!(tcp_server.join().expect("tcp server") >= 1, "the truncated answer was not asked again over TCP");
    }

    #[test]
    fn names_in_etc_hosts_resolve_without_a_server() {
        // Every Linux host names itself `localhost` in /etc/hosts; the server here never answers.
        let hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
        if !hosts.lines().any(|l| l.split_whitespace().skip(1).any(|n| n == "localhost")) {
            panic!("/etc/hosts has no localhost entry; this test needs one");
        }
        let silent = UdpSocket::bind("127.0.0.1:0").expect("udp");
        let answer = DnsClient::with_server(silent.local_addr().expect("addr")).with_timeout(Duration::from_secs(1)).resolve("localhost").expect("from /etc/hosts");
        assert!(answer.addrs.iter().any(|a| a.is_loopback()), "{answer:?}");
    }

    #[test]
    fn a_name_that_does_not_exist_is_an_empty_answer() {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("udp");
        let addr = udp.local_addr().expect("addr");
        let server = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            udp.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
            for _ in 0..2 {
                if let Ok((n, peer)) = udp.recv_from(&mut buf) {
                    let mut r = reply(&buf[..n], false);
                    r[3] = 0x83; // NXDOMAIN
                    r[6..8].copy_from_slice(&[0, 0]);
                    let end = 12 + r[12..].iter().position(|&b| b == 0).expect("a name") + 1 + 4;
                    r.truncate(end);
                    let _ = udp.send_to(&r, peer);
                }
            }
        });
        let answer = DnsClient::with_server(addr).with_timeout(Duration::from_secs(5)).resolve("gone.airlock.test").expect("NXDOMAIN is an answer");
        assert!(answer.addrs.is_empty());
        server.join().expect("server");
    }
}
