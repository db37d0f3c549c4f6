//! The web UI's users and the org's tokens, as an operator manages them
//! with the CLI of a real gateway: users made, listed, demoted, disabled
//! and given new passwords (their sessions ending), the last admin kept,
//! tokens listed without secrets and revoked. In process: the fleet
//! functions the web UI calls check the admin role themselves.

mod support;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

use airlock_api::gateway::v1::{CreateUserRequest, ListTokensRequest, ListUsersRequest, RevokeTokenRequest, UpdateUserRequest};
use airlock_gateway::auth::Caller;
use airlock_gateway::fleet::{tokens, users};
use airlock_gateway::hub::Hub;
use airlock_gateway::tokens::Role;
use airlock_gateway_store::GatewayStore;
use serde_json::Value;

use support::{Gateway, Scratch, GATEWAY};

const PASSWORD: &str = "correct horse battery staple";

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// The CLI with `stdin` on its standard input.
fn with_stdin(gw: &Gateway, args: &[&str], stdin: &str) -> std::process::Output {
    let mut child = Command::new(GATEWAY)
        .args(args)
        .arg("--data-dir")
        .arg(&gw.data)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the CLI");
    child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("write the password");
    child.wait_with_output().expect("the CLI's output")
}

fn store_of(gw: &Gateway, runtime: &tokio::runtime::Runtime) -> GatewayStore {
    runtime.block_on(GatewayStore::open(None, &gw.data)).expect("the gateway's SQLite store")
}

#[test]
fn an_operator_manages_ui_users_and_tokens() {
    let scratch = Scratch::new("users");
    let gw = Gateway::start(&scratch.0);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    let store = store_of(&gw, &runtime);
    let file = scratch.0.join("password");
    std::fs::write(&file, format!("{PASSWORD}\n")).unwrap();
    let file = file.to_str().unwrap();

    // Made with a password from a file or from standard input.
    assert!(gw.ok(&["user", "create", "--username", "ada@example.com", "--role", "admin", "--password-file", file]).contains("ada@example.com"));
    let out = with_stdin(&gw, &["user", "create", "--username", "vic", "--role", "viewer", "--password-stdin"], "another long password\n");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    gw.ok(&["org", "create", "acme"]);
    gw.ok(&["user", "create", "--username", "olga", "--role", "approver", "--org", "acme", "--password-file", file]);
    let ada = runtime.block_on(store.user_by_name("ada@example.com")).unwrap().expect("ada is stored");
    assert!(ada.password_hash.starts_with("$argon2id$"), "{}", ada.password_hash);
    assert!(airlock_gateway::passwords::verify(PASSWORD, &ada.password_hash), "the trailing newline is not part of the password");
    let vic = runtime.block_on(store.user_by_name("vic")).unwrap().expect("vic is stored");
    assert!(airlock_gateway::passwords::verify("another long password", &vic.password_hash));

    // Bad input is refused naming the field.
    let taken = gw.err(&["user", "create", "--username", "vic", "--role", "viewer", "--password-file", file]);
    assert!(taken.contains("taken") && taken.contains("AlreadyExists"), "{taken}");
    let short = with_stdin(&gw, &["user", "create", "--username", "sam", "--role", "viewer", "--password-stdin"], "short\n");
    let short = String::from_utf8_lossy(&short.stderr);
    assert!(short.contains("password") && short.contains("at least 12") && short.contains("InvalidArgument"), "{short}");
    let bad_name = gw.err(&["user", "create", "--username", "sam smith", "--role", "viewer", "--password-file", file]);
    assert!(bad_name.contains("username") && bad_name.contains("InvalidArgument"), "{bad_name}");
    let bad_role = gw.err(&["user", "create", "--username", "sam", "--role", "root", "--password-file", file]);
    assert!(bad_role.contains("role") && bad_role.contains("InvalidArgument"), "{bad_role}");
    assert!(gw.err(&["user", "create", "--username", "sam", "--role", "viewer"]).contains("--password-file"));
    assert!(gw.err(&["user", "update", "vic"]).contains("nothing to change"));

    // Listed per org, never with a password or its hash.
    let listed = gw.ok(&["user", "list", "--json"]);
    assert!(!listed.contains("argon2") && !listed.contains("password"), "{listed}");
    let list = json(&listed);
    let names: Vec<(&str, &str)> = list["users"].as_array().expect("users").iter().map(|u| (u["username"].as_str().unwrap_or(""), u["role"].as_str().unwrap_or(""))).collect();
    assert_eq!(names, [("ada@example.com", "admin"), ("vic", "viewer")]);
    assert!(gw.ok(&["user", "list"]).contains("vic"));
    assert_eq!(json(&gw.ok(&["user", "list", "--json", "--org", "acme"]))["users"][0]["username"], "olga");
    assert!(gw.err(&["user", "update", "olga", "--role", "admin"]).contains("not found"), "another org's user is not there");

    // A role change keeps the user's session; disabling ends it; so does a new password.
    runtime.block_on(store.insert_ui_session("vic-1", vic.id, "csrf", 1, i64::MAX)).unwrap();
    let promoted = json(&gw.ok(&["user", "update", "vic", "--role", "approver", "--json"]));
    assert_eq!(promoted["role"], "approver");
    assert!(runtime.block_on(store.ui_session("vic-1", 2)).unwrap().is_some());
    assert_eq!(json(&gw.ok(&["user", "update", "vic", "--disable", "--json"]))["disabled"], true);
    assert!(runtime.block_on(store.ui_session("vic-1", 2)).unwrap().is_none());
    assert_eq!(json(&gw.ok(&["user", "update", "vic", "--enable", "--json"]))["disabled"], false);
    runtime.block_on(store.insert_ui_session("vic-2", vic.id, "csrf", 1, i64::MAX)).unwrap();
    let out = with_stdin(&gw, &["user", "update", "vic", "--password-stdin"], "a brand new password\n");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(runtime.block_on(store.ui_session("vic-2", 2)).unwrap().is_none(), "a new password signs the user out");
    let vic = runtime.block_on(store.user_by_name("vic")).unwrap().expect("vic");
    assert!(airlock_gateway::passwords::verify("a brand new password", &vic.password_hash) && !airlock_gateway::passwords::verify("another long password", &vic.password_hash));

    // The org's last enabled admin user stays one.
    let last = gw.err(&["user", "update", "ada@example.com", "--role", "viewer"]);
    assert!(last.contains("last enabled admin") && last.contains("FailedPrecondition"), "{last}");
    assert!(gw.err(&["user", "update", "ada@example.com", "--disable"]).contains("last enabled admin"));
    gw.ok(&["user", "update", "vic", "--role", "admin"]);
    gw.ok(&["user", "update", "ada@example.com", "--disable"]);

    // Only admins manage users and tokens.
    let viewer = gw.api_token("viewer", "dashboards");
    assert!(gw.err_as(&viewer, &["user", "list"]).contains("admin role"));
    assert!(gw.err_as(&viewer, &["token", "list"]).contains("admin role"));

    // Tokens: listed without secrets, revoked by id, refused from then on.
    let ci = gw.api_token("approver", "ci pipeline");
    let listed = gw.ok(&["token", "list", "--json"]);
    assert!(!listed.contains(&ci) && !listed.contains("alk_api_") && !listed.contains("hash"), "{listed}");
    let tokens = json(&listed);
    let tokens = tokens["tokens"].as_array().expect("tokens");
    let ci_token = tokens.iter().find(|t| t["label"] == "ci pipeline").expect("the ci token is listed");
    assert_eq!((ci_token["kind"].as_str(), ci_token["role"].as_str(), ci_token["revoked"].as_bool()), (Some("api"), Some("approver"), Some(false)));
    let id = ci_token["id"].as_i64().expect("an id");
    assert!(gw.ok(&["token", "list"]).contains("ci pipeline"));
    gw.ok_as(&ci, &["approvals", "list"]);
    let revoked = json(&gw.ok(&["token", "revoke", &id.to_string(), "--json"]));
    assert_eq!(revoked["revoked"], true);
    assert!(gw.err_as(&ci, &["approvals", "list"]).contains("unknown or revoked"));
    assert!(gw.err(&["token", "revoke", "99999"]).contains("not found"));
    assert!(gw.err(&["token", "revoke", "0"]).contains("InvalidArgument"));
}

/// The web UI calls the fleet functions with its own Caller: the admin role
/// is checked inside them, whatever the caller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_functions_check_the_admin_role_themselves() {
    let scratch = Scratch::new("users-roles");
    let store = GatewayStore::open(None, &scratch.0).await.expect("the store");
    let authority = airlock_gateway::pki::Authority::load_or_create(&scratch.0).expect("a CA");
    let notifiers = airlock_gateway::approvals::Notifiers::start(&BTreeMap::new()).expect("no notifiers");
    let hub = Hub::new(store.clone(), authority, "test".into(), notifiers);
    let org = store.ensure_org("default").await.expect("the org");
    let caller = |role| Caller { org_id: org.id, org: org.name.clone(), role, label: format!("ui user ({role})"), through: "user" };
    let create = || CreateUserRequest { username: "ada".into(), role: "admin".into(), password: PASSWORD.into(), ..Default::default() };

    for role in [Role::Viewer, Role::Approver] {
        let who = caller(role);
        let denied = [
            users::create(&hub, &who, create()).await.err(),
            users::list(&hub, &who, ListUsersRequest::default()).await.err(),
            users::update(&hub, &who, UpdateUserRequest { username: "ada".into(), disabled: Some(true), ..Default::default() }).await.err(),
            tokens::list(&hub, &who, ListTokensRequest::default()).await.err(),
            tokens::revoke(&hub, &who, RevokeTokenRequest { id: 1, ..Default::default() }).await.err(),
        ];
        for status in denied {
            let status = status.expect("refused");
            assert_eq!(status.code(), tonic::Code::PermissionDenied, "{role}: {status:?}");
        }
    }
    let admin = caller(Role::Admin);
    let made = users::create(&hub, &admin, create()).await.expect("an admin makes a user");
    assert_eq!((made.username.as_str(), made.role.as_str(), made.org.as_str()), ("ada", "admin", "default"));
    let oidc = CreateUserRequest { username: "grace".into(), role: "viewer".into(), oidc_subject: "https://idp.example|42".into(), ..Default::default() };
    assert_eq!(users::create(&hub, &admin, oidc).await.expect("an OIDC user").oidc_subject, "https://idp.example|42");
    let both = CreateUserRequest { username: "x".into(), role: "viewer".into(), password: PASSWORD.into(), oidc_subject: "i|s".into(), ..Default::default() };
    assert_eq!(users::create(&hub, &admin, both).await.unwrap_err().code(), tonic::Code::InvalidArgument);
    let no_password = UpdateUserRequest { username: "grace".into(), password: PASSWORD.into(), ..Default::default() };
    assert_eq!(users::update(&hub, &admin, no_password).await.unwrap_err().code(), tonic::Code::FailedPrecondition, "an OIDC user has no password");
    let elsewhere = UpdateUserRequest { org: "acme".into(), username: "ada".into(), role: "viewer".into(), ..Default::default() };
    assert_eq!(users::update(&hub, &admin, elsewhere).await.unwrap_err().code(), tonic::Code::NotFound);
    let unchanged = users::update(&hub, &admin, UpdateUserRequest { username: "ada".into(), ..Default::default() }).await.expect("no change");
    assert_eq!(unchanged.role, "admin");
}
