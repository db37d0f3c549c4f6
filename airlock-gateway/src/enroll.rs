//! Enrollment: a join token and a CSR in, a client certificate out. The
//! token is checked and one of its uses taken in one statement, so two
//! hosts racing for the last use cannot both enroll.

use std::sync::Arc;

use airlock_api::gateway::v1::enrollment_server::Enrollment;
use airlock_api::gateway::v1::{EnrollRequest, EnrollResponse};
use airlock_gateway_store::JoinOutcome;
use tonic::{Request, Response, Status};

use crate::auth::store_status;
use crate::hub::Hub;
use crate::tokens::{self, TokenKind};

pub struct EnrollService {
    pub hub: Arc<Hub>,
}

/// Host ids become certificate subjects and database keys: a plain name.
pub fn check_host_id(host_id: &str) -> Result<(), String> {
    if host_id.is_empty() || host_id.len() > 64 {
        return Err(format!("host id {host_id:?}: 1 to 64 characters"));
    }
    if !host_id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')) {
        return Err(format!("host id {host_id:?}: only letters, digits, '.', '-' and '_'"));
    }
    Ok(())
}

#[tonic::async_trait]
impl Enrollment for EnrollService {
    async fn enroll(&self, request: Request<EnrollRequest>) -> Result<Response<EnrollResponse>, Status> {
        let request = request.into_inner();
        check_host_id(&request.host_id).map_err(Status::invalid_argument)?;
        tokens::check_kind(&request.join_token, TokenKind::Join).map_err(|e| Status::unauthenticated(e.to_string()))?;
        if request.csr_pem.len() > 64 * 1024 {
            return Err(Status::invalid_argument("the CSR is larger than 64 KiB"));
        }
        // Checked before the token's use is taken: a bad CSR costs no use.
        rcgen::CertificateSigningRequestParams::from_pem(&request.csr_pem)
            .map_err(|e| Status::invalid_argument(format!("csr_pem is not a valid certificate signing request: {e}")))?;
        let store = &self.hub.store;
        let now = crate::now_ns();
        let (org_id, org) = match store.consume_join_token(&tokens::hash(&request.join_token), now).await.map_err(store_status)? {
            JoinOutcome::Accepted { org_id, org_name } => (org_id, org_name),
            JoinOutcome::Unknown => return Err(Status::unauthenticated("unknown join token")),
            JoinOutcome::Expired => return Err(Status::unauthenticated("the join token has expired; create a new one with `airlock-gateway token create --join`")),
            JoinOutcome::UsedUp => return Err(Status::unauthenticated("the join token is used up (it allowed no more enrollments)")),
            JoinOutcome::Revoked => return Err(Status::unauthenticated("the join token was revoked")),
        };
        let issued = self
            .hub
            .authority
            .issue_host_cert(&request.csr_pem, &request.host_id, &org)
            .map_err(|e| Status::invalid_argument(format!("{e:#}")))?;
        store.enroll_host(org_id, &request.host_id, &issued.serial, now).await.map_err(store_status)?;
        tracing::info!(org = %org, host = %request.host_id, serial = %issued.serial, "host enrolled");
        Ok(Response::new(EnrollResponse {
            certificate_pem: issued.pem,
            ca_pem: self.hub.authority.ca_pem().to_string(),
            org,
            host_id: request.host_id,
        }))
    }
}
