//! `GET /openapi.json`: the OpenAPI 3 document, generated from the handlers'
//! annotations and the parameter types they parse, so it cannot drift from
//! what the server accepts.

use std::collections::BTreeSet;

use axum::Json;
use utoipa::openapi::RefOr;
use utoipa::openapi::path::ParameterIn;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoResponses, Modify, OpenApi, ToSchema};

use sqi_schemas::api::{ErrorBody, ErrorDetail};

use super::answer;
use super::endpoints;

/// The answers every data endpoint may give besides 200.
#[derive(IntoResponses)]
#[allow(dead_code)] // Describes responses for the document; never constructed.
pub(super) enum Refusals {
    /// Not modified since the ETag in If-None-Match
    #[response(status = 304)]
    NotModified,
    /// A parameter is wrong; `field` names it
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// No key, or an unknown one
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// The key does not cover this
    #[response(status = 403)]
    Forbidden(ErrorBody),
    /// Over the key's rate limit; see Retry-After
    #[response(status = 429)]
    RateLimited(ErrorBody),
}

// The values some parameters take, for the document only: the handlers parse
// strings themselves so that a wrong value gets a 400 naming its field.

/// A period.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) enum PeriodName {
    #[serde(rename = "today")]
    Today,
    #[serde(rename = "7d")]
    Days7,
    #[serde(rename = "28d")]
    Days28,
    #[serde(rename = "30d")]
    Days30,
    #[serde(rename = "90d")]
    Days90,
    #[serde(rename = "custom")]
    Custom,
}

/// A metric.
#[derive(ToSchema)]
#[allow(dead_code)]
#[serde(rename_all = "lowercase")]
pub(super) enum Metric {
    Pageviews,
    Shares,
    Clickbacks,
}

/// A timeseries bucket.
#[derive(ToSchema)]
#[allow(dead_code)]
#[serde(rename_all = "lowercase")]
pub(super) enum Interval {
    Day,
    Hour,
}

/// An answer format.
#[derive(ToSchema)]
#[allow(dead_code)]
#[serde(rename_all = "lowercase")]
pub(super) enum Format {
    Json,
    Csv,
}

/// What a summary compares with.
#[derive(ToSchema)]
#[allow(dead_code)]
#[serde(rename_all = "snake_case")]
pub(super) enum Compare {
    PreviousPeriod,
}

/// An IANA time zone name, as the server's zone database knows it (or
/// empty, for UTC). Written out in full so that a client, or a generator
/// such as schemathesis, knows which names are accepted.
pub(super) struct ZoneName;

impl utoipa::PartialSchema for ZoneName {
    fn schema() -> RefOr<Schema> {
        let names = std::iter::once("")
            .chain(chrono_tz::TZ_VARIANTS.iter().map(|tz| tz.name()))
            .collect::<Vec<_>>();
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(names))
            .into()
    }
}

impl ToSchema for ZoneName {}

struct BearerKeys;

impl Modify for BearerKeys {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "SQI Engine report API",
        description = "Share, clickback and pageview reports and the Social Quality Index. Keys are scoped to one publisher or to marketers; every answer carries data_as_of, an ETag and the key's remaining quota.",
    ),
    paths(
        endpoints::summary,
        endpoints::timeseries,
        endpoints::channels,
        endpoints::top_urls,
        endpoints::sqi_history,
        endpoints::leaderboard,
        endpoints::me,
    ),
    components(schemas(
        ErrorBody,
        ErrorDetail,
        answer::Summary,
        answer::Timeseries,
        answer::Channels,
        answer::TopUrls,
        answer::SqiHistory,
        answer::Leaderboard,
        answer::Me,
        PeriodName,
        Metric,
        Interval,
        Format,
        Compare,
        ZoneName
    )),
    modifiers(&BearerKeys),
)]
struct ApiDoc;

/// The document.
pub(super) fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The query parameters each documented path takes (its `GET`'s `in: query`
/// parameters), as path segments (`{publisher}` matching any) and names. The
/// guard refuses any other parameter, so what the server accepts is what
/// this document says.
pub(super) fn query_parameters() -> Vec<(Vec<String>, BTreeSet<String>)> {
    openapi()
        .paths
        .paths
        .into_iter()
        .map(|(path, item)| {
            let names = item
                .get
                .and_then(|operation| operation.parameters)
                .unwrap_or_default()
                .into_iter()
                .filter(|p| matches!(p.parameter_in, ParameterIn::Query))
                .map(|p| p.name)
                .collect();
            let segments = path
                .trim_matches('/')
                .split('/')
                .map(str::to_owned)
                .collect();
            (segments, names)
        })
        .collect()
}

/// Serves the document.
pub(super) async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(openapi())
}
