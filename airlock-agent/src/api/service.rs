//! The `airlock.v1.Airlock` service: each call is a thin translation to the
//! agent's operations ([`AgentOps`]).

use std::sync::Arc;

use airlock_api::decision::matches;
use airlock_api::v1 as pb;
use airlock_api::v1::airlock_server::Airlock;
use airlock_store::{DEFAULT_PAGE, MAX_PAGE};
use tokio::sync::broadcast::error::RecvError;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::UdsConnectInfo;
use tonic::{Request, Response, Status};

use super::convert;
use crate::approvals::{self, ApprovalError, DecideError, Decider, Verdict};
use crate::security;
use super::ops::{AgentOps, RevokeError};

#[derive(Clone)]
pub struct ApiService {
    agent: Arc<dyn AgentOps>,
}

impl ApiService {
    pub fn new(agent: Arc<dyn AgentOps>) -> Self {
        ApiService { agent }
    }

    /// Runs agent work (locks, map syscalls, SQLite) off the async thread.
    async fn blocking<T: Send + 'static>(&self, f: impl FnOnce(&dyn AgentOps) -> Result<T, Status> + Send + 'static) -> Result<T, Status> {
        let agent = self.agent.clone();
        tokio::task::spawn_blocking(move || f(agent.as_ref())).await.map_err(|e| Status::internal(format!("API worker failed: {e}")))?
    }
}

impl ApiService {
    async fn block_action(&self, req: Request<pb::BlockActionRequest>, lift: bool) -> Result<Response<pb::SecurityBlock>, Status> {
        let by = caller(&req);
        let pid = req.extensions().get::<UdsConnectInfo>().and_then(|i| i.peer_cred).and_then(|c| c.pid()).map(|p| p as u32);
        let ask = req.into_inner();
        let id = security::check_block_id(&ask.id).map_err(Status::invalid_argument)?.to_string();
        let block = self
            .blocking(move |a| {
                a.security_act(&id, lift, &by, pid, &ask.reason).map_err(|e| {
                    let text = format!("{e:#}");
                    if text.starts_with("no security block") {
                        Status::not_found(text)
                    } else if text.contains("governed process") {
                        Status::permission_denied(text)
                    } else {
                        Status::failed_precondition(text)
                    }
                })
            })
            .await?;
        Ok(Response::new(block))
    }
}

/// A list's `limit`: 0 is the default page, more than the largest is refused.
fn page_limit(limit: u32) -> Result<usize, Status> {
    match limit {
        0 => Ok(100),
        1..=1000 => Ok(limit as usize),
        _ => Err(Status::invalid_argument(format!("limit: {limit} is more than 1000"))),
    }
}

fn internal(e: anyhow::Error) -> Status {
    Status::internal(format!("{e:#}"))
}

/// Who is calling, for the record of a revocation.
fn caller<T>(req: &Request<T>) -> String {
    if let Some(info) = req.extensions().get::<UdsConnectInfo>() {
        if let Some(cred) = &info.peer_cred {
            let uid = cred.uid();
            let name = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)).ok().flatten().map(|u| u.name);
            return match name {
                Some(name) => format!("{name} (uid {uid}, API socket)"),
                None => format!("uid {uid} (API socket)"),
            };
        }
    }
    match (req.remote_addr(), req.peer_certs().is_some()) {
        (Some(addr), true) => format!("TLS client certificate from {addr}"),
        (Some(addr), false) => format!("plain TCP client {addr}"),
        (None, _) => "unknown caller".to_string(),
    }
}

#[tonic::async_trait]
impl Airlock for ApiService {
    async fn status(&self, _req: Request<pb::StatusRequest>) -> Result<Response<pb::StatusResponse>, Status> {
        let status = self.blocking(|a| a.status().map_err(internal)).await?;
        Ok(Response::new(status))
    }

    async fn list_sessions(&self, req: Request<pb::ListSessionsRequest>) -> Result<Response<pb::ListSessionsResponse>, Status> {
        let want = req.into_inner().state;
        let sessions = self
            .blocking(move |a| Ok(a.sessions().into_iter().filter(|x| want == 0 || x.state == want).collect::<Vec<_>>()))
            .await?;
        Ok(Response::new(pb::ListSessionsResponse { sessions }))
    }

    async fn get_session(&self, req: Request<pb::GetSessionRequest>) -> Result<Response<pb::Session>, Status> {
        let id = req.into_inner().id;
        let session = self
            .blocking(move |a| {
                a.sessions()
                    .into_iter()
                    .find(|x| x.id == id.trim())
                    .ok_or_else(|| Status::not_found(format!("no session {id:?}")))
            })
            .await?;
        Ok(Response::new(session))
    }

    async fn revoke_session(&self, req: Request<pb::RevokeSessionRequest>) -> Result<Response<pb::RevokeSessionResponse>, Status> {
        let by = caller(&req);
        let r = req.into_inner();
        let reason = if r.reason.trim().is_empty() { "revoked through the API".to_string() } else { r.reason };
        let outcome = self
            .blocking(move |a| match a.revoke(&r.id, &by, &reason) {
                Ok(o) => Ok(o),
                Err(RevokeError::NotFound) => Err(Status::not_found(format!("no session {:?}", r.id))),
                Err(RevokeError::Failed(e)) => Err(internal(e)),
            })
            .await?;
        Ok(Response::new(pb::RevokeSessionResponse {
            session: Some(convert::session_of(&outcome.session, outcome.remaining)),
            killed: outcome.killed,
            rounds: outcome.rounds,
        }))
    }

    async fn query_decisions(&self, req: Request<pb::QueryDecisionsRequest>) -> Result<Response<pb::QueryDecisionsResponse>, Status> {
        let r = req.into_inner();
        let before = if r.page_token.is_empty() {
            0
        } else {
            r.page_token.parse::<u64>().map_err(|_| Status::invalid_argument(format!("page_token {:?} is not one this API gave", r.page_token)))?
        };
        if r.page_size as usize > MAX_PAGE {
            return Err(Status::invalid_argument(format!("page_size {} is over the limit of {}", r.page_size, MAX_PAGE)));
        }
        let page = if r.page_size == 0 { DEFAULT_PAGE } else { r.page_size as usize };
        let filter = r.filter.unwrap_or_default();
        let (decisions, next) = self.blocking(move |a| a.query(&filter, before, page).map_err(internal)).await?;
        Ok(Response::new(pb::QueryDecisionsResponse { decisions, next_page_token: next.map(|n| n.to_string()).unwrap_or_default() }))
    }

    type StreamDecisionsStream = ReceiverStream<Result<pb::Decision, Status>>;

    async fn stream_decisions(&self, req: Request<pb::StreamDecisionsRequest>) -> Result<Response<Self::StreamDecisionsStream>, Status> {
        let filter = req.into_inner().filter.unwrap_or_default();
        let mut live = self.agent.subscribe();
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        tokio::spawn(async move {
            loop {
                match live.recv().await {
                    Ok(record) => {
                        if matches(&filter, &record.decision) && tx.send(Ok(record.decision.clone())).await.is_err() {
                            break; // the client went away
                        }
                    }
                    Err(RecvError::Lagged(n)) => {
                        // Never a silent gap: the client learns what it missed and can page it from the store.
                        let _ = tx
                            .send(Err(Status::data_loss(format!(
                                "the stream fell behind and skipped {n} decisions; QueryDecisions has them"
                            ))))
                            .await;
                        break;
                    }
                    Err(RecvError::Closed) => break,
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn get_effective_policy(&self, req: Request<pb::GetEffectivePolicyRequest>) -> Result<Response<pb::EffectivePolicy>, Status> {
        let role = req.into_inner().role;
        let policy = self
            .blocking(move |a| a.effective_policy(&role).map_err(|e| Status::not_found(format!("{e:#}"))))
            .await?;
        Ok(Response::new(policy))
    }

    async fn reload_policy(&self, _req: Request<pb::ReloadPolicyRequest>) -> Result<Response<pb::ReloadPolicyResponse>, Status> {
        let (version, generation) =
            self.blocking(|a| a.reload().map_err(|e| Status::failed_precondition(format!("{e:#}")))).await?;
        Ok(Response::new(pb::ReloadPolicyResponse { version, generation }))
    }

    async fn list_approvals(&self, req: Request<pb::ListApprovalsRequest>) -> Result<Response<pb::ListApprovalsResponse>, Status> {
        let ask = req.into_inner();
        let state = ask.state.trim().to_string();
        if !state.is_empty() && !approvals::STATES.contains(&state.as_str()) {
            return Err(Status::invalid_argument(format!("state {state:?}: one of {}", approvals::STATES.join(", "))));
        }
        let limit = if ask.limit == 0 { 100 } else { ask.limit.min(1000) } as usize;
        let requests = self.blocking(move |a| Ok(a.approvals(&state, ask.session_id.trim(), limit))).await?;
        Ok(Response::new(pb::ListApprovalsResponse { requests }))
    }

    async fn get_approval(&self, req: Request<pb::GetApprovalRequest>) -> Result<Response<pb::ApprovalRequest>, Status> {
        let id = request_id(&req.into_inner().id)?;
        Ok(Response::new(self.blocking(move |a| a.approval(&id).ok_or_else(|| not_found(&id))).await?))
    }

    async fn decide_approval(&self, req: Request<pb::DecideApprovalRequest>) -> Result<Response<pb::ApprovalRequest>, Status> {
        let decider = match req.extensions().get::<UdsConnectInfo>().and_then(|i| i.peer_cred).and_then(|c| c.pid()) {
            Some(pid) => Decider::Process { pid: pid as u32, label: caller(&req) },
            None => Decider::Remote { label: caller(&req) },
        };
        let ask = req.into_inner();
        let id = request_id(&ask.id)?;
        if !ask.approve && ask.grant_seconds > 0 {
            return Err(Status::invalid_argument("grant_seconds: only an approval grants anything"));
        }
        let verdict = Verdict {
            approve: ask.approve,
            grant_for: (ask.grant_seconds > 0).then(|| std::time::Duration::from_secs(ask.grant_seconds)),
            reason: ask.reason,
            decided_by: String::new(),
        };
        let request = self.blocking(move |a| a.decide_approval(&id, verdict, decider).map_err(approval_status)).await?;
        Ok(Response::new(request))
    }

    async fn wait_approval(&self, req: Request<pb::WaitApprovalRequest>) -> Result<Response<pb::ApprovalRequest>, Status> {
        let ask = req.into_inner();
        let id = request_id(&ask.id)?;
        let deadline = (ask.timeout_seconds > 0).then(|| tokio::time::Instant::now() + std::time::Duration::from_secs(ask.timeout_seconds));
        loop {
            let key = id.clone();
            let request = self.blocking(move |a| a.approval(&key).ok_or_else(|| not_found(&key))).await?;
            if request.state != approvals::PENDING || deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                return Ok(Response::new(request));
            }
            tokio::time::sleep(WAIT_POLL).await;
        }
    }

    async fn list_findings(&self, req: Request<pb::ListFindingsRequest>) -> Result<Response<pb::ListFindingsResponse>, Status> {
        let limit = page_limit(req.into_inner().limit)?;
        let findings = self.blocking(move |a| Ok(a.security_findings(limit))).await?;
        Ok(Response::new(pb::ListFindingsResponse { findings }))
    }

    async fn list_blocks(&self, req: Request<pb::ListBlocksRequest>) -> Result<Response<pb::ListBlocksResponse>, Status> {
        let ask = req.into_inner();
        let limit = page_limit(ask.limit)?;
        let status = ask.status.trim().to_string();
        if !status.is_empty() && ![security::ACTIVE, security::ACKNOWLEDGED, security::LIFTED, security::EXPIRED].contains(&status.as_str()) {
            return Err(Status::invalid_argument(format!("status: {status:?} is none of active, acknowledged, lifted, expired")));
        }
        let blocks = self.blocking(move |a| Ok(a.security_blocks(&status, limit))).await?;
        Ok(Response::new(pb::ListBlocksResponse { blocks }))
    }

    async fn acknowledge_block(&self, req: Request<pb::BlockActionRequest>) -> Result<Response<pb::SecurityBlock>, Status> {
        self.block_action(req, false).await
    }

    async fn lift_block(&self, req: Request<pb::BlockActionRequest>) -> Result<Response<pb::SecurityBlock>, Status> {
        self.block_action(req, true).await
    }
}

/// How often a wait looks at the request (the daemon's tick expires requests every 0.5 s).
const WAIT_POLL: std::time::Duration = std::time::Duration::from_millis(200);

fn request_id(id: &str) -> Result<String, Status> {
    approvals::parse_request_id(id).map(approvals::format_request_id).map_err(|e| Status::invalid_argument(format!("id: {e}")))
}

fn not_found(id: &str) -> Status {
    Status::not_found(format!("no approval request {id} on this host"))
}

fn approval_status(e: ApprovalError) -> Status {
    match e {
        ApprovalError::Refused(why) => Status::permission_denied(why),
        ApprovalError::Decide(DecideError::NotFound(id)) => not_found(&id),
        ApprovalError::Decide(e @ DecideError::Kernel { .. }) => Status::internal(e.to_string()),
        ApprovalError::Decide(e) => Status::failed_precondition(e.to_string()),
    }
}
