//! The fleet API platform teams use (`airlock.gateway.v1.Fleet`): orgs and
//! tokens, hosts and their rollout status, policy versions, the fleet's
//! decisions and sessions, revocation on any host, approval requests, and
//! security monitoring (findings, blocks, detector settings), and the web
//! UI's users.
//!
//! Every call is made in one org, by a caller with a role. Each operation is
//! a function of these modules that checks the caller's role itself, so the
//! gRPC service here and the web Control Room (`crate::ui`) are two thin
//! fronts over one facade and enforce the same rules.

pub mod approvals;
pub mod decisions;
pub mod hosts;
pub mod orgs;
pub mod policy;
pub mod policy_calls;
pub mod security;
pub mod sessions;
pub mod simulate;
pub mod tokens;
pub mod users;

use std::sync::Arc;

use airlock_api::gateway::v1::fleet_server::Fleet;
use airlock_api::gateway::v1::*;
use tonic::{Request, Response, Status};

use crate::auth::Caller;
use crate::hub::Hub;

pub struct FleetService {
    pub hub: Arc<Hub>,
}

impl FleetService {
    async fn caller<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        Caller::of(&self.hub.store, request).await
    }
}

#[tonic::async_trait]
impl Fleet for FleetService {
    type StreamDecisionsStream = decisions::DecisionTail;

    async fn who_am_i(&self, request: Request<WhoAmIRequest>) -> Result<Response<WhoAmIResponse>, Status> {
        let caller = self.caller(&request).await?;
        Ok(Response::new(orgs::who_am_i(&caller)))
    }

    async fn create_org(&self, request: Request<CreateOrgRequest>) -> Result<Response<Org>, Status> {
        let caller = self.caller(&request).await?;
        orgs::create_org(&self.hub, &caller, request.into_inner()).await.map(Response::new)
    }

    async fn list_orgs(&self, request: Request<ListOrgsRequest>) -> Result<Response<ListOrgsResponse>, Status> {
        let caller = self.caller(&request).await?;
        orgs::list_orgs(&self.hub, &caller).await.map(Response::new)
    }

    async fn create_token(&self, request: Request<CreateTokenRequest>) -> Result<Response<CreateTokenResponse>, Status> {
        let caller = self.caller(&request).await?;
        orgs::create_token(&self.hub, &caller, request.into_inner()).await.map(Response::new)
    }

    async fn list_hosts(&self, request: Request<ListHostsRequest>) -> Result<Response<ListHostsResponse>, Status> {
        let caller = self.caller(&request).await?;
        hosts::list(&self.hub, &caller, request.into_inner()).await.map(Response::new)
    }

    async fn revoke_host(&self, request: Request<RevokeHostRequest>) -> Result<Response<Host>, Status> {
        let caller = self.caller(&request).await?;
        hosts::revoke(&self.hub, &caller, request.into_inner()).await.map(Response::new)
    }

    async fn push_policy(&self, request: Request<PushPolicyRequest>) -> Result<Response<PolicyVersion>, Status> {
        let caller = self.caller(&request).await?;
        policy_calls::push(&self.hub, &caller, request.into_inner()).await.map(Response::new)
    }

    async fn policy_history(&self, request: Request<PolicyHistoryRequest>) -> Result<Response<PolicyHistoryResponse>, Status> {
        let caller = self.caller(&request).await?;
        policy_calls::history(&self.hub, &caller, request.into_inner()).await.map(Response::new)
    }

    async fn get_policy(&self, request: Request<GetPolicyRequest>) -> Result<Response<PolicyVersion>, Status> {
        let caller = self.caller(&request).await?;
        policy_calls::get(&self.hub, &caller, request.into_inner()).await.map(Response::new)
    }

    async fn rollback_policy(&self, request: Request<RollbackPolicyRequest>) -> Result<Response<PolicyVersion>, Status> {
        let caller = self.caller(&request).await?;
        policy_calls::rollback(&self.hub, &caller, request.into_inner()).await.map(Response::new)
    }

    async fn simulate_policy(&self, request: Request<SimulatePolicyRequest>) -> Result<Response<SimulatePolicyResponse>, Status> {
        let caller = self.caller(&request).await?;
        simulate::simulate(&self.hub, &caller, request.into_inner()).await.map(Response::new)
    }

    async fn query_decisions(&self, request: Request<QueryDecisionsRequest>) -> Result<Response<QueryDecisionsResponse>, Status> {
        let caller = self.caller(&request).await?;
        decisions::query(&self.hub, &caller, request.into_inner()).await.map(Response::new)
    }

    async fn stream_decisions(&self, request: Request<StreamDecisionsRequest>) -> Result<Response<Self::StreamDecisionsStream>, Status> {
        let caller = self.caller(&request).await?;
        decisions::tail(self.hub.clone(), &caller, request.into_inner()).await.map(Response::new)
    }

    async fn list_sessions(&self, request: Request<ListSessionsRequest>) -> Result<Response<ListSessionsResponse>, Status> {
        let caller = self.caller(&request).await?;
        sessions::list(&self.hub, &caller, request.into_inner()).await.map(Response::new)
    }

    async fn revoke_session(&self, request: Request<RevokeSessionRequest>) -> Result<Response<RevokeSessionResponse>, Status> {
        let caller = self.caller(&request).await?;
        sessions::revoke(&self.hub, &caller, request.into_inner()).await.map(Response::new)
    }

    async fn list_approvals(&self, request: Request<ListFleetApprovalsRequest>) -> Result<Response<ListFleetApprovalsResponse>, Status> {
        let caller = self.caller(&request).await?;
        approvals::list(&self.hub, &caller, request.into_inner()).await.map(Response::new)
    }

    async fn get_approval(&self, request: Request<GetFleetApprovalRequest>) -> Result<Response<FleetApproval>, Status> {
        let caller = self.caller(&request).await?;
        approvals::get(&self.hub, &caller, request.into_inner()).await.map(Response::new)
    }

    async fn decide_approval(&self, request: Request<DecideFleetApprovalRequest>) -> Result<Response<FleetApproval>, Status> {
        // A refusal for want of the approver role is recorded in the
        // request's audit trail, so `decide` checks the role after reading it.
        let caller = self.caller(&request).await?;
        approvals::decide(&self.hub, &caller, request.into_inner()).await.map(Response::new)
    }

    async fn wait_approval(&self, request: Request<WaitFleetApprovalRequest>) -> Result<Response<FleetApproval>, Status> {
        let caller = self.caller(&request).await?;
        approvals::wait(&self.hub, &caller, request.into_inner()).await.map(Response::new)
    }

    async fn list_findings(&self, request: Request<ListFleetFindingsRequest>) -> Result<Response<airlock_api::v1::ListFindingsResponse>, Status> {
        let caller = self.caller(&request).await?;
        security::list_findings(&self.hub, &caller, request.into_inner()).await.map(Response::new)
    }

    async fn list_blocks(&self, request: Request<ListFleetBlocksRequest>) -> Result<Response<airlock_api::v1::ListBlocksResponse>, Status> {
        let caller = self.caller(&request).await?;
        security::list_blocks(&self.hub, &caller, request.into_inner()).await.map(Response::new)
    }

    async fn acknowledge_block(&self, request: Request<FleetBlockActionRequest>) -> Result<Response<airlock_api::v1::SecurityBlock>, Status> {
        let caller = self.caller(&request).await?;
        security::acknowledge(&self.hub, &caller, request.into_inner()).await.map(Response::new)
    }

    async fn lift_block(&self, request: Request<FleetBlockActionRequest>) -> Result<Response<airlock_api::v1::SecurityBlock>, Status> {
        let caller = self.caller(&request).await?;
        security::lift(&self.hub, &caller, request.into_inner()).await.map(Response::new)
    }

    async fn get_security_settings(&self, request: Request<GetSecuritySettingsRequest>) -> Result<Response<SecuritySettingsVersion>, Status> {
        let caller = self.caller(&request).await?;
        security::get_settings(&self.hub, &caller, request.into_inner()).await.map(Response::new)
    }

    async fn set_security_settings(&self, request: Request<SetSecuritySettingsRequest>) -> Result<Response<SecuritySettingsVersion>, Status> {
        let caller = self.caller(&request).await?;
        security::set_settings(&self.hub, &caller, request.into_inner()).await.map(Response::new)
    }

    async fn security_settings_history(&self, request: Request<SecuritySettingsHistoryRequest>) -> Result<Response<SecuritySettingsHistoryResponse>, Status> {
        let caller = self.caller(&request).await?;
        security::history(&self.hub, &caller, request.into_inner()).await.map(Response::new)
    }

    async fn create_user(&self, request: Request<CreateUserRequest>) -> Result<Response<User>, Status> {
        let caller = self.caller(&request).await?;
        users::create(&self.hub, &caller, request.into_inner()).await.map(Response::new)
    }

    async fn list_users(&self, request: Request<ListUsersRequest>) -> Result<Response<ListUsersResponse>, Status> {
        let caller = self.caller(&request).await?;
        users::list(&self.hub, &caller, request.into_inner()).await.map(Response::new)
    }

    async fn update_user(&self, request: Request<UpdateUserRequest>) -> Result<Response<User>, Status> {
        let caller = self.caller(&request).await?;
        users::update(&self.hub, &caller, request.into_inner()).await.map(Response::new)
    }

    async fn list_tokens(&self, request: Request<ListTokensRequest>) -> Result<Response<ListTokensResponse>, Status> {
        let caller = self.caller(&request).await?;
        tokens::list(&self.hub, &caller, request.into_inner()).await.map(Response::new)
    }

    async fn revoke_token(&self, request: Request<RevokeTokenRequest>) -> Result<Response<TokenInfo>, Status> {
        let caller = self.caller(&request).await?;
        tokens::revoke(&self.hub, &caller, request.into_inner()).await.map(Response::new)
    }
}
