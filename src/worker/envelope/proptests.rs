//! Property tests for the envelope parser: whatever bytes or query string a client sends,
//! the envelope stage answers with an envelope or a clean error, and an envelope built from
//! generated `auth_data` and payload reads back to the same fields and the same payload bytes.
//!
//! Cases per property: `PROPTEST_CASES` (proptest's own variable), default 256;
//! `scripts/fuzz.sh` runs many more.

use super::*;
use crate::signing::SignatureForm;
use proptest::prelude::*;

/// Any JSON value, with the awkward corners weighted in: u64::MAX, i64::MIN, floats of every
/// magnitude, non-ASCII and control characters.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        prop_oneof![Just(u64::MAX), Just(0)].prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(".{0,6}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Values a client might put in `cost`, `reqnum` or `request_idx`.
fn number_like() -> impl Strategy<Value = Value> {
    prop_oneof![
        json_value(),
        prop_oneof![
            Just("NaN"),
            Just("inf"),
            Just("-inf"),
            Just("1e400"),
            Just("-0"),
            Just("18446744073709551615"),
            Just("18446744073709551616"),
            Just(" 42 "),
            Just(""),
        ]
        .prop_map(|s| Value::String(s.into())),
        "[-+]?[0-9]{0,25}(\\.[0-9]{0,5})?([eE][-+]?[0-9]{1,4})?".prop_map(Value::String),
    ]
}

/// A full `auth_data`: the six keys, with any values, plus sometimes an extra key.
fn auth_data() -> impl Strategy<Value = Map<String, Value>> {
    (
        number_like(),
        number_like(),
        number_like(),
        json_value(),
        json_value(),
        json_value(),
        prop::option::of(json_value()),
    )
        .prop_map(|(cost, reqnum, idx, endpoint, signature, url, extra)| {
            let mut m = Map::new();
            m.insert("cost".into(), cost);
            m.insert("reqnum".into(), reqnum);
            m.insert("request_idx".into(), idx);
            m.insert("endpoint".into(), endpoint);
            m.insert("signature".into(), signature);
            m.insert("url".into(), url);
            if let Some(extra) = extra {
                m.insert("__request_id".into(), extra);
            }
            m
        })
}

/// Text of a JSON value, compact or pretty.
fn to_text(v: &Value, pretty: bool) -> String {
    if pretty {
        serde_json::to_string_pretty(v).unwrap()
    } else {
        serde_json::to_string(v).unwrap()
    }
}

/// Runs every later stage that reads the parsed envelope, as the worker would.
fn exercise(auth: &AuthData) {
    // A cost is either refused (422) or a finite number >= 0.
    if let Ok(Some(cost)) = auth.cost() {
        assert!(cost.is_finite() && cost >= 0.0, "cost {cost} was accepted");
    }
    let _ = (auth.reqnum(), auth.request_idx(), auth.str("url"));
    for message in SignatureForm::Any.messages() {
        let _ = message.build(&auth.fields);
    }
}

/// Parses a body the way `read` does after buffering it.
fn read_body(body: &Bytes, method: &Method) -> Result<Option<(AuthData, Payload)>, WorkerError> {
    let Some(top) = parse_top(body)? else {
        return Ok(None);
    };
    let (auth, payload) = parse_envelope(body, &top)?;
    exercise(&auth);
    let (_, payload) = place_payload(method, Some("x=1".into()), payload)?;
    Ok(Some((auth, payload)))
}

/// Bytes that look like JSON often enough to reach past the first parse.
fn json_ish_bytes() -> impl Strategy<Value = Vec<u8>> {
    let token = prop_oneof![
        Just(&b"{"[..]),
        Just(&b"}"[..]),
        Just(&b"["[..]),
        Just(&b"]"[..]),
        Just(&b":"[..]),
        Just(&b","[..]),
        Just(&b"\"auth_data\""[..]),
        Just(&b"\"payload\""[..]),
        Just(&b"\"cost\""[..]),
        Just(&b"\"url\""[..]),
        Just(&b"null"[..]),
        Just(&b"1e999"[..]),
        Just(&b"-0.0"[..]),
        Just(&b"18446744073709551616"[..]),
        Just(&b"\"\\ud800\""[..]),
        Just(&b"\xff\xfe"[..]),
        Just(&b" "[..]),
    ];
    prop::collection::vec(token, 0..40).prop_map(|t| t.concat())
}

/// `n` levels of `[` or `{"k":` around `1`, closed again.
fn nested(n: usize, objects: bool) -> String {
    let (open, close) = if objects {
        ("{\"k\":", "}")
    } else {
        ("[", "]")
    };
    format!("{}1{}", open.repeat(n), close.repeat(n))
}

proptest! {
    #[test]
    fn arbitrary_bytes_give_an_envelope_or_a_clean_error(
        body in prop_oneof![prop::collection::vec(any::<u8>(), 0..256), json_ish_bytes()],
        get in any::<bool>(),
    ) {
        let method = if get { Method::GET } else { Method::POST };
        let _ = read_body(&Bytes::from(body), &method);
    }

    #[test]
    fn deep_nesting_is_rejected_or_read_without_overflowing_the_stack(
        depth in 0usize..5000,
        objects in any::<bool>(),
        place in 0usize..3,
    ) {
        let deep = nested(depth, objects);
        let body = match place {
            0 => deep,
            1 => format!(r#"{{"auth_data":{{"cost":1,"endpoint":"e","reqnum":1,"request_idx":1,"signature":"s","url":{deep}}},"payload":{{}}}}"#),
            _ => format!(r#"{{"auth_data":{{"cost":1,"endpoint":"e","reqnum":1,"request_idx":1,"signature":"s","url":"u"}},"payload":{deep}}}"#),
        };
        let _ = read_body(&Bytes::from(body), &Method::GET);
    }

    #[test]
    fn generated_envelopes_read_back_with_byte_identical_payload(
        auth in auth_data(),
        payload in json_value(),
        session in prop::option::of(json_value()),
        pretty in any::<bool>(),
        payload_first in any::<bool>(),
    ) {
        let auth_text = to_text(&Value::Object(auth.clone()), pretty);
        let payload_text = to_text(&payload, pretty);
        let mut members = vec![
            format!("\"auth_data\": {auth_text}"),
            format!("\"payload\":{payload_text}"),
        ];
        if payload_first {
            members.reverse();
        }
        if let Some(s) = &session {
            members.push(format!("\"session_id\" : {}", to_text(s, pretty)));
        }
        let body = Bytes::from(format!(" {{ {} }}\n", members.join(" , ")));
        let top = parse_top(&body).unwrap().expect("an object");
        let (read, read_payload) = parse_envelope(&body, &top).unwrap();
        prop_assert_eq!(&read.fields, &auth);
        match read_payload {
            None => prop_assert_eq!(payload, Value::Null),
            Some(p) => {
                prop_assert_eq!(&p[..], payload_text.as_bytes());
                // Zero-copy: the payload is a view into the body it came from.
                let inside = body.as_ptr_range().contains(&p.as_ptr()) || p.is_empty();
                prop_assert!(inside);
            }
        }
        exercise(&read);
    }

    #[test]
    fn envelopes_missing_keys_are_422_naming_each_missing_key(
        auth in auth_data(),
        drop in prop::collection::btree_set(prop::sample::select(AUTH_KEYS.to_vec()), 1..=6),
    ) {
        let mut auth = auth;
        for k in &drop {
            auth.remove(*k);
        }
        let body = Bytes::from(serde_json::to_vec(&json!({"auth_data": auth, "payload": {}})).unwrap());
        let err = parse_envelope(&body, &parse_top(&body).unwrap().unwrap()).unwrap_err();
        let WorkerError::InvalidRequest { fields: Some(fields), message } = err else {
            panic!("expected a 422 with fields, got {err:?}");
        };
        for k in drop {
            prop_assert_eq!(&fields["auth_data"][k], "missing parameter");
            prop_assert!(message.contains(&format!("auth_data.{k}")), "{}", message);
        }
    }

    #[test]
    fn arbitrary_query_strings_give_auth_or_a_clean_error(
        query in prop_oneof![
            ".{0,64}",
            prop::collection::vec(
                ("(serverless_)?(cost|endpoint|reqnum|request_idx|signature|url|api_key|x)",
                 "[%a-zA-Z0-9.+=-]{0,12}"),
                0..10,
            ).prop_map(|pairs| pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&")),
        ],
    ) {
        if let Ok((Some(auth), _)) = split_query(Some(&query)) {
            exercise(&auth);
        }
    }

    #[test]
    fn query_auth_reads_back_and_forwards_the_rest_unchanged(
        values in prop::collection::vec(".{0,16}", 6),
        numbers in (any::<i64>(), any::<i64>(), prop_oneof![
            any::<i64>().prop_map(|i| i.to_string()),
            any::<f64>().prop_map(|f| format!("{f:?}")),
        ]),
        rest in prop::collection::vec(("[a-z]{1,6}", ".{0,8}"), 0..4),
        api_key in prop::option::of(".{0,8}"),
    ) {
        let (reqnum, idx, cost) = numbers;
        let mut ser = form_urlencoded::Serializer::new(String::new());
        let mut sent = BTreeMap::new();
        for (k, v) in AUTH_KEYS.iter().zip(&values) {
            let v = match *k {
                "cost" => cost.clone(),
                "reqnum" => reqnum.to_string(),
                "request_idx" => idx.to_string(),
                _ => v.clone(),
            };
            ser.append_pair(&format!("serverless_{k}"), &v);
            sent.insert(*k, v);
        }
        if let Some(key) = &api_key {
            ser.append_pair("api_key", key);
        }
        let auth_part = ser.finish();
        let forwarded: Vec<String> = rest
            .iter()
            .map(|(k, v)| form_urlencoded::Serializer::new(String::new()).append_pair(k, v).finish())
            .collect();
        let query = [auth_part.clone()].into_iter().chain(forwarded.clone()).collect::<Vec<_>>().join("&");
        let (auth, fwd) = split_query(Some(&query)).unwrap();
        let auth = auth.expect("query auth");
        prop_assert_eq!(fwd, (!forwarded.is_empty()).then(|| forwarded.join("&")));
        for k in ["endpoint", "signature", "url"] {
            prop_assert_eq!(auth.str(k), Some(sent[k].as_str()));
        }
        prop_assert_eq!(&auth.fields["reqnum"], &json!(reqnum));
        prop_assert_eq!(&auth.fields["request_idx"], &json!(idx));
        let want = if cost.contains('.') {
            cost.parse::<f64>().ok().and_then(serde_json::Number::from_f64).map(Value::Number)
        } else {
            cost.parse::<i64>().ok().map(Value::from)
        };
        prop_assert_eq!(&auth.fields["cost"], &want.unwrap_or(Value::String(cost.clone())));
        exercise(&auth);
    }
}
