//! `GET /dashboard`: the static dashboard page and its assets, embedded in the
//! binary at compile time (Chart.js comes from npm via `scripts/build-dashboard`),
//! so it needs no CDN and works wherever the report API does. The page calls
//! the API with the reader's key; it has no access of its own.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

const INDEX: &str = include_str!("../dashboard/index.html");
const APP: &str = include_str!("../dashboard/app.js");
const STYLE: &str = include_str!("../dashboard/style.css");
const CHART: &str = include_str!("../dashboard/vendor/chart.umd.min.js");

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    let _ = headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Only this origin's scripts and styles, and calls to this API.
    let _ = headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
        ),
    );
    let _ = headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

pub(super) async fn index() -> Response {
    asset(INDEX, "text/html; charset=utf-8")
}

pub(super) async fn app() -> Response {
    asset(APP, "text/javascript; charset=utf-8")
}

pub(super) async fn style() -> Response {
    asset(STYLE, "text/css; charset=utf-8")
}

pub(super) async fn chart() -> Response {
    asset(CHART, "text/javascript; charset=utf-8")
}
