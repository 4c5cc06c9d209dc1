//! `GET|POST /v1/unsubscribe/{token}` (SPEC §9, RFC 8058): the link in a mail's
//! `List-Unsubscribe`. No API key: the signed token is the authority, and it opts one user
//! out of one category's email. GET shows a small confirmation page (link scanners and
//! previews fetch with GET, so it changes nothing); POST acts.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use herald_common::api::UserProfile;

use super::{St, path_param};

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
         <title>{title}</title><style>body{{font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem}}\
         button{{font-size:1rem;padding:.5rem 1rem}}</style></head><body><h1>{title}</h1>{body}</body></html>"
    );
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        html,
    )
        .into_response()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn invalid() -> Response {
    page(
        StatusCode::BAD_REQUEST,
        "This unsubscribe link is not valid",
        "<p>The link may be incomplete: open it again from the email.</p>",
    )
}

fn verified(state: &St, token: Result<Path<String>, PathRejection>) -> Option<(String, String)> {
    let token = path_param(token).ok()?;
    state.0.unsubscribe.as_ref()?.verify(&token)
}

pub(super) async fn unsubscribe_page(
    state: St,
    token: Result<Path<String>, PathRejection>,
) -> Response {
    let Some((_, category)) = verified(&state, token) else {
        return invalid();
    };
    let category = escape(&category);
    page(
        StatusCode::OK,
        "Unsubscribe",
        &format!(
            "<p>Stop receiving <b>{category}</b> emails?</p>\
             <form method=\"post\"><input type=\"hidden\" name=\"List-Unsubscribe\" value=\"One-Click\">\
             <button type=\"submit\">Unsubscribe</button></form>"
        ),
    )
}

pub(super) async fn unsubscribe(
    State(state): St,
    token: Result<Path<String>, PathRejection>,
) -> Response {
    let Some((user, category)) = verified(&State(state.clone()), token) else {
        return invalid();
    };
    let profile = match state.store.user(&user).await {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "unsubscribe: profile unavailable");
            return page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Please try again",
                "<p>We could not record this just now. Please try again in a minute.</p>",
            );
        }
    };
    let mut profile: UserProfile = profile.unwrap_or_default();
    profile
        .categories
        .entry(category.clone())
        .or_default()
        .insert("email".into(), false);
    if let Err(e) = state.store.put_user(&user, &profile).await {
        tracing::warn!(error = %e, "unsubscribe: could not store the opt-out");
        return page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Please try again",
            "<p>We could not record this just now. Please try again in a minute.</p>",
        );
    }
    tracing::info!(user_id = %user, category = %category, "unsubscribed by link");
    page(
        StatusCode::OK,
        "You are unsubscribed",
        &format!(
            "<p>You will not receive <b>{}</b> emails any more.</p>",
            escape(&category)
        ),
    )
}
