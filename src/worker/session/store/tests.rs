use super::*;
use crate::worker::ledger::Recorder;
use crate::worker::report::Book;
use crate::worker::report::wire::FinishedStatus;
use serde_json::json;

const MINUTE: Duration = Duration::from_secs(60);

struct Fixture {
    sessions: Arc<Sessions>,
    ledger: Arc<Ledger>,
    book: Arc<Book>,
}

fn fixture(max_sessions: Option<usize>) -> Fixture {
    let book = Arc::new(Book::new(true));
    let recorder: Arc<dyn Recorder> = Arc::clone(&book) as Arc<dyn Recorder>;
    // Capacity 10 units/s, 429 above 100 s of wait.
    let ledger = Ledger::with_recorder(10.0, 100.0, Some(recorder));
    let backend = Arc::new(Backend::new(
        "http://127.0.0.1:9".parse().unwrap(),
        Duration::from_secs(1),
        Duration::from_secs(1),
    ));
    let rules = SessionRules {
        max_sessions,
        ..SessionRules::default()
    };
    let sessions = Arc::new(Sessions::new(
        rules,
        Arc::clone(&ledger),
        backend,
        crate::worker::observe::tests::observer(),
    ));
    Fixture {
        sessions,
        ledger,
        book,
    }
}

fn auth(request_idx: u64) -> AuthData {
    let fields = json!({"cost": 50, "endpoint": "e", "reqnum": request_idx,
                        "request_idx": request_idx, "signature": "c2ln", "url": "http://w"});
    AuthData {
        fields: fields.as_object().unwrap().clone(),
    }
}

fn params(lifetime: Duration) -> Params {
    Params {
        lifetime,
        on_close_route: None,
        on_close_payload: None,
    }
}

impl Fixture {
    fn open(&self, request_idx: u64, lifetime: Duration) -> String {
        let info = RequestInfo::numbered(request_idx, 50.0);
        self.sessions
            .open(&info, auth(request_idx), params(lifetime))
            .unwrap()
            .session_id
    }
}

#[test]
fn an_open_session_is_one_working_request_of_its_cost_out_of_the_wait() {
    let f = fixture(None);
    let id = f.open(7, MINUTE);
    let s = f.ledger.snapshot();
    assert_eq!((s.sessions, s.cur_load, s.estimated_wait), (1, 50.0, 0.0));
    assert_eq!(s.working_request_idxs, vec![7]);
    assert_eq!(s.working(), 0, "a drain does not wait for a session");
    // A request inside it uses the backend: in the wait, not in cur_load nor the idxs.
    let mut inside = f.ledger.admit(&RequestInfo {
        kind: Kind::InSession,
        ..RequestInfo::numbered(7, 20.0)
    });
    let s = f.ledger.snapshot();
    assert_eq!((s.cur_load, s.estimated_wait, s.queued), (50.0, 2.0, 1));
    assert_eq!(s.working_request_idxs, vec![7]);
    inside.as_mut().unwrap().start();
    assert_eq!(f.ledger.snapshot().in_flight, 1);
    inside.unwrap().finish(Outcome::Success);
    assert!(f.sessions.end(&id, &Value::Object(auth(7).fields)).is_ok());
    let s = f.ledger.snapshot();
    assert_eq!((s.sessions, s.cur_load, s.working()), (0, 0.0, 0));
    assert_eq!(s.totals.served.requests, 2);
    let (records, _, _) = f.book.pending_finished(10);
    assert_eq!(records.len(), 1, "one record, the session's: {records:?}");
    assert_eq!(
        (records[0].request_idx, records[0].status),
        (7, FinishedStatus::Success)
    );
    assert!(records[0].work_started_at.is_some());
    assert_eq!(f.book.interval().served, 70.0);
}

#[test]
fn max_sessions_refuses_with_429_and_records_the_rejection() {
    let f = fixture(Some(1));
    f.open(1, MINUTE);
    let err = f
        .sessions
        .open(&RequestInfo::numbered(2, 50.0), auth(2), params(MINUTE))
        .unwrap_err();
    assert_eq!(err.status(), 429);
    assert_eq!(f.sessions.len(), 1);
    let (records, _, _) = f.book.pending_finished(10);
    assert_eq!(
        (records[0].request_idx, records[0].status),
        (2, FinishedStatus::Rejected)
    );
}

#[test]
fn end_get_and_health_need_the_sessions_auth_data() {
    let f = fixture(None);
    let id = f.open(3, MINUTE);
    let good = Value::Object(auth(3).fields);
    let bad = Value::Object(auth(4).fields);
    assert_eq!(f.sessions.health(&id, &good), Ok(true));
    assert_eq!(f.sessions.health(&id, &bad), Err(Lookup::BadAuth));
    assert_eq!(f.sessions.health("nope", &good), Ok(false));
    assert_eq!(f.sessions.get(&id, &Value::Null), Err(Lookup::BadAuth));
    assert_eq!(f.sessions.get("nope", &good), Err(Lookup::NotFound));
    let doc = f.sessions.get(&id, &good).unwrap();
    assert_eq!(doc["session_id"], json!(id));
    assert_eq!(doc["auth_data"], good);
    assert_eq!(doc["lifetime"], json!(60.0));
    assert_eq!(doc["on_close_route"], Value::Null);
    let created = doc["created_at"].as_f64().unwrap();
    assert!((doc["expiration"].as_f64().unwrap() - created - 60.0).abs() < 1e-6);
    assert_eq!(f.sessions.end(&id, &bad), Err(Lookup::BadAuth));
    assert_eq!(f.sessions.end(&id, &good), Ok(()));
    assert_eq!(f.sessions.end(&id, &good), Err(Lookup::NotFound));
    assert_eq!(f.sessions.health(&id, &good), Ok(false));
}

#[tokio::test(start_paused = true)]
async fn a_session_expires_its_lifetime_after_its_last_request() {
    let f = fixture(None);
    let id = f.open(1, Duration::from_secs(10));
    let t0 = Instant::now();
    assert_eq!(f.sessions.expire(t0), Some(t0 + Duration::from_secs(10)));
    tokio::time::advance(Duration::from_secs(5)).await;
    let entered = f.sessions.enter(&id).unwrap();
    // In flight: no expiry however long it runs.
    assert_eq!(f.sessions.expire(t0 + Duration::from_secs(1000)), None);
    assert_eq!(f.sessions.len(), 1);
    tokio::time::advance(Duration::from_secs(100)).await;
    drop(entered);
    // Sliding: lifetime after the request ended (t0 + 105 s), not lifetime added per request.
    let due = t0 + Duration::from_secs(115);
    assert_eq!(f.sessions.expire(due - Duration::from_millis(1)), Some(due));
    assert_eq!(f.sessions.expire(due), None);
    assert!(f.sessions.is_empty());
    assert_eq!(f.ledger.snapshot().sessions, 0);
    assert!(matches!(
        f.sessions.enter(&id),
        Err(WorkerError::InvalidSession)
    ));
}

#[tokio::test(start_paused = true)]
async fn the_expiry_task_closes_a_session_when_its_time_is_up() {
    let f = fixture(None);
    let task = tokio::spawn(Arc::clone(&f.sessions).expire_forever());
    f.open(1, Duration::from_secs(30));
    tokio::time::sleep(Duration::from_secs(29)).await;
    assert_eq!(f.sessions.len(), 1);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(f.sessions.is_empty());
    task.abort();
}

#[tokio::test]
async fn closing_a_session_signals_its_requests_in_flight() {
    let f = fixture(None);
    let id = f.open(1, MINUTE);
    let mut entered = f.sessions.enter(&id).unwrap();
    assert_eq!((entered.request_idx(), entered.reqnum()), (1, 1));
    assert_eq!(f.sessions.list()[0]["in_flight"], json!(1));
    f.sessions.end(&id, &Value::Object(auth(1).fields)).unwrap();
    tokio::time::timeout(Duration::from_secs(10), entered.closed())
        .await
        .expect("the request sees its session close");
}

#[tokio::test]
async fn a_drain_closes_every_session() {
    let f = fixture(None);
    f.open(1, MINUTE);
    f.open(2, MINUTE);
    f.sessions.close_all(CloseReason::Drained).await;
    assert!(f.sessions.is_empty());
    let s = f.ledger.snapshot();
    assert_eq!((s.sessions, s.totals.served.requests), (0, 2));
}

#[test]
fn status_shows_ids_shortened() {
    let f = fixture(None);
    let id = f.open(9, MINUTE);
    let list = f.sessions.list();
    let shown = list[0]["id"].as_str().unwrap();
    assert!(shown.ends_with('…') && !shown.contains(&id), "{shown}");
    assert_eq!(list[0]["request_idx"], json!(9));
    assert_eq!(list[0]["cost"], json!(50.0));
}
