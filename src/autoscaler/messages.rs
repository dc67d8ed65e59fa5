//! Incoming wire messages: `/route/` requests (PROTOCOL.md §1) and the worker's reports
//! (§5.1 `worker_status`, §5.2 `delete_requests`), parsed leniently.
//!
//! Unknown fields are ignored and optional ones may be missing or `null`, because workers of
//! several versions (PyWorker's and Vespa's) report here. A known field with the wrong JSON
//! type is a 422: silently reading it as zero would hide a broken worker.
//!
//! Numbers are checked before any arithmetic: loads, capacities and costs must be finite and
//! non-negative (JSON cannot carry NaN or infinity, and serde_json refuses `1e400`; a string
//! cost of `"inf"` or `"NaN"` is refused here), and ids are whole numbers up to `u64::MAX`.
//! What the registry keeps of a report is bounded: `url` is at most [`MAX_URL_LEN`] bytes,
//! `error_msg` is cut to [`MAX_ERROR_LEN`], and a body larger than [`MAX_KEPT_REPORT`] is
//! kept only as a summary of its known fields.

use super::error::AutoscalerError;
use serde_json::{Map, Value};

/// Routing units counted for a request that gives no `cost`.
pub const UNKNOWN_COST_UNITS: f64 = 1.0;

/// Longest worker `url` accepted, bytes: it is echoed and signed in every `auth_data`.
pub const MAX_URL_LEN: usize = 2048;

/// Longest `error_msg` kept, bytes; a longer one is cut (on a character boundary).
pub const MAX_ERROR_LEN: usize = 1024;

/// Largest report body kept whole for `get_endpoint_workers`, bytes of JSON. A larger one
/// (a huge `working_request_idxs`, say) is kept as [`summary`]: the §5.1 fields only, lists
/// replaced by their length, strings cut to [`MAX_ERROR_LEN`].
pub const MAX_KEPT_REPORT: usize = 16 << 10;

/// The `worker_status` fields of PROTOCOL.md §5.1, plus Vespa's `endpoint`.
const REPORT_FIELDS: &[&str] = &[
    "id",
    "version",
    "loadtime",
    "new_load",
    "cur_load",
    "rej_load",
    "max_perf",
    "cur_perf",
    "error_msg",
    "num_requests_working",
    "num_requests_recieved",
    "additional_disk_usage",
    "disk_usage",
    "working_request_idxs",
    "cur_capacity",
    "max_capacity",
    "url",
    "endpoint",
];

/// The statuses a finished request is counted under; anything else counts as `Unknown`,
/// so a worker cannot grow the per-worker counts with made-up names.
pub const FINISHED_STATUSES: &[&str] = &["Success", "Error", "Cancelled", "Rejected", "Unknown"];

/// A `POST /route/` body.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteRequest {
    /// Endpoint name.
    pub endpoint: String,
    /// `api_key` from the body, if any (the `Authorization` header wins).
    pub api_key: Option<String>,
    /// `cost` exactly as sent (JSON type kept), echoed into `auth_data`. Integer `0` when
    /// absent or `null`: the worker then applies its own workload rule (PROTOCOL.md §4).
    pub cost: Value,
    /// The cost as routing units: the number, or [`UNKNOWN_COST_UNITS`] when absent.
    pub units: f64,
    /// `request_idx` from an earlier answer; 0 when absent (a new logical request).
    pub request_idx: u64,
}

impl RouteRequest {
    /// Parses and checks a `/route/` body.
    pub fn parse(body: &Map<String, Value>) -> Result<RouteRequest, AutoscalerError> {
        let endpoint = match body.get("endpoint") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(Value::String(_)) | None | Some(Value::Null) => {
                return Err(invalid("missing field: endpoint"));
            }
            Some(_) => return Err(invalid("endpoint must be a string")),
        };
        let api_key = optional_str(body, "api_key")?.map(str::to_string);
        let (cost, units) = match body.get("cost") {
            None | Some(Value::Null) => (Value::from(0), UNKNOWN_COST_UNITS),
            Some(v) => match number(v) {
                Some(n) if n >= 0.0 => (v.clone(), n),
                _ => return Err(invalid("cost must be a number >= 0")),
            },
        };
        let request_idx = match body.get("request_idx") {
            None | Some(Value::Null) => 0,
            Some(v) => uint(v).ok_or_else(|| invalid("request_idx must be a whole number >= 0"))?,
        };
        Ok(RouteRequest {
            endpoint,
            api_key,
            cost,
            units,
            request_idx,
        })
    }
}

/// The fields of a `worker_status` report the autoscaler acts on, plus the whole body.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Worker id (`CONTAINER_ID`).
    pub id: u64,
    /// Where clients reach the worker; empty when not reported.
    pub url: String,
    /// Seconds from start to loaded; 0 before.
    pub loadtime: f64,
    /// Benchmarked throughput, workload units per second.
    pub max_perf: f64,
    /// Workload in the worker's working set when it reported.
    pub cur_load: f64,
    /// The worker's current error; empty when healthy.
    pub error_msg: String,
    /// `working_request_idxs`, sorted: the requests `cur_load` counts. `None` when the
    /// report does not list them. The registry reads it once and does not keep it.
    pub working: Option<Vec<u64>>,
    /// Vespa extension: the one endpoint this worker serves. `None`: every endpoint.
    pub endpoint: Option<String>,
    /// The report minus `mtoken`, shown by `get_endpoint_workers`: whole up to
    /// [`MAX_KEPT_REPORT`] bytes, else a [`summary`].
    pub body: Map<String, Value>,
}

impl Report {
    /// Parses a `worker_status` body (PROTOCOL.md §5.1).
    pub fn parse(mut body: Map<String, Value>) -> Result<Report, AutoscalerError> {
        body.remove("mtoken");
        let id = worker_id(&body, "id")?;
        let endpoint = optional_str(&body, "endpoint")?
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        let url = optional_str(&body, "url")?.unwrap_or("").to_string();
        if url.len() > MAX_URL_LEN {
            return Err(invalid(format!("url is longer than {MAX_URL_LEN} bytes")));
        }
        let error_msg = cut(
            optional_str(&body, "error_msg")?.unwrap_or(""),
            MAX_ERROR_LEN,
        )
        .to_string();
        let loadtime = optional_number(&body, "loadtime")?;
        let max_perf = optional_number(&body, "max_perf")?;
        let cur_load = optional_number(&body, "cur_load")?;
        let working = match body.get("working_request_idxs") {
            None | Some(Value::Null) => None,
            Some(Value::Array(a)) => {
                let mut idxs = a
                    .iter()
                    .map(|v| {
                        uint(v).ok_or_else(|| {
                            invalid("working_request_idxs must be whole numbers >= 0")
                        })
                    })
                    .collect::<Result<Vec<u64>, _>>()?;
                idxs.sort_unstable();
                Some(idxs)
            }
            Some(_) => return Err(invalid("working_request_idxs must be a list")),
        };
        let size = serde_json::to_vec(&body).map_or(usize::MAX, |v| v.len());
        let body = if size > MAX_KEPT_REPORT {
            tracing::debug!(worker = id, size, "large report kept as a summary");
            summary(&body)
        } else {
            body
        };
        Ok(Report {
            id,
            url,
            loadtime,
            max_perf,
            cur_load,
            error_msg,
            working,
            endpoint,
            body,
        })
    }
}

/// A bounded copy of a large report: the §5.1 fields only, each list replaced by its
/// length and each string cut to [`MAX_ERROR_LEN`] bytes, plus `"summarised": true`.
pub fn summary(body: &Map<String, Value>) -> Map<String, Value> {
    let mut kept = Map::new();
    for field in REPORT_FIELDS {
        let Some(v) = body.get(*field) else { continue };
        let v = match v {
            Value::Array(a) => Value::from(a.len()),
            Value::Object(o) => Value::from(o.len()),
            Value::String(s) => Value::from(cut(s, MAX_ERROR_LEN)),
            other => other.clone(),
        };
        kept.insert((*field).to_string(), v);
    }
    kept.insert("summarised".into(), Value::Bool(true));
    kept
}

/// `s` cut to at most `max` bytes, on a character boundary.
fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// One finished request from a `delete_requests` body (PROTOCOL.md §5.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    /// The request's `request_idx`, when given.
    pub request_idx: Option<u64>,
    /// One of [`FINISHED_STATUSES`]: `status` when it is a known one, else from `success`
    /// when `status` is absent, else `Unknown`.
    pub status: &'static str,
}

/// A `delete_requests` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteRequests {
    /// The reporting worker.
    pub worker_id: u64,
    /// The finished requests.
    pub requests: Vec<Finished>,
}

impl DeleteRequests {
    /// Parses a `delete_requests` body; a missing `requests` list counts as empty.
    pub fn parse(body: &Map<String, Value>) -> Result<DeleteRequests, AutoscalerError> {
        let worker_id = worker_id(body, "worker_id")?;
        let list = match body.get("requests") {
            None | Some(Value::Null) => &Vec::new(),
            Some(Value::Array(a)) => a,
            Some(_) => return Err(invalid("requests must be a list")),
        };
        let requests = list
            .iter()
            .map(|r| {
                let r = r
                    .as_object()
                    .ok_or_else(|| invalid("each entry of requests must be an object"))?;
                let request_idx = match r.get("request_idx") {
                    None | Some(Value::Null) => None,
                    Some(v) => Some(
                        uint(v)
                            .ok_or_else(|| invalid("request_idx must be a whole number >= 0"))?,
                    ),
                };
                let status = match (optional_str(r, "status")?, r.get("success")) {
                    (Some(s), _) if !s.is_empty() => FINISHED_STATUSES
                        .iter()
                        .find(|known| **known == s)
                        .copied()
                        .unwrap_or("Unknown"),
                    (_, Some(Value::Bool(true))) => "Success",
                    (_, Some(Value::Bool(false))) => "Error",
                    _ => "Unknown",
                };
                Ok(Finished {
                    request_idx,
                    status,
                })
            })
            .collect::<Result<_, AutoscalerError>>()?;
        Ok(DeleteRequests {
            worker_id,
            requests,
        })
    }
}

fn invalid(message: impl Into<String>) -> AutoscalerError {
    AutoscalerError::InvalidRequest(message.into())
}

/// A finite number, or a string holding one (PROTOCOL.md §4 accepts both for `cost`).
fn number(v: &Value) -> Option<f64> {
    let n = match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    n.filter(|n| n.is_finite())
}

/// A non-negative whole number; `7.0` counts (Python clients may send floats).
fn uint(v: &Value) -> Option<u64> {
    if let Some(n) = v.as_u64() {
        return Some(n);
    }
    let f = v.as_f64()?;
    // Internal: the upper bound keeps the cast exact and in range.
    (f >= 0.0 && f.fract() == 0.0 && f < 9.0e15).then_some(f as u64)
}

/// A worker id: an integer (`CONTAINER_ID`), or a string holding one.
fn worker_id(body: &Map<String, Value>, field: &str) -> Result<u64, AutoscalerError> {
    match body.get(field) {
        None | Some(Value::Null) => Err(invalid(format!("missing field: {field}"))),
        Some(Value::String(s)) => s
            .trim()
            .parse()
            .map_err(|_| invalid(format!("{field} must be a whole number"))),
        Some(v) => uint(v).ok_or_else(|| invalid(format!("{field} must be a whole number"))),
    }
}

fn optional_str<'a>(
    body: &'a Map<String, Value>,
    field: &str,
) -> Result<Option<&'a str>, AutoscalerError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(invalid(format!("{field} must be a string"))),
    }
}

/// A finite number >= 0; 0 when absent or `null`.
fn optional_number(body: &Map<String, Value>, field: &str) -> Result<f64, AutoscalerError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(0.0),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(f) if f.is_finite() && f >= 0.0 => Ok(f),
            _ => Err(invalid(format!("{field} must be a number >= 0"))),
        },
        Some(_) => Err(invalid(format!("{field} must be a number >= 0"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn route_request_keeps_the_cost_type_and_defaults_a_missing_cost_to_zero() {
        let r = RouteRequest::parse(&obj(json!({"endpoint": "e", "cost": 256}))).unwrap();
        assert_eq!(r.cost, json!(256));
        assert!(r.cost.is_u64());
        assert_eq!(r.units, 256.0);
        let r = RouteRequest::parse(&obj(json!({"endpoint": "e", "cost": 242.0}))).unwrap();
        assert!(r.cost.is_f64());
        let r = RouteRequest::parse(&obj(json!({"endpoint": "e"}))).unwrap();
        assert_eq!(r.cost, json!(0));
        assert_eq!(r.units, UNKNOWN_COST_UNITS);
        assert_eq!(r.request_idx, 0);
    }

    #[test]
    fn route_request_rejects_wrong_types_with_422() {
        for body in [
            json!({}),
            json!({"endpoint": 3}),
            json!({"endpoint": "e", "cost": "lots"}),
            json!({"endpoint": "e", "cost": -1}),
            json!({"endpoint": "e", "request_idx": -2}),
            json!({"endpoint": "e", "request_idx": 1.5}),
            json!({"endpoint": "e", "api_key": 7}),
        ] {
            let e = RouteRequest::parse(&obj(body.clone())).unwrap_err();
            assert_eq!(e.status(), 422, "{body}");
        }
    }

    #[test]
    fn report_tolerates_missing_fields_and_drops_the_token() {
        let r = Report::parse(obj(json!({"id": 7, "mtoken": "secret", "extra": [1]}))).unwrap();
        assert_eq!(r.id, 7);
        assert_eq!((r.loadtime, r.max_perf, r.cur_load), (0.0, 0.0, 0.0));
        assert_eq!(r.error_msg, "");
        assert!(!r.body.contains_key("mtoken"));
        assert_eq!(r.body["extra"], json!([1]));
        let r = Report::parse(obj(json!({"id": "12", "error_msg": null}))).unwrap();
        assert_eq!(r.id, 12);
    }

    #[test]
    fn report_without_id_or_with_a_text_load_is_422() {
        assert_eq!(
            Report::parse(obj(json!({"url": "x"})))
                .unwrap_err()
                .status(),
            422
        );
        let e = Report::parse(obj(json!({"id": 1, "cur_load": "high"}))).unwrap_err();
        assert_eq!(e.status(), 422);
    }

    #[test]
    fn delete_requests_take_status_or_fall_back_to_success() {
        let d = DeleteRequests::parse(&obj(json!({"worker_id": 3, "requests": [
            {"request_idx": 5, "success": true, "status": "Cancelled"},
            {"request_idx": 6, "success": false},
            {"success": true, "entered_queue_at": null},
        ]})))
        .unwrap();
        assert_eq!(d.worker_id, 3);
        let statuses: Vec<_> = d.requests.iter().map(|f| f.status).collect();
        assert_eq!(statuses, ["Cancelled", "Error", "Success"]);
        assert_eq!(d.requests[2].request_idx, None);
    }

    #[test]
    fn route_request_takes_extreme_numbers_without_arithmetic_on_them() {
        let r = RouteRequest::parse(&obj(json!({
            "endpoint": "e", "request_idx": u64::MAX, "cost": u64::MAX
        })))
        .unwrap();
        assert_eq!(r.request_idx, u64::MAX);
        assert_eq!(r.cost, json!(u64::MAX), "echoed as sent");
        assert!(r.units.is_finite());
        let r = RouteRequest::parse(&obj(json!({"endpoint": "e", "cost": 1.7e308}))).unwrap();
        assert_eq!(r.units, 1.7e308);
        for cost in [
            json!("NaN"),
            json!("inf"),
            json!("-inf"),
            json!("1e400"),
            json!(-0.5),
        ] {
            let body = obj(json!({"endpoint": "e", "cost": cost}));
            assert_eq!(
                RouteRequest::parse(&body).unwrap_err().status(),
                422,
                "{cost}"
            );
        }
        assert!(serde_json::from_str::<Value>(r#"{"cost": 1e400}"#).is_err());
        let too_big = obj(json!({"endpoint": "e", "request_idx": 1.8e19}));
        assert_eq!(RouteRequest::parse(&too_big).unwrap_err().status(), 422);
    }

    #[test]
    fn report_refuses_negative_loads_and_capacities() {
        for field in ["loadtime", "max_perf", "cur_load"] {
            let e = Report::parse(obj(json!({"id": 1, field: -1.0}))).unwrap_err();
            assert_eq!(e.status(), 422, "{field}");
            assert!(e.to_string().contains(field), "{e}");
        }
        let r = Report::parse(obj(json!({"id": u64::MAX, "max_perf": 1.7e308}))).unwrap();
        assert_eq!((r.id, r.max_perf), (u64::MAX, 1.7e308));
    }

    #[test]
    fn report_reads_the_working_requests_sorted_and_refuses_other_types() {
        let r = Report::parse(obj(json!({"id": 1, "working_request_idxs": [9, 2.0, 5]}))).unwrap();
        assert_eq!(r.working, Some(vec![2, 5, 9]));
        let r = Report::parse(obj(json!({"id": 1, "working_request_idxs": null}))).unwrap();
        assert_eq!(r.working, None);
        for bad in [json!("1,2"), json!([1, -2]), json!([1.5]), json!(["3"])] {
            let e = Report::parse(obj(json!({"id": 1, "working_request_idxs": bad}))).unwrap_err();
            assert_eq!(e.status(), 422, "{bad}");
            assert!(e.to_string().contains("working_request_idxs"), "{e}");
        }
    }

    #[test]
    fn report_bounds_what_is_kept() {
        let long_url = format!("http://{}", "a".repeat(MAX_URL_LEN));
        let e = Report::parse(obj(json!({"id": 1, "url": long_url}))).unwrap_err();
        assert_eq!(e.status(), 422);
        let error = "é".repeat(MAX_ERROR_LEN);
        let r = Report::parse(obj(json!({"id": 1, "error_msg": error}))).unwrap();
        assert!(r.error_msg.len() <= MAX_ERROR_LEN && !r.error_msg.is_empty());

        let idxs: Vec<u64> = (0..100_000).collect();
        let big = json!({"id": 1, "max_perf": 3.0, "working_request_idxs": idxs,
                         "padding": "x".repeat(100), "url": "http://w"});
        let r = Report::parse(obj(big)).unwrap();
        assert_eq!(r.max_perf, 3.0);
        assert_eq!(r.body["working_request_idxs"], 100_000);
        assert_eq!(
            r.working.as_ref().map(Vec::len),
            Some(100_000),
            "read before the summary"
        );
        assert_eq!(r.body["summarised"], true);
        assert!(
            !r.body.contains_key("padding"),
            "unknown fields are not kept"
        );
        assert!(serde_json::to_vec(&r.body).unwrap().len() < MAX_KEPT_REPORT);
        let small = Report::parse(obj(json!({"id": 1, "padding": [1, 2]}))).unwrap();
        assert_eq!(
            small.body["padding"],
            json!([1, 2]),
            "a small report is kept whole"
        );
    }

    #[test]
    fn finished_statuses_are_a_fixed_set() {
        let d = DeleteRequests::parse(&obj(json!({"worker_id": 1, "requests": [
            {"status": "Rejected"}, {"status": "made-up-1"}, {"status": "x".repeat(10_000)},
        ]})))
        .unwrap();
        let statuses: Vec<_> = d.requests.iter().map(|f| f.status).collect();
        assert_eq!(statuses, ["Rejected", "Unknown", "Unknown"]);
    }
}
