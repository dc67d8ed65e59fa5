//! Incoming wire messages: `/route/` requests (PROTOCOL.md §1) and the worker's reports
//! (§5.1 `worker_status`, §5.2 `delete_requests`), parsed leniently.
//!
//! Unknown fields are ignored and optional ones may be missing or `null`, because workers of
//! several versions (PyWorker's and Vespa's) report here. A known field with the wrong JSON
//! type is a 422: silently reading it as zero would hide a broken worker.

use super::error::AutoscalerError;
use serde_json::{Map, Value};

/// Routing units counted for a request that gives no `cost`.
pub const UNKNOWN_COST_UNITS: f64 = 1.0;

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
    /// Vespa extension: the one endpoint this worker serves. `None`: every endpoint.
    pub endpoint: Option<String>,
    /// The whole report minus `mtoken`, shown by `get_endpoint_workers`.
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
        Ok(Report {
            id,
            url: optional_str(&body, "url")?.unwrap_or("").to_string(),
            loadtime: optional_number(&body, "loadtime")?,
            max_perf: optional_number(&body, "max_perf")?,
            cur_load: optional_number(&body, "cur_load")?,
            error_msg: optional_str(&body, "error_msg")?.unwrap_or("").to_string(),
            endpoint,
            body,
        })
    }
}

/// One finished request from a `delete_requests` body (PROTOCOL.md §5.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    /// The request's `request_idx`, when given.
    pub request_idx: Option<u64>,
    /// `Success`, `Error`, `Cancelled`, `Rejected`, …; from `success` when `status` is absent.
    pub status: String,
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
                    (Some(s), _) if !s.is_empty() => s.to_string(),
                    (_, Some(Value::Bool(true))) => "Success".into(),
                    (_, Some(Value::Bool(false))) => "Error".into(),
                    _ => "Unknown".into(),
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

/// A number, or a string holding one (PROTOCOL.md §4 accepts both for `cost`).
fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok().filter(|n| n.is_finite()),
        _ => None,
    }
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

fn optional_number(body: &Map<String, Value>, field: &str) -> Result<f64, AutoscalerError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(0.0),
        Some(Value::Number(n)) => Ok(n.as_f64().unwrap_or(0.0)),
        Some(_) => Err(invalid(format!("{field} must be a number"))),
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
        let statuses: Vec<_> = d.requests.iter().map(|f| f.status.as_str()).collect();
        assert_eq!(statuses, ["Cancelled", "Error", "Success"]);
        assert_eq!(d.requests[2].request_idx, None);
    }
}
