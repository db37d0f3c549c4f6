//! What every page shares: the frame around it (who is signed in, the
//! navigation, the CSRF token htmx sends), times shown in the viewer's time
//! zone, and a template rendered as a response.

use std::fmt;

use askama::Template;
use axum::response::{Html, IntoResponse, Response};

use super::error::UiError;
use super::session::SignedIn;
use crate::tokens::Role;

/// The frame: base.html reads it.
pub struct Chrome {
    pub user: String,
    pub role: String,
    pub org: String,
    pub csrf: String,
    /// The navigation entry to highlight.
    pub active: &'static str,
    pub is_admin: bool,
}

impl Chrome {
    pub fn new(signed: &SignedIn, active: &'static str) -> Chrome {
        Chrome {
            user: signed.username.clone(),
            role: signed.caller.role.to_string(),
            org: signed.caller.org.clone(),
            csrf: signed.csrf.clone(),
            active,
            is_admin: signed.can(Role::Admin),
        }
    }

    /// The `hx-headers` value that makes htmx send the CSRF token.
    pub fn hx_headers(&self) -> String {
        serde_json::json!({ "X-CSRF-Token": self.csrf }).to_string()
    }
}

/// An instant, shown as UTC text in a `<time>` element that app.js turns
/// into the viewer's local time; a zero instant is shown as "—".
#[derive(Clone, Copy)]
pub struct When(pub i64);

impl fmt::Display for When {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 <= 0 {
            return f.write_str("—");
        }
        let iso = crate::rfc3339(self.0);
        let shown = iso.get(..19).map(|s| s.replace('T', " ")).unwrap_or_else(|| iso.clone());
        write!(f, "<time datetime=\"{iso}\">{shown} UTC</time>")
    }
}

/// A page (or fragment) as a response.
pub fn render(template: impl Template) -> Result<Response, UiError> {
    Ok(Html(template.render()?).into_response())
}

/// A duration in seconds as "3 h 20 min", "45 s".
pub fn duration_text(secs: i64) -> String {
    match secs {
        s if s < 0 => "—".into(),
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s if s < 172_800 => format!("{} h {} min", s / 3600, (s % 3600) / 60),
        s => format!("{} d", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instant_is_a_time_element_in_utc_and_zero_is_a_dash() {
        assert_eq!(When(0).to_string(), "—");
        let shown = When(1_764_288_000_000_000_000).to_string();
        assert!(shown.starts_with("<time datetime=\"2025-11-28T00:00:00Z\">2025-11-28 00:00:00 UTC</time>"), "{shown}");
    }
}
