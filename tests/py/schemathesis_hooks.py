"""schemathesis hooks for the report API's conformance test
(sqi/tests/report_api.rs, `the_openapi_document_holds_under_schemathesis`).

OpenAPI cannot say that one query parameter constrains another, so the
document states these rules in prose and the server answers 400 naming the
field. Generated requests that break them are left out here, so that
`positive_data_acceptance` (valid data must be accepted) judges only what the
schema can express; every rule below is tested on its own in the Rust suite.
"""

import datetime

import schemathesis

MAX_CUSTOM_DAYS = 366  # sqi/report/src/window.rs
MAX_HOURLY_DAYS = 31  # sqi/report/src/endpoints.rs
HISTORY_DAYS = 28  # the SQI history's default length


def _date(value):
    if not isinstance(value, str):
        return None
    try:
        return datetime.date.fromisoformat(value) if len(value) == 10 else None
    except ValueError:
        return None


def _span_ok(first, last):
    return first is not None and last is not None and first <= last and (last - first).days < MAX_CUSTOM_DAYS


@schemathesis.hook
def filter_case(ctx, case):
    """Every phase's cases (the coverage phase's too, unlike `filter_query`)."""
    query = case.query or {}
    if not query or any(isinstance(v, (list, dict)) for v in query.values()):
        return True  # repeated or structured values: a negative case, left to the server
    path = case.operation.path
    today = datetime.datetime.now(datetime.timezone.utc).date()
    if path.endswith("/sqi") and path.startswith("/v1/publishers/"):
        # The history: `to` defaults to today, `from` to 27 days before `to`.
        last = _date(query["to"]) if "to" in query else today
        first = _date(query["from"]) if "from" in query else (last and last - datetime.timedelta(days=HISTORY_DAYS - 1))
        if ("to" in query and last is None) or ("from" in query and first is None):
            return True  # not a date: a negative case, left to the server
        return _span_ok(first, last)
    if query.get("period") == "custom":
        first, last = _date(query.get("from")), _date(query.get("to"))
        if not _span_ok(first, last):
            return False
        days = (last - first).days + 1
    else:
        days = {"today": 1, "7d": 7, "28d": 28, "30d": 30, "90d": 90}.get(query.get("period", "28d"), 0)
    if query.get("interval") == "hour" and days > MAX_HOURLY_DAYS:
        return False
    return True
