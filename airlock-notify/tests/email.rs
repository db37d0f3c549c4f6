//! Email deliveries to a real SMTP server (Debian's python3-aiosmtpd, run
//! from tests/smtp_server.py) on 127.0.0.1, with STARTTLS on a certificate
//! from a test CA.

mod support;

use std::path::Path;

use airlock_notify::{EmailConfig, Notifier, NotifyConfig, StartTls};
use support::{log_lines_with, notification, smtp_python, SmtpOptions, SmtpServer, TestPki, FLUSH};

fn email(port: u16, starttls: StartTls, ca_file: Option<&Path>) -> EmailConfig {
    EmailConfig {
        smtp_host: "127.0.0.1".into(),
        smtp_port: port,
        from: "Airlock <airlock@example.test>".into(),
        to: vec![
            "approvers@example.test".into(),
            "Second Approver <second@example.test>".into(),
        ],
        username: None,
        password_file: None,
        starttls,
        ca_file: ca_file.map(Path::to_path_buf),
        timeout_seconds: 30,
        max_attempts: 3,
        initial_backoff_ms: 10,
    }
}

fn start(email: EmailConfig) -> Notifier {
    support::capture_logs();
    Notifier::start(NotifyConfig {
        webhooks: Vec::new(),
        email: Some(email),
    })
    .expect("start the notifier")
}

/// A header's value in a raw message (the header block ends at the first
/// empty line).
fn header<'a>(content: &'a str, name: &str) -> Option<&'a str> {
    content.split("\r\n\r\n").next()?.lines().find_map(|l| {
        l.split_once(':')
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
    })
}

#[test]
fn opportunistic_upgrades_with_starttls() {
    let Some(python) = smtp_python() else { return };
    let pki = TestPki::new();
    let server = SmtpServer::start(
        &python,
        SmtpOptions {
            tls: Some(&pki),
            ..Default::default()
        },
    );
    let notifier = start(email(
        server.port,
        StartTls::Opportunistic,
        Some(&pki.ca_file),
    ));
    notifier.send(notification("req-1"));
    assert!(notifier.flush(FLUSH), "the delivery did not finish");

    let stats = notifier.stats();
    assert_eq!(
        (stats.email.sent, stats.email.failed, stats.email.retried),
        (1, 0, 0),
        "{stats:?}"
    );
    let messages = server.messages();
    assert_eq!(messages.len(), 1, "{messages:#?}");
    let m = &messages[0];
    assert_eq!(m["tls"], true, "the session was not upgraded: {m:#}");
    assert!(
        m["tls_version"]
            .as_str()
            .is_some_and(|v| v.starts_with("TLSv1.")),
        "{m:#}"
    );
    assert_eq!(m["mail_from"], "airlock@example.test");
    assert_eq!(
        m["rcpt_tos"],
        serde_json::json!(["approvers@example.test", "second@example.test"])
    );

    let content = m["content"].as_str().unwrap();
    assert_eq!(
        header(content, "Subject"),
        Some("Approval needed: req-1"),
        "{content}"
    );
    assert_eq!(
        header(content, "From"),
        Some("Airlock <airlock@example.test>"),
        "{content}"
    );
    let to = header(content, "To").unwrap();
    assert!(
        to.contains("approvers@example.test") && to.contains("second@example.test"),
        "{to}"
    );
    assert_eq!(
        header(content, "X-Airlock-Event"),
        Some("approval.requested")
    );
    assert_eq!(
        header(content, "X-Airlock-Delivery"),
        Some("req-1:approval.requested")
    );
    assert!(
        header(content, "Content-Type")
            .unwrap()
            .starts_with("text/plain"),
        "{content}"
    );
    let message_id = header(content, "Message-ID").unwrap_or_default();
    assert!(
        message_id.starts_with('<') && message_id.ends_with('>'),
        "{content}"
    );
    let body = content.split_once("\r\n\r\n").unwrap().1;
    assert!(
        body.contains("An agent asks to run `rm -rf build/` (req-1)."),
        "{body}"
    );
}

#[test]
fn required_fails_when_starttls_is_not_offered() {
    let Some(python) = smtp_python() else { return };
    let server = SmtpServer::start(&python, SmtpOptions::default());
    let notifier = start(email(server.port, StartTls::Required, None));
    notifier.send(notification("req-2"));
    assert!(notifier.flush(FLUSH));

    assert!(
        server.messages().is_empty(),
        "a message went out without TLS"
    );
    let stats = notifier.stats();
    // The server's abilities will not change between retries: failed at once.
    assert_eq!(
        (stats.email.sent, stats.email.failed, stats.email.retried),
        (0, 1, 0),
        "{stats:?}"
    );
    let lines = log_lines_with(&format!("smtp://127.0.0.1:{}", server.port));
    assert!(
        lines
            .iter()
            .any(|l| l.contains("ERROR") && l.contains("email") && l.contains("STARTTLS")),
        "{lines:#?}"
    );
}

#[test]
fn opportunistic_sends_in_clear_when_not_offered_and_never_does_not_upgrade() {
    let Some(python) = smtp_python() else { return };
    let plain = SmtpServer::start(&python, SmtpOptions::default());
    let notifier = start(email(plain.port, StartTls::Opportunistic, None));
    notifier.send(notification("req-3"));
    assert!(notifier.flush(FLUSH));
    assert_eq!(notifier.stats().email.sent, 1);
    assert_eq!(plain.messages()[0]["tls"], false);

    let pki = TestPki::new();
    let offering = SmtpServer::start(
        &python,
        SmtpOptions {
            tls: Some(&pki),
            ..Default::default()
        },
    );
    let notifier = start(email(offering.port, StartTls::Never, None));
    notifier.send(notification("req-4"));
    assert!(notifier.flush(FLUSH));
    assert_eq!(notifier.stats().email.sent, 1);
    assert_eq!(offering.messages()[0]["tls"], false);
}

#[test]
fn untrusted_certificate_is_not_a_reason_to_fall_back_to_clear_text() {
    let Some(python) = smtp_python() else { return };
    let pki = TestPki::new();
    let server = SmtpServer::start(
        &python,
        SmtpOptions {
            tls: Some(&pki),
            ..Default::default()
        },
    );
    // No ca_file: the test CA is not trusted.
    let notifier = start(email(server.port, StartTls::Opportunistic, None));
    notifier.send(notification("req-5"));
    assert!(notifier.flush(FLUSH));

    assert!(server.messages().is_empty());
    let stats = notifier.stats();
    assert_eq!(
        (stats.email.sent, stats.email.failed, stats.email.retried),
        (0, 1, 2),
        "{stats:?}"
    );
    let lines = log_lines_with(&format!("smtp://127.0.0.1:{}", server.port));
    assert!(lines.iter().any(|l| l.contains("giving up")), "{lines:#?}");
}

#[test]
fn transient_reply_is_retried_with_the_same_message() {
    let Some(python) = smtp_python() else { return };
    let pki = TestPki::new();
    let server = SmtpServer::start(
        &python,
        SmtpOptions {
            tls: Some(&pki),
            fail_first: 2,
            ..Default::default()
        },
    );
    let notifier = start(email(server.port, StartTls::Required, Some(&pki.ca_file)));
    notifier.send(notification("req-9"));
    assert!(notifier.flush(FLUSH));

    let stats = notifier.stats();
    assert_eq!(
        (stats.email.sent, stats.email.failed, stats.email.retried),
        (1, 0, 2),
        "{stats:?}"
    );
    let messages = server.messages();
    let answers: Vec<_> = messages
        .iter()
        .map(|m| m["answer"].as_u64().unwrap())
        .collect();
    assert_eq!(answers, [451, 451, 250]);
    let contents: Vec<_> = messages
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert!(
        contents.iter().all(|c| *c == contents[0]),
        "a retry sends the same message: {contents:#?}"
    );
    let lines = log_lines_with(&format!("smtp://127.0.0.1:{}", server.port));
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains("WARN") && l.contains("451"))
            .count(),
        2,
        "{lines:#?}"
    );
}

#[test]
fn login_after_starttls() {
    let Some(python) = smtp_python() else { return };
    let pki = TestPki::new();
    let server = SmtpServer::start(
        &python,
        SmtpOptions {
            tls: Some(&pki),
            login: Some(("airlock", "correct horse")),
            ..Default::default()
        },
    );
    let password_file = support::write_file(pki.dir.path(), "smtp-password", "correct horse\n");
    let mut config = email(server.port, StartTls::Required, Some(&pki.ca_file));
    config.username = Some("airlock".into());
    config.password_file = Some(password_file.clone());
    let notifier = start(config.clone());
    notifier.send(notification("req-6"));
    assert!(notifier.flush(FLUSH));
    assert_eq!(notifier.stats().email.sent, 1);
    let messages = server.messages();
    assert_eq!(
        (&messages[0]["user"], &messages[0]["tls"]),
        (&serde_json::json!("airlock"), &serde_json::json!(true))
    );

    // A wrong password is a permanent (5xx) answer: not retried.
    std::fs::write(&password_file, "wrong\n").unwrap();
    let notifier = start(config);
    notifier.send(notification("req-7"));
    assert!(notifier.flush(FLUSH));
    let stats = notifier.stats();
    assert_eq!(
        (stats.email.sent, stats.email.failed, stats.email.retried),
        (0, 1, 0),
        "{stats:?}"
    );
    assert_eq!(server.messages().len(), 1);
}

#[test]
fn one_notification_reaches_webhook_and_email() {
    let Some(python) = smtp_python() else { return };
    let pki = TestPki::new();
    let server = SmtpServer::start(
        &python,
        SmtpOptions {
            tls: Some(&pki),
            ..Default::default()
        },
    );
    let receiver = support::Receiver::start(&[], None);
    support::capture_logs();
    let notifier = Notifier::start(NotifyConfig {
        webhooks: vec![support::webhook(&receiver.url("http", "/"), "s")],
        email: Some(email(
            server.port,
            StartTls::Opportunistic,
            Some(&pki.ca_file),
        )),
    })
    .unwrap();
    let mut decided = notification("req-8");
    decided.event = "approval.decided".into();
    decided.id = "req-8:approval.decided".into();
    notifier.send(decided);
    assert!(notifier.flush(FLUSH));

    let stats = notifier.stats();
    assert_eq!(
        (
            stats.sent,
            stats.webhook.sent,
            stats.email.sent,
            stats.failed
        ),
        (2, 1, 1, 0),
        "{stats:?}"
    );
    assert_eq!(
        receiver.requests()[0].header("x-airlock-event"),
        Some("approval.decided")
    );
    let content = server.messages()[0]["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        header(&content, "X-Airlock-Event"),
        Some("approval.decided")
    );
}
