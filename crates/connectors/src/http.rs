//! The shared HTTP client and how its results are classified.

use std::time::Duration;

/// How a delivery ended, as far as retrying is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// The receiver accepted it.
    Delivered {
        /// HTTP status.
        status: u16,
        /// The first bytes of the body, for the audit record.
        body: String,
    },
    /// It failed; see [`Failure`].
    Failed(Failure),
}

/// A failed delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Whether another attempt may succeed (connection errors, timeouts,
    /// 408, 429 and 5xx) or not (other 4xx).
    pub retriable: bool,
    /// HTTP status, when the receiver answered.
    pub status: Option<u16>,
    /// What went wrong, without secrets (URLs are reduced to their host).
    pub error: String,
    /// The receiver's `Retry-After`, when it sent one.
    pub retry_after: Option<Duration>,
}

/// Builds the client every connector shares: rustls, bounded timeouts, no
/// redirects (a redirect to another host would leak a signed body).
pub fn client(connect_timeout: Duration, timeout: Duration) -> reqwest::Client {
    // Installing the provider twice is harmless; the first one wins.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("FleetPrompt/", env!("CARGO_PKG_VERSION")))
        .pool_max_idle_per_host(64)
        .build()
        .expect("the HTTP client configuration is static and valid")
}

/// Whether a status is worth retrying.
pub fn is_retriable_status(status: u16) -> bool {
    status == 408 || status == 429 || (500..=599).contains(&status)
}

/// Parses `Retry-After`: delta seconds or an HTTP date. Capped at one hour so
/// a hostile receiver cannot park a directive forever.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    const CAP: Duration = Duration::from_secs(3600);
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs).min(CAP));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    let wait = at
        .duration_since(std::time::SystemTime::now())
        .unwrap_or(Duration::ZERO);
    Some(wait.min(CAP))
}

/// Describes a transport error without the URL's path or query, which may
/// carry credentials (e.g. a Mattermost webhook key).
pub fn describe_transport_error(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "response body error"
    } else if e.is_request() {
        "request failed"
    } else {
        "HTTP error"
    };
    let host = e
        .url()
        .map(|u| {
            format!(
                " ({}://{}{})",
                u.scheme(),
                u.host_str().unwrap_or("?"),
                u.port().map(|p| format!(":{p}")).unwrap_or_default()
            )
        })
        .unwrap_or_default();
    format!("{what}{host}")
}

/// Reduces a URL to scheme, host and port, for showing in APIs and logs.
pub fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => format!(
            "{}://{}{}/…",
            u.scheme(),
            u.host_str().unwrap_or("?"),
            u.port().map(|p| format!(":{p}")).unwrap_or_default()
        ),
        Err(_) => "(invalid URL)".into(),
    }
}

/// Turns a response into a [`Delivery`], keeping at most 1 KiB of the body.
pub async fn classify(resp: reqwest::Response) -> Delivery {
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    let body = resp.text().await.unwrap_or_default();
    let body: String = body.chars().take(1024).collect();
    if (200..300).contains(&status) {
        Delivery::Delivered { status, body }
    } else {
        Delivery::Failed(Failure {
            retriable: is_retriable_status(status),
            status: Some(status),
            error: if body.is_empty() {
                format!("HTTP {status}")
            } else {
                format!("HTTP {status}: {body}")
            },
            retry_after,
        })
    }
}

/// The [`Delivery`] of a request that got no response.
pub fn transport_failure(e: &reqwest::Error) -> Delivery {
    Delivery::Failed(Failure {
        retriable: true,
        status: None,
        error: describe_transport_error(e),
        retry_after: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retriable_statuses() {
        for s in [408, 429, 500, 502, 503, 504] {
            assert!(is_retriable_status(s), "{s}");
        }
        for s in [400, 401, 403, 404, 409, 422] {
            assert!(!is_retriable_status(s), "{s}");
        }
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("999999"), Some(Duration::from_secs(3600)));
        let soon = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(30));
        let d = parse_retry_after(&soon).unwrap();
        assert!(
            d <= Duration::from_secs(30) && d >= Duration::from_secs(28),
            "{d:?}"
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn redacted_urls_keep_only_the_origin() {
        assert_eq!(
            redact_url("https://chat.example.com:8443/hooks/abc123?key=s"),
            "https://chat.example.com:8443/…"
        );
    }
}
