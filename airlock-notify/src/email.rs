//! Email: each notification is one plain-text message to every configured
//! recipient, through one SMTP relay.
//!
//! The message carries `X-Airlock-Event` and `X-Airlock-Delivery` headers
//! (the same values as a webhook's) for mail filters, and it is formatted
//! once: every retry sends the same bytes, Message-ID included, so a
//! duplicate can be recognized.

use anyhow::Context as _;
use lettre::address::Envelope;
use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::config::{ResolvedEmail, StartTls};
use crate::retry::{Attempt, RetryPolicy};
use crate::Notification;

pub(crate) struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
    destination: String,
    pub(crate) policy: RetryPolicy,
}

/// A message ready to send: formatted once, sent as is on every attempt.
pub(crate) struct Outgoing {
    envelope: Envelope,
    bytes: Vec<u8>,
}

impl Mailer {
    pub(crate) fn new(resolved: ResolvedEmail) -> anyhow::Result<Mailer> {
        let ResolvedEmail {
            host,
            port,
            from,
            to,
            credentials,
            starttls,
            extra_roots_pem,
            policy,
        } = resolved;
        let destination = format!("smtp://{host}:{port}");
        let tls = match starttls {
            StartTls::Never => Tls::None,
            mode => {
                let mut params = TlsParameters::builder(host.clone());
                if let Some(pem) = &extra_roots_pem {
                    let certs = Certificate::from_pem(pem)
                        .context("notify.email.ca_file: reading the certificates")?;
                    params = params.add_root_certificate(certs);
                }
                let params = params
                    .build_rustls()
                    .with_context(|| format!("TLS settings for {destination}"))?;
                if mode == StartTls::Required {
                    Tls::Required(params)
                } else {
                    Tls::Opportunistic(params)
                }
            }
        };
        // "dangerous" only in that nothing is chosen for us: TLS is set right
        // below from the config.
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
            .port(port)
            .tls(tls)
            .timeout(Some(policy.attempt_timeout));
        if let Some((user, password)) = credentials {
            builder = builder.credentials(Credentials::new(user, password));
        }
        Ok(Mailer {
            transport: builder.build(),
            from,
            to,
            destination,
            policy,
        })
    }

    pub(crate) fn destination(&self) -> &str {
        &self.destination
    }

    pub(crate) fn message(&self, n: &Notification) -> anyhow::Result<Outgoing> {
        // A Message-ID made here, not by the relay, is the same on every
        // retry: a duplicate (a 250 lost on the way back) shows as one.
        let mut builder = Message::builder()
            .from(self.from.clone())
            .subject(n.subject.as_str())
            .message_id(None);
        for to in &self.to {
            builder = builder.to(to.clone());
        }
        let message = builder
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("X-Airlock-Event"),
                n.event.clone(),
            ))
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("X-Airlock-Delivery"),
                n.id.clone(),
            ))
            .header(ContentType::TEXT_PLAIN)
            .body(n.text.clone())
            .context("building the message")?;
        Ok(Outgoing {
            envelope: message.envelope().clone(),
            bytes: message.formatted(),
        })
    }

    pub(crate) async fn attempt(&self, message: &Outgoing) -> Attempt {
        match self
            .transport
            .send_raw(&message.envelope, &message.bytes)
            .await
        {
            Ok(_) => Attempt::Delivered,
            Err(e) => {
                let error = error_chain(&e);
                // A permanent (5xx) reply, or the server lacking something the
                // config requires (STARTTLS, an AUTH mechanism): another try
                // would meet the same answer.
                if e.is_permanent() || e.is_client() {
                    Attempt::Fail(error)
                } else {
                    Attempt::Retry { error, after: None }
                }
            }
        }
    }
}

/// lettre's errors keep the useful part (the I/O error, the certificate
/// problem) in their sources.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}
