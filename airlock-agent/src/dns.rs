//! A small DNS client for hostname egress rules: asks one server for a
//! name's A and AAAA records over UDP and returns the addresses with the
//! smallest TTL of the answer, which says how long they may be trusted.
//!
//! Kept small on purpose: one server, recursion desired, CNAME chains followed
//! by the server (every A/AAAA record in the answer section counts), EDNS0 so
//! answers up to 1232 bytes fit in one datagram. A truncated answer is used
//! as far as it goes and logged.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use anyhow::{bail, Context, Result};

const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;
const TYPE_OPT: u16 = 41;
const CLASS_IN: u16 = 1;
const EDNS_PAYLOAD: u16 = 1232;

/// The addresses a name has now, and for how long (seconds) they hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub addrs: Vec<IpAddr>,
    pub ttl: u32,
}

#[derive(Debug, Clone)]
pub struct DnsClient {
    server: SocketAddr,
    timeout: Duration,
    tries: u32,
}

impl DnsClient {
    pub fn new(server: SocketAddr) -> Self {
        DnsClient { server, timeout: Duration::from_secs(2), tries: 2 }
    }

    /// How long each query waits for its answer.
    pub fn with_timeout(self, timeout: Duration) -> Self {
        DnsClient { timeout, ..self }
    }

    pub fn server(&self) -> SocketAddr {
        self.server
    }

    /// The first `nameserver` of /etc/resolv.conf, port 53 (127.0.0.1 without one).
    pub fn system_server() -> SocketAddr {
        let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        let ip = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("nameserver"))
            .find_map(|rest| rest.trim().split('%').next().and_then(|a| a.parse::<IpAddr>().ok()))
            .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
        SocketAddr::new(ip, 53)
    }

    /// A and AAAA records of `host`. A name that does not exist (NXDOMAIN) or
    /// has no address records is an empty answer, not an error.
    pub fn resolve(&self, host: &str) -> Result<Answer> {
        let mut addrs = Vec::new();
        let mut ttl = u32::MAX;
        for qtype in [TYPE_A, TYPE_AAAA] {
            let (mut found, t) = self.query(host, qtype)?;
            addrs.append(&mut found);
            ttl = ttl.min(t);
        }
        addrs.sort();
        addrs.dedup();
        Ok(Answer { addrs, ttl: if ttl == u32::MAX { 0 } else { ttl } })
    }

    fn query(&self, host: &str, qtype: u16) -> Result<(Vec<IpAddr>, u32)> {
        let bind: SocketAddr = if self.server.is_ipv4() { "0.0.0.0:0".parse()? } else { "[::]:0".parse()? };
        let sock = UdpSocket::bind(bind).context("open a UDP socket for DNS")?;
        sock.connect(self.server).with_context(|| format!("connect to the DNS server {}", self.server))?;
        sock.set_read_timeout(Some(self.timeout))?;
        let id: u16 = rand_id();
        let query = encode_query(id, host, qtype)?;
        let mut buf = vec![0u8; usize::from(EDNS_PAYLOAD)];
        let mut last_err = None;
        for _ in 0..self.tries {
            sock.send(&query).with_context(|| format!("send a DNS query to {}", self.server))?;
            loop {
                match sock.recv(&mut buf) {
                    Ok(n) => match decode_answer(&buf[..n], id, qtype) {
                        Ok(Some(r)) => return Ok(r),
                        Ok(None) => continue, // another query's answer: keep waiting
                        Err(e) => return Err(e.context(format!("answer from {} for {host}", self.server))),
                    },
                    Err(e) => {
                        last_err = Some(e);
                        break;
                    }
                }
            }
        }
        bail!(
            "no answer from the DNS server {} for {host} ({})",
            self.server,
            last_err.map(|e| e.to_string()).unwrap_or_default()
        )
    }
}

fn rand_id() -> u16 {
    let mut b = [0u8; 2];
    // SAFETY: getrandom writes at most b.len() bytes into b.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n == 2 {
        u16::from_ne_bytes(b)
    } else {
        (std::process::id() as u16) ^ 0x5a5a
    }
}

/// The wire form of one recursive query with an EDNS0 OPT record.
pub fn encode_query(id: u16, host: &str, qtype: u16) -> Result<Vec<u8>> {
    let mut q = Vec::with_capacity(64);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&0x0100u16.to_be_bytes()); // RD
    q.extend_from_slice(&1u16.to_be_bytes()); // QDCOUNT
    q.extend_from_slice(&[0, 0, 0, 0]); // ANCOUNT, NSCOUNT
    q.extend_from_slice(&1u16.to_be_bytes()); // ARCOUNT: OPT
    for label in host.trim_end_matches('.').split('.') {
        if label.is_empty() || label.len() > 63 {
            bail!("{host:?} is not a valid hostname");
        }
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&CLASS_IN.to_be_bytes());
    // OPT: root name, type, UDP payload size, extended rcode/flags, no data.
    q.push(0);
    q.extend_from_slice(&TYPE_OPT.to_be_bytes());
    q.extend_from_slice(&EDNS_PAYLOAD.to_be_bytes());
    q.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    Ok(q)
}

/// Skips a (possibly compressed) name; returns the offset after it.
fn skip_name(msg: &[u8], mut i: usize) -> Result<usize> {
    loop {
        let len = *msg.get(i).context("DNS name runs past the message")?;
        match len & 0xc0 {
            0xc0 => return Ok(i + 2),
            0x00 if len == 0 => return Ok(i + 1),
            0x00 => i += 1 + usize::from(len),
            _ => bail!("DNS name with an unknown label type"),
        }
    }
}

fn u16_at(msg: &[u8], i: usize) -> Result<u16> {
    Ok(u16::from_be_bytes([*msg.get(i).context("short DNS message")?, *msg.get(i + 1).context("short DNS message")?]))
}

fn u32_at(msg: &[u8], i: usize) -> Result<u32> {
    Ok((u32::from(u16_at(msg, i)?) << 16) | u32::from(u16_at(msg, i + 2)?))
}

/// Decodes an answer to query `id`: `None` when the message answers another
/// query. NXDOMAIN and NODATA are empty answers whose TTL is 0 (ask again soon).
pub fn decode_answer(msg: &[u8], id: u16, qtype: u16) -> Result<Option<(Vec<IpAddr>, u32)>> {
    if msg.len() < 12 || u16_at(msg, 0)? != id || msg[2] & 0x80 == 0 {
        return Ok(None);
    }
    let rcode = msg[3] & 0x0f;
    if msg[2] & 0x02 != 0 {
        tracing::warn!("a truncated DNS answer; using the records it holds");
    }
    match rcode {
        0 => {}
        3 => return Ok(Some((Vec::new(), 0))), // NXDOMAIN
        other => bail!("the DNS server answered with rcode {other}"),
    }
    let qd = u16_at(msg, 4)?;
    let an = u16_at(msg, 6)?;
    let mut i = 12;
    for _ in 0..qd {
        i = skip_name(msg, i)? + 4;
    }
    let mut addrs = Vec::new();
    let mut ttl = u32::MAX;
    for _ in 0..an {
        i = skip_name(msg, i)?;
        let rtype = u16_at(msg, i)?;
        let class = u16_at(msg, i + 2)?;
        let rttl = u32_at(msg, i + 4)?;
        let len = usize::from(u16_at(msg, i + 8)?);
        let data = msg.get(i + 10..i + 10 + len).context("DNS record runs past the message")?;
        i += 10 + len;
        if class != CLASS_IN || rtype != qtype {
            continue; // CNAMEs of the chain, other classes
        }
        let addr = match (rtype, len) {
            (TYPE_A, 4) => IpAddr::V4(Ipv4Addr::new(data[0], data[1], data[2], data[3])),
            (TYPE_AAAA, 16) => {
                let mut b = [0u8; 16];
                b.copy_from_slice(data);
                IpAddr::V6(Ipv6Addr::from(b))
            }
            _ => bail!("a malformed address record"),
        };
        addrs.push(addr);
        // TTLs are 31-bit (RFC 2181): a set top bit means 0.
        ttl = ttl.min(if rttl & 0x8000_0000 != 0 { 0 } else { rttl });
    }
    Ok(Some((addrs, if ttl == u32::MAX { 0 } else { ttl })))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An answer as a server builds it: the question, a CNAME, then an A record.
    fn answer(id: u16) -> Vec<u8> {
        let mut q = encode_query(id, "svc.example.test", TYPE_A).unwrap();
        q.truncate(q.len() - 11); // drop the OPT record
        q[2] = 0x81;
        q[3] = 0x80;
        q[6..8].copy_from_slice(&2u16.to_be_bytes()); // ANCOUNT
        q[10..12].copy_from_slice(&0u16.to_be_bytes()); // ARCOUNT
        // CNAME svc.example.test -> (pointer to offset 12), TTL 300
        q.extend_from_slice(&[0xc0, 12, 0, 5, 0, 1, 0, 0, 1, 44, 0, 2, 0xc0, 12]);
        // A 192.0.2.7, TTL 30
        q.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4, 192, 0, 2, 7]);
        q
    }

    #[test]
    fn decodes_addresses_and_the_smallest_ttl() {
        let msg = answer(0x1234);
        let (addrs, ttl) = decode_answer(&msg, 0x1234, TYPE_A).unwrap().unwrap();
        assert_eq!(addrs, vec![IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7))]);
        assert_eq!(ttl, 30);
        // Another query's answer is not taken for ours.
        assert!(decode_answer(&msg, 0x9999, TYPE_A).unwrap().is_none());
        // NXDOMAIN is an empty answer.
        let mut nx = msg.clone();
        nx[3] = 0x83;
        assert_eq!(decode_answer(&nx, 0x1234, TYPE_A).unwrap(), Some((vec![], 0)));
        // A message cut short is an error, not a panic.
        assert!(decode_answer(&msg[..msg.len() - 3], 0x1234, TYPE_A).is_err());
    }

    #[test]
    fn encodes_labels() {
        let q = encode_query(1, "a.bc.", TYPE_AAAA).unwrap();
        assert_eq!(&q[12..19], &[1, b'a', 2, b'b', b'c', 0, 0]);
        assert!(encode_query(1, "a..b", TYPE_A).is_err());
    }
}
