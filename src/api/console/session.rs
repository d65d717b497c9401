//! Console sessions: sign-in with an API key, a session cookie
//! (`HttpOnly`, `SameSite=Strict`, path `/ui`) holding a random token whose
//! hash is the session's key in PostgreSQL, and the CSRF token every
//! state-changing form carries ([`Posted`]).
//!
//! A session lives 12 hours and only while its key does: revoking the key
//! ends it at the next request. An admin key may switch the account it acts
//! for; the audit trail records the key, as for the API.

use axum::extract::{FromRequest, FromRequestParts, RawQuery, Request, State};
use axum::http::header::{COOKIE, HOST, ORIGIN, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::Utc;
use maud::Markup;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use sqlx::PgPool;
use uuid::Uuid;

use super::Filters;
use super::page::{self, PageError};
use crate::api::AppState;
use crate::api::extract::Auth;
use crate::auth::hash_key;
use crate::store;

/// The cookie's name.
pub const COOKIE_NAME: &str = "flowpilot_session";
/// How long a session lasts.
const LIFETIME: chrono::Duration = chrono::Duration::hours(12);

/// The `console_sessions` room.
#[derive(Clone)]
pub struct Sessions {
    pool: PgPool,
}

impl Sessions {
    /// Sessions in `pool`'s database.
    pub fn new(pool: PgPool) -> Self {
        Sessions { pool }
    }
}

/// A signed-in operator: the account acted for, the key, the CSRF token.
#[derive(Debug, Clone)]
pub struct Session {
    /// As the API's extractor would give it for the key.
    pub auth: Auth,
    /// The session as stored.
    pub row: store::session::Session,
    token_hash: [u8; 32],
}

impl Session {
    /// The CSRF token forms carry.
    pub fn csrf(&self) -> &str {
        &self.row.csrf
    }
}

fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE_NAME)
        .map(|(_, v)| v.to_owned())
        .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
}

impl FromRequestParts<AppState> for Session {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        // A page (a plain GET, not an htmx fragment) goes to the sign-in
        // form and back; anything else is a 401.
        let page = parts.method == axum::http::Method::GET
            && !parts.headers.contains_key("hx-request")
            && !parts.uri.path().contains("/fragment/");
        let reject = || {
            if page {
                let here = parts.uri.path_and_query().map_or("/ui/", |p| p.as_str());
                let here: String = url::form_urlencoded::byte_serialize(here.as_bytes()).collect();
                Redirect::to(&format!("/ui/login?next={here}")).into_response()
            } else {
                PageError::new(
                    axum::http::StatusCode::UNAUTHORIZED,
                    "sign in first: this session is missing or has ended",
                )
                .into_response()
            }
        };
        let Some(token) = cookie_token(&parts.headers) else {
            return Err(reject());
        };
        let token_hash = hash_key(&token);
        let row = store::session::find(&state.sessions.pool, &token_hash)
            .await
            .map_err(|e| PageError::from(e).into_response())?;
        let Some(row) = row else {
            return Err(reject());
        };
        let auth = Auth {
            account_id: row.account_id,
            admin: row.admin,
            key_id: row.key_id,
        };
        if let Some(c) = parts.extensions.get::<crate::api::Caller>() {
            c.set(auth);
        }
        Ok(Session {
            auth,
            row,
            token_hash,
        })
    }
}

/// A form posted by a signed-in operator, its CSRF token checked, as `T`
/// (empty fields left out, so an empty input is an absent filter).
pub struct Posted<T> {
    /// Who posted it.
    pub session: Session,
    /// What.
    pub form: T,
}

/// Refuses a post whose `Origin` is not this host (browsers send it on
/// every POST).
fn same_origin(headers: &HeaderMap) -> Result<(), PageError> {
    let Some(origin) = headers.get(ORIGIN) else {
        return Ok(());
    };
    let host = headers.get(HOST).and_then(|h| h.to_str().ok());
    let origin_host = origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .map(|(_, h)| h);
    if host.is_some() && origin_host == host {
        Ok(())
    } else {
        Err(PageError::forbidden(
            "the form was posted from another site",
        ))
    }
}

/// Compares without stopping at the first difference.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

impl<T: DeserializeOwned + Send> FromRequest<AppState> for Posted<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Response> {
        let (mut parts, body) = req.into_parts();
        same_origin(&parts.headers).map_err(IntoResponse::into_response)?;
        let session = Session::from_request_parts(&mut parts, state).await?;
        let body = axum::body::to_bytes(body, 64 * 1024)
            .await
            .map_err(|_| PageError::invalid("form", "larger than 64 KiB").into_response())?;
        let mut fields = Filters::from_form(&body);
        if !fields
            .take("csrf")
            .is_some_and(|c| same_secret(&c, session.csrf()))
        {
            return Err(PageError::forbidden(
                "the form's CSRF token is missing or wrong; reload the page",
            )
            .into_response());
        }
        let form = fields.parse().map_err(IntoResponse::into_response)?;
        Ok(Posted { session, form })
    }
}

/// Hex of 32 random bytes.
fn random_token() -> Result<String, PageError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| PageError::internal(&e))?;
    Ok(hex::encode(bytes))
}

/// Where to go after signing in: a console path only.
fn next_path(next: Option<&str>) -> &str {
    next.filter(|n| n.starts_with("/ui/") && !n.starts_with("//") && !n.contains('\\'))
        .unwrap_or("/ui/")
}

/// The sign-in form (`?next=` where to go after it).
pub async fn login_form(RawQuery(raw): RawQuery) -> Markup {
    page::login(
        next_path(Filters::from_query(raw.as_deref()).get("next")),
        None,
    )
}

/// The sign-in form's fields.
#[derive(Deserialize)]
pub struct Login {
    key: String,
    next: Option<String>,
}

/// The session cookie: `value` for `max_age` seconds (0 clears it).
fn cookie(value: &str, max_age: i64, secure: bool) -> Result<HeaderValue, PageError> {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE_NAME}={value}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    ))
    .map_err(|e| PageError::internal(&e))
}

/// Signs in with an API key: a new session and its cookie.
pub async fn login(State(state): State<AppState>, req: Request) -> Result<Response, PageError> {
    let secure = req
        .headers()
        .get("x-forwarded-proto")
        .is_some_and(|p| p.as_bytes().eq_ignore_ascii_case(b"https"));
    same_origin(req.headers())?;
    let body = axum::body::to_bytes(req.into_body(), 16 * 1024)
        .await
        .map_err(|_| PageError::invalid("key", "larger than 16 KiB"))?;
    let form: Login = Filters::from_form(&body).parse()?;
    let next = next_path(form.next.as_deref()).to_owned();
    let key = form.key.trim();
    let grant = state.reader.api_key(&hash_key(key)).await?;
    let Some(grant) = grant else {
        let mut resp = page::login(&next, Some("unknown or revoked API key")).into_response();
        *resp.status_mut() = axum::http::StatusCode::UNAUTHORIZED;
        return Ok(resp);
    };
    let token = random_token()?;
    let csrf = random_token()?;
    store::session::open(
        &state.sessions.pool,
        &hash_key(&token),
        grant.key_id,
        &csrf,
        Utc::now() + LIFETIME,
    )
    .await?;
    let mut resp = Redirect::to(&next).into_response();
    resp.headers_mut()
        .insert(SET_COOKIE, cookie(&token, LIFETIME.num_seconds(), secure)?);
    Ok(resp)
}

/// The sign-out form: nothing but the CSRF token.
#[derive(Deserialize)]
pub struct Empty {}

/// Ends the session and clears the cookie.
pub async fn logout(
    State(state): State<AppState>,
    posted: Posted<Empty>,
) -> Result<Response, PageError> {
    store::session::close(&state.sessions.pool, &posted.session.token_hash).await?;
    let mut resp = Redirect::to("/ui/login").into_response();
    resp.headers_mut().insert(SET_COOKIE, cookie("", 0, false)?);
    Ok(resp)
}

/// The account an admin switches to.
#[derive(Deserialize)]
pub struct Switch {
    account_id: Uuid,
}

/// Switches the account an admin key's session acts for.
pub async fn switch(
    State(state): State<AppState>,
    posted: Posted<Switch>,
) -> Result<Redirect, PageError> {
    if !posted.session.auth.admin {
        return Err(PageError::forbidden(
            "only admin keys may act for another account",
        ));
    }
    let found = store::session::switch(
        &state.sessions.pool,
        &posted.session.token_hash,
        posted.form.account_id,
    )
    .await?;
    if !found {
        return Err(PageError::from(
            crate::api::error::ApiError::not_found("account").field("account_id"),
        ));
    }
    Ok(Redirect::to("/ui/"))
}

/// Accounts an admin may switch to.
///
/// # Errors
/// Database errors.
pub async fn accounts(state: &AppState) -> Result<Vec<(Uuid, String)>, PageError> {
    Ok(store::session::accounts(&state.sessions.pool).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_console_paths_follow_sign_in() {
        assert_eq!(
            next_path(Some("/ui/executions?status=FAILED")),
            "/ui/executions?status=FAILED"
        );
        for bad in [
            "https://evil.example/",
            "//evil.example/ui/",
            "/api/v1/",
            "/ui/\\evil",
            "",
        ] {
            assert_eq!(next_path(Some(bad)), "/ui/", "{bad}");
        }
        assert_eq!(next_path(None), "/ui/");
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "abcd"));
    }

    #[test]
    fn posts_from_other_sites_are_refused() {
        let mut h = HeaderMap::new();
        h.insert(HOST, HeaderValue::from_static("console.example:8080"));
        assert!(
            same_origin(&h).is_ok(),
            "no Origin: a same-origin form of an old browser"
        );
        h.insert(
            ORIGIN,
            HeaderValue::from_static("http://console.example:8080"),
        );
        assert!(same_origin(&h).is_ok());
        h.insert(ORIGIN, HeaderValue::from_static("http://evil.example"));
        assert!(same_origin(&h).is_err());
        h.insert(ORIGIN, HeaderValue::from_static("null"));
        assert!(same_origin(&h).is_err());
    }

    #[test]
    fn cookies_are_read_by_name_and_shape() {
        let token = "a".repeat(64);
        let mut h = HeaderMap::new();
        h.insert(
            COOKIE,
            HeaderValue::from_str(&format!("x=1; {COOKIE_NAME}={token}")).unwrap(),
        );
        assert_eq!(cookie_token(&h).as_deref(), Some(token.as_str()));
        h.insert(
            COOKIE,
            HeaderValue::from_static("flowpilot_session=<script>"),
        );
        assert_eq!(cookie_token(&h), None);
    }
}
