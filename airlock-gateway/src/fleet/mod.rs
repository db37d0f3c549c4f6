//! The fleet API platform teams use (`airlock.gateway.v1.Fleet`): orgs and
//! tokens, hosts and their rollout status, policy versions, the fleet's
//! decisions and sessions, revocation on any host, approval requests, and
//! security monitoring (findings, blocks, detector settings), and the web
//! UI's users. Every call is made by an API token in one org, and sees that
//! org only.

pub mod approvals;
mod decisions;
pub mod policy;
mod policy_calls;
pub mod security;
pub mod simulate;
pub mod tokens;
pub mod users;

use std::sync::Arc;
use std::time::Duration;

use airlock_api::gateway::v1::fleet_server::Fleet;
use airlock_api::gateway::v1::*;
use airlock_gateway_store::NewToken;
use prost::Message;
use tonic::{Request, Response, Status};

use crate::auth::{store_status, Caller};
use crate::hub::{Hub, REVOKE_SESSION};
use crate::tokens::{Role, TokenKind};

/// How long RevokeSession waits for the host's agent to answer.
const REVOKE_WAIT: Duration = Duration::from_secs(30);
/// A host whose last contact is older than this is shown as disconnected.
const CONNECTED_WITHIN_NS: i64 = 30_000_000_000;
/// A join token lasts this long unless told otherwise.
const DEFAULT_JOIN_TTL_SECS: i64 = 24 * 3600;

pub struct FleetService {
    pub hub: Arc<Hub>,
}

impl FleetService {
    async fn caller<T>(&self, request: &Request<T>, needed: Role) -> Result<Caller, Status> {
        let caller = Caller::of(&self.hub.store, request).await?;
        caller.require(needed)?;
        Ok(caller)
    }
}

#[tonic::async_trait]
impl Fleet for FleetService {
    type StreamDecisionsStream = decisions::DecisionTail;

    async fn who_am_i(&self, request: Request<WhoAmIRequest>) -> Result<Response<WhoAmIResponse>, Status> {
        let caller = self.caller(&request, Role::Viewer).await?;
        Ok(Response::new(WhoAmIResponse { org: caller.org, role: caller.role.to_string(), label: caller.label }))
    }

    async fn create_org(&self, request: Request<CreateOrgRequest>) -> Result<Response<Org>, Status> {
        let caller = self.caller(&request, Role::Admin).await?;
        if !caller.administers_installation() {
            return Err(Status::permission_denied(format!("only an admin of the {:?} org makes orgs", crate::auth::DEFAULT_ORG)));
        }
        let name = request.into_inner().name;
        check_org_name(&name).map_err(Status::invalid_argument)?;
        let org = self.hub.store.create_org(&name).await.map_err(store_status)?;
        tracing::info!(org = %org.name, by = %caller.label, "org created");
        Ok(Response::new(Org { name: org.name, created_unix_nanos: org.created_ns }))
    }

    async fn list_orgs(&self, request: Request<ListOrgsRequest>) -> Result<Response<ListOrgsResponse>, Status> {
        let caller = self.caller(&request, Role::Viewer).await?;
        let orgs = if caller.administers_installation() {
            self.hub.store.list_orgs().await.map_err(store_status)?
        } else {
            self.hub.store.org_by_name(&caller.org).await.map_err(store_status)?.into_iter().collect()
        };
        Ok(Response::new(ListOrgsResponse { orgs: orgs.into_iter().map(|o| Org { name: o.name, created_unix_nanos: o.created_ns }).collect() }))
    }

    async fn create_token(&self, request: Request<CreateTokenRequest>) -> Result<Response<CreateTokenResponse>, Status> {
        let caller = self.caller(&request, Role::Admin).await?;
        let ask = request.into_inner();
        let org = caller.scope(&self.hub.store, &ask.org).await?;
        let now = crate::now_ns();
        let (kind, role, uses, expires) = if ask.join {
            let ttl = if ask.ttl_seconds > 0 { ask.ttl_seconds } else { DEFAULT_JOIN_TTL_SECS };
            let uses = if ask.uses == 0 { -1 } else { i64::from(ask.uses) };
            (TokenKind::Join, String::new(), uses, now.saturating_add(ttl.saturating_mul(1_000_000_000)))
        } else {
            let role = Role::parse(if ask.role.is_empty() { "viewer" } else { &ask.role }).map_err(|e| Status::invalid_argument(e.to_string()))?;
            (TokenKind::Api, role.to_string(), -1, 0)
        };
        let secret = crate::tokens::generate(kind).map_err(|e| Status::internal(format!("{e:#}")))?;
        let token = NewToken {
            org_id: org.id,
            kind: if ask.join { "join".into() } else { "api".into() },
            role: role.clone(),
            secret_hash: crate::tokens::hash(&secret),
            label: if ask.label.is_empty() { format!("made by {}", caller.label) } else { ask.label },
            uses_left: uses,
            expires_ns: expires,
            created_ns: now,
        };
        self.hub.store.insert_token(&token).await.map_err(store_status)?;
        tracing::info!(org = %org.name, join = ask.join, role = %role, by = %caller.label, "token created");
        Ok(Response::new(CreateTokenResponse {
            token: secret,
            org: org.name,
            role,
            join: ask.join,
            expires_unix_nanos: expires,
            uses: ask.uses,
        }))
    }

    async fn list_hosts(&self, request: Request<ListHostsRequest>) -> Result<Response<ListHostsResponse>, Status> {
        let caller = self.caller(&request, Role::Viewer).await?;
        let org = caller.scope(&self.hub.store, &request.get_ref().org).await?;
        let latest = self.hub.store.policy_version(org.id, None).await.map_err(store_status)?.map(|v| v.version).unwrap_or(0);
        let now = crate::now_ns();
        let hosts = self.hub.store.list_hosts(org.id).await.map_err(store_status)?;
        Ok(Response::new(ListHostsResponse { hosts: hosts.into_iter().map(|h| host_message(&org.name, h, latest, now)).collect() }))
    }

    async fn revoke_host(&self, request: Request<RevokeHostRequest>) -> Result<Response<Host>, Status> {
        let caller = self.caller(&request, Role::Admin).await?;
        let ask = request.into_inner();
        let org = caller.scope(&self.hub.store, &ask.org).await?;
        if !self.hub.store.revoke_host(org.id, &ask.host_id).await.map_err(store_status)? {
            return Err(Status::not_found(format!("host {:?} not found", ask.host_id)));
        }
        self.hub.kick(&(org.id, ask.host_id.clone()));
        tracing::warn!(org = %org.name, host = %ask.host_id, by = %caller.label, "host revoked: its certificate is refused from now on");
        let host = self.hub.store.host(org.id, &ask.host_id).await.map_err(store_status)?.ok_or_else(|| Status::not_found("host vanished"))?;
        Ok(Response::new(host_message(&org.name, host, 0, crate::now_ns())))
    }

    async fn push_policy(&self, request: Request<PushPolicyRequest>) -> Result<Response<PolicyVersion>, Status> {
        let caller = self.caller(&request, Role::Admin).await?;
        policy_calls::push(&self.hub, &caller, request.into_inner()).await.map(Response::new)
    }

    async fn policy_history(&self, request: Request<PolicyHistoryRequest>) -> Result<Response<PolicyHistoryResponse>, Status> {
        let caller = self.caller(&request, Role::Viewer).await?;
        policy_calls::history(&self.hub, &caller, request.into_inner()).await.map(Response::new)
    }

    async fn get_policy(&self, request: Request<GetPolicyRequest>) -> Result<Response<PolicyVersion>, Status> {
        let caller = self.caller(&request, Role::Viewer).await?;
        policy_calls::get(&self.hub, &caller, request.into_inner()).await.map(Response::new)
    }

    async fn rollback_policy(&self, request: Request<RollbackPolicyRequest>) -> Result<Response<PolicyVersion>, Status> {
        let caller = self.caller(&request, Role::Admin).await?;
        policy_calls::rollback(&self.hub, &caller, request.into_inner()).await.map(Response::new)
    }

    async fn simulate_policy(&self, request: Request<SimulatePolicyRequest>) -> Result<Response<SimulatePolicyResponse>, Status> {
        let caller = self.caller(&request, Role::Viewer).await?;
        simulate::simulate(&self.hub, &caller, request.into_inner()).await.map(Response::new)
    }

    async fn query_decisions(&self, request: Request<QueryDecisionsRequest>) -> Result<Response<QueryDecisionsResponse>, Status> {
        let caller = self.caller(&request, Role::Viewer).await?;
        decisions::query(&self.hub, &caller, request.into_inner()).await.map(Response::new)
    }

    async fn stream_decisions(&self, request: Request<StreamDecisionsRequest>) -> Result<Response<Self::StreamDecisionsStream>, Status> {
        let caller = self.caller(&request, Role::Viewer).await?;
        decisions::tail(self.hub.clone(), &caller, request.into_inner()).await.map(Response::new)
    }

    async fn list_sessions(&self, request: Request<ListSessionsRequest>) -> Result<Response<ListSessionsResponse>, Status> {
        let caller = self.caller(&request, Role::Viewer).await?;
        let ask = request.into_inner();
        let org = caller.scope(&self.hub.store, &ask.org).await?;
        let state = airlock_api::v1::SessionState::try_from(ask.state).unwrap_or(airlock_api::v1::SessionState::Unspecified);
        let rows = self.hub.store.list_sessions(org.id, ask.host.trim(), state).await.map_err(store_status)?;
        Ok(Response::new(ListSessionsResponse { sessions: rows.into_iter().map(|(host, session)| FleetSession { host, session: Some(session) }).collect() }))
    }

    async fn revoke_session(&self, request: Request<RevokeSessionRequest>) -> Result<Response<RevokeSessionResponse>, Status> {
        let caller = self.caller(&request, Role::Approver).await?;
        let ask = request.into_inner();
        let org = caller.scope(&self.hub.store, &ask.org).await?;
        let store = &self.hub.store;
        let host = store.host(org.id, &ask.host).await.map_err(store_status)?.ok_or_else(|| Status::not_found(format!("host {:?} not found", ask.host)))?;
        if host.revoked {
            return Err(Status::failed_precondition(format!("host {:?} is revoked: it no longer connects", ask.host)));
        }
        let reason = if ask.reason.trim().is_empty() { "revoked through the gateway".to_string() } else { ask.reason.clone() };
        let payload = airlock_api::v1::RevokeSessionRequest { id: ask.session_id.clone(), reason: format!("{reason} (by {} through the gateway)", caller.label) };
        let id = store.insert_command(org.id, &ask.host, REVOKE_SESSION, &payload.encode_to_vec(), crate::now_ns()).await.map_err(store_status)?;
        self.hub.queued_command();
        let deadline = tokio::time::Instant::now() + REVOKE_WAIT;
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let command = store.command(id).await.map_err(store_status)?.ok_or_else(|| Status::internal("the queued command vanished"))?;
            match command.state.as_str() {
                "done" => {
                    let result = airlock_api::v1::RevokeSessionResponse::decode(command.result.as_slice())
                        .map_err(|e| Status::internal(format!("the agent's answer: {e}")))?;
                    tracing::warn!(org = %org.name, host = %ask.host, session = %ask.session_id, by = %caller.label, "session revoked through the gateway");
                    return Ok(Response::new(RevokeSessionResponse { host: ask.host, result: Some(result) }));
                }
                "failed" => return Err(Status::failed_precondition(format!("host {:?}: {}", ask.host, command.error))),
                _ if tokio::time::Instant::now() >= deadline => {
                    let error = format!("host {:?} did not answer within {} s (is it connected?); the request was withdrawn", ask.host, REVOKE_WAIT.as_secs());
                    store.finish_command(id, &[], &error, crate::now_ns()).await.map_err(store_status)?;
                    return Err(Status::deadline_exceeded(error));
                }
                _ => {}
            }
        }
    }

    async fn list_approvals(&self, request: Request<ListFleetApprovalsRequest>) -> Result<Response<ListFleetApprovalsResponse>, Status> {
        let caller = self.caller(&request, Role::Viewer).await?;
        approvals::list(&self.hub, &caller, request.into_inner()).await.map(Response::new)
    }

    async fn get_approval(&self, request: Request<GetFleetApprovalRequest>) -> Result<Response<FleetApproval>, Status> {
        let caller = self.caller(&request, Role::Viewer).await?;
        approvals::get(&self.hub, &caller, request.into_inner()).await.map(Response::new)
    }

    async fn decide_approval(&self, request: Request<DecideFleetApprovalRequest>) -> Result<Response<FleetApproval>, Status> {
        // Viewer here: a refusal for want of the approver role is recorded
        // in the request's audit trail, so the role is checked inside.
        let caller = self.caller(&request, Role::Viewer).await?;
        approvals::decide(&self.hub, &caller, request.into_inner()).await.map(Response::new)
    }

    async fn wait_approval(&self, request: Request<WaitFleetApprovalRequest>) -> Result<Response<FleetApproval>, Status> {
        let caller = self.caller(&request, Role::Viewer).await?;
        approvals::wait(&self.hub, &caller, request.into_inner()).await.map(Response::new)
    }

    async fn list_findings(&self, request: Request<ListFleetFindingsRequest>) -> Result<Response<airlock_api::v1::ListFindingsResponse>, Status> {
        let caller = self.caller(&request, Role::Viewer).await?;
        security::list_findings(&self.hub, &caller, request.into_inner()).await.map(Response::new)
    }

    async fn list_blocks(&self, request: Request<ListFleetBlocksRequest>) -> Result<Response<airlock_api::v1::ListBlocksResponse>, Status> {
        let caller = self.caller(&request, Role::Viewer).await?;
        security::list_blocks(&self.hub, &caller, request.into_inner()).await.map(Response::new)
    }

    async fn acknowledge_block(&self, request: Request<FleetBlockActionRequest>) -> Result<Response<airlock_api::v1::SecurityBlock>, Status> {
        let caller = self.caller(&request, Role::Approver).await?;
        security::acknowledge(&self.hub, &caller, request.into_inner()).await.map(Response::new)
    }

    async fn lift_block(&self, request: Request<FleetBlockActionRequest>) -> Result<Response<airlock_api::v1::SecurityBlock>, Status> {
        let caller = self.caller(&request, Role::Admin).await?;
        security::lift(&self.hub, &caller, request.into_inner()).await.map(Response::new)
    }

    async fn get_security_settings(&self, request: Request<GetSecuritySettingsRequest>) -> Result<Response<SecuritySettingsVersion>, Status> {
        let caller = self.caller(&request, Role::Viewer).await?;
        security::get_settings(&self.hub, &caller, request.into_inner()).await.map(Response::new)
    }

    async fn set_security_settings(&self, request: Request<SetSecuritySettingsRequest>) -> Result<Response<SecuritySettingsVersion>, Status> {
        let caller = self.caller(&request, Role::Admin).await?;
        security::set_settings(&self.hub, &caller, request.into_inner()).await.map(Response::new)
    }

    async fn security_settings_history(&self, request: Request<SecuritySettingsHistoryRequest>) -> Result<Response<SecuritySettingsHistoryResponse>, Status> {
        let caller = self.caller(&request, Role::Viewer).await?;
        security::history(&self.hub, &caller, request.into_inner()).await.map(Response::new)
    }

    // The role checks of these are inside each function, which the web UI calls too.
    async fn create_user(&self, request: Request<CreateUserRequest>) -> Result<Response<User>, Status> {
        let caller = Caller::of(&self.hub.store, &request).await?;
        users::create(&self.hub, &caller, request.into_inner()).await.map(Response::new)
    }

    async fn list_users(&self, request: Request<ListUsersRequest>) -> Result<Response<ListUsersResponse>, Status> {
        let caller = Caller::of(&self.hub.store, &request).await?;
        users::list(&self.hub, &caller, request.into_inner()).await.map(Response::new)
    }

    async fn update_user(&self, request: Request<UpdateUserRequest>) -> Result<Response<User>, Status> {
        let caller = Caller::of(&self.hub.store, &request).await?;
        users::update(&self.hub, &caller, request.into_inner()).await.map(Response::new)
    }

    async fn list_tokens(&self, request: Request<ListTokensRequest>) -> Result<Response<ListTokensResponse>, Status> {
        let caller = Caller::of(&self.hub.store, &request).await?;
        tokens::list(&self.hub, &caller, request.into_inner()).await.map(Response::new)
    }

    async fn revoke_token(&self, request: Request<RevokeTokenRequest>) -> Result<Response<TokenInfo>, Status> {
        let caller = Caller::of(&self.hub.store, &request).await?;
        tokens::revoke(&self.hub, &caller, request.into_inner()).await.map(Response::new)
    }
}

fn host_message(org: &str, h: airlock_gateway_store::Host, latest: i64, now: i64) -> Host {
    Host {
        org: org.to_string(),
        connected: !h.revoked && !h.connected_replica.is_empty() && now - h.last_contact_ns < CONNECTED_WITHIN_NS,
        host_id: h.host_id,
        revoked: h.revoked,
        enrolled_unix_nanos: h.enrolled_ns,
        last_contact_unix_nanos: h.last_contact_ns,
        backend: h.backend,
        kernel: h.kernel,
        agent_version: h.agent_version,
        enforced_version: h.enforced_version.max(0) as u64,
        enforced_hash: h.enforced_hash,
        policy_error: h.policy_error,
        shipped_seq: h.shipped_seq.max(0) as u64,
        lost: h.lost_total.max(0) as u64,
        latest_version: latest.max(0) as u64,
    }
}

/// Org names appear in certificates and URLs: a plain lowercase name.
pub fn check_org_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 63 {
        return Err(format!("org name {name:?}: 1 to 63 characters"));
    }
    if !name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-') || name.starts_with('-') {
        return Err(format!("org name {name:?}: lowercase letters, digits and '-', not starting with '-'"));
    }
    Ok(())
}
