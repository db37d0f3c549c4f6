use std::path::PathBuf;

use airlock_api::v1::decision::Detail;
use airlock_api::v1::{Decision, Destination, GuardDetail, UnixSocket};
use airlock_gateway_store::{testing, GatewayStore, IncomingDecision, StoreError};
use prost::Message;

pub struct Ctx {
    pub store: GatewayStore,
    pub url: Option<String>,
    pub dir: PathBuf,
}

fn temp_dir(tag: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let dir = std::env::temp_dir().join(format!("airlock-gw-store-{tag}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create a temporary directory");
    dir
}

impl Ctx {
    pub async fn sqlite(name: &str) -> Ctx {
        let dir = temp_dir(name);
        let store = GatewayStore::open(None, &dir).await.expect("open the SQLite store");
        assert!(!store.is_postgres());
        assert_eq!(store.describe(), format!("SQLite {}", dir.join("gateway.db").display()));
        Ctx { store, url: None, dir }
    }

    pub async fn postgres(name: &str) -> Option<Ctx> {
        let url = testing::postgres_database(name)?;
        let dir = temp_dir("pg");
        let store = GatewayStore::open(Some(&url), &dir).await.expect("open the PostgreSQL store");
        assert!(store.is_postgres());
        Some(Ctx { store, url: Some(url), dir })
    }

    pub async fn reopen(&self) -> Result<GatewayStore, StoreError> {
        GatewayStore::open(self.url.as_deref(), &self.dir).await
    }
}

impl Drop for Ctx {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A deterministic generator (xorshift): the same decisions every run.
pub struct Rng(u64);

impl Rng {
    pub fn new() -> Rng {
        Rng(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }

    pub fn pick<'a>(&mut self, of: &[&'a str]) -> &'a str {
        of[self.below(of.len() as u64) as usize]
    }
}

/// Varied decisions: every kind, verdict, user, role, session and subject the filters test.
pub fn varied(rng: &mut Rng, n: usize) -> Vec<Decision> {
    let kinds = ["exec", "connect", "sendmsg", "unix_connect", "tamper", "file_open", "revoke", "events_lost"];
    (0..n)
        .map(|i| {
            let kind = rng.pick(&kinds);
            let user = rng.pick(&["alice", "bob"]);
            let mut d = Decision {
                id: i as u64 + 1,
                time_unix_nanos: 1_000 + rng.below(100) as i64,
                kind: kind.into(),
                decision: rng.pick(&["allow", "deny", ""]).into(),
                session_id: rng.pick(&["s1", "s2", "s3"]).into(),
                user: user.into(),
                uid: if user == "alice" { 1000 } else { 1001 },
                role: rng.pick(&["agent", "ci"]).into(),
                executable: "/usr/bin/terraform".into(),
                ..Default::default()
            };
            d.argv = if rng.below(4) == 0 { Vec::new() } else { vec!["Terraform".into(), rng.pick(&["apply", "plan"]).into()] };
            d.detail = match kind {
                "connect" | "sendmsg" => {
                    Some(Detail::Destination(Destination { address: format!("10.0.0.{}", rng.below(3)), port: 443, protocol: "tcp".into() }))
                }
                "unix_connect" => Some(Detail::UnixSocket(UnixSocket { path: "/run/Docker.sock".into(), ..Default::default() })),
                "tamper" | "file_open" => {
                    Some(Detail::Guard(GuardDetail { file: (rng.below(2) == 0).then(|| "/home/a/.aws/credentials".to_string()), ..Default::default() }))
                }
                _ => None,
            };
            d
        })
        .collect()
}

/// Decisions as a host ships them, numbered from `first_seq`.
pub fn incoming(decisions: &[Decision], first_seq: i64) -> Vec<IncomingDecision> {
    decisions
        .iter()
        .enumerate()
        .map(|(i, d)| IncomingDecision { seq: first_seq + i as i64, decision: d.clone(), body: d.encode_to_vec() })
        .collect()
}
