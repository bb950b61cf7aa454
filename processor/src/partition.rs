//! One partition's decisions, with no I/O: what becomes of each record
//! (counted, a repeat, or a dead letter with its reason), the partition's
//! watermarks and remembered ids, when its open range closes, and where a
//! recovered partition resumes.
//!
//! Everything here is a function of the partition's records in offset order
//! and, for a recovery, of its range log's entries: never of the wall clock,
//! the broker or the lake. That is what lets whoever re-reads a range (after
//! a crash, a rebalance, or as a zombie) decide exactly as the first reader
//! did; the replay property test at the end of this file checks it.
//!
//! Owns: [`PartitionCore`] (the state), [`Decision`] and [`Reason`], the
//! rolling rule for sizes and redone ranges, [`resume_point`].
//! Must not touch: Kafka, the object store, metrics, logs or clocks. The
//! consumer loop (`consumer`) feeds records in and carries out what comes
//! back: dead letters, range jobs for the writers, metrics. Closing a range
//! by age or idleness is the loop's (it needs a clock); decisions do not
//! depend on where ranges end.

use std::collections::VecDeque;

use sqi_schemas::record::RecordView;

use crate::config::ProcessorConfig;
use crate::dedup::Dedup;
use crate::range_log::{LogState, RangeIntent};
use crate::window::PartitionBuffer;

/// 2000-01-01T00:00:00Z: no event or receive time is older (the contract's
/// bound, which ingest clamps to).
const EARLIEST_MS: i64 = sqi_schemas::record::EARLIEST_EVENT_TIME_MS;

/// The bounds a partition decides by, from [`ProcessorConfig`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// How far behind the partition watermark an event is still counted.
    pub lateness_ms: i64,
    /// How far an event time may be ahead of its receive time, and a receive
    /// time ahead of the record's Kafka timestamp.
    pub future_bound_ms: i64,
    /// How long (in receive time) an id is remembered.
    pub dedup_horizon_ms: i64,
    /// The Parquet bytes at which an open range closes.
    pub target_file_bytes: u64,
}

impl Bounds {
    /// The bounds `config` sets.
    pub fn of(config: &ProcessorConfig) -> Self {
        Self {
            lateness_ms: config.lateness_ms(),
            future_bound_ms: config.future_bound_ms(),
            dedup_horizon_ms: config.dedup_horizon_ms(),
            target_file_bytes: config.target_file_bytes,
        }
    }
}

/// Why a record goes to the dead-letter topic. Its text is the reason the
/// dead letter carries (see the contract's DLQ headers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// A tombstone: no value at all.
    NoValue,
    /// The value is not a contract record (the parser's message).
    Unreadable(String),
    /// Times no honest writer produces (see [`check_times`]).
    BadTime(String),
    /// Behind the partition watermark by more than the allowed lateness.
    Late {
        /// The event time.
        ts: i64,
        /// The partition watermark it was measured against.
        watermark: i64,
        /// The allowed lateness.
        lateness_ms: i64,
    },
    /// Arrow refused the event (see [`PartitionBuffer::add`]).
    Unbuffered(String),
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NoValue => f.write_str("record has no value"),
            Self::Unreadable(message) | Self::BadTime(message) => f.write_str(message),
            Self::Late {
                ts,
                watermark,
                lateness_ms,
            } => write!(
                f,
                "late: event time {ts} is more than {lateness_ms} ms behind the partition watermark {watermark}"
            ),
            Self::Unbuffered(error) => write!(f, "the event could not be buffered: {error}"),
        }
    }
}

/// What becomes of one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// A new event, counted in the open range.
    Counted,
    /// An `event_id` counted before within the dedup horizon: not counted again.
    Repeat,
    /// Sent to the dead-letter topic, not counted.
    DeadLetter(Reason),
}

/// A closed range: what the writer needs besides where it goes.
#[derive(Debug)]
pub struct ClosedRange {
    /// The range's events and counts.
    pub buffer: PartitionBuffer,
    /// The partition watermark before its first record.
    pub watermark_before: i64,
    /// The partition watermark after its last record.
    pub watermark_after: i64,
    /// The receive watermark before its first record.
    pub received_before: i64,
    /// The receive watermark after its last record.
    pub received_after: i64,
    /// The log entry this range redoes, if it was claimed before a restart.
    pub redo: Option<RangeIntent>,
    /// The oldest range whose ids dedup may still need, when that moved
    /// (the log can stop listing what is older).
    pub list_from: Option<i64>,
}

/// What taking one record did.
#[derive(Debug)]
pub struct Step {
    /// A redone range closed before this record: its end was passed.
    pub closed_before: Option<ClosedRange>,
    /// The redone range's end was passed with nothing of it read: its files
    /// cannot be rewritten. Holds the end it had.
    pub redo_lost: Option<i64>,
    /// The record's fate.
    pub decision: Decision,
    /// The open range closed after this record (its size, or a redone
    /// range's end).
    pub closed_after: Option<ClosedRange>,
}

/// Where a partition resumes, from its range log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumePoint {
    /// Whether the partition's chain has started (its genesis or a range is logged).
    pub genesis_known: bool,
    /// The next offset to read; `None` takes whatever comes first.
    pub position: Option<i64>,
    /// The partition watermark there.
    pub watermark: i64,
    /// The receive watermark there.
    pub received: i64,
    /// A claimed range whose files may be missing: it is read again and
    /// must end where its entry says.
    pub redo: Option<RangeIntent>,
    /// The ranges whose counted ids dedup reloads (received within the
    /// horizon), newest first.
    pub reload: Vec<RangeIntent>,
    /// Reload only ids received at or after this time.
    pub floor: i64,
    /// `(start, receive watermark after)` of the chain's ranges, oldest first.
    pub history: VecDeque<(i64, i64)>,
}

/// Where a partition with log `state` resumes. `newest_written` says whether
/// the newest range's files are all in the lake (then reading goes on after
/// it; otherwise it is read again as a redo).
pub fn resume_point(state: &LogState, newest_written: bool, horizon_ms: i64) -> ResumePoint {
    let (position, watermark, received, redo, chain) = match state.newest() {
        Some(newest) if newest_written => {
            let position = newest.end + 1;
            let watermark = state
                .idle_watermark_at(position)
                .map_or(newest.watermark_after, |w| w.max(newest.watermark_after));
            let mut chain = vec![newest];
            chain.extend(state.chain_before(newest.start));
            (
                Some(position),
                watermark,
                newest.receive_watermark_after(),
                None,
                chain,
            )
        }
        Some(newest) => (
            Some(newest.start),
            newest.watermark_before,
            newest.receive_watermark_before(),
            Some(newest.clone()),
            state.chain_before(newest.start),
        ),
        None => (
            state.genesis,
            state
                .genesis
                .and_then(|g| state.idle_watermark_at(g))
                .unwrap_or(i64::MIN),
            i64::MIN,
            None,
            Vec::new(),
        ),
    };
    let floor = received.saturating_sub(horizon_ms);
    ResumePoint {
        genesis_known: state.genesis.is_some() || !state.ranges.is_empty(),
        position,
        watermark,
        received,
        redo,
        reload: chain
            .iter()
            .take_while(|r| r.receive_watermark_after() >= floor)
            .map(|r| (*r).clone())
            .collect(),
        floor,
        history: chain
            .iter()
            .rev()
            .map(|r| (r.start, r.receive_watermark_after()))
            .collect(),
    }
}

/// Refuses a record whose times no honest writer produces: before 2000, an
/// event time more than `future_bound` ms after its receive time, or a receive
/// time that far after the broker's timestamp of the record (when the broker
/// gives one). A record that passes cannot move the watermark further than
/// the bound past the moment it was received. Only the record's own bytes
/// and timestamp decide, so a re-read decides the same (no wall clock here).
pub fn check_times(
    ts: i64,
    received_at: i64,
    broker_ms: Option<i64>,
    future_bound: i64,
) -> Result<(), String> {
    if ts < EARLIEST_MS {
        return Err(format!("time: event time {ts} is before 2000"));
    }
    if received_at < EARLIEST_MS {
        return Err(format!("time: receive time {received_at} is before 2000"));
    }
    if ts > received_at.saturating_add(future_bound) {
        return Err(format!(
            "time: event time {ts} is more than {future_bound} ms after its receive time {received_at}"
        ));
    }
    if let Some(broker) = broker_ms.filter(|b| *b >= EARLIEST_MS)
        && received_at > broker.saturating_add(future_bound)
    {
        return Err(format!(
            "time: receive time {received_at} is more than {future_bound} ms after the record's Kafka timestamp {broker}"
        ));
    }
    Ok(())
}

/// One partition's state between records: its watermarks, the ids it
/// remembers, the open range, the recent ranges dedup may need, and the
/// range being redone.
#[derive(Debug)]
pub struct PartitionCore {
    /// The partition watermark: the latest event time counted or dated
    /// (`i64::MIN` before any), or advanced while idle.
    pub watermark: i64,
    /// The latest `received_at` read (dedup's horizon is measured from it).
    pub received: i64,
    dedup: Dedup,
    /// The open range.
    pub buffer: Option<PartitionBuffer>,
    watermark_at_open: i64,
    received_at_open: i64,
    /// The claimed range being read again, until it closes.
    pub redo: Option<RangeIntent>,
    /// `(start, receive watermark after)` of recent ranges, oldest first.
    history: VecDeque<(i64, i64)>,
    list_from: i64,
}

impl PartitionCore {
    /// A partition with nothing read (before its recovery finishes).
    pub fn new(horizon_ms: i64) -> Self {
        Self {
            watermark: i64::MIN,
            received: i64::MIN,
            dedup: Dedup::new(horizon_ms),
            buffer: None,
            watermark_at_open: i64::MIN,
            received_at_open: i64::MIN,
            redo: None,
            history: VecDeque::new(),
            list_from: 0,
        }
    }

    /// The partition as its log left it, with `dedup` holding the ids of
    /// `point.reload` received since `point.floor`.
    pub fn resume(point: ResumePoint, dedup: Dedup) -> Self {
        let list_from = point.history.front().map_or(0, |h| h.0);
        Self {
            watermark: point.watermark,
            received: point.received,
            dedup,
            buffer: None,
            watermark_at_open: i64::MIN,
            received_at_open: i64::MIN,
            redo: point.redo,
            history: point.history,
            list_from,
        }
    }

    /// Takes the record at `offset` (the next in offset order): value
    /// `payload`, Kafka timestamp `broker_ms`.
    pub fn take(
        &mut self,
        offset: i64,
        payload: Option<&[u8]>,
        broker_ms: Option<i64>,
        bounds: &Bounds,
    ) -> Step {
        let mut step = Step {
            closed_before: None,
            redo_lost: None,
            decision: Decision::Counted,
            closed_after: None,
        };
        if let Some(redo_end) = self.redo.as_ref().map(|r| r.end)
            && offset > redo_end
        {
            match &mut self.buffer {
                // The rest of the redone range is gone; it closes where the log says.
                Some(buffer) => {
                    buffer.end_offset = redo_end;
                    step.closed_before = self.close(bounds.dedup_horizon_ms);
                }
                None => {
                    self.redo = None;
                    step.redo_lost = Some(redo_end);
                }
            }
        }
        step.decision = self.decide(offset, payload, broker_ms, bounds);
        if self.range_full(offset, bounds.target_file_bytes) {
            step.closed_after = self.close(bounds.dedup_horizon_ms);
        }
        step
    }

    /// The record's fate, with the state it changes.
    fn decide(
        &mut self,
        offset: i64,
        payload: Option<&[u8]>,
        broker_ms: Option<i64>,
        bounds: &Bounds,
    ) -> Decision {
        let bytes = payload.map_or(0, <[u8]>::len);
        if self.buffer.is_none() {
            self.watermark_at_open = self.watermark;
            self.received_at_open = self.received;
        }
        let record = match payload.map(RecordView::from_json) {
            None => Err(Reason::NoValue),
            Some(Err(error)) => Err(Reason::Unreadable(error.to_string())),
            Some(Ok(record)) => check_times(
                record.ts,
                record.received_at,
                broker_ms,
                bounds.future_bound_ms,
            )
            .map_err(Reason::BadTime)
            .and_then(|()| {
                if self.watermark != i64::MIN
                    && record.ts < self.watermark.saturating_sub(bounds.lateness_ms)
                {
                    Err(Reason::Late {
                        ts: record.ts,
                        watermark: self.watermark,
                        lateness_ms: bounds.lateness_ms,
                    })
                } else {
                    Ok(record)
                }
            }),
        };
        let buffer = self
            .buffer
            .get_or_insert_with(|| PartitionBuffer::new(offset));
        let decision = match record {
            Ok(record) => {
                self.watermark = self.watermark.max(record.ts);
                self.received = self.received.max(record.received_at);
                if !self
                    .dedup
                    .first_sighting(&record.event_id, record.received_at, self.received)
                {
                    Decision::Repeat
                } else {
                    match buffer.add(offset, bytes, &record) {
                        Ok(()) => return Decision::Counted,
                        Err(error) => Decision::DeadLetter(Reason::Unbuffered(error.to_string())),
                    }
                }
            }
            Err(reason) => Decision::DeadLetter(reason),
        };
        buffer.skip(offset, bytes);
        decision
    }

    /// Whether the open range closes after the record at `offset`: a redone
    /// range where its log entry ends, any other when its Parquet would reach
    /// `target_file_bytes` (Parquet keeps roughly a quarter of the JSON
    /// record bytes).
    fn range_full(&self, offset: i64, target_file_bytes: u64) -> bool {
        match (&self.redo, &self.buffer) {
            (Some(redo), _) => offset >= redo.end,
            (None, Some(buffer)) => buffer.record_bytes / 4 >= target_file_bytes,
            (None, None) => false,
        }
    }

    /// Moves the watermark to `to` while the partition is idle and caught up,
    /// so its hours close with nothing to read.
    pub fn advance_idle(&mut self, to: i64) {
        self.watermark = self.watermark.max(to);
    }

    /// Closes the open range, if there is one.
    pub fn close(&mut self, horizon_ms: i64) -> Option<ClosedRange> {
        let buffer = self.buffer.take()?;
        let redo = self.redo.take();
        self.history.push_back((buffer.start_offset, self.received));
        let floor = self.received_at_open.saturating_sub(horizon_ms);
        while self.history.len() > 1 && self.history.front().is_some_and(|h| h.1 < floor) {
            let _ = self.history.pop_front();
        }
        let list_from = self.history.front().map_or(buffer.start_offset, |h| h.0);
        let moved = (list_from > self.list_from).then_some(list_from);
        self.list_from = self.list_from.max(list_from);
        self.dedup.prune(self.received);
        Some(ClosedRange {
            buffer,
            watermark_before: self.watermark_at_open,
            watermark_after: self.watermark,
            received_before: self.received_at_open,
            received_after: self.received,
            redo,
            list_from: moved,
        })
    }
}

// Test code only: an unwrap or expect here fails the test with its cause,
// which is the point (clippy.toml allows them in tests).
#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use proptest::prelude::*;

    use super::*;

    const MINUTE: i64 = 60_000;
    const START: i64 = 1_800_000_000_000;

    fn bounds() -> Bounds {
        Bounds {
            lateness_ms: 20 * MINUTE,
            future_bound_ms: 5 * MINUTE,
            dedup_horizon_ms: 10 * MINUTE,
            // Two or three records a range (each about 300 bytes of JSON).
            target_file_bytes: 180,
        }
    }

    /// Item 1: absurd times are refused, with a reason, whoever wrote the record.
    #[test]
    fn absurd_times_are_refused() {
        let now = START;
        let bound = 300_000;
        assert_eq!(check_times(now, now, Some(now), bound), Ok(()));
        assert_eq!(check_times(now - 86_400_000, now, None, bound), Ok(()));
        assert_eq!(check_times(now + bound, now, Some(now), bound), Ok(()));
        for (ts, received, broker) in [
            (now + 22 * 3_600_000, now, Some(now)),
            (now + bound + 1, now, None),
            (1_000, now, Some(now)),
            (now, 1_000, Some(now)),
            (now + 22 * 3_600_000, now + 22 * 3_600_000, Some(now)),
        ] {
            let refused = check_times(ts, received, broker, bound);
            assert!(
                refused.as_ref().is_err_and(|r| r.starts_with("time: ")),
                "{ts} {received} {broker:?}: {refused:?}"
            );
        }
        // A broker that gives no timestamp, or a meaningless one, is not used.
        assert_eq!(check_times(now, now, Some(-1), bound), Ok(()));
    }

    /// One generated record: `None` is a tombstone; `Some(None)` bytes that
    /// are not a record.
    #[derive(Debug, Clone)]
    struct Input {
        id: u8,
        /// Minutes after `START` the record was received (a partition's
        /// receive times only roughly rise: several ingest pods write it).
        received: i64,
        /// Minutes the event time is behind (negative: ahead of) its receive time.
        behind: i64,
        kind: u8,
    }

    fn payload(input: &Input) -> Option<Vec<u8>> {
        let received_at = START + input.received * MINUTE;
        let ts = received_at - input.behind * MINUTE;
        match input.kind {
            0 => None,
            1 => Some(b"{\"v\":1,\"event_id\":".to_vec()),
            _ => {
                let mut record = crate::window::tests::record(&format!("{:x}", input.id), ts);
                record.received_at = received_at;
                Some(serde_json::to_vec(&record).expect("a record serializes"))
            }
        }
    }

    fn inputs() -> impl Strategy<Value = Vec<Input>> {
        prop::collection::vec(
            (0u8..40, 0i64..3, -7i64..45, 0u8..30)
                .prop_map(|(id, step, behind, kind)| (id, step, behind, kind)),
            1..120,
        )
        .prop_map(|raw| {
            let mut received = 0;
            raw.into_iter()
                .map(|(id, step, behind, kind)| {
                    received += step;
                    Input {
                        id,
                        // Now and then a record received a little earlier
                        // than the one before it.
                        received: if kind == 3 { received - 2 } else { received },
                        behind,
                        kind,
                    }
                })
                .collect()
        })
    }

    /// A range as the writer would log it, with the ids its `events` file holds.
    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Written {
        intent: RangeIntent,
        list_from: Option<i64>,
        ids: Vec<(String, i64)>,
    }

    fn written(closed: ClosedRange) -> Written {
        let mut buffer = closed.buffer;
        let mut ids = Vec::new();
        for columns in buffer.events.values_mut() {
            let batch = columns.finish().expect("events convert to arrow");
            let id = batch.column_by_name("event_id").expect("an id column");
            let id = arrow::array::AsArray::as_string::<i32>(id.as_ref());
            let received = batch.column_by_name("received_at").expect("a receive time");
            let received = arrow::array::AsArray::as_primitive::<
                arrow::datatypes::TimestampMillisecondType,
            >(received.as_ref());
            ids.extend((0..batch.num_rows()).map(|r| (id.value(r).to_owned(), received.value(r))));
        }
        ids.sort();
        Written {
            intent: RangeIntent {
                start: buffer.start_offset,
                end: buffer.end_offset,
                watermark_before: closed.watermark_before,
                watermark_after: closed.watermark_after,
                received_before: Some(closed.received_before),
                received_after: Some(closed.received_after),
                events: buffer.len() as u64,
                files: vec![format!("events/range-{}.parquet", buffer.start_offset)],
            },
            list_from: closed.list_from,
            ids,
        }
    }

    /// Reads `inputs` from `from` on: each offset's decision, and the ranges
    /// closed. Offsets in `age_closes` close the open range after their
    /// record, as the loop's age and idleness rules do at moments no record
    /// decides.
    fn read(
        core: &mut PartitionCore,
        inputs: &[Input],
        from: usize,
        age_closes: &BTreeSet<usize>,
    ) -> (BTreeMap<usize, Decision>, Vec<Written>) {
        let bounds = bounds();
        let mut decisions = BTreeMap::new();
        let mut ranges = Vec::new();
        for (offset, input) in inputs.iter().enumerate().skip(from) {
            let payload = payload(input);
            let step = core.take(offset as i64, payload.as_deref(), None, &bounds);
            ranges.extend(step.closed_before.map(written));
            let _ = decisions.insert(offset, step.decision);
            ranges.extend(step.closed_after.map(written));
            if age_closes.contains(&offset) && core.redo.is_none() {
                ranges.extend(core.close(bounds.dedup_horizon_ms).map(written));
            }
        }
        ranges.extend(core.close(bounds.dedup_horizon_ms).map(written));
        (decisions, ranges)
    }

    /// A restart from the log after ranges `..=newest` were claimed, the
    /// newest one's files written or not: the state [`resume_point`] gives,
    /// with dedup reloaded from the ids the `events` files of the ranges it
    /// names hold, as `PartitionLog::reload_ids` does.
    fn restart(ranges: &[Written], newest: usize, newest_written: bool) -> PartitionCore {
        // The writer moves the log's checkpoint after a range's files are
        // written; a read lists the ranges from it on.
        let written = if newest_written { newest + 1 } else { newest };
        let checkpoint = ranges[..written]
            .iter()
            .filter_map(|w| w.list_from)
            .max()
            .unwrap_or(0);
        let state = LogState {
            genesis: Some(0),
            ranges: ranges[..=newest]
                .iter()
                .filter(|w| w.intent.start >= checkpoint)
                .map(|w| (w.intent.start, w.intent.clone()))
                .collect(),
            idle: Vec::new(),
        };
        let horizon = bounds().dedup_horizon_ms;
        let point = resume_point(&state, newest_written, horizon);
        let mut dedup = Dedup::new(horizon);
        for intent in &point.reload {
            let range = ranges
                .iter()
                .find(|w| w.intent == *intent)
                .expect("a logged range");
            for (id, received) in range.ids.iter().filter(|(_, r)| *r >= point.floor) {
                dedup.remember(id, *received);
            }
        }
        PartitionCore::resume(point, dedup)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Issue 21, check 4: replaying a partition from any restart point
        /// gives the same decisions and the same ranges. A restart resumes
        /// from the log: after the newest range if its files were written,
        /// or reading it again (a redo) if they may not have been. Ranges the
        /// loop closed by age come back at the same offsets through the
        /// log's entries (a redo) or not at all, so decisions must not depend
        /// on them: the replay closes by age at other offsets.
        #[test]
        fn a_replay_from_any_restart_point_decides_the_same(
            inputs in inputs(),
            age_closes in prop::collection::btree_set(0usize..120, 0..12),
            replay_age_closes in prop::collection::btree_set(0usize..120, 0..12),
            restart_at in any::<prop::sample::Index>(),
            newest_written in any::<bool>(),
        ) {
            let mut first = PartitionCore::new(bounds().dedup_horizon_ms);
            let (decisions, ranges) = read(&mut first, &inputs, 0, &age_closes);
            prop_assert_eq!(decisions.len(), inputs.len());
            let newest = restart_at.index(ranges.len());
            let from = if newest_written {
                ranges[newest].intent.end as usize + 1
            } else {
                ranges[newest].intent.start as usize
            };
            let mut again = restart(&ranges, newest, newest_written);
            prop_assert_eq!(again.redo.is_some(), !newest_written);
            // Same offsets closed by age: the same decisions and ranges.
            let (replayed, replayed_ranges) = read(&mut again, &inputs, from, &age_closes);
            let expected: BTreeMap<_, _> = decisions.range(from..).map(|(o, d)| (*o, d.clone())).collect();
            prop_assert_eq!(&replayed, &expected);
            let resumed_at = if newest_written { newest + 1 } else { newest };
            prop_assert_eq!(&replayed_ranges[..], &ranges[resumed_at..]);
            // Other offsets closed by age: the same decisions, the redone range the same.
            let mut other = restart(&ranges, newest, newest_written);
            let (replayed, other_ranges) = read(&mut other, &inputs, from, &replay_age_closes);
            prop_assert_eq!(&replayed, &expected);
            if !newest_written {
                prop_assert_eq!(&other_ranges[0], &ranges[newest]);
            }
        }
    }

    #[test]
    fn tombstones_garbage_late_and_repeats_are_decided_with_reasons() {
        let bounds = bounds();
        let mut core = PartitionCore::new(bounds.dedup_horizon_ms);
        let on_time = Input {
            id: 1,
            received: 30,
            behind: 0,
            kind: 9,
        };
        let decide = |core: &mut PartitionCore, offset: i64, input: &Input| {
            core.take(offset, payload(input).as_deref(), None, &bounds)
                .decision
        };
        assert_eq!(decide(&mut core, 0, &on_time), Decision::Counted);
        assert_eq!(decide(&mut core, 1, &on_time), Decision::Repeat);
        let tombstone = Input {
            kind: 0,
            ..on_time.clone()
        };
        assert_eq!(
            decide(&mut core, 2, &tombstone),
            Decision::DeadLetter(Reason::NoValue)
        );
        let garbage = Input {
            kind: 1,
            ..on_time.clone()
        };
        assert!(matches!(
            decide(&mut core, 3, &garbage),
            Decision::DeadLetter(Reason::Unreadable(_))
        ));
        let late = Input {
            id: 2,
            behind: 21,
            ..on_time.clone()
        };
        let decision = decide(&mut core, 4, &late);
        assert!(
            decision.to_string_reason().starts_with("late: event time"),
            "{decision:?}"
        );
        let ahead = Input {
            id: 3,
            behind: -6,
            ..on_time
        };
        assert!(matches!(
            decide(&mut core, 5, &ahead),
            Decision::DeadLetter(Reason::BadTime(_))
        ));
    }

    impl Decision {
        fn to_string_reason(&self) -> String {
            match self {
                Self::DeadLetter(reason) => reason.to_string(),
                other => format!("{other:?}"),
            }
        }
    }
}
