//! Decisions, sessions, commands, and that one org never sees another's.

use std::collections::BTreeSet;

use airlock_api::decision::matches;
use airlock_api::v1::{Decision, DecisionFilter, Session, SessionState};
use airlock_gateway_store::{FleetQuery, NewPolicyVersion, StoreError, COMMAND_DONE, COMMAND_FAILED, COMMAND_PENDING, COMMAND_SENT};

use crate::common::{incoming, varied, Ctx, Rng};

both_backends!(
    a_batch_sent_twice_is_stored_once,
    the_sql_filter_and_the_stream_filter_agree,
    pages_walk_every_decision_once,
    sessions_keep_their_latest_report,
    a_command_is_taken_once,
    an_org_sees_only_its_own,
);

fn all(limit: u32) -> FleetQuery {
    FleetQuery { limit, ..Default::default() }
}

async fn a_batch_sent_twice_is_stored_once(ctx: &Ctx) {
    let s = &ctx.store;
    let acme = s.create_org("acme").await.unwrap();
    s.enroll_host(acme.id, "web-1", "serial", 1).await.unwrap();
    let decisions = varied(&mut Rng::new(), 300);
    let first = incoming(&decisions[..250], 1);
    assert_eq!(s.insert_decisions(acme.id, "web-1", &first).await.unwrap(), 250);
    assert_eq!(s.insert_decisions(acme.id, "web-1", &first).await.unwrap(), 0, "the same batch again");
    assert_eq!(s.count_decisions(acme.id, None).await.unwrap(), 250);
    assert_eq!(s.host(acme.id, "web-1").await.unwrap().unwrap().shipped_seq, 250);

    let overlapping = incoming(&decisions[199..], 200);
    assert_eq!(s.insert_decisions(acme.id, "web-1", &overlapping).await.unwrap(), 50);
    assert_eq!(s.host(acme.id, "web-1").await.unwrap().unwrap().shipped_seq, 300);
    assert_eq!(s.insert_decisions(acme.id, "web-1", &incoming(&decisions[4..10], 5)).await.unwrap(), 0);
    assert_eq!(s.host(acme.id, "web-1").await.unwrap().unwrap().shipped_seq, 300, "an old batch does not move it back");
    assert_eq!(s.insert_decisions(acme.id, "web-1", &[]).await.unwrap(), 0);

    // Another host's sequence numbers are its own.
    s.enroll_host(acme.id, "web-2", "serial", 1).await.unwrap();
    assert_eq!(s.insert_decisions(acme.id, "web-2", &incoming(&decisions[..10], 1)).await.unwrap(), 10);
    assert_eq!(s.count_decisions(acme.id, Some("web-1")).await.unwrap(), 300);
    assert_eq!(s.count_decisions(acme.id, Some("web-2")).await.unwrap(), 10);
    assert_eq!(s.count_decisions(acme.id, None).await.unwrap(), 310);

    let stored = s.query_decisions(acme.id, &FleetQuery { host: "web-1".into(), ..all(1000) }).await.unwrap();
    assert_eq!(stored.len(), 300);
    assert_eq!(stored[0].seq, 300, "newest first");
    assert_eq!(s.max_cursor().await.unwrap(), s.query_decisions(acme.id, &all(1)).await.unwrap()[0].cursor);
    for d in &stored {
        assert_eq!(d.host_id, "web-1");
        assert_eq!(d.decision().unwrap(), decisions[(d.seq - 1) as usize], "seq {}", d.seq);
    }
}

/// The store's SQL and the live stream's `matches` select the same
/// decisions, for every filter field and the host: random decisions on three
/// hosts, random filters.
async fn the_sql_filter_and_the_stream_filter_agree(ctx: &Ctx) {
    let s = &ctx.store;
    let acme = s.create_org("acme").await.unwrap();
    let mut rng = Rng::new();
    let hosts = ["h1", "h2", "h3"];
    // (host, seq, decision) in insertion (cursor) order.
    let mut all_stored: Vec<(String, i64, Decision)> = Vec::new();
    for (i, chunk) in varied(&mut rng, 450).chunks(75).enumerate() {
        let host = hosts[i % hosts.len()];
        let first_seq = all_stored.iter().filter(|(h, _, _)| h == host).count() as i64 + 1;
        s.insert_decisions(acme.id, host, &incoming(chunk, first_seq)).await.unwrap();
        all_stored.extend(chunk.iter().enumerate().map(|(j, d)| (host.to_string(), first_seq + j as i64, d.clone())));
    }
    let texts = ["", "terraform apply", "10.0.0.1", "docker.sock", ".aws", "TERRAFORM", "nothing", "443 tcp"];
    for _ in 0..300 {
        let f = DecisionFilter {
            session_id: rng.pick(&["", "s1", "s2", " s3 "]).into(),
            user: rng.pick(&["", "alice", "1001", "carol", "1000"]).into(),
            role: rng.pick(&["", "agent", "ci"]).into(),
            kind: rng.below(4) as i32,
            decision: rng.below(3) as i32,
            since_unix_nanos: [0, 1_030][rng.below(2) as usize],
            until_unix_nanos: [0, 1_070][rng.below(2) as usize],
            text: rng.pick(&texts).into(),
        };
        let host = rng.pick(&["", "", "h1", "h3", "h9"]);
        let q = FleetQuery { filter: f.clone(), host: host.into(), ..all(10_000) };
        let got: Vec<(String, i64)> = s.query_decisions(acme.id, &q).await.unwrap().into_iter().map(|d| (d.host_id, d.seq)).collect();
        let want: Vec<(String, i64)> = all_stored
            .iter()
            .rev()
            .filter(|(h, _, d)| (host.is_empty() || h == host) && matches(&f, d))
            .map(|(h, seq, _)| (h.clone(), *seq))
            .collect();
        assert_eq!(got, want, "the store and the stream disagree on {f:?} host {host:?}");
    }
}

async fn pages_walk_every_decision_once(ctx: &Ctx) {
    let s = &ctx.store;
    let acme = s.create_org("acme").await.unwrap();
    s.insert_decisions(acme.id, "h1", &incoming(&varied(&mut Rng::new(), 130), 1)).await.unwrap();
    let filter = DecisionFilter { text: "terraform".into(), ..Default::default() };
    let everything = s.query_decisions(acme.id, &FleetQuery { filter: filter.clone(), ..all(1000) }).await.unwrap();
    assert!(everything.len() > 20, "enough to page through: {}", everything.len());
    assert_eq!(s.query_decisions(acme.id, &FleetQuery { filter: filter.clone(), ..all(0) }).await.unwrap().len(), 100, "0: 100");

    let mut newest_first = Vec::new();
    let mut before = 0;
    loop {
        let page = s.query_decisions(acme.id, &FleetQuery { filter: filter.clone(), before_cursor: before, ..all(7) }).await.unwrap();
        assert!(page.len() <= 7);
        let Some(last) = page.last() else { break };
        before = last.cursor;
        newest_first.extend(page);
    }
    assert_eq!(newest_first, everything);

    let mut oldest_first = Vec::new();
    let mut after = 0;
    loop {
        let q = FleetQuery { filter: filter.clone(), after_cursor: after, oldest_first: true, ..all(9) };
        let page = s.query_decisions(acme.id, &q).await.unwrap();
        let Some(last) = page.last() else { break };
        after = last.cursor;
        oldest_first.extend(page);
    }
    oldest_first.reverse();
    assert_eq!(oldest_first, everything);

    let (lo, hi) = (everything[15].cursor, everything[5].cursor);
    let between = s.query_decisions(acme.id, &FleetQuery { filter, before_cursor: hi, after_cursor: lo, ..all(1000) }).await.unwrap();
    assert_eq!(between, everything[6..15].to_vec(), "both bounds at once");
}

fn session(id: &str, state: SessionState, processes: u32) -> Session {
    Session { id: id.into(), state: state as i32, role: "agent".into(), user: "alice".into(), processes, ..Default::default() }
}

async fn sessions_keep_their_latest_report(ctx: &Ctx) {
    let s = &ctx.store;
    let acme = s.create_org("acme").await.unwrap();
    let h1 = [session("a", SessionState::Running, 3), session("b", SessionState::Exited, 0), session("c", SessionState::Ready, 1)];
    s.upsert_sessions(acme.id, "h1", &h1, 10).await.unwrap();
    s.upsert_sessions(acme.id, "h2", &[session("a", SessionState::Running, 1)], 20).await.unwrap();
    s.upsert_sessions(acme.id, "h1", &[session("a", SessionState::Revoked, 0)], 30).await.unwrap();
    s.upsert_sessions(acme.id, "h1", &[], 40).await.unwrap();

    let ids = |v: Vec<(String, Session)>| v.into_iter().map(|(h, s)| format!("{h}/{}", s.id)).collect::<BTreeSet<_>>();
    let everything = s.list_sessions(acme.id, "", SessionState::Unspecified).await.unwrap();
    assert_eq!(everything.len(), 4);
    assert_eq!(everything[0].0, "h2", "first seen newest first");
    let revoked = s.list_sessions(acme.id, "h1", SessionState::Revoked).await.unwrap();
    assert_eq!(revoked, vec![("h1".to_string(), session("a", SessionState::Revoked, 0))], "the latest report");
    assert_eq!(ids(s.list_sessions(acme.id, "h1", SessionState::Unspecified).await.unwrap()), ["h1/a", "h1/b", "h1/c"].map(String::from).into());
    assert_eq!(ids(s.list_sessions(acme.id, "", SessionState::Running).await.unwrap()), ["h2/a"].map(String::from).into());
    assert!(s.list_sessions(acme.id, "h3", SessionState::Unspecified).await.unwrap().is_empty());
}

async fn a_command_is_taken_once(ctx: &Ctx) {
    let s = &ctx.store;
    let acme = s.create_org("acme").await.unwrap();
    let mut ids = Vec::new();
    for i in 0..20u8 {
        ids.push(s.insert_command(acme.id, "h1", "revoke_session", &[i], 100).await.unwrap());
    }
    let elsewhere = s.insert_command(acme.id, "h2", "revoke_session", b"x", 100).await.unwrap();
    let c = s.command(ids[0]).await.unwrap().expect("stored");
    assert_eq!((c.state.as_str(), c.payload.as_slice(), c.kind.as_str(), c.host_id.as_str()), (COMMAND_PENDING, &[0u8][..], "revoke_session", "h1"));

    let takers: Vec<_> = (0..2)
        .map(|_| {
            let store = s.clone();
            tokio::spawn(async move { store.take_pending_commands(acme.id, "h1", 200).await })
        })
        .collect();
    let mut taken = Vec::new();
    for t in takers {
        let batch = t.await.unwrap().unwrap();
        assert!(batch.windows(2).all(|w| w[0].id < w[1].id), "oldest first");
        taken.extend(batch.into_iter().map(|c| c.id));
    }
    taken.sort_unstable();
    assert_eq!(taken, ids, "every command once, to one taker");
    assert!(s.take_pending_commands(acme.id, "h1", 300).await.unwrap().is_empty());
    assert_eq!(s.command(ids[3]).await.unwrap().unwrap().state, COMMAND_SENT);
    assert_eq!(s.command(elsewhere).await.unwrap().unwrap().state, COMMAND_PENDING, "another host's command stays");

    s.finish_command(ids[0], b"killed 3", "", 400).await.unwrap();
    s.finish_command(ids[1], b"", "no such session", 401).await.unwrap();
    let done = s.command(ids[0]).await.unwrap().unwrap();
    assert_eq!((done.state.as_str(), done.result.as_slice(), done.error.as_str(), done.updated_ns), (COMMAND_DONE, &b"killed 3"[..], "", 400));
    let failed = s.command(ids[1]).await.unwrap().unwrap();
    assert_eq!((failed.state.as_str(), failed.error.as_str(), failed.created_ns), (COMMAND_FAILED, "no such session", 100));
    assert!(matches!(s.finish_command(999_999, b"", "", 1).await, Err(StoreError::NotFound(_))));
    assert_eq!(s.command(999_999).await.unwrap(), None);
}

async fn an_org_sees_only_its_own(ctx: &Ctx) {
    let s = &ctx.store;
    let a = s.create_org("a").await.unwrap();
    let b = s.create_org("b").await.unwrap();
    s.enroll_host(a.id, "h1", "serial-a", 1).await.unwrap();
    let decisions = varied(&mut Rng::new(), 20);
    s.insert_decisions(a.id, "h1", &incoming(&decisions, 1)).await.unwrap();
    s.upsert_sessions(a.id, "h1", &[session("x", SessionState::Running, 1)], 1).await.unwrap();
    s.insert_policy_version(a.id, &NewPolicyVersion::default()).await.unwrap();
    s.insert_command(a.id, "h1", "k", b"", 1).await.unwrap();

    assert_eq!(s.host(b.id, "h1").await.unwrap(), None);
    assert!(s.list_hosts(b.id).await.unwrap().is_empty());
    assert!(!s.revoke_host(b.id, "h1").await.unwrap());
    assert!(!s.host(a.id, "h1").await.unwrap().unwrap().revoked, "b cannot revoke a's host");
    assert_eq!(s.count_decisions(b.id, None).await.unwrap(), 0);
    assert!(s.query_decisions(b.id, &all(1000)).await.unwrap().is_empty());
    assert!(s.query_decisions(b.id, &FleetQuery { host: "h1".into(), ..all(1000) }).await.unwrap().is_empty());
    assert!(s.list_sessions(b.id, "", SessionState::Unspecified).await.unwrap().is_empty());
    assert_eq!(s.policy_version(b.id, None).await.unwrap(), None);
    assert!(s.policy_history(b.id).await.unwrap().is_empty());
    assert!(s.take_pending_commands(b.id, "h1", 2).await.unwrap().is_empty());
    assert_eq!(s.latest_policy_versions().await.unwrap(), vec![(a.id, 1)]);

    // The same host name and sequence numbers in another org are another host's.
    s.enroll_host(b.id, "h1", "serial-b", 1).await.unwrap();
    assert_eq!(s.insert_decisions(b.id, "h1", &incoming(&decisions[..5], 1)).await.unwrap(), 5);
    assert_eq!(s.count_decisions(a.id, Some("h1")).await.unwrap(), 20);
    assert_eq!(s.count_decisions(b.id, Some("h1")).await.unwrap(), 5);
    assert_eq!(s.host(a.id, "h1").await.unwrap().unwrap().cert_serial, "serial-a");
    assert_eq!(s.take_pending_commands(a.id, "h1", 2).await.unwrap().len(), 1);
}
