//! Bad command lines get one clear error line on stderr and a non-zero exit.

use std::process::Command;

#[cfg(test)]
fn sqi(args: &[&str]) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_sqi"))
        .args(args)
        .env_remove("SQI_LAKE_URL")
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn a_malformed_date_is_a_usage_error() {
    let (code, stderr) = sqi(&["batch", "--date", "last-tuesday", "--lake-url", "memory://"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("invalid value 'last-tuesday'"), "{stderr}");
    assert!(
        stderr.contains("give YYYY-MM-DD, `today` or `yesterday`"),
        "{stderr}"
    );
}

#[test]
fn an_unsupported_lake_url_says_why() {
    let (code, stderr) = sqi(&[
        "batch",
        "--date",
        "2024-01-01",
        "--lake-url",
        "ftp://host/x",
    ]);
    assert_eq!(code, 1, "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: invalid lake url") && last.contains("unsupported scheme"),
        "{stderr}"
    );
}

#[test]
fn a_missing_csv_is_reported_not_panicked() {
    let dir = tempfile::tempdir().unwrap();
    let lake = format!("file://{}", dir.path().display());
    let (code, stderr) = sqi(&[
        "publishers",
        "import",
        "/nonexistent/publishers.csv",
        "--lake-url",
        &lake,
    ]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("error: cannot read /nonexistent/publishers.csv"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn a_backfill_range_must_be_ordered() {
    let (code, stderr) = sqi(&[
        "batch",
        "--from",
        "2024-02-01",
        "--to",
        "2024-01-01",
        "--lake-url",
        "memory://",
    ]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("--from 2024-02-01 is after --to 2024-01-01"),
        "{stderr}"
    );
}

#[test]
fn a_shard_outside_its_count_is_a_usage_error() {
    for bad in ["4/4", "1/0", "two/4", "3"] {
        let (code, stderr) = sqi(&[
            "batch",
            "--date",
            "2024-01-01",
            "--shard",
            bad,
            "--lake-url",
            "memory://",
        ]);
        assert_eq!(code, 2, "{bad}: {stderr}");
        assert!(
            stderr.contains(&format!("`{bad}` is not a shard: write INDEX/COUNT")),
            "{bad}: {stderr}"
        );
    }
}
