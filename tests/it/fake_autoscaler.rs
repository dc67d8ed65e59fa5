//! A recording stand-in for the autoscaler's worker-facing side: `/pubkey/`,
//! `/worker_status/`, `/delete_requests/`.

use crate::support::PATIENCE;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use vespa::signing::{SigningKey, legacy_message, url_message};

pub struct FakeAutoscaler {
    pub addr: SocketAddr,
    pub key: Arc<SigningKey>,
    /// The PEM `/pubkey/` serves; `None` answers 500.
    served: Arc<std::sync::Mutex<Option<String>>>,
    pub status: mpsc::UnboundedReceiver<Value>,
    pub deletes: mpsc::UnboundedReceiver<Value>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeAutoscaler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeAutoscaler {
    /// Serves a fresh key; with `serve_key: false`, `/pubkey/` answers 500.
    pub async fn start(serve_key: bool) -> FakeAutoscaler {
        let key = Arc::new(SigningKey::generate().unwrap());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (status_tx, status) = mpsc::unbounded_channel();
        let (delete_tx, deletes) = mpsc::unbounded_channel();
        let served = Arc::new(std::sync::Mutex::new(
            serve_key.then(|| key.public_key_pem().to_string()),
        ));
        let pem = Arc::clone(&served);
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (pem, status_tx, delete_tx) =
                    (Arc::clone(&pem), status_tx.clone(), delete_tx.clone());
                conns.spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let (pem, status_tx, delete_tx) = (
                            pem.lock().unwrap().clone(),
                            status_tx.clone(),
                            delete_tx.clone(),
                        );
                        async move {
                            let path = req.uri().path().to_string();
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let (code, text) = match path.as_str() {
                                "/pubkey/" => match pem {
                                    Some(pem) => (200, pem),
                                    None => (500, "no key".to_string()),
                                },
                                "/worker_status/" => {
                                    let _ = status_tx.send(serde_json::from_slice(&body).unwrap());
                                    (200, "{}".into())
                                }
                                "/delete_requests/" => {
                                    let _ = delete_tx.send(serde_json::from_slice(&body).unwrap());
                                    (200, "{}".into())
                                }
                                _ => (404, "{}".into()),
                            };
                            let mut r = Response::new(vespa::http_util::full(text));
                            *r.status_mut() = StatusCode::from_u16(code).unwrap();
                            Ok::<_, Infallible>(r)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        FakeAutoscaler {
            addr,
            key,
            served,
            status,
            deletes,
            task,
        }
    }

    /// Starts serving the public key (after a start with `serve_key: false`).
    pub fn serve_key(&self) {
        *self.served.lock().unwrap() = Some(self.key.public_key_pem().to_string());
    }

    /// Signs and serves with a new key from now on.
    pub fn rotate_key(&mut self) {
        self.key = Arc::new(SigningKey::generate().unwrap());
        self.serve_key();
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Signed `auth_data` for a worker at `worker_url` (url form).
    pub fn auth_data(&self, worker_url: &str, reqnum: u64, cost: Value) -> Value {
        self.signed(worker_url, reqnum, cost, url_message)
    }

    /// Signed `auth_data` for a worker at `worker_url` in the legacy form: the signature
    /// covers `reqnum` and `cost`, so no two requests share one.
    pub fn legacy_auth_data(&self, worker_url: &str, reqnum: u64, cost: Value) -> Value {
        self.signed(worker_url, reqnum, cost, legacy_message)
    }

    fn signed(
        &self,
        worker_url: &str,
        reqnum: u64,
        cost: Value,
        message: fn(&serde_json::Map<String, Value>) -> String,
    ) -> Value {
        let mut fields =
            json!({"cost": cost, "endpoint": "ep", "reqnum": reqnum, "request_idx": reqnum,
                                "url": worker_url, "__request_id": "r"})
            .as_object()
            .unwrap()
            .clone();
        let sig = self.key.sign(message(&fields).as_bytes()).unwrap();
        fields.insert("signature".into(), json!(sig));
        Value::Object(fields)
    }

    /// The next `worker_status` report that satisfies `pred`.
    pub async fn status_where(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        let wait = async {
            loop {
                let v = self.status.recv().await.expect("autoscaler running");
                if pred(&v) {
                    return v;
                }
            }
        };
        tokio::time::timeout(PATIENCE, wait)
            .await
            .expect("matching worker_status in time")
    }

    /// The next `delete_requests` post.
    pub async fn next_delete(&mut self) -> Value {
        tokio::time::timeout(PATIENCE, self.deletes.recv())
            .await
            .expect("delete_requests in time")
            .unwrap()
    }
}
