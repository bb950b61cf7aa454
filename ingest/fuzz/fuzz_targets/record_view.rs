//! A Kafka value as the processor reads it: anyone who can write to the topic
//! chooses these bytes. `RecordView::from_json` must never panic, and what it
//! accepts must survive a round trip: written back as JSON, the same record.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sqi_schemas::record::RecordView;

fuzz_target!(|data: &[u8]| {
    let Ok(view) = RecordView::from_json(data) else {
        return;
    };
    let record = view.to_owned_record();
    let json = record.to_json();
    match RecordView::from_json(&json) {
        Ok(again) => assert_eq!(again.to_owned_record(), record, "not a fixed point"),
        Err(error) => panic!(
            "an accepted record is rejected once re-encoded ({error}): {}",
            String::from_utf8_lossy(&json)
        ),
    }
});
