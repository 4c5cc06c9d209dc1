//! The web console at `/console`: a single page (HTML, CSS and a little JavaScript, built
//! into the binary) that talks to the same `/v1` API with the API key the user signs in
//! with, and uses the JavaScript SDK for its test client. The assets hold nothing secret.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

const INDEX: &str = include_str!("../console/index.html");
const SDK: &str = include_str!("../../clients/js/src/herald.js");

pub fn router() -> Router {
    Router::new()
        .route(
            "/console",
            get(|| async {
                ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], INDEX).into_response()
            }),
        )
        .route(
            "/console/",
            get(|| async { axum::response::Redirect::permanent("/console") }),
        )
        .route(
            "/console/herald.js",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
                    SDK,
                )
                    .into_response()
            }),
        )
}
