//! `sqi report`: the report API (`CONTRACTS.md` §3) over the lake.
//!
//! It owns authentication (hashed, scoped API keys), period resolution, and
//! turning lake tables into the JSON a marketer or publisher reads. Every
//! number comes from DataFusion over the lake; the API never stores state.
//! User input never causes a 5xx: every parameter is validated first, and
//! internal failures are logged here and answered with a generic message.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Days, NaiveDate, Utc};
use datafusion::functions_aggregate::expr_fn::sum;
use datafusion::prelude::{SessionContext, col, lit};
use futures::TryStreamExt;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqi_schemas::cli::LakeArgs;
use sqi_schemas::event::is_valid_publisher;
use sqi_schemas::lake::{Lake, Table, day_partition};

use crate::error::{Error, Result};
use crate::query;

/// `sqi report` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct ReportArgs {
    /// The lake.
    #[command(flatten)]
    pub lake: LakeArgs,
    /// Where to listen.
    #[arg(long, env = "SQI_LISTEN", default_value = "0.0.0.0:8081")]
    pub listen: SocketAddr,
    /// JSON file of API keys: `[{"name", "sha256", "scope"}]`.
    #[arg(long, env = "SQI_API_KEYS_FILE")]
    pub api_keys_file: PathBuf,
}

/// What a key may read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// One publisher.
    Publisher(String),
    /// Every publisher and the leaderboard.
    Marketer,
}

/// One configured key; only its SHA-256 is known.
#[derive(Debug, Clone)]
pub struct ApiKey {
    /// A label for logs.
    pub name: String,
    /// What the key may read.
    pub scope: Scope,
}

/// The configured keys, indexed by the hex SHA-256 of the raw key.
#[derive(Debug, Clone, Default)]
pub struct KeyRing {
    by_hash: HashMap<String, ApiKey>,
}

#[derive(Deserialize)]
struct KeyEntry {
    name: String,
    sha256: String,
    scope: String,
}

impl KeyRing {
    /// Parses the key file's JSON.
    pub fn parse(json: &str) -> Result<Self> {
        let entries: Vec<KeyEntry> =
            serde_json::from_str(json).map_err(|e| Error::Invalid(format!("API key file: {e}")))?;
        let mut by_hash = HashMap::new();
        for entry in entries {
            let hash = entry.sha256.to_ascii_lowercase();
            if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(Error::Invalid(format!(
                    "API key file: key `{}` needs a 64-hex-digit sha256",
                    entry.name
                )));
            }
            let scope = match entry.scope.split_once(':') {
                None if entry.scope == "marketer" => Scope::Marketer,
                Some(("publisher", id)) if is_valid_publisher(id) => {
                    Scope::Publisher(id.to_owned())
                }
                _ => {
                    return Err(Error::Invalid(format!(
                        "API key file: key `{}` has scope `{}`; use `marketer` or `publisher:<id>`",
                        entry.name, entry.scope
                    )));
                }
            };
            let _ = by_hash.insert(
                hash,
                ApiKey {
                    name: entry.name,
                    scope,
                },
            );
        }
        Ok(Self { by_hash })
    }

    /// Loads the key file.
    pub fn load(path: &std::path::Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::Invalid(format!("cannot read API key file {}: {e}", path.display()))
        })?;
        Self::parse(&text)
    }

    fn find(&self, raw_key: &str) -> Option<&ApiKey> {
        let hash = hex::encode(Sha256::digest(raw_key.as_bytes()));
        self.by_hash.get(&hash)
    }
}

/// A request failure, answered as `{"error": {"code", "message", "field"?}}`.
#[derive(Debug)]
pub enum ReportError {
    /// 400: a parameter is wrong.
    BadRequest {
        /// The parameter.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// 401: no key, or an unknown one.
    Unauthorized,
    /// 403: the key does not cover this publisher. Identical for unknown publishers.
    Forbidden,
    /// 500: logged with detail; the client sees a generic message.
    Internal(Error),
}

impl From<Error> for ReportError {
    fn from(e: Error) -> Self {
        Self::Internal(e)
    }
}

impl IntoResponse for ReportError {
    fn into_response(self) -> Response {
        let (status, body) = match self {
            Self::BadRequest { field, message } => (
                StatusCode::BAD_REQUEST,
                json!({"error": {"code": "invalid_parameter", "message": message, "field": field}}),
            ),
            Self::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                json!({"error": {"code": "unauthorized", "message": "a valid API key is required: Authorization: Bearer <key>"}}),
            ),
            Self::Forbidden => (
                StatusCode::FORBIDDEN,
                json!({"error": {"code": "forbidden", "message": "this key does not cover the requested publisher"}}),
            ),
            Self::Internal(error) => {
                tracing::error!(%error, "report request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    json!({"error": {"code": "internal", "message": "the report could not be computed; try again later"}}),
                )
            }
        };
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            let _ = response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

/// Shared state of the report API.
#[derive(Clone)]
pub struct ReportState {
    lake: Lake,
    keys: Arc<KeyRing>,
    ctx: SessionContext,
    metrics: Option<PrometheusHandle>,
}

impl ReportState {
    /// Opens a DataFusion session over the lake's tables.
    pub async fn new(lake: Lake, keys: KeyRing, metrics: Option<PrometheusHandle>) -> Result<Self> {
        let ctx = query::session(&lake, &[Table::Aggregates, Table::Daily, Table::Sqi], 2).await?;
        Ok(Self {
            lake,
            keys: Arc::new(keys),
            ctx,
            metrics,
        })
    }
}

/// The report router.
pub fn router(state: ReportState) -> Router {
    Router::new()
        .route("/v1/publishers/{publisher}/summary", get(summary))
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ready" }))
        .route(
            "/metrics",
            get(|State(s): State<ReportState>| async move {
                s.metrics.map(|h| h.render()).unwrap_or_default()
            }),
        )
        .with_state(state)
}

/// Serves the report API on `listener` until `shutdown` resolves.
pub async fn serve(
    state: ReportState,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}

fn authorize(state: &ReportState, headers: &HeaderMap, publisher: &str) -> Result<(), ReportError> {
    let raw = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .ok_or(ReportError::Unauthorized)?;
    let key = state.keys.find(raw).ok_or(ReportError::Unauthorized)?;
    // The scope check looks only at the key, never at whether the publisher
    // exists, so a 403 is the same whatever publisher is asked for.
    match &key.scope {
        Scope::Marketer => Ok(()),
        Scope::Publisher(own) if own == publisher => Ok(()),
        Scope::Publisher(_) => Err(ReportError::Forbidden),
    }
}

/// Query parameters shared by the publisher endpoints.
#[derive(Debug, Default, Deserialize)]
pub struct PeriodParams {
    period: Option<String>,
    from: Option<String>,
    to: Option<String>,
    tz: Option<String>,
    compare: Option<String>,
    include_bots: Option<String>,
}

/// An inclusive range of days.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    /// First day.
    pub from: NaiveDate,
    /// Last day.
    pub to: NaiveDate,
}

impl Period {
    fn days(self) -> u64 {
        (self.to - self.from).num_days().unsigned_abs() + 1
    }

    /// The equal-length window just before this one.
    pub fn previous(self) -> Self {
        let len = self.days();
        Self {
            from: self
                .from
                .checked_sub_days(Days::new(len))
                .unwrap_or(self.from),
            to: self
                .from
                .checked_sub_days(Days::new(1))
                .unwrap_or(self.from),
        }
    }
}

fn bad(field: &'static str, message: impl Into<String>) -> ReportError {
    ReportError::BadRequest {
        field,
        message: message.into(),
    }
}

/// Resolves `period` (and `from`/`to` for `custom`) to days ending `today`, inclusive.
pub fn resolve_period(
    params: &PeriodParams,
    today: NaiveDate,
) -> Result<(String, Period), ReportError> {
    match params.tz.as_deref() {
        None | Some("UTC") | Some("Etc/UTC") => {}
        Some(other) => {
            return Err(bad(
                "tz",
                format!("timezone `{other}` is not supported yet; use UTC"),
            ));
        }
    }
    let name = params.period.clone().unwrap_or_else(|| "28d".to_owned());
    let last_days = |n: u64| Period {
        from: today.checked_sub_days(Days::new(n - 1)).unwrap_or(today),
        to: today,
    };
    let period = match name.as_str() {
        "today" => last_days(1),
        "7d" => last_days(7),
        "28d" => last_days(28),
        "30d" => last_days(30),
        "90d" => last_days(90),
        "custom" => {
            let date = |field: &'static str, value: &Option<String>| {
                let text = value.as_deref().ok_or_else(|| {
                    bad(field, format!("period=custom needs `{field}` (YYYY-MM-DD)"))
                })?;
                NaiveDate::parse_from_str(text, "%Y-%m-%d")
                    .map_err(|_| bad(field, format!("`{text}` is not a date (YYYY-MM-DD)")))
            };
            let period = Period {
                from: date("from", &params.from)?,
                to: date("to", &params.to)?,
            };
            if period.from > period.to {
                return Err(bad("from", "`from` is after `to`"));
            }
            if period.days() > 3660 {
                return Err(bad("from", "a custom period may span at most 10 years"));
            }
            period
        }
        other => {
            return Err(bad(
                "period",
                format!("unknown period `{other}`; use today, 7d, 28d, 30d, 90d or custom"),
            ));
        }
    };
    Ok((name, period))
}

fn parse_bool(field: &'static str, value: Option<&str>) -> Result<bool, ReportError> {
    match value {
        None | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") => Ok(true),
        Some(other) => Err(bad(field, format!("`{other}` is not true or false"))),
    }
}

/// Pageviews, shares and clickbacks of one publisher over a period.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Pageviews.
    pub pageviews: i64,
    /// Shares.
    pub shares: i64,
    /// Clickbacks.
    pub clickbacks: i64,
}

impl Totals {
    fn to_json(self) -> Value {
        let rate = |x: i64, n: i64| (n > 0).then(|| x as f64 / n as f64);
        json!({
            "pageviews": self.pageviews,
            "shares": self.shares,
            "clickbacks": self.clickbacks,
            "share_rate": rate(self.shares, self.pageviews),
            "clickback_rate": rate(self.clickbacks, self.shares),
            "social_traffic_ratio": rate(self.clickbacks, self.pageviews),
        })
    }
}

/// Sums a publisher's events by type over `period` from the hourly aggregates.
pub async fn totals(
    ctx: &SessionContext,
    publisher: &str,
    period: Period,
    include_bots: bool,
) -> Result<Totals> {
    let mut frame = ctx.table(Table::Aggregates.prefix()).await?.filter(
        col("dt")
            .gt_eq(lit(period.from.to_string()))
            .and(col("dt").lt_eq(lit(period.to.to_string())))
            .and(col("publisher").eq(lit(publisher))),
    )?;
    if !include_bots {
        frame = frame.filter(col("device").not_eq(lit("bot")))?;
    }
    let batches = frame
        .aggregate(
            vec![col("event_type")],
            vec![sum(col("events")).alias("events")],
        )?
        .collect()
        .await?;
    let mut totals = Totals::default();
    for batch in &batches {
        // Group keys may come back as Utf8View; normalise before reading.
        let types = arrow::compute::cast(batch.column(0), &arrow::datatypes::DataType::Utf8)?;
        let types = arrow::array::AsArray::as_string_opt::<i32>(&types)
            .ok_or_else(|| Error::Invalid("event_type is not text".into()))?;
        let counts = batch
            .column(1)
            .as_any()
            .downcast_ref::<arrow::array::Int64Array>()
            .ok_or_else(|| Error::Invalid("events sum is not int64".into()))?;
        for row in 0..batch.num_rows() {
            let n = counts.value(row);
            match types.value(row) {
                "pageview" => totals.pageviews += n,
                "share" => totals.shares += n,
                "clickback" => totals.clickbacks += n,
                _ => {}
            }
        }
    }
    Ok(totals)
}

/// The publisher's most recent SQI row on or before `to`, as JSON.
pub async fn latest_sqi(
    ctx: &SessionContext,
    publisher: &str,
    to: NaiveDate,
) -> Result<Option<Value>> {
    let batches = ctx
        .table(Table::Sqi.prefix())
        .await?
        .filter(
            col("publisher")
                .eq(lit(publisher))
                .and(col("dt").lt_eq(lit(to.to_string()))),
        )?
        .sort(vec![col("date").sort(false, false)])?
        .limit(0, Some(1))?
        .collect()
        .await?;
    let Some(batch) = batches.iter().find(|b| b.num_rows() > 0) else {
        return Ok(None);
    };
    let mut writer = arrow_json_row(batch)?;
    Ok(writer.pop())
}

fn arrow_json_row(batch: &arrow::array::RecordBatch) -> Result<Vec<Value>> {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{DataType, Date32Type, Float64Type, Int32Type, Int64Type};
    let mut rows = vec![serde_json::Map::new(); batch.num_rows()];
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        if matches!(field.name().as_str(), "dt") {
            continue;
        }
        for (row, out) in rows.iter_mut().enumerate() {
            let value = if column.is_null(row) {
                Value::Null
            } else {
                match field.data_type() {
                    DataType::Utf8 => json!(column.as_string::<i32>().value(row)),
                    DataType::Utf8View => json!(column.as_string_view().value(row)),
                    DataType::Int64 => json!(column.as_primitive::<Int64Type>().value(row)),
                    DataType::Int32 => json!(column.as_primitive::<Int32Type>().value(row)),
                    DataType::Float64 => json!(column.as_primitive::<Float64Type>().value(row)),
                    DataType::Boolean => json!(column.as_boolean().value(row)),
                    DataType::Date32 => json!(
                        column
                            .as_primitive::<Date32Type>()
                            .value_as_date(row)
                            .map(|d| d.to_string())
                    ),
                    _ => Value::Null,
                }
            };
            let _ = out.insert(field.name().clone(), value);
        }
    }
    Ok(rows.into_iter().map(Value::Object).collect())
}

/// When the newest aggregates file on or before `to` was written.
async fn data_as_of(lake: &Lake, to: NaiveDate) -> Result<Option<DateTime<Utc>>> {
    for back in 0..3u64 {
        let Some(day) = to.checked_sub_days(Days::new(back)) else {
            break;
        };
        let prefix = lake.path(&format!(
            "{}/{}",
            Table::Aggregates.prefix(),
            day_partition(day)
        ));
        let newest = lake
            .store()
            .list(Some(&prefix))
            .try_fold(None, |newest: Option<DateTime<Utc>>, meta| async move {
                Ok(Some(
                    newest.map_or(meta.last_modified, |n| n.max(meta.last_modified)),
                ))
            })
            .await?;
        if newest.is_some() {
            return Ok(newest);
        }
    }
    Ok(None)
}

async fn summary(
    State(state): State<ReportState>,
    Path(publisher): Path<String>,
    Query(params): Query<PeriodParams>,
    headers: HeaderMap,
) -> Result<Response, ReportError> {
    authorize(&state, &headers, &publisher)?;
    if !is_valid_publisher(&publisher) {
        return Err(bad(
            "publisher",
            "publisher must be 3 to 64 characters of [A-Za-z0-9_.-]",
        ));
    }
    let (name, period) = resolve_period(&params, Utc::now().date_naive())?;
    let include_bots = parse_bool("include_bots", params.include_bots.as_deref())?;
    let compare = match params.compare.as_deref() {
        None => false,
        Some("previous_period") => true,
        Some(other) => {
            return Err(bad(
                "compare",
                format!("unknown compare `{other}`; use previous_period"),
            ));
        }
    };
    let current = totals(&state.ctx, &publisher, period, include_bots).await?;
    let mut body = json!({
        "publisher": publisher,
        "period": {"name": name, "from": period.from.to_string(), "to": period.to.to_string(), "tz": "UTC"},
        "include_bots": include_bots,
    });
    if let (Value::Object(body), Value::Object(numbers)) = (&mut body, current.to_json()) {
        body.extend(numbers);
    }
    if compare {
        let previous_period = period.previous();
        let previous = totals(&state.ctx, &publisher, previous_period, include_bots).await?;
        let change =
            |now: i64, before: i64| (before != 0).then(|| (now - before) as f64 / before as f64);
        body["previous"] = previous.to_json();
        body["previous"]["from"] = json!(previous_period.from.to_string());
        body["previous"]["to"] = json!(previous_period.to.to_string());
        body["change"] = json!({
            "pageviews": change(current.pageviews, previous.pageviews),
            "shares": change(current.shares, previous.shares),
            "clickbacks": change(current.clickbacks, previous.clickbacks),
        });
    }
    body["sqi"] = latest_sqi(&state.ctx, &publisher, period.to)
        .await?
        .unwrap_or(Value::Null);
    body["data_as_of"] = json!(
        data_as_of(&state.lake, period.to)
            .await?
            .map(|t| t.to_rfc3339())
    );
    Ok(Json(body).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(period: &str, from: Option<&str>, to: Option<&str>) -> PeriodParams {
        PeriodParams {
            period: Some(period.into()),
            from: from.map(Into::into),
            to: to.map(Into::into),
            ..PeriodParams::default()
        }
    }

    #[test]
    fn periods_are_inclusive_and_previous_is_equal_length() {
        let today = NaiveDate::from_ymd_opt(2024, 3, 10).unwrap();
        let (_, p) = resolve_period(&params("7d", None, None), today).unwrap();
        assert_eq!(
            (p.from.to_string(), p.to.to_string()),
            ("2024-03-04".into(), "2024-03-10".into())
        );
        let prev = p.previous();
        assert_eq!(
            (prev.from.to_string(), prev.to.to_string()),
            ("2024-02-26".into(), "2024-03-03".into())
        );
        let (_, c) = resolve_period(
            &params("custom", Some("2024-01-01"), Some("2024-01-01")),
            today,
        )
        .unwrap();
        assert_eq!(c.days(), 1);
    }

    #[test]
    fn bad_parameters_name_their_field() {
        let today = NaiveDate::from_ymd_opt(2024, 3, 10).unwrap();
        let field = |p: PeriodParams| match resolve_period(&p, today) {
            Err(ReportError::BadRequest { field, .. }) => field,
            other => panic!("expected 400, got {other:?}"),
        };
        assert_eq!(field(params("fortnight", None, None)), "period");
        assert_eq!(
            field(params("custom", Some("2024-13-01"), Some("2024-01-02"))),
            "from"
        );
        assert_eq!(field(params("custom", Some("2024-01-01"), None)), "to");
        assert_eq!(
            field(params("custom", Some("2024-02-01"), Some("2024-01-02"))),
            "from"
        );
        let mut tz = params("7d", None, None);
        tz.tz = Some("Mars/Olympus".into());
        assert_eq!(field(tz), "tz");
    }

    #[test]
    fn keys_are_matched_by_hash_and_scoped() {
        let hash = hex::encode(Sha256::digest(b"secret-1"));
        let ring = KeyRing::parse(&format!(
            r#"[{{"name":"a","sha256":"{hash}","scope":"publisher:pub-1"}}]"#
        ))
        .unwrap();
        assert_eq!(
            ring.find("secret-1").map(|k| k.scope.clone()),
            Some(Scope::Publisher("pub-1".into()))
        );
        assert!(ring.find("secret-2").is_none());
        assert!(KeyRing::parse(r#"[{"name":"a","sha256":"abc","scope":"marketer"}]"#).is_err());
        assert!(
            KeyRing::parse(&format!(
                r#"[{{"name":"a","sha256":"{hash}","scope":"admin"}}]"#
            ))
            .is_err()
        );
    }
}
