//! All talking to the API server happens here: building URLs under the endpoint, the bearer token,
//! timeouts, following list cursors, and turning every kind of failure (no token, refused
//! connection, an API error body, a stray HTML page) into one readable line.

use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use reqwest::header::{AUTHORIZATION, HeaderValue};
use reqwest::{Method, RequestBuilder, StatusCode, Url};
use serde_json::{Value, json};

/// How long a whole request may take; the API answers batch creation asynchronously (202), so
/// nothing legitimate comes near this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest piece of a non-JSON error body that is worth showing on the one error line.
const MAX_BODY_SNIPPET: usize = 200;

/// Query parameters of a request; only the ones the user gave are put in.
pub type Query = Vec<(&'static str, String)>;

/// A connection to the API: one endpoint, one token, one HTTP client reused across requests.
pub struct Api {
    client: reqwest::Client,
    base: Url,
    auth: HeaderValue,
}

impl Api {
    /// Checks the endpoint and the token before anything is sent, so that a missing token or a
    /// mistyped URL is reported as such rather than as a confusing HTTP failure.
    pub fn new(endpoint: &str, token: Option<&str>) -> Result<Api> {
        let token = token
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| anyhow!("no API token: set ECI_TOKEN (or pass --token)"))?;
        let mut auth = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| anyhow!("the API token contains characters that cannot be sent in a header"))?;
        auth.set_sensitive(true);
        let client = reqwest::Client::builder()
            .user_agent(concat!("eci/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| anyhow!("cannot set up the HTTP client: {}", innermost(&e)))?;
        Ok(Api { client, base: parse_endpoint(endpoint)?, auth })
    }

    /// GETs one resource.
    pub async fn get(&self, path: &[&str], query: &Query) -> Result<Value> {
        self.send(self.request(Method::GET, path, query)).await
    }

    /// GETs a resource in a format other than JSON (an invoice as CSV) and returns its text.
    pub async fn get_text(&self, path: &[&str], query: &Query) -> Result<String> {
        Ok(self.fetch(self.request(Method::GET, path, query)).await?.1)
    }

    /// POSTs a JSON body; `idempotency_key` lets a retried create return the first result.
    pub async fn post(&self, path: &[&str], body: &Value, idempotency_key: Option<&str>) -> Result<Value> {
        let mut req = self.request(Method::POST, path, &Vec::new()).json(body);
        if let Some(key) = idempotency_key {
            req = req.header("Idempotency-Key", key);
        }
        self.send(req).await
    }

    /// PATCHes a JSON body onto one resource and returns the resource as changed.
    pub async fn patch(&self, path: &[&str], body: &Value) -> Result<Value> {
        self.send(self.request(Method::PATCH, path, &Vec::new()).json(body)).await
    }

    /// DELETEs one resource and returns what the API answers with (the released resource);
    /// `confirm` is the number of instances the caller confirms it ends (`?confirm=`), which risk
    /// control asks for when a deletion ends most of the tenant's instances.
    pub async fn delete(&self, path: &[&str], confirm: Option<u64>) -> Result<Value> {
        let query: Query = confirm.map(|n| ("confirm", n.to_string())).into_iter().collect();
        self.send(self.request(Method::DELETE, path, &query)).await
    }

    /// GETs a `{"items": [...], "next_cursor": ...}` list. With `all`, follows `next_cursor` until
    /// the end and answers one list with every item and no cursor.
    pub async fn list(&self, path: &[&str], query: &Query, all: bool) -> Result<Value> {
        let mut page = self.get(path, query).await?;
        if !all {
            items_of(&mut page)?;
            return Ok(page);
        }
        let mut items = std::mem::take(items_of(&mut page)?);
        let mut cursor = next_cursor(&page);
        while let Some(current) = cursor {
            let mut query = query.clone();
            query.push(("cursor", current.clone()));
            let mut page = self.get(path, &query).await?;
            items.append(items_of(&mut page)?);
            cursor = next_cursor(&page);
            if cursor.as_ref() == Some(&current) {
                bail!("the server returned the same list cursor twice; stopping");
            }
        }
        Ok(json!({ "items": items, "next_cursor": null }))
    }

    /// The full URL of `path` (segments, each escaped) under the endpoint, with the query.
    fn url(&self, path: &[&str], query: &Query) -> Url {
        build_url(&self.base, path, query)
    }

    fn request(&self, method: Method, path: &[&str], query: &Query) -> RequestBuilder {
        self.client.request(method, self.url(path, query)).header(AUTHORIZATION, self.auth.clone())
    }

    /// Sends a request and returns a successful answer's status and body; any failure is one line.
    async fn fetch(&self, req: RequestBuilder) -> Result<(StatusCode, String)> {
        let endpoint = self.base.as_str().trim_end_matches('/');
        let resp = req.send().await.map_err(|e| transport_error(endpoint, &e))?;
        let status = resp.status();
        let body = resp.text().await.map_err(|e| transport_error(endpoint, &e))?;
        if !status.is_success() {
            bail!("{}", error_line(status, &body));
        }
        Ok((status, body))
    }

    async fn send(&self, req: RequestBuilder) -> Result<Value> {
        let (status, body) = self.fetch(req).await?;
        let endpoint = self.base.as_str().trim_end_matches('/');
        if body.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&body).map_err(|_| {
            anyhow!(
                "the server at {endpoint} answered HTTP {} with something that is not JSON; \
                 is ECI_ENDPOINT pointing at the ECI API?",
                status.as_u16()
            )
        })
    }
}

/// The `items` array of a list answer.
fn items_of(page: &mut Value) -> Result<&mut Vec<Value>> {
    page.get_mut("items")
        .and_then(Value::as_array_mut)
        .ok_or_else(|| anyhow!("unexpected list from the server: no `items` array"))
}

/// The cursor of the next page, if there is one.
pub fn next_cursor(page: &Value) -> Option<String> {
    page.get("next_cursor").and_then(Value::as_str).filter(|c| !c.is_empty()).map(str::to_string)
}

/// Accepts `http(s)://host[:port][/prefix]`; anything else is refused up front, because
/// `localhost:7070` would otherwise parse as a URL with the scheme `localhost`.
fn parse_endpoint(endpoint: &str) -> Result<Url> {
    let bad =
        |why: &str| anyhow!("invalid endpoint `{endpoint}`: {why} (expected e.g. http://127.0.0.1:7070)");
    let url = Url::parse(endpoint.trim()).map_err(|e| bad(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("the scheme must be http or https"));
    }
    if url.host_str().is_none() || url.cannot_be_a_base() {
        return Err(bad("no host"));
    }
    Ok(url)
}

/// Appends `v1/...`-style segments to the endpoint's own path (which may be a prefix such as
/// `/eci`), escaping each so that an ID can never step outside its collection.
fn build_url(base: &Url, path: &[&str], query: &Query) -> Url {
    let mut url = base.clone();
    url.set_query(None);
    url.set_fragment(None);
    if let Ok(mut segments) = url.path_segments_mut() {
        segments.pop_if_empty().extend(path);
    }
    if !query.is_empty() {
        url.query_pairs_mut().extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
    }
    url
}

/// One line for an HTTP error answer. The API's `{"error": {"code", "message"}}` gives
/// `code: message (HTTP 422)`; anything else (a proxy's page, a plain-text rejection) gives its
/// first line, shortened.
pub fn error_line(status: StatusCode, body: &str) -> String {
    let code = status.as_u16();
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let error = parsed.as_ref().map(|v| v.get("error").unwrap_or(v));
    let field = |name: &str| {
        error.and_then(|e| e.get(name)).and_then(Value::as_str).map(one_line).filter(|s| !s.is_empty())
    };
    let text = match (field("code"), field("message")) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(only), None) | (None, Some(only)) => only,
        (None, None) => {
            let first = body.lines().map(str::trim).find(|l| !l.is_empty()).map(one_line);
            match first {
                Some(line) if parsed.is_none() => shorten(&line, MAX_BODY_SNIPPET),
                _ => status.canonical_reason().unwrap_or("request failed").to_lowercase(),
            }
        }
    };
    let api_error = field("code").is_some();
    let hint = match status {
        StatusCode::UNAUTHORIZED => "; check ECI_TOKEN / --token",
        StatusCode::NOT_FOUND if !api_error => "; is ECI_ENDPOINT the ECI API?",
        _ => "",
    };
    format!("{text} (HTTP {code}){hint}")
}

/// One line for a request that got no HTTP answer at all.
fn transport_error(endpoint: &str, err: &reqwest::Error) -> anyhow::Error {
    if err.is_timeout() {
        return anyhow!("the ECI API at {endpoint} did not answer within {}s", REQUEST_TIMEOUT.as_secs());
    }
    if err.is_connect() {
        if refused(err) {
            return anyhow!(
                "cannot connect to the ECI API at {endpoint}: connection refused \
                 (is the server running? set ECI_ENDPOINT or --endpoint)"
            );
        }
        return anyhow!("cannot connect to the ECI API at {endpoint}: {}", innermost(err));
    }
    anyhow!("request to the ECI API at {endpoint} failed: {}", innermost(err))
}

/// True when somewhere in the chain the OS said "connection refused".
fn refused(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionRefused
        {
            return true;
        }
        current = e.source();
    }
    false
}

/// The deepest cause in an error chain: reqwest's own top-level text ("error sending request
/// for url …") says less than the OS's reason underneath.
fn innermost(err: &(dyn std::error::Error + 'static)) -> String {
    let mut current = err;
    while let Some(next) = current.source() {
        current = next;
    }
    one_line(&current.to_string())
}

/// Collapses all whitespace runs (newlines included) into single spaces.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn shorten(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_error_bodies_become_one_line() {
        let body = r#"{"error":{"code":"insufficient_capacity","message":"only 812 of 1000 instances fit","details":{"available":812}}}"#;
        assert_eq!(
            error_line(StatusCode::UNPROCESSABLE_ENTITY, body),
            "insufficient_capacity: only 812 of 1000 instances fit (HTTP 422)"
        );
        let multi = r#"{"error":{"code":"bad_request","message":"line one\n  line two"}}"#;
        assert_eq!(error_line(StatusCode::BAD_REQUEST, multi), "bad_request: line one line two (HTTP 400)");
    }

    #[test]
    fn unauthorized_points_at_the_token() {
        let body = r#"{"error":{"code":"unauthorized","message":"unknown token"}}"#;
        assert_eq!(
            error_line(StatusCode::UNAUTHORIZED, body),
            "unauthorized: unknown token (HTTP 401); check ECI_TOKEN / --token"
        );
    }

    #[test]
    fn other_bodies_are_shown_shortened_or_replaced_by_the_reason() {
        assert_eq!(
            error_line(StatusCode::NOT_FOUND, ""),
            "not found (HTTP 404); is ECI_ENDPOINT the ECI API?"
        );
        let missing = r#"{"error":{"code":"not_found","message":"batch b-1 does not exist"}}"#;
        assert_eq!(
            error_line(StatusCode::NOT_FOUND, missing),
            "not_found: batch b-1 does not exist (HTTP 404)"
        );
        assert_eq!(error_line(StatusCode::BAD_GATEWAY, "{}"), "bad gateway (HTTP 502)");
        assert_eq!(
            error_line(StatusCode::UNPROCESSABLE_ENTITY, "\nFailed to deserialize the JSON body\nmore"),
            "Failed to deserialize the JSON body (HTTP 422)"
        );
        let long = "x".repeat(500);
        let line = error_line(StatusCode::INTERNAL_SERVER_ERROR, &long);
        assert!(line.ends_with("… (HTTP 500)") && line.chars().count() < 220, "{line}");
    }

    #[test]
    fn endpoints_must_be_http_urls() {
        assert!(parse_endpoint("http://127.0.0.1:7070").is_ok());
        assert!(parse_endpoint("https://eci.example.com/prefix/").is_ok());
        let err = parse_endpoint("localhost:7070").unwrap_err().to_string();
        assert!(err.contains("scheme must be http or https"), "{err}");
        assert!(parse_endpoint("127.0.0.1:7070").is_err());
    }

    #[test]
    fn urls_keep_the_endpoint_prefix_and_escape_ids() {
        let base = parse_endpoint("http://h:1/eci/").unwrap();
        let q: Query = vec![("label", "app=web".into()), ("limit", "5".into())];
        assert_eq!(
            build_url(&base, &["v1", "batches"], &q).as_str(),
            "http://h:1/eci/v1/batches?label=app%3Dweb&limit=5"
        );
        let base = parse_endpoint("http://h:1").unwrap();
        assert_eq!(
            build_url(&base, &["v1", "batches", "../x"], &Vec::new()).as_str(),
            "http://h:1/v1/batches/..%2Fx"
        );
    }

    #[test]
    fn a_missing_token_says_how_to_set_it() {
        let err = Api::new("http://127.0.0.1:7070", Some("  ")).err().unwrap().to_string();
        assert_eq!(err, "no API token: set ECI_TOKEN (or pass --token)");
        assert!(Api::new("http://127.0.0.1:7070", None).is_err());
    }

    #[tokio::test]
    async fn a_refused_connection_names_the_endpoint() {
        // Bind then drop a listener to get a port that nothing listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let endpoint = format!("http://127.0.0.1:{port}");
        let api = Api::new(&endpoint, Some("t")).unwrap();
        let err = api.get(&["v1", "areas"], &Vec::new()).await.unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "cannot connect to the ECI API at {endpoint}: connection refused \
                 (is the server running? set ECI_ENDPOINT or --endpoint)"
            )
        );
    }
}
