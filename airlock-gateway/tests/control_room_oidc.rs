//! Sign-in with OpenID Connect through a running gateway: `airlock-gateway
//! run` with `[ui.oidc]` pointing at a real provider (tests/support/oidc.rs:
//! `oidc-provider` on node, 127.0.0.1), and the test as the browser, from
//! the Control Room's sign-in page through the provider's pages and back to
//! the callback, the session and the page asked for; the user the gateway
//! made is then checked with its CLI. tests/oidc.rs tests the relying party
//! on its own, case by case.
//!
//! Without node or the package the tests print "SKIPPED" and pass, unless
//! AIRLOCK_REQUIRE_OIDC=1 (scripts/test.sh), where that is a failure.

mod support;

use std::net::TcpListener;

use hyper::StatusCode;
use serde_json::{json, Value};
use support::oidc::{query, Browser, Page, Provider};
use support::{Gateway, Scratch};
use url::Url;

const SESSION: &str = "__Host-airlock-session";
const PENDING: &str = "__Host-airlock-oidc";

/// A gateway whose Control Room signs in at a provider started for it.
struct ControlRoom {
    // Dropped in this order: the gateway, then the provider, then the files.
    gw: Gateway,
    provider: Provider,
    base: Url,
    _scratch: Scratch,
}

impl ControlRoom {
    fn start(test: &str) -> Option<ControlRoom> {
        // The UI's port is chosen first: the provider must know the callback
        // URL before the gateway, which must know the provider's issuer.
        let port = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        let base = Url::parse(&format!("https://127.0.0.1:{port}/")).expect("URL");
        let callback = base.join("/oidc/callback").expect("URL");
        let provider = Provider::start(&format!("control-room-{test}"), callback.as_str())?;
        let scratch = Scratch::new(&format!("oidc-{test}"));
        let config = scratch.0.join("gateway.toml");
        let settings = format!(
            r#"[ui.oidc]
issuer = "{issuer}"
client_id = "gw-confidential"
client_secret_file = "{secret}"
redirect_url = "{callback}"
scopes = ["profile", "email"]
role_claim = "airlock_role"
roles = {{ approver = "approver", admin = "admin", ops = "viewer", sec = "admin" }}
"#,
            issuer = provider.issuer,
            secret = provider.secret_file(test).display(),
        );
        std::fs::write(&config, settings).expect("gateway.toml");
        let ui_listen = format!("127.0.0.1:{port}");
        let gw = Gateway::start_with_args(&scratch.0, None, &["--ui-listen", &ui_listen, "--config", config.to_str().expect("path")]);
        let ui_url = std::fs::read_to_string(gw.data.join("ui-url")).expect("ui-url");
        assert_eq!(ui_url.trim(), base.as_str());
        Some(ControlRoom { gw, provider, base, _scratch: scratch })
    }

    fn browser(&self) -> Browser {
        Browser::trusting(&self.gw.ca_pem())
    }

    fn url(&self, path: &str) -> Url {
        self.base.join(path).expect("URL")
    }

    fn is_callback(&self, url: &Url) -> bool {
        url.origin() == self.base.origin() && url.path() == "/oidc/callback"
    }

    /// As a user: open the sign-in page for `next`, click "Sign in with your
    /// identity provider", sign in there as `login`; returns the redirect
    /// back to the gateway's callback (not yet followed) and the provider's
    /// page it came from.
    async fn to_callback(&self, browser: &mut Browser, next: &str, login: &str) -> (Url, Option<Url>) {
        let signin = self.url(&format!("/signin?next={next}"));
        let (at, page) = browser.follow(&signin, None).await;
        assert_eq!((at.path(), page.status), ("/signin", StatusCode::OK), "{}", page.body);
        let href = link(&page.body, "/signin/oidc").unwrap_or_else(|| panic!("no OpenID link on the sign-in page: {}", page.body));
        let start = at.join(&href).expect("the link");
        assert_eq!(query(&start, "next"), next);
        let (callback, from) = browser.sign_in(&start, Some(&at), login, |url| self.is_callback(url)).await;
        assert!(!query(&callback, "code").is_empty() && !query(&callback, "state").is_empty(), "{callback}");
        (callback, from)
    }

    /// The whole sign-in as `login`: where the browser lands, and that page.
    async fn sign_in(&self, browser: &mut Browser, next: &str, login: &str) -> (Url, Page) {
        let (callback, from) = self.to_callback(browser, next, login).await;
        browser.follow(&callback, from.as_ref()).await
    }

    /// The user `name` as `user list --json` shows it.
    fn user(&self, name: &str) -> Option<Value> {
        let list: Value = serde_json::from_str(&self.gw.ok(&["user", "list", "--json"])).expect("JSON");
        list["users"].as_array().expect("users").iter().find(|u| u["username"] == name).cloned()
    }
}

/// The href of the first link that starts with `prefix`.
fn link(html: &str, prefix: &str) -> Option<String> {
    html.split("<a ").skip(1).filter_map(|tag| support::oidc::attribute(&format!(" {}", &tag[..tag.find('>')?]), "href")).find(|href| href.starts_with(prefix))
}

/// `url` with the query parameter `name` set to `value`.
fn with_param(url: &Url, name: &str, value: &str) -> Url {
    let pairs: Vec<(String, String)> = url.query_pairs().map(|(k, v)| (k.to_string(), if k == name { value.to_string() } else { v.into_owned() })).collect();
    let mut changed = url.clone();
    changed.query_pairs_mut().clear().extend_pairs(pairs);
    changed
}

fn alice(role: &str) -> Value {
    json!({ "preferred_username": "alice", "email": "alice@example.test", "airlock_role": role })
}

#[tokio::test]
async fn alice_signs_in_through_the_gateway_and_her_role_follows_the_provider() {
    let Some(mut room) = ControlRoom::start("alice") else {
        return;
    };
    let mut browser = room.browser();

    let (at, page) = room.sign_in(&mut browser, "/settings", "alice").await;
    assert_eq!((at.path(), page.status), ("/settings", StatusCode::OK), "{}\n{}", page.body, room.gw.log());
    assert!(browser.cookie(SESSION).is_some(), "no session cookie");
    assert!(browser.cookie(PENDING).is_none(), "the pending sign-in outlived the callback");
    let (_, overview) = browser.follow(&room.url("/"), Some(&at)).await;
    assert_eq!(overview.status, StatusCode::OK);
    assert!(overview.body.contains("alice · approver"), "{}", overview.body);

    let user = room.user("alice").expect("alice is a gateway user");
    assert_eq!((user["role"].as_str(), user["org"].as_str()), (Some("approver"), Some("default")));
    assert_eq!(user["oidc_subject"].as_str(), Some(format!("{}|alice", room.provider.issuer).as_str()));
    assert!(!user["disabled"].as_bool().unwrap_or(false), "{user}");
    assert!(user["last_login_unix_nanos"].as_i64().unwrap_or(0) > 0, "{user}");

    // The provider makes her an admin: the next sign-in (in the same
    // browser, still signed in at the provider) brings the new role, to the
    // same gateway user.
    room.provider.set_claims("alice", alice("admin"));
    let (at, page) = room.sign_in(&mut browser, "/", "alice").await;
    assert_eq!((at.path(), page.status), ("/", StatusCode::OK), "{}", page.body);
    assert!(page.body.contains("alice · admin"), "{}", page.body);
    let user = room.user("alice").expect("alice");
    assert_eq!(user["role"].as_str(), Some("admin"));
    let list: Value = serde_json::from_str(&room.gw.ok(&["user", "list", "--json"])).expect("JSON");
    assert_eq!(list["users"].as_array().map(Vec::len), Some(1), "one user, signed in twice: {list}");

    // The provider takes admin away, but she is the org's only admin: the
    // gateway will not demote her, so the sign-in is refused (no new
    // session) rather than made with a role she no longer has.
    room.provider.set_claims("alice", alice("ops"));
    let (at, page) = room.sign_in(&mut browser, "/", "alice").await;
    assert_eq!((at.path(), page.status), ("/oidc/callback", StatusCode::CONFLICT), "{}", page.body);
    assert!(page.body.contains("last enabled admin"), "{}", page.body);
    assert!(!page.set_cookies.iter().any(|name| name == SESSION), "a session for a refused sign-in");
    assert_eq!(room.user("alice").expect("alice")["role"].as_str(), Some("admin"));
    // carol (claims "ops" and "sec") is another admin: now alice becomes a viewer.
    let mut carols = room.browser();
    let (_, page) = room.sign_in(&mut carols, "/", "carol").await;
    assert!(page.body.contains("carol@example.test · admin"), "{}", page.body);
    let (at, page) = room.sign_in(&mut browser, "/", "alice").await;
    assert_eq!((at.path(), page.status), ("/", StatusCode::OK), "{}", page.body);
    assert!(page.body.contains("alice · viewer"), "{}", page.body);
    assert_eq!(room.user("alice").expect("alice")["role"].as_str(), Some("viewer"));

    // Disabled in the gateway: her session ends, and the provider's word no
    // longer signs her in.
    room.gw.ok(&["user", "update", "alice", "--disable"]);
    let (at, _) = browser.follow(&room.url("/"), Some(&at)).await;
    assert_eq!(at.path(), "/signin", "a disabled user's session still works");
    let mut fresh = room.browser();
    let (at, page) = room.sign_in(&mut fresh, "/", "alice").await;
    assert_eq!((at.path(), page.status), ("/oidc/callback", StatusCode::FORBIDDEN), "{}", page.body);
    assert!(page.body.contains("disabled"), "{}", page.body);
    assert!(fresh.cookie(SESSION).is_none(), "a disabled user got a session");
}

#[tokio::test]
async fn the_gateway_refuses_bob_a_wrong_state_and_a_callback_from_another_browser() {
    let Some(room) = ControlRoom::start("refusals") else {
        return;
    };

    // bob has no airlock_role and there is no default_role.
    let mut browser = room.browser();
    let (at, page) = room.sign_in(&mut browser, "/settings", "bob").await;
    assert_eq!((at.path(), page.status), ("/oidc/callback", StatusCode::UNAUTHORIZED), "{}", page.body);
    assert!(page.body.contains("no role for this user") && page.body.contains("airlock_role"), "{}", page.body);
    assert!(page.set_cookies.iter().all(|name| name != SESSION) && browser.cookie(SESSION).is_none(), "bob got a session");

    // A callback whose state is not the one this browser's sign-in was given.
    let mut browser = room.browser();
    let (callback, from) = room.to_callback(&mut browser, "/", "alice").await;
    let (at, page) = browser.follow(&with_param(&callback, "state", "not-the-state"), from.as_ref()).await;
    assert_eq!((at.path(), page.status), ("/oidc/callback", StatusCode::UNAUTHORIZED), "{}", page.body);
    assert!(page.body.contains("state mismatch"), "{}", page.body);
    assert!(browser.cookie(SESSION).is_none(), "a wrong state made a session");

    // The same, naming another issuer (RFC 9207: a mix-up with another provider).
    let mut browser = room.browser();
    let (callback, from) = room.to_callback(&mut browser, "/", "alice").await;
    assert_eq!(query(&callback, "iss"), room.provider.issuer, "the provider names itself in the callback");
    let (at, page) = browser.follow(&with_param(&callback, "iss", "https://idp.example"), from.as_ref()).await;
    assert_eq!((at.path(), page.status), ("/oidc/callback", StatusCode::UNAUTHORIZED), "{}", page.body);
    assert!(page.body.contains("names issuer"), "{}", page.body);
    assert!(browser.cookie(SESSION).is_none(), "a wrong issuer made a session");

    // A callback in a browser that did not start the sign-in (no pending cookie).
    let mut browser = room.browser();
    let (callback, from) = room.to_callback(&mut browser, "/", "alice").await;
    browser.forget(PENDING);
    let (at, page) = browser.follow(&callback, from.as_ref()).await;
    assert_eq!((at.path(), page.status), ("/oidc/callback", StatusCode::BAD_REQUEST), "{}", page.body);
    assert!(page.body.contains("not started here"), "{}", page.body);
    assert!(browser.cookie(SESSION).is_none(), "a callback without its pending sign-in made a session");

    let list: Value = serde_json::from_str(&room.gw.ok(&["user", "list", "--json"])).expect("JSON");
    assert_eq!(list["users"].as_array().map(Vec::len).unwrap_or(0), 0, "{list}");
}
