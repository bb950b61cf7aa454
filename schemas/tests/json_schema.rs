//! `docs/event.schema.json` must be exactly what the validator's rules generate.
//! Regenerate it with `SQI_BLESS=1 cargo test -p sqi-schemas --test json_schema`.

use std::path::PathBuf;

#[test]
fn published_json_schema_matches_the_rules() {
    let path: PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "..",
        "docs",
        "event.schema.json",
    ]
    .iter()
    .collect();
    let generated =
        serde_json::to_string_pretty(&sqi_schemas::event::json_schema()).unwrap() + "\n";
    if std::env::var_os("SQI_BLESS").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let published = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        published == generated,
        "docs/event.schema.json is stale; run SQI_BLESS=1 cargo test -p sqi-schemas --test json_schema"
    );
}
