//! The tools' inputs: their JSON schemas (schemars) and the checks a call's
//! arguments pass before anything reaches the daemon. A bad argument is a
//! protocol error (invalid params) that names the field; the server stays up.
//!
//! rmcp's own `Parameters` extractor turns a type error into a tool result
//! without the field's name; [`Args`] answers with the path to the field.

use rmcp::handler::server::common::FromContextPart;
use rmcp::handler::server::tool::ToolCallContext;
use rmcp::model::JsonObject;
use rmcp::ErrorData;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::json;

/// At most this many words in an argv.
pub const MAX_ARGV_WORDS: usize = 256;
/// At most this many bytes in all an argv's words together (each with its NUL).
pub const MAX_ARGV_BYTES: usize = 64 * 1024;
pub const MAX_JUSTIFICATION_BYTES: usize = 4 * 1024;
pub const MAX_WAIT_SECONDS: u64 = 300;

/// A tool's arguments, parsed and checked.
pub struct Args<T>(pub T);

/// What a tool's arguments must hold beyond their types.
pub trait Validate {
    fn validate(&self) -> Result<(), ErrorData>;
}

impl<S, T: DeserializeOwned + Validate> FromContextPart<ToolCallContext<'_, S>> for Args<T> {
    fn from_context_part(context: &mut ToolCallContext<S>) -> Result<Self, ErrorData> {
        let arguments = context.arguments.take().unwrap_or_default();
        let parsed = parse::<T>(arguments)?;
        parsed.validate()?;
        Ok(Args(parsed))
    }
}

fn parse<T: DeserializeOwned>(arguments: JsonObject) -> Result<T, ErrorData> {
    serde_path_to_error::deserialize(serde_json::Value::Object(arguments)).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        if path == "." {
            // A missing or unknown field: serde's message names it.
            invalid(None, format!("invalid arguments: {inner}"))
        } else {
            invalid(Some(&path), format!("invalid argument `{path}`: {inner}"))
        }
    })
}

fn invalid(field: Option<&str>, message: String) -> ErrorData {
    ErrorData::invalid_params(message, Some(json!({ "field": field })))
}

/// The schema of a tool's input, for `#[tool(input_schema = ...)]`.
pub fn schema<T: JsonSchema + 'static>() -> std::sync::Arc<JsonObject> {
    rmcp::handler::server::common::schema_for_input::<T>().unwrap_or_else(|e| panic!("the input schema of {} is not an object: {e}", std::any::type_name::<T>()))
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExplainArgs {
    /// The id of one of this session's decisions (as an audit record or a
    /// block message names it). Without it: the session's last denial.
    #[serde(default)]
    pub decision_id: Option<u64>,
}

impl Validate for ExplainArgs {
    fn validate(&self) -> Result<(), ErrorData> {
        Ok(())
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckArgs {
    /// The command as the words it would be run with, program first, as a
    /// shell would split it (["terraform", "apply", "-auto-approve"]).
    #[schemars(length(min = 1, max = 256))]
    pub argv: Vec<String>,
}

impl Validate for CheckArgs {
    fn validate(&self) -> Result<(), ErrorData> {
        check_argv(&self.argv)
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestArgs {
    /// The exact command to be approved, as the words it will be run with,
    /// program first. Once approved, run exactly these words again.
    #[schemars(length(min = 1, max = 256))]
    pub argv: Vec<String>,
    /// Why the command must run, for the person who decides (at most 4 KiB).
    #[schemars(length(min = 1, max = 4096))]
    pub justification: String,
}

impl Validate for RequestArgs {
    fn validate(&self) -> Result<(), ErrorData> {
        check_argv(&self.argv)?;
        if self.justification.trim().is_empty() {
            return Err(invalid(Some("justification"), "justification: say why the command must run; the person who decides reads it".into()));
        }
        if self.justification.len() > MAX_JUSTIFICATION_BYTES {
            return Err(invalid(
                Some("justification"),
                format!("justification: {} bytes, more than the {MAX_JUSTIFICATION_BYTES} allowed", self.justification.len()),
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusArgs {
    /// The approval request's id ("apr-" and 16 hex digits).
    #[schemars(pattern(r"^apr-[0-9a-f]{16}$"))]
    pub id: String,
    /// Wait up to this many seconds (0 to 300) for a decision before
    /// answering. Without it: the state now.
    #[serde(default)]
    #[schemars(range(max = 300))]
    pub wait_seconds: Option<u64>,
}

impl Validate for StatusArgs {
    fn validate(&self) -> Result<(), ErrorData> {
        crate::approvals::parse_request_id(&self.id).map_err(|e| invalid(Some("id"), format!("id: {e}")))?;
        match self.wait_seconds {
            Some(s) if s > MAX_WAIT_SECONDS => Err(invalid(Some("wait_seconds"), format!("wait_seconds: {s} is more than {MAX_WAIT_SECONDS}"))),
            _ => Ok(()),
        }
    }
}

fn check_argv(argv: &[String]) -> Result<(), ErrorData> {
    if argv.is_empty() {
        return Err(invalid(Some("argv"), "argv: empty; give the command's words, program first".into()));
    }
    if argv.len() > MAX_ARGV_WORDS {
        return Err(invalid(Some("argv"), format!("argv: {} words, more than the {MAX_ARGV_WORDS} allowed", argv.len())));
    }
    // Counted as execve counts them, each word with its NUL, as the daemon does.
    let bytes: usize = argv.iter().map(|w| w.len() + 1).sum();
    if bytes > MAX_ARGV_BYTES {
        return Err(invalid(Some("argv"), format!("argv: {bytes} bytes in all, more than the {MAX_ARGV_BYTES} allowed")));
    }
    if argv[0].is_empty() {
        return Err(invalid(Some("argv[0]"), "argv[0]: the program is empty".into()));
    }
    if let Some(i) = argv.iter().position(|w| w.contains('\0')) {
        return Err(invalid(Some("argv"), format!("argv[{i}]: holds a NUL byte, which no command's word can")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args<T: DeserializeOwned + Validate>(v: serde_json::Value) -> Result<T, ErrorData> {
        let serde_json::Value::Object(o) = v else { panic!("not an object") };
        let t = parse::<T>(o)?;
        t.validate()?;
        Ok(t)
    }

    fn message<T: DeserializeOwned + Validate + std::fmt::Debug>(v: serde_json::Value) -> String {
        let e = args::<T>(v).unwrap_err();
        assert_eq!(e.code, rmcp::model::ErrorCode::INVALID_PARAMS);
        e.message.to_string()
    }

    #[test]
    fn bad_arguments_name_their_field() {
        assert!(message::<CheckArgs>(json!({ "argv": "terraform plan" })).contains("`argv`"));
        assert!(message::<CheckArgs>(json!({ "argv": ["terraform", 3] })).contains("argv[1]"));
        assert!(message::<CheckArgs>(json!({})).contains("missing field `argv`"));
        assert!(message::<CheckArgs>(json!({ "argv": [] })).starts_with("argv: empty"));
        assert!(message::<CheckArgs>(json!({ "argv": ["x"], "cwd": "/" })).contains("unknown field `cwd`"));
        let many: Vec<String> = (0..257).map(|i| i.to_string()).collect();
        assert!(message::<CheckArgs>(json!({ "argv": many })).contains("257 words"));
        assert!(message::<CheckArgs>(json!({ "argv": ["x", "y".repeat(MAX_ARGV_BYTES)] })).contains("bytes in all"));
        assert!(message::<RequestArgs>(json!({ "argv": ["x"], "justification": "j".repeat(4097) })).starts_with("justification:"));
        assert!(message::<RequestArgs>(json!({ "argv": ["x"] })).contains("missing field `justification`"));
        assert!(message::<StatusArgs>(json!({ "id": "apr-1" })).starts_with("id:"));
        assert!(message::<StatusArgs>(json!({ "id": "apr-00000000deadbeef", "wait_seconds": 301 })).starts_with("wait_seconds:"));
        assert!(message::<StatusArgs>(json!({ "id": "apr-00000000deadbeef", "wait_seconds": -1 })).contains("`wait_seconds`"));
        assert!(message::<ExplainArgs>(json!({ "decision_id": "7" })).contains("`decision_id`"));
    }

    #[test]
    fn good_arguments_pass() {
        let c: CheckArgs = args(json!({ "argv": ["terraform", "plan"] })).unwrap();
        assert_eq!(c.argv, ["terraform", "plan"]);
        let s: StatusArgs = args(json!({ "id": "apr-00000000deadbeef", "wait_seconds": 300 })).unwrap();
        assert_eq!(s.wait_seconds, Some(300));
        let e: ExplainArgs = args(json!({})).unwrap();
        assert_eq!(e.decision_id, None);
    }

    #[test]
    fn schemas_say_what_is_required() {
        let s = schema::<RequestArgs>();
        assert_eq!(s["required"], json!(["argv", "justification"]));
        assert_eq!(s["properties"]["argv"]["type"], "array");
        assert_eq!(s["properties"]["argv"]["items"]["type"], "string");
        let s = schema::<StatusArgs>();
        assert_eq!(s["required"], json!(["id"]));
        assert_eq!(s["properties"]["wait_seconds"]["maximum"], 300);
    }
}
