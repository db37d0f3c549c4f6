//! `airlock-agent mcp`: an MCP server on stdio for the AI agent Airlock
//! governs. The agent starts it inside its own session, so it runs with the
//! agent's uid and no privilege, and it talks only to the launch socket,
//! where the daemon knows it by its pid. It answers questions about its own
//! session and can open an approval request. No tool approves, rejects,
//! lifts, reloads or revokes: a bridge the agent drives must not decide for
//! the agent.
//!
//! stdout carries the protocol; logs go to stderr (`cli.rs` sets that up).

pub mod args;
pub mod render;
pub mod session;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::tool::ToolCallContext;
use rmcp::model::{CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation, ServerCapabilities, ServerConfig};
use rmcp::service::RequestContext;
use rmcp::{tool, tool_handler, tool_router, ErrorData, RoleServer, ServerHandler, ServiceExt};
use serde::Serialize;
use serde_json::json;

use args::{Args, CheckArgs, ExplainArgs, RequestArgs, StatusArgs};

/// How often `approval_status` asks again while it waits.
const POLL: Duration = Duration::from_millis(500);

const INSTRUCTIONS: &str = "Airlock governs this session in the kernel: commands its policy blocks are refused, and \
commands that need approval are held until a person approves them. These tools explain what holds and why \
(airlock_status, explain_decision, effective_policy), predict a command's verdict before you run it (check_command), \
and ask a person to approve a held command (request_approval, then approval_status). They cannot approve, lift or \
change anything; do not try to run a refused command another way.";

/// Serves MCP on stdin/stdout until the client closes it.
pub fn serve(socket: PathBuf) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("start the async runtime")?;
    runtime.block_on(async move {
        tracing::debug!(socket = %socket.display(), "MCP bridge serving on stdio");
        let service = Bridge::new(socket).serve(rmcp::transport::stdio()).await.context("start the MCP session on stdio")?;
        service.waiting().await.context("the MCP session")?;
        Ok::<_, anyhow::Error>(())
    })?;
    // stdin is read on the blocking pool: once the client has closed it there
    // is nothing left to wait for.
    runtime.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}

#[derive(Clone)]
pub struct Bridge {
    socket: Arc<PathBuf>,
    tool_router: ToolRouter<Self>,
}

#[tool_router]
impl Bridge {
    pub fn new(socket: PathBuf) -> Bridge {
        Bridge { socket: Arc::new(socket), tool_router: Self::tool_router() }
    }

    #[tool(
        description = "This session as Airlock governs it: session id, role, user, enforcement backend, host, policy version, \
whether a gateway is connected, and the approval requests pending now.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn airlock_status(&self) -> Result<CallToolResult, ErrorData> {
        Ok(answer(self.ask(session::session_self).await, |s| (render::status_text(s), to_json(s))))
    }

    #[tool(
        description = "Why Airlock refused something: the session's last denial, or one decision by its id. Names the rule \
and policy, the reason, and what you may do next (stop, or ask for an approval).",
        input_schema = args::schema::<ExplainArgs>(),
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn explain_decision(&self, Args(a): Args<ExplainArgs>) -> Result<CallToolResult, ErrorData> {
        let asked = self.ask(move |socket| session::explain(socket, a.decision_id)).await;
        Ok(answer(asked, |e| (render::explanation_text(e), to_json(e))))
    }

    #[tool(
        description = "What this session may not run or reach, as the kernel enforces it now: blocked commands, commands \
that need a person's approval, denied egress, refused Unix sockets, protected files.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn effective_policy(&self) -> Result<CallToolResult, ErrorData> {
        Ok(answer(self.ask(session::effective_policy).await, |p| (render::policy_text(p), to_json(p))))
    }

    #[tool(
        description = "Before running a command: would Airlock let it run? Answers allowed, blocked or needs_approval, and by \
which rule. The program is looked up in this server's PATH and working directory. A prediction: the kernel decides \
again at exec time, where checks of the file that actually runs can differ.",
        input_schema = args::schema::<CheckArgs>(),
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn check_command(&self, Args(a): Args<CheckArgs>) -> Result<CallToolResult, ErrorData> {
        let argv = a.argv.clone();
        let asked = self.ask(move |socket| session::check(socket, a.argv)).await;
        Ok(answer(asked, |c| (render::check_text(&argv, c), to_json(c))))
    }

    #[tool(
        description = "Ask a person to approve a command that needs approval, before running it. Returns the request's id. \
Then wait with approval_status, and once approved run exactly the same command, unchanged. You cannot approve it yourself.",
        input_schema = args::schema::<RequestArgs>(),
        annotations(read_only_hint = false, destructive_hint = false, idempotent_hint = true, open_world_hint = false)
    )]
    async fn request_approval(&self, Args(a): Args<RequestArgs>) -> Result<CallToolResult, ErrorData> {
        let asked = self.ask(move |socket| session::request_approval(socket, a.argv, a.justification)).await;
        Ok(answer(asked, |r| (render::approval_text(r, true), json!({ "request": r, "next_step": render::approval_next_step(r, true) }))))
    }

    #[tool(
        description = "The state of one of this session's approval requests: pending, approved, rejected, expired or \
cancelled. With wait_seconds, waits up to that long for a decision before answering.",
        input_schema = args::schema::<StatusArgs>(),
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn approval_status(&self, Args(a): Args<StatusArgs>) -> Result<CallToolResult, ErrorData> {
        let deadline = Instant::now() + Duration::from_secs(a.wait_seconds.unwrap_or(0));
        loop {
            let id = a.id.clone();
            let asked = self.ask(move |socket| session::approval_status(socket, id)).await;
            let waiting = matches!(&asked, Ok(r) if r.state == crate::approvals::PENDING);
            if !waiting || Instant::now() + POLL > deadline {
                return Ok(answer(asked, |r| (render::approval_text(r, false), json!({ "request": r, "next_step": render::approval_next_step(r, false) }))));
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

impl Bridge {
    /// Runs one blocking question to the daemon off the async runtime.
    async fn ask<T, F>(&self, question: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Path) -> Result<T> + Send + 'static,
    {
        let socket = self.socket.clone();
        tokio::task::spawn_blocking(move || question(&socket)).await.context("the question to the daemon did not finish")?
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Bridge {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("airlock", env!("CARGO_PKG_VERSION")))
            .with_instructions(INSTRUCTIONS)
    }

    async fn call_tool(&self, request: CallToolRequestParams, context: RequestContext<RoleServer>) -> Result<CallToolResponse, ErrorData> {
        if !self.tool_router.has_route(&request.name) {
            let known: Vec<String> = self.tool_router.list_all().into_iter().map(|t| t.name.to_string()).collect();
            return Err(ErrorData::invalid_params(
                format!("unknown tool `{}`: this server's tools are {} (none of them decides an approval)", request.name, known.join(", ")),
                Some(json!({ "field": "name", "tool": request.name })),
            ));
        }
        self.tool_router.call(ToolCallContext::new(self, request, context)).await
    }
}

/// A tool's result: the text an agent reads, the same answer as JSON
/// (structured content, and as text for clients without it), or an error
/// result that says why there is no answer.
fn answer<T>(asked: Result<T>, show: impl FnOnce(&T) -> (String, serde_json::Value)) -> CallToolResult {
    match asked {
        Ok(value) => {
            let (text, structured) = show(&value);
            let mut result = CallToolResult::success(vec![ContentBlock::text(text), ContentBlock::text(structured.to_string())]);
            result.structured_content = Some(structured);
            result
        }
        Err(e) => {
            let message = render::unavailable(&e);
            tracing::debug!("{message}");
            let mut result = CallToolResult::error(vec![ContentBlock::text(format!("airlock: {message}"))]);
            result.structured_content = Some(json!({ "error": message }));
            result
        }
    }
}

fn to_json<T: Serialize>(value: &T) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or_else(|e| json!({ "error": format!("the answer could not be encoded: {e}") }))
}
