//! Policy dry run: the org's stored exec and connect decisions replayed
//! against a candidate policy, through the same compiled tables the kernel
//! is loaded from (`airlock_policy::matcher::TableMatcher` walks them the way
//! the BPF programs do). The answer says what would newly be denied or
//! allowed, grouped by rule and host.
//!
//! What a replay cannot see: hostname rules (their addresses are resolved on
//! each host at the time), Unix socket and protected-file decisions (not exec
//! or connect), and exec denials by file identity (content fingerprints are
//! not in the record). Those decisions are replayed by name and address only.

use std::collections::HashMap;
use std::net::IpAddr;

use airlock_api::decision::{CONNECT_KINDS, DENY, EXEC};
use airlock_api::gateway::v1::{SimulatePolicyRequest, SimulatePolicyResponse, SimulationChange};
use airlock_api::v1::decision::Detail;
use airlock_api::v1::{Decision, DecisionFilter, DecisionKind};
use airlock_gateway_store::FleetQuery;
use airlock_policy::matcher::{EgressInput, ExecInput, TableMatcher};
use airlock_policy::{CompiledPolicy, IdAllocator};
use prost::Message;
use tonic::Status;

use super::policy;
use crate::tokens::Role;
use crate::auth::{store_status, Caller};
use crate::hub::Hub;

/// Replays at most this many decisions of each kind (newest first).
const MAX_REPLAYED: usize = 500_000;
const PAGE: u32 = 1000;
const DEFAULT_WINDOW_NS: i64 = 7 * 24 * 3600 * 1_000_000_000;

pub async fn simulate(hub: &Hub, caller: &Caller, ask: SimulatePolicyRequest) -> Result<SimulatePolicyResponse, Status> {
    caller.require(Role::Viewer)?;
    let org = caller.scope(&hub.store, &ask.org).await?;
    let loaded = policy::validate(&ask.files).map_err(|e| Status::invalid_argument(format!("the candidate policy set is invalid:\n{e}")))?;
    let compiled = airlock_policy::compile(&loaded, &mut IdAllocator::new());
    let matcher = TableMatcher::new(&compiled);
    let since = if ask.since_unix_nanos > 0 { ask.since_unix_nanos } else { crate::now_ns() - DEFAULT_WINDOW_NS };
    let mut replay = Replay { compiled: &compiled, matcher: &matcher, groups: HashMap::new(), out: SimulatePolicyResponse { content_hash: compiled.version.clone(), ..Default::default() } };
    for kind in [DecisionKind::Exec, DecisionKind::Connect] {
        let filter = DecisionFilter { kind: kind as i32, since_unix_nanos: since, ..Default::default() };
        let mut before = 0;
        let mut seen = 0usize;
        loop {
            let q = FleetQuery { filter: filter.clone(), host: String::new(), before_cursor: before, after_cursor: 0, limit: PAGE, oldest_first: false };
            let rows = hub.store.query_decisions(org.id, &q).await.map_err(store_status)?;
            let done = (rows.len() as u32) < PAGE;
            for row in rows {
                before = row.cursor;
                seen += 1;
                if let Ok(decision) = Decision::decode(row.body.as_slice()) {
                    replay.one(&row.host_id, &decision);
                }
            }
            if done || seen >= MAX_REPLAYED {
                break;
            }
        }
    }
    let mut changes: Vec<SimulationChange> = replay.groups.into_values().collect();
    changes.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| (&a.change, &a.rule, &a.host).cmp(&(&b.change, &b.rule, &b.host))));
    let mut out = replay.out;
    out.changes = changes;
    Ok(out)
}

struct Replay<'a> {
    compiled: &'a CompiledPolicy,
    matcher: &'a TableMatcher,
    groups: HashMap<(String, String, String, String), SimulationChange>,
    out: SimulatePolicyResponse,
}

/// The candidate's verdict: denied, and by which policy and rule.
type Verdict = Option<(String, String)>;

impl Replay<'_> {
    fn one(&mut self, host: &str, d: &Decision) {
        let Some(role) = self.compiled.role(&d.role) else {
            return;
        };
        let candidate: Verdict = if d.kind == EXEC {
            let input = exec_input(d);
            match self.matcher.match_exec(role.set_id, &input) {
                airlock_policy::matcher::Decision::Allow => None,
                airlock_policy::matcher::Decision::Deny { rule_id, .. } => Some(self.rule(rule_id)),
            }
        } else if CONNECT_KINDS.contains(&d.kind.as_str()) {
            let Some(Detail::Destination(dest)) = &d.detail else {
                return;
            };
            let Ok(addr) = dest.address.parse::<IpAddr>() else {
                return;
            };
            let decision = self.matcher.match_egress(role.set_id, &EgressInput::new(addr, dest.port as u16));
            match decision {
                airlock_policy::matcher::EgressDecision::Deny { rule_id } => Some(self.rule(rule_id)),
                airlock_policy::matcher::EgressDecision::DefaultDeny => Some((String::new(), format!("role {}: egress_default deny", d.role))),
                _ => None,
            }
        } else {
            return;
        };
        self.out.examined += 1;
        let was_denied = d.decision == DENY;
        let (change, policy, rule) = match (&candidate, was_denied) {
            (Some((policy, rule)), false) => {
                self.out.newly_denied += 1;
                ("newly_denied", policy.clone(), rule.clone())
            }
            (None, true) => {
                self.out.newly_allowed += 1;
                ("newly_allowed", d.policy.clone().unwrap_or_default(), d.rule.clone().unwrap_or_default())
            }
            _ => {
                self.out.unchanged += 1;
                return;
            }
        };
        let key = (change.to_string(), policy.clone(), rule.clone(), host.to_string());
        let entry = self.groups.entry(key).or_insert_with(|| SimulationChange {
            change: change.into(),
            policy,
            rule,
            host: host.into(),
            count: 0,
            example: airlock_api::decision::subject_of(d),
        });
        entry.count += 1;
    }

    fn rule(&self, rule_id: u32) -> (String, String) {
        match self.compiled.rule(rule_id) {
            Some(r) => (r.policy_id.clone(), r.kind.text().to_string()),
            None => (String::new(), format!("rule {rule_id}")),
        }
    }
}

/// The exec as the kernel saw it: the executed file's name, argv, and the
/// script when the file run was a `#!` script.
fn exec_input(d: &Decision) -> ExecInput {
    let basename = |p: &str| p.rsplit('/').next().unwrap_or(p).to_string();
    let argv: Vec<&str> = d.argv.iter().map(String::as_str).collect();
    let mut input = ExecInput::new(&basename(&d.executable), &argv);
    if let Some(Detail::Exec(exec)) = &d.detail {
        if !exec.filename.is_empty() && basename(&exec.filename) != basename(&d.executable) {
            input = input.with_script(&exec.filename);
        }
    }
    input
}
