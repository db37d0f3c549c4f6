#!/usr/bin/env python3
"""An AI agent's side of the MCP bridge, written with the official MCP Python
SDK (`mcp`, from PyPI): it starts `airlock-agent mcp` over stdio, lists the
tools, calls each one, runs the commands it asked about, and prints one JSON
report on stdout, which the kernel test `kernel_mcp` asserts on.

Mode `session` runs inside a governed session of an unprivileged user, as an
agent would. It prints `approval-request=ID` on stderr once it has asked for
an approval and tried (and failed) to approve it itself; the test then
approves it as root and this client waits for the decision with
approval_status.

Mode `outside` runs ungoverned, or against a socket where no daemon answers:
every tool must say why it has no answer, and bad input must still be refused
with protocol errors.
"""

import argparse
import asyncio
import json
import os
import subprocess
import sys

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.shared.exceptions import McpError

RAN = "FAKE-TOOL-RAN"
SCALE = max(1, int(os.environ.get("AIRLOCK_TEST_TIME_SCALE", "1") or "1"))


def log(*args):
    print("mcp_client:", *args, file=sys.stderr, flush=True)


def result_of(r):
    """A CallToolResult as plain JSON: error flag, text blocks, structured content."""
    texts = [c.text for c in r.content if getattr(c, "type", "") == "text"]
    return {"is_error": bool(r.isError), "text": texts[0] if texts else "", "texts": texts, "structured": r.structuredContent}


async def call(session, name, arguments=None):
    """Calls a tool; a protocol error is recorded, not raised."""
    try:
        return result_of(await session.call_tool(name, arguments))
    except McpError as e:
        return {"protocol_error": True, "code": e.error.code, "message": e.error.message, "data": e.error.data}


def run_shell(command):
    """Runs a command line as the agent would (through a shell), in this session."""
    p = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60 * SCALE)
    output = p.stdout + p.stderr
    return {"ran": RAN in p.stdout, "rc": p.returncode, "output": output}


def cli(agent, args):
    p = subprocess.run([agent] + args, capture_output=True, text=True, timeout=60 * SCALE)
    return {"rc": p.returncode, "stdout": p.stdout, "stderr": p.stderr}


async def bad_input(session, report):
    """Input every tool must refuse with a protocol error, the server staying up."""
    cases = {
        "unknown_tool_approve": ("approve", {"id": "apr-00000000deadbeef"}),
        "unknown_tool_decide_approval": ("decide_approval", {"id": "apr-00000000deadbeef", "approve": True}),
        "argv_as_string": ("check_command", {"argv": "terraform plan"}),
        "argv_empty": ("check_command", {"argv": []}),
        "argv_missing": ("check_command", {}),
        "argv_word_not_string": ("check_command", {"argv": ["terraform", 7]}),
        "argv_too_many_words": ("check_command", {"argv": ["echo"] + ["x"] * 256}),
        "argv_too_many_bytes": ("request_approval", {"argv": ["echo", "y" * (64 * 1024)], "justification": "big"}),
        "justification_too_long": ("request_approval", {"argv": ["terraform", "apply"], "justification": "j" * 4097}),
        "justification_missing": ("request_approval", {"argv": ["terraform", "apply"]}),
        "wait_seconds_too_long": ("approval_status", {"id": "apr-00000000deadbeef", "wait_seconds": 301}),
        "id_malformed": ("approval_status", {"id": "apr-1"}),
        "decision_id_as_string": ("explain_decision", {"decision_id": "seven"}),
    }
    out = {}
    for name, (tool, arguments) in cases.items():
        out[name] = await call(session, tool, arguments)
    report["bad_input"] = out
    report["status_after_bad_input"] = await call(session, "airlock_status")


async def list_tools(session, report):
    tools = (await session.list_tools()).tools
    report["tools"] = {t.name: t.inputSchema for t in tools}
    report["tool_descriptions"] = {t.name: t.description for t in tools}


async def session_mode(a, session, report):
    await list_tools(session, report)
    report["status"] = await call(session, "airlock_status")
    report["policy"] = await call(session, "effective_policy")

    commands = ["terraform destroy", "terraform apply -auto-approve", "terraform plan"]
    report["checks"] = {c: await call(session, "check_command", {"argv": c.split()}) for c in commands}
    report["cli_checks"] = {c: cli(a.agent, ["check", "--socket", a.socket, "--"] + c.split()) for c in commands}

    # A real denial, then the bridge explains it. The daemon records it from
    # the kernel's ring buffer: ask until it is there (bounded).
    report["runs"] = {"terraform destroy": run_shell("terraform destroy")}
    explained = None
    for _ in range(30 * SCALE):
        explained = await call(session, "explain_decision")
        rule = ((explained.get("structured") or {}).get("decision") or {}).get("rule")
        if rule == "terraform destroy":
            break
        await asyncio.sleep(0.5)
    report["explain_last"] = explained
    decision_id = ((explained.get("structured") or {}).get("decision") or {}).get("id")
    if isinstance(decision_id, int):
        report["explain_by_id"] = await call(session, "explain_decision", {"decision_id": decision_id})
    for c in commands[1:]:
        report["runs"][c] = run_shell(c)

    # Ask before running; the bridge cannot decide, nor can the session.
    requested = await call(session, "request_approval", {"argv": ["terraform", "apply"], "justification": "apply the reviewed plan"})
    report["request"] = requested
    request_id = ((requested.get("structured") or {}).get("request") or {}).get("id")
    if not request_id:
        log("no approval request id:", json.dumps(requested))
        return
    report["self_approve"] = cli(a.agent, ["approvals", "approve", request_id, "--socket", a.socket])
    report["status_after_self_approve"] = await call(session, "approval_status", {"id": request_id})
    print(f"approval-request={request_id}", file=sys.stderr, flush=True)

    final = None
    for _ in range(10 * SCALE):
        final = await call(session, "approval_status", {"id": request_id, "wait_seconds": 30})
        if ((final.get("structured") or {}).get("request") or {}).get("state") != "pending":
            break
    report["approval_final"] = final
    report["approved_run"] = run_shell("terraform apply")
    report["second_run"] = run_shell("terraform apply")
    report["status_with_pending"] = await call(session, "airlock_status")
    await bad_input(session, report)


async def outside_mode(a, session, report):
    await list_tools(session, report)
    report["answers"] = {
        "airlock_status": await call(session, "airlock_status"),
        "explain_decision": await call(session, "explain_decision"),
        "effective_policy": await call(session, "effective_policy"),
        "check_command": await call(session, "check_command", {"argv": ["terraform", "plan"]}),
        "request_approval": await call(session, "request_approval", {"argv": ["terraform", "apply"], "justification": "x"}),
        "approval_status": await call(session, "approval_status", {"id": "apr-00000000deadbeef", "wait_seconds": 1}),
    }
    report["cli_check"] = cli(a.agent, ["check", "--socket", a.socket, "--", "terraform", "plan"])
    await bad_input(session, report)


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--agent", required=True, help="the airlock-agent binary")
    p.add_argument("--socket", required=True, help="the daemon's launch socket")
    p.add_argument("--mode", choices=["session", "outside"], required=True)
    a = p.parse_args()

    server = StdioServerParameters(command=a.agent, args=["mcp", "--socket", a.socket], env=dict(os.environ), cwd=os.getcwd())
    report = {"mode": a.mode, "uid": os.getuid()}
    async with stdio_client(server) as (read, write):
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            report["server"] = {"name": init.serverInfo.name, "protocol": init.protocolVersion, "instructions": init.instructions}
            if a.mode == "session":
                await session_mode(a, session, report)
            else:
                await outside_mode(a, session, report)
    print(json.dumps(report))


if __name__ == "__main__":
    asyncio.run(main())
