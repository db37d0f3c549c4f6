use std::io::Write as _;

use super::*;

fn parse(toml_text: &str) -> NotifyConfig {
    toml::from_str(toml_text).unwrap_or_else(|e| panic!("parsing {toml_text}: {e}"))
}

fn error(config: &NotifyConfig) -> ConfigError {
    match config.validate() {
        Ok(()) => panic!("{config:?} passed validation"),
        Err(e) => e,
    }
}

fn webhook(url: &str) -> WebhookConfig {
    WebhookConfig {
        url: url.into(),
        secret: Some("s3cret".into()),
        secret_file: None,
        ca_file: None,
        timeout_seconds: 10,
        max_attempts: 6,
        initial_backoff_ms: 1000,
    }
}

fn email() -> EmailConfig {
    EmailConfig {
        smtp_host: "mail.example.com".into(),
        smtp_port: 25,
        from: "Airlock <airlock@example.com>".into(),
        to: vec!["ops@example.com".into()],
        username: None,
        password_file: None,
        starttls: StartTls::Opportunistic,
        ca_file: None,
        timeout_seconds: 30,
        max_attempts: 6,
        initial_backoff_ms: 1000,
    }
}

fn with_webhook(w: WebhookConfig) -> NotifyConfig {
    NotifyConfig {
        webhooks: vec![webhook("https://ok.example.com/"), w],
        email: None,
    }
}

fn with_email(e: EmailConfig) -> NotifyConfig {
    NotifyConfig {
        webhooks: Vec::new(),
        email: Some(e),
    }
}

fn file(content: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(content.as_bytes()).unwrap();
    f
}

#[test]
fn toml_with_defaults() {
    let config = parse(
        r#"
        [[webhooks]]
        url = "https://hooks.example.com/airlock"
        secret = "abc"

        [email]
        smtp_host = "mail.example.com"
        from = "airlock@example.com"
        to = ["a@example.com", "B <b@example.com>"]
        "#,
    );
    assert_eq!(config.webhooks.len(), 1);
    let w = &config.webhooks[0];
    assert_eq!(
        (w.timeout_seconds, w.max_attempts, w.initial_backoff_ms),
        (10, 6, 1000)
    );
    let e = config.email.as_ref().unwrap();
    assert_eq!(
        (e.smtp_port, e.starttls, e.timeout_seconds),
        (25, StartTls::Opportunistic, 30)
    );
    assert_eq!((e.max_attempts, e.initial_backoff_ms), (6, 1000));
    config.validate().unwrap();

    let empty = parse("");
    assert!(empty.is_empty());
    empty.validate().unwrap();
}

#[test]
fn toml_starttls_modes_and_unknown_fields() {
    for (text, mode) in [
        ("opportunistic", StartTls::Opportunistic),
        ("required", StartTls::Required),
        ("never", StartTls::Never),
    ] {
        let config = parse(&format!(
            "[email]\nsmtp_host = \"h\"\nfrom = \"a@b.c\"\nto = [\"d@e.f\"]\nstarttls = \"{text}\"\n"
        ));
        assert_eq!(config.email.unwrap().starttls, mode);
    }
    let bad = toml::from_str::<NotifyConfig>(
        "[email]\nsmtp_host = \"h\"\nfrom = \"a@b.c\"\nto = [\"d@e.f\"]\nstarttls = \"always\"\n",
    );
    assert!(bad.is_err());
    let unknown =
        toml::from_str::<NotifyConfig>("[[webhooks]]\nurl = \"https://h/\"\nsecrett = \"x\"\n")
            .unwrap_err()
            .to_string();
    assert!(unknown.contains("secrett"), "{unknown}");
    assert!(toml::from_str::<NotifyConfig>("slack = 1\n").is_err());
}

#[test]
fn webhook_url_errors_name_the_field() {
    for (url, wanted) in [
        ("ftp://h/x", "unsupported scheme \"ftp\""),
        ("hooks.example.com/x", "not an absolute"),
        ("https://user:pw@h/x", "credentials in the URL"),
        ("http://", "invalid URL"),
        ("not a url", "not an absolute"),
        ("https://exa mple.com/", "invalid URL"),
    ] {
        let e = error(&with_webhook(webhook(url)));
        assert_eq!(e.field, "notify.webhooks[1].url", "{url}: {e}");
        assert!(e.message.contains(wanted), "{url}: {e}");
        assert!(e.to_string().starts_with("notify.webhooks[1].url: "), "{e}");
    }
    with_webhook(webhook("http://127.0.0.1:8080/hook?x=1"))
        .validate()
        .unwrap();
    with_webhook(webhook("https://[::1]:8443/"))
        .validate()
        .unwrap();
}

#[test]
fn webhook_secret_errors_name_the_field() {
    let mut w = webhook("https://h/");
    w.secret = None;
    let e = error(&with_webhook(w.clone()));
    assert_eq!(e.field, "notify.webhooks[1].secret");
    assert!(e.message.contains("missing"), "{e}");

    w.secret = Some(String::new());
    assert_eq!(
        error(&with_webhook(w.clone())).to_string(),
        "notify.webhooks[1].secret: empty"
    );

    let secret = file("from-a-file\n");
    w.secret = Some("x".into());
    w.secret_file = Some(secret.path().into());
    assert!(error(&with_webhook(w.clone())).message.contains("not both"));

    w.secret = None;
    let resolved = with_webhook(w.clone()).resolve().unwrap();
    assert_eq!(resolved.webhooks[1].secret, b"from-a-file");

    w.secret_file = Some("/nonexistent/airlock/secret".into());
    let e = error(&with_webhook(w.clone()));
    assert_eq!(e.field, "notify.webhooks[1].secret_file");
    assert!(
        e.message
            .contains("cannot read /nonexistent/airlock/secret"),
        "{e}"
    );

    let blank = file("\n");
    w.secret_file = Some(blank.path().into());
    let e = error(&with_webhook(w));
    assert_eq!(e.field, "notify.webhooks[1].secret_file");
    assert!(e.message.contains("is empty"), "{e}");
}

#[test]
fn webhook_numbers_and_ca_file_errors_name_the_field() {
    let mut w = webhook("https://h/");
    w.timeout_seconds = 0;
    assert_eq!(
        error(&with_webhook(w)).field,
        "notify.webhooks[1].timeout_seconds"
    );
    let mut w = webhook("https://h/");
    w.max_attempts = 0;
    assert_eq!(
        error(&with_webhook(w)).field,
        "notify.webhooks[1].max_attempts"
    );
    let mut w = webhook("https://h/");
    w.initial_backoff_ms = 0;
    assert_eq!(
        error(&with_webhook(w)).field,
        "notify.webhooks[1].initial_backoff_ms"
    );

    let not_pem = file("hello\n");
    let mut w = webhook("https://h/");
    w.ca_file = Some(not_pem.path().into());
    let e = error(&with_webhook(w));
    assert_eq!(e.field, "notify.webhooks[1].ca_file");
    assert!(e.message.contains("no PEM certificate"), "{e}");

    let mut w = webhook("https://h/");
    w.ca_file = Some("/nonexistent/ca.pem".into());
    assert!(error(&with_webhook(w)).message.contains("cannot read"));

    let ca = rcgen::generate_simple_self_signed(vec!["ca.test".into()]).unwrap();
    let ca_file = file(&ca.cert.pem());
    let mut w = webhook("http://h/");
    w.ca_file = Some(ca_file.path().into());
    let e = error(&with_webhook(w));
    assert_eq!(e.field, "notify.webhooks[1].ca_file");
    assert!(e.message.contains("http://"), "{e}");
    let mut w = webhook("https://h/");
    w.ca_file = Some(ca_file.path().into());
    with_webhook(w).validate().unwrap();
}

#[test]
fn email_address_errors_name_the_field() {
    let mut e = email();
    e.to.clear();
    assert_eq!(error(&with_email(e)).to_string(), "notify.email.to: empty");

    let mut e = email();
    e.to.push("not an address".into());
    let err = error(&with_email(e));
    assert_eq!(err.field, "notify.email.to[1]");
    assert!(
        err.message
            .contains("unparsable address \"not an address\""),
        "{err}"
    );

    let mut e = email();
    e.from = "airlock@".into();
    assert_eq!(error(&with_email(e)).field, "notify.email.from");

    let mut e = email();
    e.smtp_host = " ".into();
    assert_eq!(
        error(&with_email(e)).to_string(),
        "notify.email.smtp_host: empty"
    );

    let mut e = email();
    e.smtp_host = "smtp://mail.example.com".into();
    assert_eq!(error(&with_email(e)).field, "notify.email.smtp_host");

    let mut e = email();
    e.smtp_port = 0;
    assert_eq!(error(&with_email(e)).field, "notify.email.smtp_port");

    let mut e = email();
    e.max_attempts = 0;
    assert_eq!(error(&with_email(e)).field, "notify.email.max_attempts");
}

#[test]
fn email_credentials_errors_name_the_field() {
    let password = file("pw\n");

    let mut e = email();
    e.starttls = StartTls::Required;
    e.username = Some("airlock".into());
    let err = error(&with_email(e.clone()));
    assert_eq!(
        err.to_string(),
        "notify.email.password_file: missing: username is set"
    );

    e.username = None;
    e.password_file = Some(password.path().into());
    assert_eq!(error(&with_email(e.clone())).field, "notify.email.username");

    e.username = Some("airlock".into());
    for starttls in [StartTls::Never, StartTls::Opportunistic] {
        e.starttls = starttls;
        let err = error(&with_email(e.clone()));
        assert_eq!(err.field, "notify.email.starttls");
        assert!(err.message.contains("clear text"), "{err}");
    }

    e.starttls = StartTls::Required;
    let resolved = with_email(e.clone()).resolve().unwrap();
    assert_eq!(
        resolved.email.unwrap().credentials,
        Some(("airlock".to_string(), "pw".to_string()))
    );

    e.password_file = Some("/nonexistent/pw".into());
    let err = error(&with_email(e));
    assert_eq!(err.field, "notify.email.password_file");
    assert!(err.message.contains("cannot read"), "{err}");
}

#[test]
fn debug_output_hides_the_secret() {
    let shown = format!("{:?}", webhook("https://h/"));
    assert!(!shown.contains("s3cret"), "{shown}");
    assert!(shown.contains("<redacted>"), "{shown}");
}
