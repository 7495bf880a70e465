//! A fake kube-apiserver (test code only: no kube-apiserver can run here),
//! strict to the documented Secrets endpoints.

use super::http::{Recorded, Reply};
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// A fake kube-apiserver for Secrets (test code only), following the
/// documented endpoints: POST /api/v1/namespaces/{ns}/secrets (201, 409 if
/// it exists), GET/PUT/DELETE .../secrets/{name} (404 if missing), bearer
/// token required (401 otherwise).
pub fn fake_apiserver(
    token: &'static str,
) -> (
    Arc<Mutex<HashMap<String, serde_json::Value>>>,
    super::http::Handler,
) {
    let store: Arc<Mutex<HashMap<String, serde_json::Value>>> = Arc::default();
    let s = store.clone();
    let handler = Arc::new(move |r: &Recorded| {
        if r.header("authorization") != Some(&format!("Bearer {token}")) {
            return Reply::json(
                401,
                json!({"kind": "Status", "status": "Failure", "reason": "Unauthorized", "code": 401}),
            );
        }
        let parts: Vec<&str> = r.path.trim_start_matches('/').split('/').collect();
        // api v1 namespaces {ns} secrets [name]
        if parts.len() < 5 || parts[..3] != ["api", "v1", "namespaces"] || parts[4] != "secrets" {
            return Reply::json(404, json!({"kind": "Status", "code": 404}));
        }
        let ns = parts[3];
        let mut store = s.lock().unwrap();
        match (r.method.as_str(), parts.get(5)) {
            ("POST", None) => {
                let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
                let name = body["metadata"]["name"].as_str().unwrap().to_string();
                let k = format!("{ns}/{name}");
                if store.contains_key(&k) {
                    return Reply::json(
                        409,
                        json!({"kind": "Status", "reason": "AlreadyExists", "code": 409}),
                    );
                }
                store.insert(k, body.clone());
                Reply::json(201, body)
            }
            ("GET", Some(name)) => match store.get(&format!("{ns}/{name}")) {
                Some(v) => Reply::json(200, v.clone()),
                None => Reply::json(
                    404,
                    json!({"kind": "Status", "reason": "NotFound", "code": 404}),
                ),
            },
            ("PUT", Some(name)) => {
                let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
                store.insert(format!("{ns}/{name}"), body.clone());
                Reply::json(200, body)
            }
            ("DELETE", Some(name)) => match store.remove(&format!("{ns}/{name}")) {
                Some(_) => Reply::json(200, json!({"kind": "Status", "status": "Success"})),
                None => Reply::json(
                    404,
                    json!({"kind": "Status", "reason": "NotFound", "code": 404}),
                ),
            },
            _ => Reply::json(405, json!({"kind": "Status", "code": 405})),
        }
    });
    (store, handler)
}
