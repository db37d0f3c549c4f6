//! Approval requests: the merge of the hosts' records (any order, any number
//! of times), the race of two approvers, the delivery of a verdict, lists.

use airlock_api::decision::APPROVAL;
use airlock_api::v1::decision::Detail;
use airlock_api::v1::{ApprovalEvent, ApprovalRequest, ApprovalVerdict, Decision};
use airlock_gateway_store::{
    ApprovalAttempt, ApprovalQuery, GatewayStore, GatewayVerdict, StoreError, VerdictCommand, COMMAND_PENDING, DELIVERY_DELIVERED,
    DELIVERY_DELIVERING,
};

use crate::common::{incoming, Ctx};

both_backends!(
    host_records_merge_in_any_order_and_once,
    of_two_racing_approvers_exactly_one_wins,
    a_decided_expired_or_unknown_request_is_refused_by_name,
    the_delivery_follows_the_hosts_answer,
    lists_filter_by_state_host_and_session_newest_first,
);

const KIND: &str = "decide_approval";

fn id(n: u64) -> String {
    format!("apr-{n:016x}")
}

fn request(n: u64, state: &str, session: &str, created: i64) -> ApprovalRequest {
    ApprovalRequest {
        id: id(n),
        state: state.into(),
        session_id: session.into(),
        argv: vec!["terraform".into(), "apply".into()],
        created_unix_nanos: created,
        ..Default::default()
    }
}

fn decided(mut r: ApprovalRequest, state: &str, by: &str, at: i64) -> ApprovalRequest {
    r.state = state.into();
    r.verdict = Some(ApprovalVerdict { decided_by: by.into(), decided_unix_nanos: at, ..Default::default() });
    r
}

fn record(event: &str, request: &ApprovalRequest, time: i64) -> Decision {
    Decision {
        time_unix_nanos: time,
        kind: APPROVAL.into(),
        session_id: request.session_id.clone(),
        detail: Some(Detail::Approval(ApprovalEvent {
            event: event.into(),
            request_id: request.id.clone(),
            request: Some(request.clone()),
            caller: String::new(),
        })),
        ..Default::default()
    }
}

/// Ships decisions as host `host`, numbered after what it shipped; the rows they changed, as (event, state).
async fn ship(s: &GatewayStore, org: i64, host: &str, decisions: &[Decision]) -> Vec<(String, String)> {
    let first = s.host(org, host).await.unwrap().map(|h| h.shipped_seq).unwrap_or(0) + 1;
    let rows = incoming(decisions, first);
    let batch = airlock_gateway_store::HostBatch { org_id: org, host_id: host, rows: &rows, lost: 0 };
    let ingested = s.insert_decision_batches(&[batch]).await.unwrap();
    ingested.approvals.into_iter().map(|c| (c.event, c.approval.state)).collect()
}

fn verdict(approve: bool, by: &str, at: i64) -> GatewayVerdict {
    GatewayVerdict { approve, reason: format!("{by} says so"), grant_seconds: if approve { 1800 } else { 0 }, decided_by: by.into(), decided_ns: at }
}

fn payload(request_id: &str) -> Vec<u8> {
    format!("decide {request_id}").into_bytes()
}

async fn decide(s: &GatewayStore, org: i64, request_id: &str, v: &GatewayVerdict) -> Result<airlock_gateway_store::Approval, StoreError> {
    let payload = payload(request_id);
    s.decide_approval_at_gateway(org, request_id, v, VerdictCommand { kind: KIND, payload: &payload }).await
}

async fn state(s: &GatewayStore, org: i64, n: u64) -> String {
    s.approval(org, &id(n)).await.unwrap().expect("the request's row").state
}

async fn host_records_merge_in_any_order_and_once(ctx: &Ctx) {
    let s = &ctx.store;
    let acme = s.create_org("acme").await.unwrap();
    for h in ["web-1", "web-2"] {
        s.enroll_host(acme.id, h, "serial", 1).await.unwrap();
    }
    let opened = request(1, "pending", "s1", 100);
    let first = record("requested", &opened, 100);
    assert_eq!(ship(s, acme.id, "web-1", std::slice::from_ref(&first)).await, [("requested".into(), "pending".into())]);
    let row = s.approval(acme.id, &id(1)).await.unwrap().unwrap();
    assert_eq!((row.host_id.as_str(), row.session_id.as_str(), row.created_ns, row.updated_ns), ("web-1", "s1", 100, 100));
    assert_eq!(row.request.host, "web-1", "the host is the one that shipped it");
    assert_eq!(row.request.argv, opened.argv);

    // The same entry again (a resend after a reconnect): stored once, merged to no change.
    let rows = incoming(std::slice::from_ref(&first), 1);
    assert_eq!(s.insert_decisions(acme.id, "web-1", &rows).await.unwrap(), 0);
    assert!(s.insert_decision_batches(&[airlock_gateway_store::HostBatch { org_id: acme.id, host_id: "web-1", rows: &rows, lost: 0 }]).await.unwrap().approvals.is_empty());

    // A newer pending record wins over an older one, whatever the order they arrive in.
    let mut again = opened.clone();
    again.attempts = 3;
    assert_eq!(ship(s, acme.id, "web-1", &[record("refused_caller", &again, 300)]).await.len(), 1);
    let mut older = opened.clone();
    older.attempts = 2;
    assert!(ship(s, acme.id, "web-1", &[record("refused_caller", &older, 200)]).await.is_empty(), "an older pending record changes nothing");
    assert_eq!(s.approval(acme.id, &id(1)).await.unwrap().unwrap().request.attempts, 3);

    // A final state is final: a late pending record never reopens it, a second final state never replaces the first.
    let approved = decided(opened.clone(), "approved", "uid 0 (root) via api socket", 400);
    assert_eq!(ship(s, acme.id, "web-1", &[record("approved", &approved, 400)]).await, [("approved".into(), "approved".into())]);
    let late = [record("requested", &opened, 500), record("rejected", &decided(opened.clone(), "rejected", "someone", 600), 600)];
    assert!(ship(s, acme.id, "web-1", &late).await.is_empty());
    let row = s.approval(acme.id, &id(1)).await.unwrap().unwrap();
    assert_eq!((row.state.as_str(), row.updated_ns), ("approved", 400));
    assert_eq!(row.request.verdict.unwrap().decided_by, "uid 0 (root) via api socket");

    // Out of order from the start: the final record first, the opening one after (in one batch and in two).
    let second = request(2, "pending", "s2", 1000);
    let expired = decided(second.clone(), "expired", "expiry", 2000);
    let changed = ship(s, acme.id, "web-1", &[record("expired", &expired, 2000), record("requested", &second, 1000)]).await;
    assert_eq!(changed, [("expired".into(), "expired".into())]);
    assert_eq!(state(s, acme.id, 2).await, "expired");
    let third = request(3, "pending", "s2", 1100);
    ship(s, acme.id, "web-1", &[record("cancelled", &decided(third.clone(), "cancelled", "session end", 1500), 1500)]).await;
    ship(s, acme.id, "web-1", &[record("requested", &third, 1100)]).await;
    assert_eq!(state(s, acme.id, 3).await, "cancelled");

    // Another host cannot speak for web-1's request; a malformed id is stored as a decision, not a request.
    let theirs = request(6, "pending", "s3", 3000);
    ship(s, acme.id, "web-1", &[record("requested", &theirs, 3000)]).await;
    let forged = decided(theirs, "approved", "forger", 3001);
    assert!(ship(s, acme.id, "web-2", &[record("approved", &forged, 3001)]).await.is_empty());
    assert_eq!(state(s, acme.id, 6).await, "pending");
    let mut opened_elsewhere = request(4, "pending", "x", 10);
    opened_elsewhere.host = "web-1".into();
    ship(s, acme.id, "web-2", &[record("requested", &opened_elsewhere, 10)]).await;
    assert_eq!(s.approval(acme.id, &id(4)).await.unwrap().unwrap().host_id, "web-2", "the host is the stream's, not the record's");
    let mut bad = request(5, "pending", "s", 10);
    bad.id = "apr-XYZ".into();
    assert!(ship(s, acme.id, "web-2", &[record("requested", &bad, 10)]).await.is_empty());
    assert_eq!(s.count_decisions(acme.id, Some("web-2")).await.unwrap(), 3, "every record is stored as a decision");
    assert_eq!(state(s, acme.id, 2).await, "expired");

    // Another org's request with the same id is its own.
    let beta = s.create_org("beta").await.unwrap();
    ship(s, beta.id, "web-1", &[record("requested", &request(1, "pending", "b", 1), 1)]).await;
    assert_eq!(state(s, beta.id, 1).await, "pending");
    assert_eq!(state(s, acme.id, 1).await, "approved");
}

async fn of_two_racing_approvers_exactly_one_wins(ctx: &Ctx) {
    let s = &ctx.store;
    // A second handle, as a second replica would have: its own connection (pool).
    let other = ctx.reopen().await.expect("a second handle on the store");
    let acme = s.create_org("acme").await.unwrap();
    s.enroll_host(acme.id, "web-1", "serial", 1).await.unwrap();
    let races = 12u64;
    ship(s, acme.id, "web-1", &(1..=races).map(|n| record("requested", &request(n, "pending", "s1", n as i64), n as i64)).collect::<Vec<_>>()).await;
    let now = airlock_now();
    for n in 1..=races {
        let rid = id(n);
        let (a, b) = (verdict(true, "gateway token alice", now), verdict(n % 2 == 0, "gateway token bob", now + 1));
        let (first, second) = if n % 3 == 0 {
            tokio::join!(decide(s, acme.id, &rid, &a), decide(s, acme.id, &rid, &b))
        } else {
            tokio::join!(decide(s, acme.id, &rid, &a), decide(&other, acme.id, &rid, &b))
        };
        let (winner, loser) = match (first, second) {
            (Ok(w), Err(l)) => (w, l),
            (Err(l), Ok(w)) => (w, l),
            (a, b) => panic!("request {n}: exactly one decide must succeed: {a:?} / {b:?}"),
        };
        assert_eq!((winner.delivery.as_str(), winner.state.as_str()), (DELIVERY_DELIVERING, "pending"));
        assert!(winner.command_id > 0, "the verdict's command is linked");
        let message = match loser {
            StoreError::Refused(m) => m,
            other => panic!("the loser: expected Refused, got {other:?}"),
        };
        assert!(message.contains("already decided") && message.contains(&winner.decided_by) && message.contains(&id(n)), "{message}");
        let command = s.command(winner.command_id).await.unwrap().expect("the command");
        assert_eq!((command.kind.as_str(), command.state.as_str(), command.host_id.as_str()), (KIND, COMMAND_PENDING, "web-1"));
        assert_eq!(command.payload, payload(&id(n)));
    }
    let queued = s.take_pending_commands(acme.id, "web-1", now).await.unwrap();
    assert_eq!(queued.len() as u64, races, "one command per request, none for a loser");
}

async fn a_decided_expired_or_unknown_request_is_refused_by_name(ctx: &Ctx) {
    let s = &ctx.store;
    let acme = s.create_org("acme").await.unwrap();
    s.create_org("beta").await.unwrap();
    s.enroll_host(acme.id, "web-1", "serial", 1).await.unwrap();
    let now = airlock_now();
    let open = request(1, "pending", "s1", 1);
    let done = decided(open.clone(), "approved", "uid 0 (root) via api socket", now - 5);
    let mut stale = request(2, "pending", "s1", 2);
    stale.expires_unix_nanos = now - 1;
    let gone = decided(request(3, "pending", "s1", 3), "expired", "expiry", now - 2);
    ship(s, acme.id, "web-1", &[record("approved", &done, 10), record("requested", &stale, 2), record("expired", &gone, 20)]).await;

    let refused = |r: Result<_, StoreError>| match r {
        Err(StoreError::Refused(m)) => m,
        other => panic!("expected Refused, got {other:?}"),
    };
    let m = refused(decide(s, acme.id, &id(1), &verdict(false, "gateway token bob", now)).await);
    assert!(m.contains(&format!("request {} was already decided: approved by uid 0 (root) via api socket at ", id(1))), "{m}");
    let m = refused(decide(s, acme.id, &id(2), &verdict(true, "gateway token bob", now)).await);
    assert!(m.contains(&format!("request {} is expired", id(2))), "{m}");
    let m = refused(decide(s, acme.id, &id(3), &verdict(true, "gateway token bob", now)).await);
    assert!(m.contains(&format!("request {} is expired", id(3))), "{m}");
    match decide(s, acme.id, &id(9), &verdict(true, "gateway token bob", now)).await {
        Err(StoreError::NotFound(m)) => {
            assert_eq!(m, format!("no approval request {} in org acme", id(9)))
        }
        other => panic!("expected NotFound, got {other:?}"),
    }
    let beta = s.org_by_name("beta").await.unwrap().unwrap();
    assert!(matches!(decide(s, beta.id, &id(1), &verdict(true, "x", now)).await, Err(StoreError::NotFound(_))), "another org's request");
    assert!(s.take_pending_commands(acme.id, "web-1", now).await.unwrap().is_empty(), "no command for a refused verdict");

    // Every attempt is kept, refused ones too.
    for (caller, outcome) in [("gateway token viewer-1 (viewer)", "refused: this needs the approver role"), ("gateway token bob (approver)", "decided")] {
        let attempt = ApprovalAttempt {
            org_id: acme.id,
            request_id: id(1),
            caller: caller.into(),
            action: "approve".into(),
            reason: String::new(),
            outcome: outcome.into(),
            at_ns: now,
        };
        s.record_approval_attempt(&attempt).await.unwrap();
    }
    let attempts = s.approval_attempts(acme.id, &id(1)).await.unwrap();
    assert_eq!(attempts.iter().map(|a| a.caller.as_str()).collect::<Vec<_>>(), ["gateway token viewer-1 (viewer)", "gateway token bob (approver)"]);
    assert!(s.approval_attempts(beta.id, &id(1)).await.unwrap().is_empty());
}

async fn the_delivery_follows_the_hosts_answer(ctx: &Ctx) {
    let s = &ctx.store;
    let acme = s.create_org("acme").await.unwrap();
    s.enroll_host(acme.id, "web-1", "serial", 1).await.unwrap();
    let now = airlock_now();
    let requests: Vec<ApprovalRequest> = (1..=4).map(|n| request(n, "pending", "s1", n as i64)).collect();
    ship(s, acme.id, "web-1", &requests.iter().map(|r| record("requested", r, r.created_unix_nanos)).collect::<Vec<_>>()).await;
    let by = "gateway token alice";
    let mut commands = Vec::new();
    for n in 1..=4 {
        commands.push(decide(s, acme.id, &id(n), &verdict(n != 2, by, now)).await.unwrap().command_id);
    }

    // 1: the host's answer carries the request it approved.
    let answer = decided(requests[0].clone(), "approved", by, now + 1);
    let answered = s.approval_command_answered(acme.id, "web-1", commands[0], Ok(&answer), now + 2).await.unwrap().expect("the row");
    assert!(answered.merged, "the answer is the first news of the approval");
    let row = answered.approval;
    assert_eq!((row.state.as_str(), row.delivery.as_str()), ("approved", DELIVERY_DELIVERED));
    assert!(s.approval_command_answered(acme.id, "web-2", commands[0], Err("x"), now).await.unwrap().is_none(), "another host's command");
    // The same approval shipped as a decision afterwards changes nothing.
    assert!(ship(s, acme.id, "web-1", &[record("approved", &answer, now + 1)]).await.is_empty());

    // 2: the host refused it.
    let error = format!("request {} is not pending: expired", id(2));
    let answered = s.approval_command_answered(acme.id, "web-1", commands[1], Err(&error), now).await.unwrap().unwrap();
    assert!(!answered.merged);
    let row = answered.approval;
    assert_eq!(row.delivery, format!("failed: request {} is not pending: expired", id(2)));
    // While the host still reports it pending, a verdict that failed may be given again (once).
    let retry = verdict(true, "gateway token carol", now + 5);
    let second = id(2);
    let (a, b) = tokio::join!(decide(s, acme.id, &second, &retry), decide(s, acme.id, &second, &retry));
    let again = match (a, b) {
        (Ok(w), Err(StoreError::Refused(_))) | (Err(StoreError::Refused(_)), Ok(w)) => w,
        other => panic!("exactly one retry wins: {other:?}"),
    };
    assert_eq!((again.delivery.as_str(), again.decided_by.as_str(), again.gateway_verdict.as_str()), (DELIVERY_DELIVERING, "gateway token carol", "approve"));
    assert!(again.command_id > commands[1], "a new command");

    // 3: the answer was lost, but the host's shipped decision shows the verdict applied.
    ship(s, acme.id, "web-1", &[record("approved", &decided(requests[2].clone(), "approved", by, now + 3), now + 3)]).await;
    let row = s.approval(acme.id, &id(3)).await.unwrap().unwrap();
    assert_eq!((row.state.as_str(), row.delivery.as_str()), ("approved", DELIVERY_DELIVERED));

    // 4: the host expired it before the verdict reached it.
    ship(s, acme.id, "web-1", &[record("expired", &decided(requests[3].clone(), "expired", "expiry", now + 4), now + 4)]).await;
    let row = s.approval(acme.id, &id(4)).await.unwrap().unwrap();
    assert_eq!((row.state.as_str(), row.delivery.as_str()), ("expired", "failed: the host decided first: expired"));
    assert_eq!((row.gateway_verdict.as_str(), row.decided_by.as_str()), ("approve", by), "the verdict given here stays recorded");
}

async fn lists_filter_by_state_host_and_session_newest_first(ctx: &Ctx) {
    let s = &ctx.store;
    let acme = s.create_org("acme").await.unwrap();
    let beta = s.create_org("beta").await.unwrap();
    for h in ["web-1", "web-2"] {
        s.enroll_host(acme.id, h, "serial", 1).await.unwrap();
    }
    // n: host web-1 for odd n, session s(n % 3), approved when n % 4 == 0.
    for n in 1..=12u64 {
        let host = if n % 2 == 1 { "web-1" } else { "web-2" };
        let r = request(n, "pending", &format!("s{}", n % 3), n as i64 * 10);
        let mut records = vec![record("requested", &r, n as i64 * 10)];
        if n % 4 == 0 {
            records.push(record("approved", &decided(r, "approved", "root", 1), n as i64 * 10 + 1));
        }
        ship(s, acme.id, host, &records).await;
    }
    ship(s, beta.id, "web-1", &[record("requested", &request(99, "pending", "s0", 1), 1)]).await;

    let ids = |list: Vec<airlock_gateway_store::Approval>| list.into_iter().map(|a| a.request_id).collect::<Vec<_>>();
    let ns = |v: &[u64]| v.iter().map(|n| id(*n)).collect::<Vec<_>>();
    let all = ids(s.list_approvals(acme.id, &ApprovalQuery::default()).await.unwrap());
    assert_eq!(all, ns(&[12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1]), "newest first, this org only");
    let q = |state: &str, host: &str, session: &str, limit: u32| ApprovalQuery { state: state.into(), host: host.into(), session_id: session.into(), limit };
    assert_eq!(ids(s.list_approvals(acme.id, &q("approved", "", "", 0)).await.unwrap()), ns(&[12, 8, 4]));
    assert_eq!(ids(s.list_approvals(acme.id, &q("pending", "web-1", "", 0)).await.unwrap()), ns(&[11, 9, 7, 5, 3, 1]));
    assert_eq!(ids(s.list_approvals(acme.id, &q("", "web-2", "s0", 0)).await.unwrap()), ns(&[12, 6]));
    assert_eq!(ids(s.list_approvals(acme.id, &q("", "", "s1", 2)).await.unwrap()), ns(&[10, 7]));
    assert!(s.list_approvals(acme.id, &q("expired", "", "", 0)).await.unwrap().is_empty());
    assert_eq!(ids(s.list_approvals(beta.id, &ApprovalQuery::default()).await.unwrap()), ns(&[99]));
}

fn airlock_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}
