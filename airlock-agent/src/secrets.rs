//! Masks credentials in command lines before any sink sees them: the audit
//! trail must not become the place an agent's tokens leak to.
//!
//! Three shapes are recognised: option values (`--password=x`, `--token x`),
//! environment-style assignments (`AWS_SECRET_ACCESS_KEY=x`), and values that
//! are credentials by their form wherever they appear (AWS key ids, GitHub and
//! Slack tokens, JWTs, bearer tokens, passwords in URLs, private key blocks).

use std::sync::OnceLock;

use regex::Regex;

pub const MASK: &str = "****";

/// Option names whose value is a secret, without leading dashes.
const SECRET_OPTIONS: &[&str] = &[
    "password",
    "passwd",
    "pass",
    "token",
    "secret",
    "api-key",
    "apikey",
    "access-key",
    "secret-key",
    "client-secret",
    "private-key",
    "auth-token",
    "authorization",
    "bearer",
    "session-token",
];

struct Patterns {
    env_assignment: Regex,
    /// The same two shapes inside a longer word: a `bash -c '...'` script.
    inline_option: Regex,
    inline_assignment: Regex,
    by_form: Vec<Regex>,
    url_password: Regex,
    header_bearer: Regex,
}

fn patterns() -> &'static Patterns {
    static P: OnceLock<Patterns> = OnceLock::new();
    P.get_or_init(|| {
        let compile = |re: &str| Regex::new(re).expect("built-in secret pattern compiles");
        Patterns {
            env_assignment: compile(
                r"(?i)^([A-Z0-9_]*(PASSWORD|PASSWD|SECRET|TOKEN|API_?KEY|ACCESS_KEY|PRIVATE_KEY|CREDENTIAL)[A-Z0-9_]*)=(.+)$",
            ),
            inline_option: compile(&format!(r"(?i)(--?(?:[a-z0-9]+-)*(?:{})[= ]+)([^\s'\x22;&|]+)", SECRET_OPTIONS.join("|"))),
            inline_assignment: compile(
                r"(?i)\b([A-Z0-9_]*(?:PASSWORD|PASSWD|SECRET|TOKEN|API_?KEY|ACCESS_KEY|PRIVATE_KEY|CREDENTIAL)[A-Z0-9_]*=)([^\s'\x22;&|]+)",
            ),
            by_form: vec![
                // AWS access key ids.
                compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
                // GitHub tokens (classic and fine-grained).
                compile(r"\b(gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,})\b"),
                // Slack tokens.
                compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}\b"),
                // JWTs: three base64url parts, the first two JSON objects.
                compile(r"\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"),
                // PEM private keys passed inline.
                compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(-----END [A-Z ]*PRIVATE KEY-----|$)"),
            ],
            url_password: compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@]+):([^@\s/]+)@"),
            header_bearer: compile(r"(?i)\b(bearer|token|basic)(\s+|:\s*)([A-Za-z0-9._~+/=-]{8,})"),
        }
    })
}

fn option_name(word: &str) -> Option<&str> {
    let name = word.strip_prefix("--").or_else(|| word.strip_prefix('-'))?;
    Some(name.split('=').next().unwrap_or(name))
}

fn is_secret_option(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    SECRET_OPTIONS.iter().any(|o| lower == *o || lower.ends_with(&format!("-{o}")))
}

/// Masks one word's credentials that are recognisable by their form.
fn mask_forms(word: &str) -> String {
    let p = patterns();
    let mut out = p.url_password.replace_all(word, format!("$1:{MASK}@").as_str()).into_owned();
    out = p.inline_option.replace_all(&out, format!("${{1}}{MASK}").as_str()).into_owned();
    out = p.inline_assignment.replace_all(&out, format!("${{1}}{MASK}").as_str()).into_owned();
    out = p.header_bearer.replace_all(&out, format!("$1$2{MASK}").as_str()).into_owned();
    for re in &p.by_form {
        out = re.replace_all(&out, MASK).into_owned();
    }
    out
}

/// Masks credentials in argv, in place.
pub fn mask_argv(argv: &mut [String]) {
    let p = patterns();
    let mut mask_next = false;
    for word in argv.iter_mut() {
        if mask_next {
            mask_next = false;
            if !word.starts_with('-') {
                *word = MASK.to_string();
                continue;
            }
        }
        if let Some(name) = option_name(word) {
            if is_secret_option(name) {
                match word.split_once('=') {
                    Some((opt, _)) => *word = format!("{opt}={MASK}"),
                    None => mask_next = true,
                }
                continue;
            }
        }
        if let Some(caps) = p.env_assignment.captures(word) {
            *word = format!("{}={MASK}", &caps[1]);
            continue;
        }
        *word = mask_forms(word);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(words: &[&str]) -> Vec<String> {
        let mut argv: Vec<String> = words.iter().map(|w| w.to_string()).collect();
        mask_argv(&mut argv);
        argv
    }

    #[test]
    fn masks_every_credential_shape() {
        let cases: &[(&[&str], &[&str])] = &[
            (&["mysql", "--password=hunter2", "db"], &["mysql", "--password=****", "db"]),
            (&["cli", "--token", "abc123def", "run"], &["cli", "--token", "****", "run"]),
            (&["az", "login", "--client-secret", "s3cr3t"], &["az", "login", "--client-secret", "****"]),
            (&["env", "AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG", "aws", "s3", "ls"], &["env", "AWS_SECRET_ACCESS_KEY=****", "aws", "s3", "ls"]),
            (&["env", "GITHUB_TOKEN=x"], &["env", "GITHUB_TOKEN=****"]),
            (&["echo", "AKIAIOSFODNN7EXAMPLE"], &["echo", "****"]),
            (&["git", "push", "https://ghp_abcdefghijklmnopqrstuvwxyz0123@github.com/o/r"], &["git", "push", "https://****@github.com/o/r"]),
            (&["curl", "https://user:pa55w0rd@example.com/x"], &["curl", "https://user:****@example.com/x"]),
            (&["curl", "-H", "Authorization: Bearer abcdefghijklmnop"], &["curl", "-H", "Authorization: Bearer ****"]),
            (&["x", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJl"], &["x", "****"]),
            (&["slack", "xoxb-1234567890-abcdefghij"], &["slack", "****"]),
            (&["gh", "auth", "login", "--with-token", "github_pat_11ABCDEFG0123456789_abcdef"], &["gh", "auth", "login", "--with-token", "****"]),
        ];
        for (input, want) in cases {
            assert_eq!(masked(input), want.iter().map(|w| w.to_string()).collect::<Vec<_>>(), "input {input:?}");
        }
    }

    #[test]
    fn masks_secrets_inside_a_shell_script_argument() {
        let got = masked(&["bash", "-c", "kubectl get pods --token=abc123 && env API_TOKEN=xyz789 run; mysql --password hunter2"]);
        assert_eq!(got[2], "kubectl get pods --token=**** && env API_TOKEN=**** run; mysql --password ****");
    }

    #[test]
    fn leaves_ordinary_commands_alone() {
        for argv in [
            &["terraform", "-chdir=infra", "apply"][..],
            &["kubectl", "--context", "prod", "delete", "pod", "x"],
            &["git", "commit", "-m", "fix the token parser"],
            &["ls", "-la", "/etc/passwd"],
            &["cargo", "test", "--", "--test-threads=2"],
        ] {
            assert_eq!(masked(argv), argv.iter().map(|w| w.to_string()).collect::<Vec<_>>());
        }
    }

    #[test]
    fn a_secret_option_followed_by_another_option_masks_nothing_extra() {
        assert_eq!(masked(&["tool", "--token", "--verbose"]), vec!["tool", "--token", "--verbose"]);
    }
}
