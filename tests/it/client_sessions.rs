//! Sessions from the client side: the library's calls and `vespa proxy`'s `X-Vespa-Session`
//! pinning, through `vespa autoscaler` to signed workers.

use crate::support::*;
use http::Method;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use vespa::autoscaler::Autoscaler;
use vespa::client::{Client, ClientRequest, SessionSpec};

/// A backend that answers every request with its path, and records it.
async fn echo_backend() -> Backend {
    Backend::start(|seen| async move {
        json(
            200,
            json!({"path": seen.uri.path(), "object": "text_completion"}),
        )
    })
    .await
}

async fn body_json(resp: http::Response<vespa::http_util::Body>) -> Value {
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes).unwrap_or(Value::Null)
}

fn completion() -> ClientRequest {
    ClientRequest::post_json("/v1/completions", &json!({"prompt": "hi", "max_tokens": 4}))
}

/// `/route/` calls the autoscaler answered with a worker.
async fn routed(autoscaler: &Autoscaler) -> f64 {
    let text = reqwest::Client::new()
        .get(format!("{}/metrics", autoscaler.url()))
        .bearer_auth(LOCAL_MASTER_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let series = r#"vespa_autoscaler_route_requests_total{endpoint="ep",result="routed"} "#;
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in {text}"))
}

#[tokio::test]
async fn the_library_opens_uses_checks_and_closes_a_session_on_the_vastai_wire() {
    let mut backend = echo_backend().await;
    let autoscaler = Autoscaler::start(local_autoscaler("ep", KEY))
        .await
        .unwrap();
    let worker = signed_worker(&backend, &autoscaler, 1).await;
    let client = Client::new(test_config(&autoscaler.url(), "ep", KEY)).unwrap();

    let spec = SessionSpec {
        cost: Some(30.0),
        lifetime: 120.0,
        on_close_route: Some("/session-closed".into()),
        on_close_payload: Some(json!({"job": 7})),
    };
    let session = client.open_session(&spec).await.unwrap();
    assert_eq!(session.worker, url(&worker, ""));
    let open = wait_until(&worker, |s| s.cur_load == 30.0).await;
    assert_eq!(open.estimated_wait, 0.0, "a session is not queued work");

    let resp = client
        .session_request(&session, completion())
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(body_json(resp).await["path"], "/v1/completions");
    let seen = backend.next_request().await;
    assert_eq!(seen.uri.path(), "/v1/completions");
    assert_eq!(
        serde_json::from_slice::<Value>(&seen.body).unwrap(),
        json!({"prompt": "hi", "max_tokens": 4}),
        "the backend sees the payload only"
    );
    // A query-form request (no JSON body) of the session carries its id in the query.
    let get = ClientRequest::new(Method::GET, "/v1/models");
    let resp = client.session_request(&session, get).await.unwrap();
    assert_eq!(resp.status(), 200);
    let seen = backend.next_request().await;
    assert_eq!(seen.uri.path(), "/v1/models");
    assert_eq!(
        seen.uri.query(),
        None,
        "serverless_* parameters are not forwarded"
    );

    assert!(client.session_is_open(&session).await.unwrap());
    assert!(client.close_session(&session).await.unwrap());
    let closed = backend.next_request().await;
    assert_eq!(closed.uri.path(), "/session-closed");
    assert_eq!(
        serde_json::from_slice::<Value>(&closed.body).unwrap(),
        json!({"job": 7, "session_id": session.id})
    );
    assert!(!client.session_is_open(&session).await.unwrap());
    assert!(
        !client.close_session(&session).await.unwrap(),
        "already closed"
    );
    let resp = client
        .session_request(&session, completion())
        .await
        .unwrap();
    assert_eq!(resp.status(), 410);
    assert_eq!(body_json(resp).await["error"], "invalid session");
    assert_settled(&worker).await;
}

#[tokio::test]
async fn the_proxy_pins_a_named_session_to_one_worker_and_reopens_it_when_gone() {
    let backend = echo_backend().await;
    let autoscaler = Autoscaler::start(local_autoscaler("ep", KEY))
        .await
        .unwrap();
    let first = signed_worker(&backend, &autoscaler, 1).await;
    let second = signed_worker(&backend, &autoscaler, 2).await;
    let mut config =
        vespa::client::proxy::ProxyConfig::new(test_config(&autoscaler.url(), "ep", KEY));
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.sessions.spec.lifetime = 300.0;
    config.sessions.max = 2;
    let proxy = vespa::client::proxy::Proxy::start(config).await.unwrap();
    let http = reqwest::Client::new();
    let call = |session: Option<&'static str>| {
        let mut r = http
            .post(format!("{}/v1/completions", proxy.url()))
            .json(&json!({"prompt": "hi", "max_tokens": 4}));
        if let Some(s) = session {
            r = r.header("x-vespa-session", s);
        }
        r.send()
    };

    let mut served_by = Vec::new();
    for _ in 0..4 {
        let resp = call(Some("chat-1")).await.unwrap();
        assert_eq!(resp.status(), 200);
        served_by.push(
            resp.headers()["x-vespa-worker"]
                .to_str()
                .unwrap()
                .to_string(),
        );
    }
    assert!(
        served_by.iter().all(|w| *w == served_by[0]),
        "{served_by:?}"
    );
    assert_eq!(
        routed(&autoscaler).await,
        1.0,
        "one /route/ call opened the session; its requests went straight to its worker"
    );
    let listed: Value = http
        .get(format!("{}/_vespa/proxy/sessions", proxy.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["chat-1"]["worker"], served_by[0].as_str());

    // The session ends on its worker behind the proxy's back: the next request opens a
    // new one and is served.
    let (holder, other) = if served_by[0] == url(&first, "") {
        (&first, &second)
    } else {
        (&second, &first)
    };
    assert_eq!(holder.shared().sessions.len(), 1);
    holder
        .shared()
        .sessions
        .close_all(vespa::worker::session::CloseReason::Expired)
        .await;
    assert!(holder.shared().sessions.is_empty());
    let resp = call(Some("chat-1")).await.unwrap();
    assert_eq!(resp.status(), 200, "reopened after the session was gone");

    // A third name is over --max-sessions 2.
    assert_eq!(call(Some("chat-2")).await.unwrap().status(), 200);
    assert_eq!(
        routed(&autoscaler).await,
        3.0,
        "reopened chat-1, opened chat-2"
    );
    let refused = call(Some("chat-3")).await.unwrap();
    assert_eq!(refused.status(), 429);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["code"], "too_many_sessions");

    // DELETE ends one; the worker's books settle once both are closed.
    let deleted = http
        .delete(format!("{}/_vespa/proxy/sessions/chat-1", proxy.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
    let unknown = http
        .delete(format!("{}/_vespa/proxy/sessions/chat-1", proxy.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    proxy.close_sessions().await;
    assert_settled(holder).await;
    assert_settled(other).await;
}

#[tokio::test]
async fn query_form_requests_of_a_session_pass_a_replay_window() {
    // The autoscaler's auth_data carries `__request_id`, which the query form does not:
    // a GET or an upload of the session (and its WebSocket) must still be recognised as
    // the session's own auth_data, not refused as a replay of its create request.
    let mut backend = echo_backend().await;
    let autoscaler = Autoscaler::start(local_autoscaler("ep", KEY))
        .await
        .unwrap();
    let mut config = signed_config(backend.url(), &autoscaler, 1);
    config.replay_window = 16;
    let worker = start_worker(config).await;
    let client = Client::new(test_config(&autoscaler.url(), "ep", KEY)).unwrap();
    let session = client.open_session(&SessionSpec::default()).await.unwrap();
    for _ in 0..2 {
        let get = ClientRequest::new(Method::GET, "/v1/models");
        let resp = client.session_request(&session, get).await.unwrap();
        assert_eq!(resp.status(), 200, "{:?}", body_json(resp).await);
        assert_eq!(backend.next_request().await.uri.path(), "/v1/models");
    }
    assert!(client.close_session(&session).await.unwrap());
    assert_settled(&worker).await;
}
