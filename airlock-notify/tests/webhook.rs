//! Webhook deliveries to a real HTTP(S) receiver on 127.0.0.1: the body,
//! the signature checked independently, retries, give-ups and the queue.

mod support;

use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use airlock_notify::{Notifier, NotifierOptions, NotifyConfig};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use support::{closed_port, log_lines_with, notification, webhook, Receiver, TestPki, FLUSH};

fn start(webhooks: Vec<airlock_notify::WebhookConfig>) -> Notifier {
    support::capture_logs();
    Notifier::start(NotifyConfig {
        webhooks,
        email: None,
    })
    .expect("start the notifier")
}

/// The documented recipe, done by hand: split the header, HMAC `t.body`.
fn signature_is_valid(secret: &str, header: &str, body: &[u8]) -> bool {
    let fields: Vec<(&str, &str)> = header
        .split(',')
        .filter_map(|p| p.split_once('='))
        .collect();
    let field = |k: &str| fields.iter().find(|(name, _)| *name == k).map(|(_, v)| *v);
    let (Some(t), Some(v1)) = (field("t"), field("v1")) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(t.as_bytes());
    mac.update(b".");
    mac.update(body);
    let Ok(v1) = hex::decode(v1) else {
        return false;
    };
    mac.verify_slice(&v1).is_ok()
}

#[test]
fn delivers_signed_json() {
    let receiver = Receiver::start(&[], None);
    let notifier = start(vec![webhook(
        &receiver.url("http", "/hooks/airlock?team=ops"),
        "top secret",
    )]);
    notifier.send(notification("req-1"));
    assert!(notifier.flush(FLUSH), "the delivery did not finish");

    let requests = receiver.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    let r = &requests[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/hooks/airlock?team=ops");
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("x-airlock-event"), Some("approval.requested"));
    assert_eq!(
        r.header("x-airlock-delivery"),
        Some("req-1:approval.requested")
    );

    let body: serde_json::Value = serde_json::from_slice(&r.body).expect("a JSON body");
    assert_eq!(body["event"], "approval.requested");
    assert_eq!(body["id"], "req-1:approval.requested");
    assert_eq!(
        body["data"],
        serde_json::json!({"request_id": "req-1", "command": "rm -rf build/", "host": "host-1"})
    );
    let sent_at = body["sent_at"].as_str().expect("sent_at is a string");
    time::OffsetDateTime::parse(sent_at, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("sent_at {sent_at:?} is not RFC 3339: {e}"));
    assert_eq!(body.as_object().unwrap().len(), 4, "{body}");

    let signature = r.header("x-airlock-signature").expect("a signature header");
    assert!(
        signature_is_valid("top secret", signature, &r.body),
        "{signature}"
    );
    assert!(!signature_is_valid("another secret", signature, &r.body));
    let mut tampered = r.body.clone();
    tampered[1] ^= 1;
    assert!(!signature_is_valid("top secret", signature, &tampered));
    // The timestamp is the clock's now (a receiver rejects one more than 5 minutes off).
    let t: u64 = signature
        .strip_prefix("t=")
        .and_then(|s| s.split(',').next())
        .unwrap()
        .parse()
        .unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(t.abs_diff(now) < 300, "t={t}, now={now}");

    let stats = notifier.stats();
    assert_eq!(
        (stats.sent, stats.failed, stats.retried, stats.dropped),
        (1, 0, 0, 0)
    );
    assert_eq!(stats.webhook.sent, 1);

    python_verifies(signature, &r.body);
}

/// The Python recipe of the webhook module's documentation, run as written
/// against the request just received.
fn python_verifies(signature: &str, body: &[u8]) {
    let docs = include_str!("../src/webhook.rs");
    let recipe: String = docs
        .split("//! ```python\n")
        .nth(1)
        .and_then(|rest| rest.split("//! ```\n").next())
        .expect("the Python recipe in the webhook docs")
        .lines()
        .map(|l| {
            l.strip_prefix("//! ")
                .or_else(|| l.strip_prefix("//!"))
                .unwrap_or(l)
        })
        .collect::<Vec<_>>()
        .join("\n");
    let dir = tempfile::tempdir().unwrap();
    let body_file = support::write_file(dir.path(), "body", "");
    std::fs::write(&body_file, body).unwrap();
    let program = format!(
        "{recipe}\nimport sys\nbody = open(sys.argv[2], 'rb').read()\n\
         ok = verify(b'top secret', sys.argv[1], body) and not verify(b'wrong', sys.argv[1], body)\n\
         sys.exit(0 if ok else 1)\n"
    );
    let status = match Command::new("python3")
        .arg("-c")
        .arg(&program)
        .arg(signature)
        .arg(&body_file)
        .status()
    {
        Ok(status) => status,
        Err(e) => {
            println!("skipped the Python check: python3: {e}");
            return;
        }
    };
    assert!(
        status.success(),
        "the documented Python recipe rejected a good request:\n{program}"
    );
}

#[test]
fn retries_5xx_then_delivers_once() {
    let receiver = Receiver::start(&[500, 500, 200], None);
    let notifier = start(vec![webhook(&receiver.url("http", "/"), "s")]);
    notifier.send(notification("req-2"));
    assert!(notifier.flush(FLUSH));

    let requests = receiver.requests();
    assert_eq!(requests.len(), 3, "{requests:?}");
    for r in &requests {
        assert_eq!(
            r.header("x-airlock-delivery"),
            Some("req-2:approval.requested")
        );
        assert_eq!(r.body, requests[0].body, "a retry sends the same body");
        assert!(signature_is_valid(
            "s",
            r.header("x-airlock-signature").unwrap(),
            &r.body
        ));
    }
    let stats = notifier.stats();
    assert_eq!(
        (
            stats.webhook.sent,
            stats.webhook.retried,
            stats.webhook.failed
        ),
        (1, 2, 0)
    );
    let retries = log_lines_with(&format!("{}/", receiver.addr));
    assert!(
        retries
            .iter()
            .filter(|l| l.contains("WARN") && l.contains("500"))
            .count()
            == 2,
        "{retries:#?}"
    );
}

#[test]
fn client_error_fails_without_retry() {
    let receiver = Receiver::start(&[400], None);
    let notifier = start(vec![webhook(&receiver.url("http", "/"), "s")]);
    notifier.send(notification("req-3"));
    assert!(notifier.flush(FLUSH));

    assert_eq!(receiver.requests().len(), 1);
    let stats = notifier.stats();
    assert_eq!(
        (
            stats.webhook.sent,
            stats.webhook.retried,
            stats.webhook.failed
        ),
        (0, 0, 1)
    );
    let lines = log_lines_with(&format!("{}/", receiver.addr));
    assert!(
        lines.iter().any(|l| l.contains("ERROR")
            && l.contains("webhook")
            && l.contains("HTTP 400")
            && l.contains("test receiver says 400")),
        "{lines:#?}"
    );
}

#[test]
fn unreachable_receiver_fails_after_max_attempts() {
    let port = closed_port();
    let notifier = start(vec![webhook(&format!("http://127.0.0.1:{port}/hook"), "s")]);
    notifier.send(notification("req-4"));
    assert!(notifier.flush(FLUSH));

    let stats = notifier.stats();
    assert_eq!(
        (
            stats.webhook.sent,
            stats.webhook.retried,
            stats.webhook.failed
        ),
        (0, 2, 1)
    );
    let lines = log_lines_with(&format!("127.0.0.1:{port}"));
    assert!(
        lines
            .iter()
            .any(|l| l.contains("ERROR") && l.contains("giving up") && l.contains("connecting")),
        "{lines:#?}"
    );
}

#[test]
fn silent_receiver_times_out() {
    // Accepts connections (the kernel does, from the backlog) and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut hook = webhook(&format!("http://{}/", silent.local_addr().unwrap()), "s");
    hook.timeout_seconds = 1;
    hook.max_attempts = 1;
    let notifier = start(vec![hook]);
    notifier.send(notification("req-5"));
    assert!(notifier.flush(FLUSH));

    assert_eq!(notifier.stats().webhook.failed, 1);
    let lines = log_lines_with(&silent.local_addr().unwrap().to_string());
    assert!(lines.iter().any(|l| l.contains("timed out")), "{lines:#?}");
}

#[test]
fn full_queue_drops_and_counts() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut hook = webhook(&format!("http://{}/", silent.local_addr().unwrap()), "s");
    hook.timeout_seconds = 600;
    support::capture_logs();
    let options = NotifierOptions {
        queue_capacity: 2,
        max_in_flight: 1,
    };
    let notifier = Notifier::start_with(
        NotifyConfig {
            webhooks: vec![hook],
            email: None,
        },
        options,
    )
    .unwrap();

    // The first notification takes the only delivery slot: once its
    // connection arrives, the thread is stuck on it.
    notifier.send(notification("first"));
    let (_connection, _) = silent.accept().expect("the first delivery connects");
    for i in 0..10 {
        notifier.send(notification(&format!("more-{i}")));
    }
    let stats = notifier.stats();
    assert_eq!(
        stats.dropped, 8,
        "2 fit the queue, the rest are dropped: {stats:?}"
    );
    assert_eq!((stats.sent, stats.failed), (0, 0));
    assert!(
        !notifier.flush(std::time::Duration::from_millis(50)),
        "nothing can finish"
    );
    let lines = log_lines_with("approval notification dropped");
    assert!(lines.iter().any(|l| l.contains("more-")), "{lines:#?}");
}

#[test]
fn https_with_ca_file_and_several_webhooks() {
    let pki = TestPki::new();
    let secure = Receiver::start(&[], Some(&pki));
    let plain = Receiver::start(&[], None);
    let mut trusted = webhook(&secure.url("https", "/secure"), "k1");
    trusted.ca_file = Some(pki.ca_file.clone());
    let by_name = {
        let mut w = webhook(
            &format!("https://localhost:{}/by-name", secure.addr.port()),
            "k2",
        );
        w.ca_file = Some(pki.ca_file.clone());
        w
    };
    let notifier = start(vec![
        trusted,
        by_name,
        webhook(&plain.url("http", "/plain"), "k3"),
    ]);
    notifier.send(notification("req-6"));
    assert!(notifier.flush(FLUSH));

    let stats = notifier.stats();
    assert_eq!(
        (stats.webhook.sent, stats.webhook.failed),
        (3, 0),
        "{stats:?}"
    );
    let secure_requests = secure.requests();
    assert_eq!(secure_requests.len(), 2);
    for r in &secure_requests {
        let secret = if r.path == "/secure" { "k1" } else { "k2" };
        assert!(signature_is_valid(
            secret,
            r.header("x-airlock-signature").unwrap(),
            &r.body
        ));
    }
    assert_eq!(plain.requests().len(), 1);
}

#[test]
fn https_without_the_ca_is_refused() {
    let pki = TestPki::new();
    let secure = Receiver::start(&[], Some(&pki));
    let mut untrusted = webhook(&secure.url("https", "/"), "s");
    untrusted.max_attempts = 2;
    let notifier = start(vec![untrusted]);
    notifier.send(notification("req-7"));
    assert!(notifier.flush(FLUSH));

    assert!(
        secure.requests().is_empty(),
        "no request crosses an unverified connection"
    );
    let stats = notifier.stats();
    assert_eq!((stats.webhook.sent, stats.webhook.failed), (0, 1));
    let lines = log_lines_with(&secure.addr.to_string());
    assert!(
        lines.iter().any(|l| l.contains("TLS handshake")),
        "{lines:#?}"
    );
}

/// The gateway starts, feeds and drops its notifier in async code.
#[tokio::test]
async fn works_from_async_code() {
    let receiver = Receiver::start(&[], None);
    let notifier = start(vec![webhook(&receiver.url("http", "/"), "s")]);
    notifier.send(notification("req-9"));
    // flush blocks: async code calls it off the runtime's threads.
    let waiting = notifier.clone();
    let flushed = tokio::task::spawn_blocking(move || waiting.flush(FLUSH))
        .await
        .unwrap();
    assert!(flushed);
    assert_eq!(receiver.requests().len(), 1);
    assert_eq!(notifier.stats().webhook.sent, 1);
}

#[test]
fn nothing_configured_is_a_no_op() {
    let notifier = Notifier::start(NotifyConfig::default()).unwrap();
    assert!(!notifier.is_enabled());
    notifier.send(notification("req-8"));
    assert!(notifier.flush(std::time::Duration::ZERO));
    assert_eq!(notifier.stats(), airlock_notify::NotifyStats::default());
}

#[test]
fn start_refuses_an_invalid_config() {
    let mut hook = webhook("ftp://127.0.0.1/", "s");
    hook.secret = None;
    let error = Notifier::start(NotifyConfig {
        webhooks: vec![hook],
        email: None,
    })
    .unwrap_err();
    let text = format!("{error:#}");
    assert!(text.contains("notify.webhooks[0].url"), "{text}");
}
