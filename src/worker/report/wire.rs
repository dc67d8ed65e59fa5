//! The bodies the worker posts to the autoscaler (PROTOCOL.md §5), as typed structs so a
//! field cannot change unnoticed: each is pinned by a snapshot test.

use serde::Serialize;

/// `POST /worker_status/` (PROTOCOL.md §5.1), also the failure beacon's body (§5.3).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkerStatus<'a> {
    /// `CONTAINER_ID`.
    pub id: i64,
    /// `MASTER_TOKEN`.
    pub mtoken: &'a str,
    /// Vespa's version.
    pub version: &'a str,
    /// Seconds from process start to loaded; 0.0 before.
    pub loadtime: f64,
    /// `max(received − cancelled, 0)` workload since the last successful report.
    pub new_load: f64,
    /// Σ workload of the working set.
    pub cur_load: f64,
    /// Workload rejected since the last successful report.
    pub rej_load: f64,
    /// Capacity, workload units per second; 0.0 before loaded.
    pub max_perf: f64,
    /// Workload served since the last successful report.
    pub cur_perf: f64,
    /// `""` or the current error.
    pub error_msg: &'a str,
    /// Size of the working set.
    pub num_requests_working: usize,
    /// Distinct reqnums ever received (the spelling is the autoscaler's).
    pub num_requests_recieved: u64,
    /// GB of `/` used now minus at the previous report.
    pub additional_disk_usage: f64,
    /// GB of `/` used now.
    pub disk_usage: f64,
    /// `request_idx` of every request in the working set.
    pub working_request_idxs: Vec<u64>,
    /// Always 0.
    pub cur_capacity: u32,
    /// Always 0.
    pub max_capacity: u32,
    /// The worker's public URL.
    pub url: &'a str,
}

/// How a finished request is reported in `/delete_requests/` (PROTOCOL.md §5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum FinishedStatus {
    /// Served.
    Success,
    /// Failed in transport or mid-body.
    Error,
    /// The client went away.
    Cancelled,
    /// Refused at admission (429, 503).
    Rejected,
}

/// One ended request in `/delete_requests/`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finished {
    /// `request_idx` of the request.
    pub request_idx: u64,
    /// Cancelled requests count as successes, as PyWorker reports them.
    pub success: bool,
    /// Outcome.
    pub status: FinishedStatus,
    /// Unix seconds.
    pub entered_queue_at: Option<f64>,
    /// Unix seconds.
    pub work_started_at: Option<f64>,
    /// Unix seconds.
    pub work_completed_at: Option<f64>,
}

/// `POST /delete_requests/` (PROTOCOL.md §5.2).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeleteRequests<'a> {
    /// `CONTAINER_ID`.
    pub worker_id: i64,
    /// `MASTER_TOKEN`.
    pub mtoken: &'a str,
    /// Ended requests, oldest first.
    pub requests: &'a [Finished],
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status() -> WorkerStatus<'static> {
        WorkerStatus {
            id: 17,
            mtoken: "token",
            version: "0.1.0",
            loadtime: 12.5,
            new_load: 300.0,
            cur_load: 120.0,
            rej_load: 50.0,
            max_perf: 2000.0,
            cur_perf: 250.0,
            error_msg: "",
            num_requests_working: 2,
            num_requests_recieved: 9,
            additional_disk_usage: 0.25,
            disk_usage: 41.5,
            working_request_idxs: vec![7, 8],
            cur_capacity: 0,
            max_capacity: 0,
            url: "https://203.0.113.9:41234",
        }
    }

    #[test]
    fn worker_status_wire_format() {
        insta::assert_json_snapshot!(status());
    }

    #[test]
    fn failure_beacon_wire_format() {
        let beacon = WorkerStatus {
            error_msg: "cannot listen on 0.0.0.0:3000: Address already in use",
            ..super::super::beacon(17, "token", "http://127.0.0.1:3000", 41.5)
        };
        insta::assert_json_snapshot!(beacon);
    }

    #[test]
    fn delete_requests_wire_format() {
        let requests = [
            Finished {
                request_idx: 7,
                success: true,
                status: FinishedStatus::Success,
                entered_queue_at: Some(1_700_000_000.25),
                work_started_at: Some(1_700_000_000.5),
                work_completed_at: Some(1_700_000_003.0),
            },
            Finished {
                request_idx: 8,
                success: false,
                status: FinishedStatus::Rejected,
                entered_queue_at: Some(1_700_000_001.0),
                work_started_at: None,
                work_completed_at: Some(1_700_000_001.0),
            },
        ];
        insta::assert_json_snapshot!(DeleteRequests {
            worker_id: 17,
            mtoken: "token",
            requests: &requests,
        });
    }
}
