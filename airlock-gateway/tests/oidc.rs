//! Sign-in with OpenID Connect against a real provider, at the level of the
//! relying party (`ui::oidc`): the certified `oidc-provider` npm package
//! (tests/oidc/provider.mjs, installed by scripts/setup.sh under
//! target/oidc-provider) on 127.0.0.1. The test plays the browser: it follows
//! the authorization URL, fills the provider's login and consent pages, and
//! stops at the redirect to the gateway's callback. (The whole sign-in
//! through a running gateway is tests/control_room_oidc.rs.)
//!
//! Without node or the package the tests print "SKIPPED" and pass, unless
//! AIRLOCK_REQUIRE_OIDC=1 (scripts/test.sh), where that is a failure.

mod support;

use airlock_gateway::tokens::Role;
use airlock_gateway::ui::oidc::{OidcClient, OidcError, PendingSignIn};
use support::oidc::{query, Browser, Provider};
use url::Url;

/// Never contacted: the browser stops at the redirect to it.
const REDIRECT: &str = "http://127.0.0.1:9/oidc/callback";

/// From the authorization URL to the redirect to the callback, signing in
/// as `login` in a new browser; returns the callback URL (state, code, iss).
async fn to_callback(authorization: &str, login: &str) -> Url {
    let start = Url::parse(authorization).expect("authorization URL");
    Browser::default().sign_in(&start, None, login, |url| url.as_str().starts_with(REDIRECT)).await.0
}

/// begin, the browser's round trip as `login`, and the callback's (state, code).
async fn round_trip(client: &OidcClient, login: &str) -> (PendingSignIn, String, String) {
    let (authorization, pending) = client.begin().expect("begin");
    let callback = to_callback(&authorization, login).await;
    (pending, query(&callback, "state"), query(&callback, "code"))
}

#[tokio::test]
async fn alice_signs_in_as_approver_with_her_username() {
    let Some(provider) = Provider::start("alice", REDIRECT) else {
        return;
    };
    let client = OidcClient::discover(provider.settings("gw-confidential", true)).await.expect("discover");
    let (authorization, pending) = client.begin().expect("begin");
    let auth = Url::parse(&authorization).expect("URL");
    assert_eq!(query(&auth, "code_challenge_method"), "S256");
    assert_eq!(query(&auth, "scope"), "openid profile email");
    let callback = to_callback(&authorization, "alice").await;
    let (state, code) = (query(&callback, "state"), query(&callback, "code"));
    let me = client.finish(&pending, &state, &code).await.expect("alice signs in");
    assert_eq!((me.username.as_str(), me.subject.as_str(), me.role), ("alice", "alice", Role::Approver));
    assert_eq!((me.issuer.as_str(), me.org.as_str()), (provider.issuer.as_str(), "default"));

    // The issuer must be the provider's own, to the character.
    let mut wrong = provider.settings("gw-confidential", true);
    wrong.issuer.push('/');
    let err = OidcClient::discover(wrong).await.err().expect("issuer with a slash refused").to_string();
    assert!(err.contains("issuer"), "{err}");
}

#[tokio::test]
async fn bob_without_the_role_claim_is_refused_unless_a_default_role_is_set() {
    let Some(provider) = Provider::start("bob", REDIRECT) else {
        return;
    };
    let client = OidcClient::discover(provider.settings("gw-confidential", true)).await.expect("discover");
    let (pending, state, code) = round_trip(&client, "bob").await;
    let err = client.finish(&pending, &state, &code).await.expect_err("bob has no role");
    assert!(matches!(err, OidcError::NoRole { .. }), "{err}");
    assert!(err.to_string().contains("\"airlock_role\""), "{err}");

    let mut settings = provider.settings("gw-confidential", true);
    settings.default_role = Some("viewer".into());
    settings.org = Some("acme".into());
    let client = OidcClient::discover(settings).await.expect("discover");
    let (pending, state, code) = round_trip(&client, "bob").await;
    let bob = client.finish(&pending, &state, &code).await.expect("bob as viewer");
    assert_eq!((bob.username.as_str(), bob.role, bob.org.as_str()), ("bob", Role::Viewer, "acme"));
}

#[tokio::test]
async fn a_wrong_state_and_a_reused_code_are_refused() {
    let Some(provider) = Provider::start("replay", REDIRECT) else {
        return;
    };
    let client = OidcClient::discover(provider.settings("gw-confidential", true)).await.expect("discover");
    let (pending, state, code) = round_trip(&client, "alice").await;
    let err = client.finish(&pending, "not-the-state", &code).await.expect_err("wrong state");
    assert!(matches!(err, OidcError::StateMismatch), "{err}");
    client.finish(&pending, &state, &code).await.expect("first use of the code");
    let err = client.finish(&pending, &state, &code).await.expect_err("code used twice");
    assert!(matches!(&err, OidcError::TokenRefused { error, .. } if error == "invalid_grant"), "{err}");
}

#[tokio::test]
async fn another_nonce_an_old_sign_in_and_a_wrong_secret_are_refused() {
    let Some(provider) = Provider::start("nonce", REDIRECT) else {
        return;
    };
    let client = OidcClient::discover(provider.settings("gw-confidential", true)).await.expect("discover");
    let (pending, state, code) = round_trip(&client, "alice").await;
    let other = PendingSignIn { nonce: "another-nonce".into(), ..pending.clone() };
    let err = client.finish(&other, &state, &code).await.expect_err("nonce");
    assert!(matches!(&err, OidcError::IdToken(why) if why.contains("nonce")), "{err}");

    let (pending, state, code) = round_trip(&client, "alice").await;
    let old = PendingSignIn { created_ns: pending.created_ns - 11 * 60 * 1_000_000_000, ..pending.clone() };
    let err = client.finish(&old, &state, &code).await.expect_err("eleven minutes old");
    assert!(matches!(err, OidcError::Expired), "{err}");

    let settings = provider.settings("gw-confidential", true);
    if let Some(path) = &settings.client_secret_file {
        std::fs::write(path, "not the secret").expect("secret file");
    }
    let client = OidcClient::discover(settings).await.expect("discover");
    let (pending, state, code) = round_trip(&client, "alice").await;
    let err = client.finish(&pending, &state, &code).await.expect_err("wrong secret");
    assert!(matches!(&err, OidcError::TokenRefused { error, .. } if error == "invalid_client"), "{err}");
}

#[tokio::test]
async fn a_public_client_verifies_es256_and_reads_claims_from_userinfo() {
    let Some(provider) = Provider::start("public", REDIRECT) else {
        return;
    };
    let client = OidcClient::discover(provider.settings("gw-public", false)).await.expect("discover");
    // carol: airlock_role ["ops", "sec"] (viewer and admin: admin wins), no preferred_username.
    let (authorization, pending) = client.begin().expect("begin");
    let callback = to_callback(&authorization, "carol").await;
    let carol = client.finish_callback(&pending, callback.query().unwrap_or("")).await.expect("carol signs in");
    assert_eq!((carol.username.as_str(), carol.role), ("carol@example.test", Role::Admin));

    // An error the provider sends back is reported with its description.
    let (_, pending) = client.begin().expect("begin");
    let query = format!("error=access_denied&error_description=the+user+said+no&state={}", pending.state);
    let err = client.finish_callback(&pending, &query).await.expect_err("denied");
    assert!(err.to_string().contains("access_denied") && err.to_string().contains("the user said no"), "{err}");
}
