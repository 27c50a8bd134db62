//! Security middleware: response headers on everything; authentication (session cookie or
//! bearer token) and the CSRF synchronizer-token check on every state-changing request.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::auth::{same, Principal, Via, CSRF_FIELD, CSRF_HEADER, LOGIN_COOKIE, SESSION_COOKIE};
use crate::{Shared, WebError};

/// The content security policy: no inline script or style, nothing from other origins, no
/// framing.
pub(crate) const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Adds the security headers to every response.
pub(crate) async fn headers(req: Request, next: Next) -> Response {
    let is_api = req.uri().path().starts_with("/api/");
    let mut res = next.run(req).await;
    let asset = is_asset(&res);
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) && !asset {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if is_api {
        h.insert("x-robots-tag", HeaderValue::from_static("noindex"));
    }
    res
}

fn is_asset(res: &Response) -> bool {
    res.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("text/css") || ct.starts_with("text/javascript"))
}

/// Reads a cookie by name.
pub(crate) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Resolves the principal (stored in request extensions) and enforces CSRF tokens.
pub(crate) async fn authenticate(
    State(state): State<Shared>,
    req: Request,
    next: Next,
) -> Response {
    let (mut parts, body) = req.into_parts();
    let principal: Option<Principal> = match bearer(&parts.headers) {
        Some(token) => match state.tokens.authenticate(token) {
            Some(p) => Some(p),
            // A wrong token is an error, not an anonymous request.
            None => return WebError::Unauthorized.into_response(),
        },
        None => cookie(&parts.headers, SESSION_COOKIE).and_then(|t| state.sessions.lookup(t)),
    };
    let mut body = body;
    if !is_safe(&parts.method) {
        let expected = match &principal {
            Some(Principal {
                via: Via::Session { csrf },
                ..
            }) => Some(csrf.clone()),
            Some(Principal {
                via: Via::Token { .. },
                ..
            }) => None,
            // Login has no session yet: double-submit against the pre-login cookie.
            None if parts.uri.path() == "/login" => Some(
                cookie(&parts.headers, LOGIN_COOKIE)
                    .unwrap_or_default()
                    .to_owned(),
            ),
            None => Some(String::new()),
        };
        if let Some(expected) = expected {
            let (presented, rebuilt) = match csrf_from(&parts.headers, body).await {
                Ok(x) => x,
                Err(e) => return e.into_response(),
            };
            body = rebuilt;
            let ok =
                !expected.is_empty() && presented.as_deref().is_some_and(|p| same(p, &expected));
            if !ok {
                if principal.is_none() && parts.uri.path() != "/login" {
                    return unauthenticated(&parts);
                }
                tracing::warn!(path = %parts.uri.path(), "csrf token missing or wrong");
                return WebError::Forbidden(
                    "CSRF token missing or wrong: reload the page and try again".into(),
                )
                .into_response();
            }
        }
    }
    if let Some(p) = principal {
        parts.extensions.insert(p);
    }
    next.run(Request::from_parts(parts, body)).await
}

fn unauthenticated(parts: &axum::http::request::Parts) -> Response {
    if parts.uri.path().starts_with("/api/") {
        WebError::Unauthorized.into_response()
    } else {
        axum::response::Redirect::to("/login").into_response()
    }
}

/// The CSRF token from the header, or from the `_csrf` field of a urlencoded form body (the
/// body is buffered and handed back).
async fn csrf_from(headers: &HeaderMap, body: Body) -> Result<(Option<String>, Body), WebError> {
    if let Some(v) = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()) {
        return Ok((Some(v.to_owned()), body));
    }
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return Ok((None, body));
    }
    let bytes = axum::body::to_bytes(body, 1024 * 1024)
        .await
        .map_err(|e| WebError::BadRequest(format!("cannot read form: {e}")))?;
    let token = form_urlencoded_field(&bytes, CSRF_FIELD);
    Ok((token, Body::from(bytes)))
}

fn form_urlencoded_field(body: &[u8], name: &str) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    text.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(
                    std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"),
                    16,
                ) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `Set-Cookie` value for the session: `__Host-` prefix, Secure, HttpOnly, SameSite=Strict.
pub(crate) fn session_cookie(token: &str, max_age_s: u64) -> String {
    format!(
        "{SESSION_COOKIE}={token}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={max_age_s}"
    )
}

/// `Set-Cookie` value that deletes the session cookie.
pub(crate) fn clear_session_cookie() -> String {
    format!("{SESSION_COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// `Set-Cookie` for the pre-login CSRF cookie.
pub(crate) fn login_cookie(token: &str) -> String {
    format!("{LOGIN_COOKIE}={token}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=3600")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_fields_are_percent_decoded() {
        assert_eq!(
            form_urlencoded_field(b"a=1&_csrf=ab%2Bc%3D&z=", "_csrf").as_deref(),
            Some("ab+c=")
        );
        assert_eq!(form_urlencoded_field(b"a=1", "_csrf"), None);
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; __Host-fleetbus-session=tok; b=2"),
        );
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("tok"));
        assert_eq!(cookie(&h, "c"), None);
    }
}
