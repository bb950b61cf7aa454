//! Acceptance check 5 of issue 20: for fixed credentials, region and time, our
//! MSK IAM token is byte-identical to the one AWS's reference signer
//! (`aws-msk-iam-sasl-signer-python`, pinned in `tests/py/requirements.txt`)
//! makes. The script pins botocore's clock and gives the reference our
//! `User-Agent` (its own embeds its version; the parameter is unsigned), so
//! every byte of the token, the signature included, must agree.

use std::io::Write;
use std::process::{Command, Stdio};

use chrono::{DateTime, Utc};
use object_store::aws::AwsCredential;
use sqi_kafka::msk_iam::{USER_AGENT, sign};

struct Case {
    access_key: &'static str,
    secret_key: &'static str,
    session_token: Option<&'static str>,
    region: &'static str,
    unix_seconds: i64,
}

/// Session tokens and secrets hold `+`, `/` and `=` as real ones do; one case
/// has no session token; dates cross a leap day and a year end.
const CASES: &[Case] = &[
    Case {
        access_key: "ASIAEXAMPLEKEYID0001",
        secret_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        session_token: Some(
            "IQoJb3JpZ2luX2VjEJr//////////wEaCXVzLWVhc3QtMSJHMEUCIQD+6bW3Zp0h/KZ2bq0/aF9Q==",
        ),
        region: "us-east-1",
        unix_seconds: 1_796_602_853,
    },
    Case {
        access_key: "AKIAIOSFODNN7EXAMPLE",
        secret_key: "je7MtGbClwBF/2Zp9Utk/h3yCo8nvbEXAMPLEKEY",
        session_token: None,
        region: "eu-west-1",
        unix_seconds: 1_709_251_199,
    },
    Case {
        access_key: "ASIA2EXAMPLE7KEYID99",
        secret_key: "0123456789+/abcdefghijklmnopqrstuvwxyzAB",
        session_token: Some(
            "FwoGZXIvYXdzEBYaDK+H/q7b3q9Xy2Zl1SLAAQ7v4WvP0uQzE9mV2l1Xq8mT4s6bN5o1Z3c7e9g/Hh0jK2lM4nO6pQ8rS+tU0vW2xY4z==",
        ),
        region: "ap-southeast-2",
        unix_seconds: 1_893_455_999,
    },
];

#[test]
fn tokens_are_byte_identical_to_the_python_reference_signer() {
    let input = serde_json::Value::Array(
        CASES
            .iter()
            .map(|case| {
                serde_json::json!({
                    "access_key": case.access_key,
                    "secret_key": case.secret_key,
                    "session_token": case.session_token,
                    "region": case.region,
                    "unix_seconds": case.unix_seconds,
                    "user_agent": USER_AGENT,
                })
            })
            .collect(),
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/msk_iam_reference.py");
    let mut child = Command::new("python3")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.to_string().as_bytes())
        .expect("cases written");
    let output = child.wait_with_output().expect("reference signer finishes");
    assert!(
        output.status.success(),
        "the reference signer failed (scripts/test installs it from tests/py/requirements.txt): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let reference: Vec<serde_json::Value> =
        serde_json::from_slice(&output.stdout).expect("reference output is JSON");
    assert_eq!(reference.len(), CASES.len());

    for (case, reference) in CASES.iter().zip(&reference) {
        let credentials = AwsCredential {
            key_id: case.access_key.to_owned(),
            secret_key: case.secret_key.to_owned(),
            token: case.session_token.map(str::to_owned),
        };
        let now = DateTime::<Utc>::from_timestamp(case.unix_seconds, 0).expect("valid time");
        let ours = sign(&credentials, case.region, now);
        let theirs = reference["token"].as_str().expect("token");
        assert_eq!(
            ours.token,
            theirs,
            "region {}: the tokens differ\n ours:   {}\n theirs: {}",
            case.region,
            decode(&ours.token),
            decode(theirs)
        );
        assert_eq!(
            Some(ours.expires_at_ms),
            reference["expires_at_ms"].as_i64()
        );
        let url = decode(&ours.token);
        assert!(url.ends_with(&format!("&User-Agent={}", USER_AGENT.replace('/', "%2F"))));
        assert_eq!(
            url.contains("X-Amz-Security-Token="),
            case.session_token.is_some()
        );
    }
    let reference_user_agent = reference[0]["reference_user_agent"]
        .as_str()
        .unwrap_or_default();
    assert!(
        reference_user_agent.starts_with("aws-msk-iam-sasl-signer-python/"),
        "the reference's own user agent changed shape: {reference_user_agent}"
    );
}

fn decode(token: &str) -> String {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}
