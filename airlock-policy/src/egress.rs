//! Egress keys: turning an address rule (or a hostname's current addresses)
//! into the LPM keys the kernel looks destinations up in, with every form that
//! reaches the same host (IPv4-mapped IPv6, `0.0.0.0` and `::` for loopback),
//! and the Unix socket rule keys.

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use airlock_common::abi::{Egress4Key, Egress6Key, EgressValue, UnixKey, EGRESS_FIXED_BITS, UNIX_FIXED_BITS, UNIX_PATH_MAX};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// The egress table entries of one hostname rule's current addresses: the
/// same forms an address rule gets (IPv4-mapped IPv6 included). Keys land in
/// `v4`/`v6` only where they are not there yet (first rule wins).
pub fn host_entries(
    set_id: u32,
    rule_id: u32,
    addrs: &[IpAddr],
    ports: &[u16],
    v4: &mut BTreeMap<Egress4Key, EgressValue>,
    v6: &mut BTreeMap<Egress6Key, EgressValue>,
) {
    let mut sink = EgressSink { set_id, rule_id, v4, v6 };
    let ports: &[u16] = if ports.is_empty() { &[0] } else { ports };
    for addr in addrs {
        for &port in ports {
            sink.add(IpNet::from(*addr), port);
        }
    }
}

/// The unix_rules key of a pattern: an exact path also matches its
/// terminating NUL, so "/run/docker.sock" does not cover "/run/docker.sock.1";
/// a prefix pattern stops at its last byte.
pub fn unix_key(set_id: u32, path: &[u8], prefix: bool) -> UnixKey {
    let mut key = UnixKey {
        prefixlen: 0,
        set_id,
        path: [0; UNIX_PATH_MAX],
    };
    let n = path.len().min(UNIX_PATH_MAX - 1);
    key.path[..n].copy_from_slice(&path[..n]);
    let matched = if prefix { n } else { n + 1 };
    key.prefixlen = UNIX_FIXED_BITS + 8 * matched as u32;
    key
}

pub(crate) struct EgressSink<'a> {
    pub(crate) set_id: u32,
    pub(crate) rule_id: u32,
    pub(crate) v4: &'a mut BTreeMap<Egress4Key, EgressValue>,
    pub(crate) v6: &'a mut BTreeMap<Egress6Key, EgressValue>,
}

const LOOPBACK4: Ipv4Net = Ipv4Net::new_assert(Ipv4Addr::new(127, 0, 0, 0), 8);
const MAPPED: Ipv6Net = Ipv6Net::new_assert(Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0), 96);
const MAPPED_LOOPBACK: Ipv6Net =
    Ipv6Net::new_assert(Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0x7f00, 0), 104);

fn overlaps4(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

impl EgressSink<'_> {
    pub(crate) fn add(&mut self, net: IpNet, port: u16) {
        match net {
            IpNet::V4(n) => self.add4(n, port),
            IpNet::V6(n) => {
                self.put6(n.network(), n.prefix_len(), port);
                if n.contains(&Ipv6Addr::LOCALHOST) {
                    // connect(::) reaches the local host just like ::1.
                    self.put6(Ipv6Addr::UNSPECIFIED, 128, port);
                }
                if n.prefix_len() >= 96 && MAPPED.contains(&n) {
                    // A rule written in mapped form also covers plain AF_INET
                    // sockets: both reach the same IPv4 host.
                    let v4 = n
                        .network()
                        .to_ipv4_mapped()
                        .unwrap_or(Ipv4Addr::UNSPECIFIED);
                    if let Ok(n4) = Ipv4Net::new(v4, n.prefix_len() - 96) {
                        self.add4(n4, port);
                    }
                } else if overlaps6_mapped_loopback(&n) {
                    self.put6(Ipv4Addr::UNSPECIFIED.to_ipv6_mapped(), 128, port);
                }
            }
        }
    }

    fn add4(&mut self, n: Ipv4Net, port: u16) {
        self.put4(n.network(), n.prefix_len(), port);
        // Dual-stack sockets reach IPv4 hosts through ::ffff:a.b.c.d.
        self.put6(n.network().to_ipv6_mapped(), 96 + n.prefix_len(), port);
        if overlaps4(&n, &LOOPBACK4) {
            // connect(0.0.0.0) reaches the local host, so it must not be a way
            // around a loopback rule.
            self.put4(Ipv4Addr::UNSPECIFIED, 32, port);
            self.put6(Ipv4Addr::UNSPECIFIED.to_ipv6_mapped(), 128, port);
        }
    }

    fn put4(&mut self, addr: Ipv4Addr, len: u8, port: u16) {
        let key = Egress4Key {
            prefixlen: EGRESS_FIXED_BITS + u32::from(len),
            set_id: self.set_id,
            port: port.to_be_bytes(),
            addr: addr.octets(),
            pad: [0; 2],
        };
        if let Entry::Vacant(v) = self.v4.entry(key) {
            v.insert(EgressValue {
                rule_id: self.rule_id,
                pad: 0,
            });
        }
    }

    fn put6(&mut self, addr: Ipv6Addr, len: u8, port: u16) {
        let key = Egress6Key {
            prefixlen: EGRESS_FIXED_BITS + u32::from(len),
            set_id: self.set_id,
            port: port.to_be_bytes(),
            addr: addr.octets(),
            pad: [0; 2],
        };
        if let Entry::Vacant(v) = self.v6.entry(key) {
            v.insert(EgressValue {
                rule_id: self.rule_id,
                pad: 0,
            });
        }
    }
}

fn overlaps6_mapped_loopback(n: &Ipv6Net) -> bool {
    MAPPED_LOOPBACK.contains(&n.network()) || n.contains(&MAPPED_LOOPBACK.network())
}
