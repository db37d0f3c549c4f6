//! A DNS server on loopback for the tests that resolve hostname rules.

use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::seconds;

/// A DNS server on loopback for the tests: answers every A query for a name it
/// knows with the address set for it, with a short TTL; counts queries. Runs
/// until dropped (the thread polls a stop flag).
pub struct DnsServer {
    pub addr: std::net::SocketAddr,
    answers: Arc<std::sync::Mutex<std::collections::BTreeMap<String, std::net::Ipv4Addr>>>,
    pub queries: Arc<std::sync::atomic::AtomicU64>,
    /// Every (record type, query id) asked: a client retransmits a query
    /// under its id; a new lookup has a new one.
    asked: Arc<std::sync::Mutex<std::collections::BTreeSet<(u16, u16)>>>,
    /// While set, queries are received and counted but not answered; they are
    /// answered once it is cleared.
    hold: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DnsServer {
    pub fn start(bind: &str, ttl: u32) -> DnsServer {
        let sock = UdpSocket::bind(bind).unwrap_or_else(|e| panic!("bind the test DNS server on {bind}: {e}"));
        sock.set_read_timeout(Some(Duration::from_millis(100))).expect("set timeout");
        let addr = sock.local_addr().expect("local addr");
        let answers = Arc::new(std::sync::Mutex::new(std::collections::BTreeMap::new()));
        let queries = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let asked = Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let hold = Arc::new(AtomicBool::new(false));
        let (a, q, h, st, k) = (answers.clone(), queries.clone(), hold.clone(), stop.clone(), asked.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            let mut held: Vec<(Vec<u8>, std::net::SocketAddr)> = Vec::new();
            let answer = |query: &[u8], peer| {
                if let Some(reply) = dns_reply(query, &a.lock().unwrap(), ttl) {
                    let _ = sock.send_to(&reply, peer);
                }
            };
            while !st.load(Ordering::Relaxed) {
                if !h.load(Ordering::Relaxed) {
                    for (query, peer) in held.drain(..) {
                        answer(&query, peer);
                    }
                }
                let Ok((n, peer)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                q.fetch_add(1, Ordering::Relaxed);
                if let Some(key) = query_key(&buf[..n]) {
                    k.lock().unwrap().insert(key);
                }
                if h.load(Ordering::Relaxed) {
                    held.push((buf[..n].to_vec(), peer));
                } else {
                    answer(&buf[..n], peer);
                }
            }
        });
        DnsServer { addr, answers, queries, asked, hold, stop, thread: Some(thread) }
    }

    /// How many lookups asked for each record type (retransmissions of one
    /// query count once).
    pub fn lookups_per_type(&self) -> std::collections::BTreeMap<u16, usize> {
        let mut per_type = std::collections::BTreeMap::new();
        for (qtype, _) in self.asked.lock().unwrap().iter() {
            *per_type.entry(*qtype).or_insert(0) += 1;
        }
        per_type
    }

    /// From now on queries wait unanswered until [`DnsServer::release`].
    pub fn hold(&self) {
        self.hold.store(true, Ordering::Relaxed);
    }

    /// Answers the held queries, and every query after them.
    pub fn release(&self) {
        self.hold.store(false, Ordering::Relaxed);
    }

    /// Waits (bounded) until at least one query has arrived.
    pub fn wait_for_query(&self, what: &str) {
        let deadline = Instant::now() + seconds(30);
        while self.queries.load(Ordering::Relaxed) == 0 {
            assert!(Instant::now() < deadline, "no DNS query for {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn set(&self, name: &str, addr: std::net::Ipv4Addr) {
        self.answers.lock().unwrap().insert(name.to_ascii_lowercase(), addr);
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The record type and id of a query with one question.
pub fn query_key(query: &[u8]) -> Option<(u16, u16)> {
    let end = 12 + query.get(12..)?.iter().position(|&b| b == 0)? + 1;
    let qtype = u16::from_be_bytes([*query.get(end)?, *query.get(end + 1)?]);
    Some((qtype, u16::from_be_bytes([query[0], query[1]])))
}

/// Builds the answer to one query: A records for known names, NXDOMAIN for
/// unknown ones, an empty answer for other types.
pub fn dns_reply(q: &[u8], answers: &std::collections::BTreeMap<String, std::net::Ipv4Addr>, ttl: u32) -> Option<Vec<u8>> {
    if q.len() < 12 {
        return None;
    }
    let mut i = 12;
    let mut labels = Vec::new();
    loop {
        let len = *q.get(i)? as usize;
        i += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(q.get(i..i + len)?).to_ascii_lowercase());
        i += len;
    }
    let qtype = u16::from_be_bytes([*q.get(i)?, *q.get(i + 1)?]);
    let question_end = i + 4;
    let name = labels.join(".");
    let known = answers.get(&name).copied();
    let mut r = Vec::with_capacity(question_end + 16);
    r.extend_from_slice(&q[0..2]); // id
    let rcode = if known.is_none() { 3 } else { 0 };
    r.extend_from_slice(&[0x81, 0x80 | rcode]); // response, RD, RA
    r.extend_from_slice(&1u16.to_be_bytes()); // qdcount
    let an = u16::from(known.is_some() && qtype == 1);
    r.extend_from_slice(&an.to_be_bytes());
    r.extend_from_slice(&[0, 0, 0, 0]);
    r.extend_from_slice(q.get(12..question_end)?);
    if an == 1 {
        r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]); // name pointer, A, IN
        r.extend_from_slice(&ttl.to_be_bytes());
        r.extend_from_slice(&4u16.to_be_bytes());
        r.extend_from_slice(&known?.octets());
    }
    Some(r)
}

