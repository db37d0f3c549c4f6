//! A webhook URL taken apart: checked once when the config is read, used
//! for every delivery.

use hyper::Uri;

/// A webhook URL taken apart into what the connection needs.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub https: bool,
    /// For connecting and for the certificate check: an IPv6 literal without brackets.
    pub host: String,
    pub port: u16,
    /// The Host header: host and port as written in the URL.
    pub authority: String,
    pub path_and_query: String,
    /// The URL without its query string (which may carry a token), for logs.
    pub display: String,
}

impl Target {
    pub(crate) fn parse(url: &str) -> Result<Target, String> {
        if !url.contains("://") {
            return Err(format!(
                "{url:?} is not an absolute http:// or https:// URL"
            ));
        }
        let uri: Uri = url
            .trim()
            .parse()
            .map_err(|e| format!("invalid URL {url:?}: {e}"))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            Some(other) => {
                return Err(format!(
                    "unsupported scheme {other:?} in {url:?}: use http or https"
                ))
            }
            None => {
                return Err(format!(
                    "{url:?} is not an absolute http:// or https:// URL"
                ))
            }
        };
        let authority = uri
            .authority()
            .ok_or_else(|| format!("{url:?} has no host"))?;
        if authority.as_str().contains('@') {
            return Err(format!(
                "{url:?}: credentials in the URL are not supported (the signature authenticates the request)"
            ));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("{url:?} has no host"));
        }
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let path_and_query = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
        let display = format!(
            "{}://{}{}",
            if https { "https" } else { "http" },
            authority,
            uri.path()
        );
        Ok(Target {
            https,
            host: host.to_string(),
            port,
            authority: authority.as_str().to_string(),
            path_and_query,
            display,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_takes_the_url_apart() {
        let t = Target::parse("https://hooks.example.com:8443/a/b?token=x").unwrap();
        assert!(t.https);
        assert_eq!((t.host.as_str(), t.port), ("hooks.example.com", 8443));
        assert_eq!(t.authority, "hooks.example.com:8443");
        assert_eq!(t.path_and_query, "/a/b?token=x");
        assert_eq!(t.display, "https://hooks.example.com:8443/a/b");

        let t = Target::parse("http://[::1]/").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.authority.as_str()),
            ("::1", 80, "[::1]")
        );
        assert_eq!(Target::parse("https://h").unwrap().path_and_query, "/");
    }
}
