//! What the notification tests share: an HTTP(S) receiver that records what
//! it is sent, a test CA, the log lines the notifier writes, and the real
//! SMTP server (aiosmtpd) started as a subprocess. Everything listens on
//! 127.0.0.1, on ports the kernel picks.

// Each test binary uses its own part of this module.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// How long a test waits for deliveries before it calls the notifier stuck.
/// Deliveries on loopback take milliseconds; this only bounds a hang.
pub const FLUSH: Duration = Duration::from_secs(60);

pub fn notification(id: &str) -> airlock_notify::Notification {
    airlock_notify::Notification {
        event: "approval.requested".into(),
        id: format!("{id}:approval.requested"),
        subject: format!("Approval needed: {id}"),
        text: format!("An agent asks to run `rm -rf build/` ({id}).\nApprove or deny it."),
        payload: serde_json::json!({"request_id": id, "command": "rm -rf build/", "host": "host-1"}),
    }
}

pub fn webhook(url: &str, secret: &str) -> airlock_notify::WebhookConfig {
    airlock_notify::WebhookConfig {
        url: url.into(),
        secret: Some(secret.into()),
        secret_file: None,
        ca_file: None,
        timeout_seconds: 10,
        max_attempts: 3,
        initial_backoff_ms: 10,
    }
}

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// An HTTP (or HTTPS) server answering with the given statuses in turn,
/// then 200, and recording every request.
pub struct Receiver {
    pub addr: SocketAddr,
    recorded: Arc<Mutex<Vec<Recorded>>>,
}

impl Receiver {
    pub fn start(statuses: &[u16], tls: Option<&TestPki>) -> Receiver {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the receiver");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let addr = listener.local_addr().expect("receiver address");
        let recorded = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(
            statuses.iter().copied().collect::<VecDeque<u16>>(),
        ));
        let acceptor = tls.map(|pki| tokio_rustls::TlsAcceptor::from(pki.server_config()));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("receiver runtime");
        let thread_recorded = Arc::clone(&recorded);
        // Detached: it serves until the test process ends.
        std::thread::spawn(move || {
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let (recorded, script, acceptor) = (
                        Arc::clone(&thread_recorded),
                        Arc::clone(&script),
                        acceptor.clone(),
                    );
                    tokio::spawn(async move {
                        let service = service_fn(move |request: Request<Incoming>| {
                            let (recorded, script) = (Arc::clone(&recorded), Arc::clone(&script));
                            async move {
                                let (parts, body) = request.into_parts();
                                let body = body.collect().await?.to_bytes();
                                recorded.lock().unwrap().push(Recorded {
                                    method: parts.method.to_string(),
                                    path: parts.uri.to_string(),
                                    headers: parts
                                        .headers
                                        .iter()
                                        .map(|(n, v)| {
                                            (n.to_string(), v.to_str().unwrap_or("").to_string())
                                        })
                                        .collect(),
                                    body: body.to_vec(),
                                });
                                let status = script.lock().unwrap().pop_front().unwrap_or(200);
                                let answer = Response::builder()
                                    .status(status)
                                    .body(Full::new(Bytes::from(format!(
                                        "test receiver says {status}"
                                    ))))
                                    .expect("response");
                                Ok::<_, hyper::Error>(answer)
                            }
                        });
                        let http = hyper::server::conn::http1::Builder::new();
                        match acceptor {
                            Some(acceptor) => {
                                if let Ok(stream) = acceptor.accept(stream).await {
                                    let _ =
                                        http.serve_connection(TokioIo::new(stream), service).await;
                                }
                            }
                            None => {
                                let _ = http.serve_connection(TokioIo::new(stream), service).await;
                            }
                        }
                    });
                }
            })
        });
        Receiver { addr, recorded }
    }

    pub fn url(&self, scheme: &str, path: &str) -> String {
        format!("{scheme}://{}{path}", self.addr)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.recorded.lock().unwrap().clone()
    }
}

/// A port that was free a moment ago and has no listener now.
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// A test CA and a server certificate from it for localhost and 127.0.0.1,
/// as PEM files (for `ca_file` and the SMTP server) and as DER (for rustls).
pub struct TestPki {
    pub dir: tempfile::TempDir,
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    cert_der: CertificateDer<'static>,
    key_der: Vec<u8>,
}

impl TestPki {
    pub fn new() -> TestPki {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca_key = rcgen::KeyPair::generate().expect("CA key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "airlock-notify test CA");
        ca_params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key).expect("self-sign the CA");
        let issuer = rcgen::Issuer::new(ca_params, ca_key);

        let key = rcgen::KeyPair::generate().expect("server key");
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
                .expect("server params");
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "airlock-notify test server");
        let cert = params
            .signed_by(&key, &issuer)
            .expect("sign the server certificate");

        let write = |name: &str, text: String| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).expect("write PEM");
            path
        };
        TestPki {
            ca_file: write("ca.pem", ca_cert.pem()),
            cert_file: write("server.pem", cert.pem()),
            key_file: write("server.key", key.serialize_pem()),
            cert_der: cert.der().clone(),
            key_der: key.serialize_der(),
            dir,
        }
    }

    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()));
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(vec![self.cert_der.clone()], key)
            .expect("server certificate");
        Arc::new(config)
    }
}

/// Everything the notifier logs, from every thread of this test binary.
/// Tests run in parallel, so a test looks for lines naming its own
/// destination (each has its own port).
pub fn logs() -> String {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    let buffer = LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = Arc::clone(&buffer);
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || LogWriter(Arc::clone(&writer)))
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("install the log capture");
        buffer
    });
    String::from_utf8_lossy(&buffer.lock().unwrap()).into_owned()
}

/// Installs the log capture before a test starts its notifier.
pub fn capture_logs() {
    let _ = logs();
}

/// The captured log lines that mention `needle`.
pub fn log_lines_with(needle: &str) -> Vec<String> {
    logs()
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A Python that has aiosmtpd. Debian's python3-aiosmtpd installs for
/// /usr/bin/python3, which a python3 earlier on PATH (pyenv, a venv) does
/// not see, so that one is tried first.
fn python_with_aiosmtpd() -> Option<PathBuf> {
    ["/usr/bin/python3", "python3"]
        .into_iter()
        .map(PathBuf::from)
        .find(|python| {
            Command::new(python)
                .args(["-c", "import aiosmtpd"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
}

/// The Python to run the SMTP server with, or None when the test is to be
/// skipped; with AIRLOCK_REQUIRE_SMTP=1 a missing aiosmtpd fails the test.
pub fn smtp_python() -> Option<PathBuf> {
    let python = python_with_aiosmtpd();
    if python.is_none() {
        if std::env::var("AIRLOCK_REQUIRE_SMTP").as_deref() == Ok("1") {
            panic!(
                "AIRLOCK_REQUIRE_SMTP=1 but python3-aiosmtpd is not installed \
                 (apt-get install -y python3-aiosmtpd; scripts/setup.sh installs it)"
            );
        }
        println!("skipped: python3-aiosmtpd is not installed");
    }
    python
}

/// tests/smtp_server.py running: a real SMTP server on 127.0.0.1.
pub struct SmtpServer {
    child: Child,
    // Held open: the server exits when it closes, even if this process dies.
    _stdin: ChildStdin,
    pub port: u16,
    out: PathBuf,
    _dir: tempfile::TempDir,
}

#[derive(Default)]
pub struct SmtpOptions<'a> {
    /// Offer STARTTLS with this certificate.
    pub tls: Option<&'a TestPki>,
    /// Offer AUTH (after STARTTLS) and accept only this user and password.
    pub login: Option<(&'a str, &'a str)>,
    /// Answer the first this many messages with a transient 451.
    pub fail_first: u32,
}

impl SmtpServer {
    pub fn start(python: &Path, options: SmtpOptions<'_>) -> SmtpServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = dir.path().join("messages.jsonl");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/smtp_server.py");
        let mut command = Command::new(python);
        command.arg(&script).arg("--out").arg(&out);
        if let Some(pki) = options.tls {
            command
                .arg("--cert")
                .arg(&pki.cert_file)
                .arg("--key")
                .arg(&pki.key_file);
        }
        if let Some((user, password)) = options.login {
            command.args(["--user", user, "--password", password]);
        }
        command
            .arg("--fail-first")
            .arg(options.fail_first.to_string());
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", script.display()));
        let stdin = child.stdin.take().expect("server stdin");
        let mut stdout = BufReader::new(child.stdout.take().expect("server stdout"));
        let mut line = String::new();
        let _ = stdout.read_line(&mut line);
        let Some(port) = line
            .trim()
            .strip_prefix("PORT ")
            .and_then(|p| p.parse::<u16>().ok())
        else {
            let _ = child.kill();
            let mut stderr = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut stderr);
            }
            let _ = child.wait();
            panic!("the SMTP server did not start: stdout {line:?}, stderr:\n{stderr}");
        };
        SmtpServer {
            child,
            _stdin: stdin,
            port,
            out,
            _dir: dir,
        }
    }

    /// The messages received so far, one JSON object each: mail_from,
    /// rcpt_tos, tls, tls_version, user, answer, content.
    pub fn messages(&self) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        text.lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line from the server"))
            .collect()
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes `content` to a new file in `dir`.
pub fn write_file(dir: &Path, name: &str, content: &str) -> PathBuf {
    let path = dir.join(name);
    let mut f = std::fs::File::create(&path).expect("create");
    f.write_all(content.as_bytes()).expect("write");
    path
}
