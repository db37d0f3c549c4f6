//! Checking the ID token (OpenID Connect Core 3.1.3.7) against the
//! provider's keys, which are refetched when it has rotated them.

use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use super::{claim_values, OidcClient, OidcError, LEEWAY_S};

/// The provider's signing keys (by key id) and when they were read.
pub(super) struct Jwks {
    pub(super) keys: Vec<(Option<String>, DecodingKey)>,
    pub(super) fetched: Instant,
}

/// An unknown key id refetches the JWKS (the provider rotated its keys), but
/// no more often than this, so forged tokens cannot make us hammer it.
const JWKS_REFETCH_EVERY: Duration = Duration::from_secs(60);
/// The signature algorithms accepted. Symmetric ones (HS*) would make the
/// client secret a signing key, and `none` is no signature.
const ALGORITHMS: &[Algorithm] = &[
    Algorithm::RS256, Algorithm::RS384, Algorithm::RS512,
    Algorithm::PS256, Algorithm::PS384, Algorithm::PS512,
    Algorithm::ES256, Algorithm::ES384, Algorithm::EdDSA,
];

/// The JWKS's signing keys that jsonwebtoken can use; others (encryption
/// keys, unknown key types) are skipped rather than failing the whole set.
pub(super) fn parse_jwks(doc: &Value) -> Vec<(Option<String>, DecodingKey)> {
    let keys = doc.get("keys").and_then(Value::as_array).cloned().unwrap_or_default();
    keys.into_iter()
        .filter_map(|key| {
            let jwk: Jwk = serde_json::from_value(key).ok()?;
            if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
                return None;
            }
            let decoding = DecodingKey::from_jwk(&jwk).ok()?;
            Some((jwk.common.key_id.clone(), decoding))
        })
        .collect()
}

/// What the ID token must say.
pub(super) struct Expected<'a> {
    pub issuer: &'a str,
    pub client_id: &'a str,
    pub nonce: &'a str,
}

/// Why a token was refused, and whether fresh keys could change that (no key
/// for its kid, or no key verifies its signature).
type Refusal = (bool, OidcError);

/// The token's claims once its signature (against `keys`), issuer, audience,
/// azp, times and nonce are checked (OpenID Connect Core 3.1.3.7).
fn check(id_token: &str, keys: &[(Option<String>, DecodingKey)], expected: &Expected) -> Result<Map<String, Value>, Refusal> {
    let invalid = |why: String| (false, OidcError::IdToken(why));
    let header = jsonwebtoken::decode_header(id_token).map_err(|e| invalid(format!("unreadable header: {e}")))?;
    if !ALGORITHMS.contains(&header.alg) {
        return Err(invalid(format!("signed with {:?}, which the gateway does not accept", header.alg)));
    }
    let mut validation = Validation::new(header.alg);
    validation.leeway = LEEWAY_S;
    validation.set_issuer(&[expected.issuer]);
    validation.set_audience(&[expected.client_id]);
    validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
    let kid = header.kid.as_deref();
    // By key id when the token names one, else every key of the algorithm's family.
    let candidates = keys
        .iter()
        .filter(|(key_id, key)| key.family() == header.alg.family() && (kid.is_none() || key_id.as_deref() == kid));
    // Claims are checked only once a signature verifies, so an error other
    // than a signature mismatch is the one to report.
    let mut failure: Option<jsonwebtoken::errors::Error> = None;
    let mut verified = None;
    for (_, key) in candidates {
        match jsonwebtoken::decode::<Map<String, Value>>(id_token, key, &validation) {
            Ok(data) => {
                verified = Some(data.claims);
                break;
            }
            Err(_) if failure.as_ref().is_some_and(|f| !is_signature(f)) => {}
            Err(e) => failure = Some(e),
        }
    }
    let claims = match (verified, failure) {
        (Some(claims), _) => claims,
        (None, Some(e)) => return Err((is_signature(&e), OidcError::IdToken(token_error(&e)))),
        (None, None) => {
            let why = format!("no key in the provider's JWKS for key id {:?} and {:?}", kid.unwrap_or("(none)"), header.alg);
            return Err((true, OidcError::IdToken(why)));
        }
    };
    let text = |name: &str| claims.get(name).and_then(Value::as_str);
    match text("azp") {
        Some(azp) if azp != expected.client_id => {
            return Err(invalid(format!("azp {azp:?} is not this client ({:?})", expected.client_id)))
        }
        None if claim_values(claims.get("aud")).len() > 1 => return Err(invalid("several audiences and no azp".into())),
        _ => {}
    }
    let now = crate::now_ns() / 1_000_000_000;
    match claims.get("iat").and_then(Value::as_i64) {
        Some(iat) if iat <= now + LEEWAY_S as i64 => {}
        Some(iat) => return Err(invalid(format!("issued in the future (iat {iat}, now {now})"))),
        None => return Err(invalid("iat is not a number".into())),
    }
    if text("nonce") != Some(expected.nonce) {
        return Err(invalid("nonce mismatch: the token was not issued for this sign-in".into()));
    }
    Ok(claims)
}

impl OidcClient {
    /// The ID token's claims once checked; the keys are refetched once if
    /// none verifies it (the provider may have rotated them).
    pub(super) async fn verify(&self, id_token: &str, nonce: &str) -> Result<Map<String, Value>, OidcError> {
        let expected = Expected { issuer: &self.settings.issuer, client_id: &self.settings.client_id, nonce };
        let mut refetched = false;
        loop {
            let keys = self.jwks.lock().map(|jwks| jwks.keys.clone()).unwrap_or_default();
            match check(id_token, &keys, &expected) {
                Ok(claims) => return Ok(claims),
                Err((true, _)) if !refetched && self.refetch_jwks().await? => refetched = true,
                Err((_, e)) => return Err(e),
            }
        }
    }

    /// Refetches the JWKS unless it was fetched within the last minute;
    /// true when it was.
    async fn refetch_jwks(&self) -> Result<bool, OidcError> {
        {
            let Ok(jwks) = self.jwks.lock() else {
                return Ok(false);
            };
            if jwks.fetched.elapsed() < JWKS_REFETCH_EVERY {
                return Ok(false);
            }
        }
        let doc: Value = self
            .http
            .get(&self.jwks_uri, None)
            .await
            .and_then(|answer| answer.json("the provider's JWKS"))
            .map_err(OidcError::Http)?;
        let keys = parse_jwks(&doc);
        if let Ok(mut jwks) = self.jwks.lock() {
            jwks.fetched = Instant::now();
            // A provider answering an empty set keeps the keys we had.
            if !keys.is_empty() {
                jwks.keys = keys;
            }
        }
        Ok(true)
    }
}

fn is_signature(e: &jsonwebtoken::errors::Error) -> bool {
    matches!(e.kind(), jsonwebtoken::errors::ErrorKind::InvalidSignature)
}

/// jsonwebtoken's error, said in the terms of the check that failed.
fn token_error(e: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind as K;
    match e.kind() {
        K::InvalidSignature => "signature does not verify against the provider's keys".into(),
        K::InvalidIssuer => "issuer is not the configured one".into(),
        K::InvalidAudience => "audience does not include this client_id".into(),
        K::ExpiredSignature => "expired".into(),
        K::ImmatureSignature => "not valid yet".into(),
        K::MissingRequiredClaim(c) => format!("claim {c:?} is missing"),
        K::InvalidAlgorithm => "the key's type does not match the token's algorithm".into(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    use super::*;

    /// A P-256 key: the signer, and the JWKS entry a provider would publish.
    fn key(kid: &str) -> (EncodingKey, (Option<String>, DecodingKey)) {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        // The raw public key is 0x04 || x || y.
        let raw = pair.public_key_raw();
        let jwk = json!({"kty": "EC", "crv": "P-256", "kid": kid, "use": "sig",
            "x": URL_SAFE_NO_PAD.encode(&raw[1..33]), "y": URL_SAFE_NO_PAD.encode(&raw[33..])});
        let keys = parse_jwks(&json!({"keys": [jwk, {"kty": "oct", "k": "c2VjcmV0", "use": "enc"}]}));
        assert_eq!(keys.len(), 1, "the encryption key is skipped");
        (EncodingKey::from_ec_der(&pair.serialize_der()), keys.into_iter().next().unwrap())
    }

    fn token(signer: &EncodingKey, kid: &str, claims: Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(kid.into());
        jsonwebtoken::encode(&header, &claims, signer).unwrap()
    }

    fn claims(changes: Value) -> Value {
        let now = crate::now_ns() / 1_000_000_000;
        let mut claims = json!({"iss": "https://idp.test", "aud": "gw", "sub": "u1", "nonce": "n1", "iat": now, "exp": now + 300});
        for (k, v) in changes.as_object().unwrap() {
            claims[k] = v.clone();
        }
        claims
    }

    const EXPECTED: Expected = Expected { issuer: "https://idp.test", client_id: "gw", nonce: "n1" };

    fn refused(token: &str, keys: &[(Option<String>, DecodingKey)]) -> (bool, String) {
        let (retry, e) = check(token, keys, &EXPECTED).unwrap_err();
        (retry, e.to_string())
    }

    #[test]
    fn each_check_of_the_id_token() {
        let (signer, published) = key("k1");
        let keys = vec![published];
        let good = check(&token(&signer, "k1", claims(json!({}))), &keys, &EXPECTED).unwrap();
        assert_eq!(good["sub"], "u1");
        let array_aud = claims(json!({"aud": ["gw", "other"], "azp": "gw"}));
        assert!(check(&token(&signer, "k1", array_aud), &keys, &EXPECTED).is_ok());

        let (forger, _) = key("k1");
        let (retry, why) = refused(&token(&forger, "k1", claims(json!({}))), &keys);
        assert!(retry && why.contains("signature"), "{why}");
        let (retry, why) = refused(&token(&signer, "k2", claims(json!({}))), &keys);
        assert!(retry && why.contains("no key"), "{why}");

        let now = crate::now_ns() / 1_000_000_000;
        for (changes, expect) in [
            (json!({"iss": "https://evil.test"}), "issuer"),
            (json!({"aud": "another-client"}), "audience"),
            (json!({"aud": ["gw", "other"]}), "azp"),
            (json!({"azp": "other"}), "azp"),
            (json!({"exp": now - 120}), "expired"),
            (json!({"iat": now + 600}), "future"),
            (json!({"nonce": "n2"}), "nonce"),
        ] {
            let (retry, why) = refused(&token(&signer, "k1", claims(changes.clone())), &keys);
            assert!(!retry && why.contains(expect), "{changes}: {why}");
        }
        // Within the leeway: a token just expired by a clock 30 s apart passes.
        assert!(check(&token(&signer, "k1", claims(json!({"exp": now - 30}))), &keys, &EXPECTED).is_ok());
        let mut missing = claims(json!({}));
        missing.as_object_mut().unwrap().remove("nonce");
        assert!(refused(&token(&signer, "k1", missing), &keys).1.contains("nonce"));
    }

    #[test]
    fn symmetric_and_unsigned_tokens_are_refused() {
        let (_, published) = key("k1");
        let hs = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims(json!({})), &EncodingKey::from_secret(b"the client secret")).unwrap();
        assert!(refused(&hs, std::slice::from_ref(&published)).1.contains("HS256"));
        let body = URL_SAFE_NO_PAD.encode(claims(json!({})).to_string());
        let none = format!("{}.{body}.", URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#));
        assert!(refused(&none, &[published]).1.contains("unreadable"));
    }
}
