//! The fleet's decisions: pages of stored ones, newest first, and a live tail
//! across hosts. The tail reads the store (it is woken when this replica
//! stores a batch, and polls for what other replicas store), so it sees every
//! decision whichever replica its host is connected to.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use airlock_api::gateway::v1::{FleetDecision, QueryDecisionsRequest, QueryDecisionsResponse, StreamDecisionsRequest};
use airlock_api::v1::{Decision, DecisionFilter};
use airlock_gateway_store::{FleetQuery, StoredDecision};
use prost::Message;
use tokio_stream::Stream;
use tonic::Status;

use crate::tokens::Role;
use crate::auth::{store_status, Caller};
use crate::hub::{Hub, POLL_INTERVAL};

pub type DecisionTail = Pin<Box<dyn Stream<Item = Result<FleetDecision, Status>> + Send>>;

const MAX_PAGE: u32 = 1000;
const DEFAULT_PAGE: u32 = 100;

pub async fn query(hub: &Hub, caller: &Caller, ask: QueryDecisionsRequest) -> Result<QueryDecisionsResponse, Status> {
    let _timer = hub.metrics.time_query("query_decisions");
    query_page(hub, caller, ask).await.map(|page| page.response)
}

/// A page of decisions, and the newest cursor in it, from which [`newer`]
/// goes on (the Control Room's live tail).
pub struct Page {
    pub response: QueryDecisionsResponse,
    pub newest_cursor: i64,
}

pub async fn query_page(hub: &Hub, caller: &Caller, ask: QueryDecisionsRequest) -> Result<Page, Status> {
    caller.require(Role::Viewer)?;
    let org = caller.scope(&hub.store, &ask.org).await?;
    let limit = match ask.page_size {
        0 => DEFAULT_PAGE,
        n => n.min(MAX_PAGE),
    };
    let before = if ask.page_token.is_empty() {
        0
    } else {
        ask.page_token.parse::<i64>().ok().filter(|c| *c > 0).ok_or_else(|| Status::invalid_argument(format!("page_token {:?} is not one this gateway gave out", ask.page_token)))?
    };
    let q = FleetQuery { filter: ask.filter.unwrap_or_default(), host: ask.host.trim().to_string(), before_cursor: before, after_cursor: 0, limit, oldest_first: false };
    let rows = hub.store.query_decisions(org.id, &q).await.map_err(store_status)?;
    let next_page_token = if rows.len() as u32 == limit { rows.last().map(|r| r.cursor.to_string()).unwrap_or_default() } else { String::new() };
    let newest_cursor = rows.first().map(|r| r.cursor).unwrap_or(0);
    let decisions = rows.into_iter().map(|r| fleet_decision(&org.name, r)).collect::<Result<_, _>>()?;
    Ok(Page { response: QueryDecisionsResponse { decisions, next_page_token }, newest_cursor })
}

/// Decisions stored after `after_cursor` that match, newest first, at most
/// a page. With no cursor yet (0) it answers only the newest cursor, so a
/// tail that starts now shows what arrives from now on.
pub async fn newer(hub: &Hub, caller: &Caller, ask: QueryDecisionsRequest, after_cursor: i64) -> Result<Page, Status> {
    caller.require(Role::Viewer)?;
    let org = caller.scope(&hub.store, &ask.org).await?;
    if after_cursor <= 0 {
        let newest = hub.store.max_cursor().await.map_err(store_status)?;
        return Ok(Page { response: QueryDecisionsResponse::default(), newest_cursor: newest });
    }
    let q = FleetQuery { filter: ask.filter.unwrap_or_default(), host: ask.host.trim().to_string(), before_cursor: 0, after_cursor, limit: DEFAULT_PAGE, oldest_first: true };
    let mut rows = hub.store.query_decisions(org.id, &q).await.map_err(store_status)?;
    let newest_cursor = rows.last().map(|r| r.cursor).unwrap_or(after_cursor);
    rows.reverse();
    let decisions = rows.into_iter().map(|r| fleet_decision(&org.name, r)).collect::<Result<_, _>>()?;
    Ok(Page { response: QueryDecisionsResponse { decisions, next_page_token: String::new() }, newest_cursor })
}

pub async fn tail(hub: Arc<Hub>, caller: &Caller, ask: StreamDecisionsRequest) -> Result<DecisionTail, Status> {
    caller.require(Role::Viewer)?;
    let org = caller.scope(&hub.store, &ask.org).await?;
    let mut after = hub.store.max_cursor().await.map_err(store_status)?;
    let filter: DecisionFilter = ask.filter.unwrap_or_default();
    let host = ask.host.trim().to_string();
    let (tx, rx) = tokio::sync::mpsc::channel(256);
    tokio::spawn(async move {
        loop {
            let q = FleetQuery { filter: filter.clone(), host: host.clone(), before_cursor: 0, after_cursor: after, limit: MAX_PAGE, oldest_first: true };
            match hub.store.query_decisions(org.id, &q).await {
                Ok(rows) => {
                    let full = rows.len() as u32 == MAX_PAGE;
                    for row in rows {
                        after = after.max(row.cursor);
                        if tx.send(fleet_decision(&org.name, row)).await.is_err() {
                            return;
                        }
                    }
                    if full {
                        continue;
                    }
                }
                Err(e) => {
                    if tx.send(Err(store_status(e))).await.is_err() {
                        return;
                    }
                }
            }
            if tx.is_closed() {
                return;
            }
            if hub.stopping.load(std::sync::atomic::Ordering::SeqCst) {
                let _ = tx.send(Err(Status::unavailable("the gateway is stopping"))).await;
                return;
            }
            let _ = tokio::time::timeout(POLL_INTERVAL.min(Duration::from_millis(500)), hub.stored.notified()).await;
        }
    });
    Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
}

fn fleet_decision(org: &str, row: StoredDecision) -> Result<FleetDecision, Status> {
    let decision = Decision::decode(row.body.as_slice()).map_err(|e| Status::internal(format!("stored decision {} of host {}: {e}", row.seq, row.host_id)))?;
    Ok(FleetDecision { org: org.to_string(), host: row.host_id, seq: row.seq.max(0) as u64, decision: Some(decision) })
}
