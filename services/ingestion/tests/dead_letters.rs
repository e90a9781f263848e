//! The dead-letter stream and `DeadLetterService` over real gRPC, on the
//! in-process bus and cache and on JetStream and Redis when their URLs are set.

mod harness;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use harness::{KEY_A, KEY_B, Options, Running, WRITE_KEY_A, authorized, backends, start, stored_events, viewed};
use rtim_bus::worker::{self, BatchHandler, Incoming, WorkerOptions};
use rtim_proto::bus::v1::DeadLetter as StoredLetter;
use rtim_proto::ingestion::v1::{
    BatchRequest, DeadLetter, ListDeadLettersRequest, ReplayDeadLettersRequest, ReplayDeadLettersResponse,
    ReplayOutcome, TrackRequest,
};
use tokio_util::sync::CancellationToken;
use tonic::Code;

async fn list(running: &mut Running, key: &str, reason: &str) -> Vec<DeadLetter> {
    running
        .dead_letters
        .list_dead_letters(authorized(
            ListDeadLettersRequest {
                reason: reason.to_owned(),
                ..ListDeadLettersRequest::default()
            },
            key,
        ))
        .await
        .unwrap()
        .into_inner()
        .dead_letters
}

async fn replay(running: &mut Running, request: ReplayDeadLettersRequest) -> ReplayDeadLettersResponse {
    running
        .dead_letters
        .replay_dead_letters(authorized(request, KEY_A))
        .await
        .unwrap()
        .into_inner()
}

fn replay_ids(ids: &[&str]) -> ReplayDeadLettersRequest {
    ReplayDeadLettersRequest {
        ids: ids.iter().map(|id| (*id).to_owned()).collect(),
        ..ReplayDeadLettersRequest::default()
    }
}

fn outcomes(response: &ReplayDeadLettersResponse) -> Vec<ReplayOutcome> {
    response.results.iter().map(|result| result.outcome()).collect()
}

/// Writes a dead letter of a valid event straight to the stream, as an
/// earlier, stricter version of the rules would have.
async fn dead_letter_valid_event(running: &Running, message_id: &str) -> String {
    let letter = StoredLetter {
        tenant_id: running.tenant_a.clone(),
        reason: "INVALID_FIELD".to_owned(),
        event: Some(viewed(message_id, "u1")),
        ..StoredLetter::default()
    };
    let sequence = running
        .bus
        .publish_dead_letters(&[letter])
        .await
        .pop()
        .unwrap()
        .unwrap();
    sequence.to_string()
}

#[tokio::test]
async fn rejected_event_is_listed_with_reason_and_tenant() {
    for backend in backends() {
        let mut running = start(&backend, Options::default()).await;
        let name = running.name;
        let mut nameless = viewed("", "");
        nameless.event = "Checkout Started".to_owned();
        let response = running
            .ingestion
            .batch(authorized(
                BatchRequest {
                    events: vec![viewed("m-1", "u1"), nameless],
                },
                KEY_A,
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!((response.accepted, response.rejected), (1, 1), "{name}");

        let listed = list(&mut running, KEY_A, "").await;
        assert_eq!(listed.len(), 1, "{name}");
        let entry = &listed[0];
        assert_eq!(entry.reason, "MISSING_IDENTITY", "{name}");
        assert_eq!(entry.violations.len(), 1, "{name}");
        assert_eq!(entry.violations[0].field, "events[1].user_id", "{name}");
        assert!(entry.create_time.is_some(), "{name}");
        assert!(entry.consumer.is_empty(), "{name}");
        let event = entry.event.as_ref().expect("the event is kept");
        assert_eq!(event.event, "Checkout Started", "{name}");
        assert_eq!(
            event.message_id.len(),
            36,
            "{name}: a message id is assigned for replays"
        );

        assert_eq!(list(&mut running, KEY_A, "MISSING_IDENTITY").await.len(), 1, "{name}");
        assert!(list(&mut running, KEY_A, "INVALID_FIELD").await.is_empty(), "{name}");
        assert!(
            list(&mut running, KEY_B, "").await.is_empty(),
            "{name}: other tenants see nothing"
        );
    }
}

#[tokio::test]
async fn rejected_single_event_is_dead_lettered() {
    for backend in backends() {
        let mut running = start(&backend, Options::default()).await;
        let name = running.name;
        let mut bad = viewed("m-9", "u1");
        bad.user_id = "a\0b".to_owned();
        let status = running
            .ingestion
            .track(authorized(TrackRequest { event: Some(bad) }, KEY_A))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{name}");

        let listed = list(&mut running, KEY_A, "").await;
        assert_eq!(listed.len(), 1, "{name}");
        assert_eq!(listed[0].reason, "INVALID_FIELD", "{name}");
        assert_eq!(listed[0].violations[0].field, "event.user_id", "{name}");
        assert_eq!(listed[0].event.as_ref().unwrap().message_id, "m-9", "{name}");
    }
}

#[tokio::test]
async fn listing_needs_admin_scope() {
    for backend in backends() {
        let mut running = start(&backend, Options::default()).await;
        let status = running
            .dead_letters
            .list_dead_letters(authorized(ListDeadLettersRequest::default(), WRITE_KEY_A))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{}", running.name);
        let status = running
            .dead_letters
            .replay_dead_letters(authorized(replay_ids(&["1"]), WRITE_KEY_A))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{}", running.name);
    }
}

#[tokio::test]
async fn listing_pages_with_tokens() {
    for backend in backends() {
        let mut running = start(&backend, Options::default()).await;
        let name = running.name;
        let events = (0..5).map(|i| viewed(&format!("m-{i}"), "")).collect();
        running
            .ingestion
            .batch(authorized(BatchRequest { events }, KEY_A))
            .await
            .unwrap();

        let mut pages = Vec::new();
        let mut token = String::new();
        loop {
            let page = running
                .dead_letters
                .list_dead_letters(authorized(
                    ListDeadLettersRequest {
                        page_size: 2,
                        page_token: token.clone(),
                        ..ListDeadLettersRequest::default()
                    },
                    KEY_A,
                ))
                .await
                .unwrap()
                .into_inner();
            let ids: Vec<String> = page
                .dead_letters
                .iter()
                .map(|entry| entry.event.as_ref().unwrap().message_id.clone())
                .collect();
            pages.push(ids);
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        assert_eq!(pages, [vec!["m-0", "m-1"], vec!["m-2", "m-3"], vec!["m-4"]], "{name}");

        let status = running
            .dead_letters
            .list_dead_letters(authorized(
                ListDeadLettersRequest {
                    page_token: "not-a-token".to_owned(),
                    ..ListDeadLettersRequest::default()
                },
                KEY_A,
            ))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{name}");
    }
}

#[tokio::test]
async fn replay_after_fix_stores_once() {
    for backend in backends() {
        let mut running = start(&backend, Options::default()).await;
        let name = running.name;
        let fixed = dead_letter_valid_event(&running, "m-1").await;
        // The same event dead-lettered twice, as a client retry would leave it.
        let fixed_again = dead_letter_valid_event(&running, "m-1").await;
        running
            .ingestion
            .track(authorized(
                TrackRequest {
                    event: Some(viewed("m-2", "")),
                },
                KEY_A,
            ))
            .await
            .unwrap_err();
        let still_invalid = list(&mut running, KEY_A, "MISSING_IDENTITY").await[0].id.clone();

        let first = replay(&mut running, ReplayDeadLettersRequest::default()).await;
        let ids: Vec<&str> = first.results.iter().map(|result| result.id.as_str()).collect();
        assert_eq!(
            ids,
            [fixed.as_str(), fixed_again.as_str(), still_invalid.as_str()],
            "{name}"
        );
        assert_eq!(
            outcomes(&first),
            [ReplayOutcome::Stored, ReplayOutcome::Duplicate, ReplayOutcome::Invalid],
            "{name}"
        );
        assert_eq!(first.stored, 1, "{name}");
        assert_eq!(first.results[0].message_id, "m-1", "{name}");
        assert_eq!(first.results[2].reason, "MISSING_IDENTITY", "{name}");
        assert_eq!(first.results[2].violations[0].field, "event.user_id", "{name}");

        let second = replay(&mut running, ReplayDeadLettersRequest::default()).await;
        assert_eq!(
            outcomes(&second),
            [ReplayOutcome::Invalid],
            "{name}: only the invalid entry is left"
        );
        let by_id = replay(&mut running, replay_ids(&[&fixed, "x"])).await;
        assert_eq!(
            outcomes(&by_id),
            [ReplayOutcome::NotFound, ReplayOutcome::NotFound],
            "{name}"
        );

        let stored = stored_events(&running.bus, 1).await;
        let stored_ids: Vec<&str> = stored.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(stored_ids, [format!("{}:m-1", running.tenant_a)], "{name}");
        let left: Vec<String> = list(&mut running, KEY_A, "")
            .await
            .into_iter()
            .map(|entry| entry.id)
            .collect();
        assert_eq!(left, [still_invalid], "{name}");
    }
}

#[tokio::test]
async fn replay_of_event_stored_meanwhile_stores_nothing() {
    for backend in backends() {
        let mut running = start(&backend, Options::default()).await;
        let name = running.name;
        let id = dead_letter_valid_event(&running, "m-1").await;
        // The client sent the event again, fixed, before anyone replayed it.
        running
            .ingestion
            .track(authorized(
                TrackRequest {
                    event: Some(viewed("m-1", "u1")),
                },
                KEY_A,
            ))
            .await
            .unwrap();

        let replayed = replay(&mut running, replay_ids(&[&id])).await;
        assert_eq!(outcomes(&replayed), [ReplayOutcome::Duplicate], "{name}");
        assert_eq!(stored_events(&running.bus, 1).await.len(), 1, "{name}");
        assert!(list(&mut running, KEY_A, "").await.is_empty(), "{name}");
    }
}

#[tokio::test]
async fn replay_cannot_reach_other_tenant() {
    for backend in backends() {
        let mut running = start(&backend, Options::default()).await;
        let name = running.name;
        let id = dead_letter_valid_event(&running, "m-1").await;
        let replayed = running
            .dead_letters
            .replay_dead_letters(authorized(replay_ids(&[&id]), KEY_B))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(outcomes(&replayed), [ReplayOutcome::NotFound], "{name}");
        assert_eq!(list(&mut running, KEY_A, "").await.len(), 1, "{name}");
        assert!(stored_events(&running.bus, 0).await.is_empty(), "{name}");
    }
}

#[tokio::test]
async fn entry_without_event_is_not_replayable() {
    for backend in backends() {
        let mut running = start(&backend, Options::default()).await;
        let name = running.name;
        let letter = StoredLetter {
            tenant_id: running.tenant_a.clone(),
            reason: "UNDECODABLE".to_owned(),
            payload: vec![0xff],
            ..StoredLetter::default()
        };
        running
            .bus
            .publish_dead_letters(&[letter])
            .await
            .pop()
            .unwrap()
            .unwrap();

        let replayed = replay(&mut running, ReplayDeadLettersRequest::default()).await;
        assert_eq!(outcomes(&replayed), [ReplayOutcome::NotReplayable], "{name}");
        assert_eq!(
            list(&mut running, KEY_A, "UNDECODABLE").await.len(),
            1,
            "{name}: the entry stays"
        );
    }
}

/// A consumer that fails every event while `broken` is set, and records
/// the message ids it applied.
#[derive(Clone, Default)]
struct Flaky {
    broken: Arc<Mutex<bool>>,
    attempts: Arc<Mutex<usize>>,
    applied: Arc<Mutex<HashSet<String>>>,
}

impl BatchHandler for Flaky {
    async fn handle(&self, batch: &[Incoming]) -> anyhow::Result<()> {
        *self.attempts.lock().unwrap() += 1;
        if *self.broken.lock().unwrap() {
            anyhow::bail!("profile store is read-only");
        }
        let mut applied = self.applied.lock().unwrap();
        applied.extend(batch.iter().map(|incoming| incoming.message_id.clone()));
        Ok(())
    }
}

async fn wait_for_entries(running: &mut Running, reason: &str, expected: usize) -> Vec<DeadLetter> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let entries = list(running, KEY_A, reason).await;
        if entries.len() >= expected || tokio::time::Instant::now() > deadline {
            return entries;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn failing_consumer_dead_letters_after_max_deliver() {
    for backend in backends() {
        let options = Options {
            max_deliver: 3,
            ack_wait: Duration::from_secs(2),
            duplicate_window: Duration::from_secs(1),
            ..Options::default()
        };
        let mut running = start(&backend, options).await;
        let name = running.name;
        let consumer = running
            .bus
            .consumer("flaky", &running.bus.all_events_filter())
            .await
            .unwrap();
        let handler = Flaky::default();
        *handler.broken.lock().unwrap() = true;
        let shutdown = CancellationToken::new();
        let worker_options = WorkerOptions {
            name: "flaky".to_owned(),
            max_batch: 10,
            retry_delay: Duration::from_millis(50),
        };
        let worker = tokio::spawn(worker::run(worker_options, consumer, handler.clone(), shutdown.clone()));

        running
            .ingestion
            .track(authorized(
                TrackRequest {
                    event: Some(viewed("m-1", "u1")),
                },
                KEY_A,
            ))
            .await
            .unwrap();
        let entries = wait_for_entries(&mut running, "CONSUMER_FAILED", 1).await;
        assert_eq!(entries.len(), 1, "{name}");
        assert_eq!(entries[0].consumer, "flaky", "{name}");
        assert_eq!(entries[0].delivery_count, 3, "{name}");
        assert_eq!(entries[0].error, "profile store is read-only", "{name}");
        assert_eq!(entries[0].event.as_ref().unwrap().message_id, "m-1", "{name}");
        assert_eq!(*handler.attempts.lock().unwrap(), 3, "{name}: one attempt per delivery");

        // The fix: the consumer works again. The event stream's duplicate
        // window is one second, so after it the replay is stored.
        *handler.broken.lock().unwrap() = false;
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let id = entries[0].id.clone();
        let replayed = replay(&mut running, replay_ids(&[&id])).await;
        assert_eq!(
            outcomes(&replayed),
            [ReplayOutcome::Stored],
            "{name}: {:?}",
            replayed.results
        );
        let again = replay(&mut running, replay_ids(&[&id])).await;
        assert_eq!(outcomes(&again), [ReplayOutcome::NotFound], "{name}");

        let expected = format!("{}:m-1", running.tenant_a);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !handler.applied.lock().unwrap().contains(&expected) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(handler.applied.lock().unwrap().len(), 1, "{name}");
        assert!(
            wait_for_entries(&mut running, "CONSUMER_FAILED", 0).await.is_empty(),
            "{name}"
        );
        shutdown.cancel();
        worker.await.unwrap();
    }
}

#[tokio::test]
async fn consumer_failure_replayed_within_stream_window_waits() {
    for backend in backends() {
        let mut running = start(&backend, Options::default()).await;
        let name = running.name;
        running
            .ingestion
            .track(authorized(
                TrackRequest {
                    event: Some(viewed("m-1", "u1")),
                },
                KEY_A,
            ))
            .await
            .unwrap();
        let stored = stored_events(&running.bus, 1).await;
        let letter = StoredLetter {
            tenant_id: running.tenant_a.clone(),
            reason: "CONSUMER_FAILED".to_owned(),
            consumer: "profile".to_owned(),
            event: stored[0].1.event.clone(),
            delivery_count: 20,
            ..StoredLetter::default()
        };
        let id = running
            .bus
            .publish_dead_letters(&[letter])
            .await
            .pop()
            .unwrap()
            .unwrap();

        let replayed = replay(&mut running, replay_ids(&[&id.to_string()])).await;
        assert_eq!(outcomes(&replayed), [ReplayOutcome::Unavailable], "{name}");
        assert!(
            replayed.results[0].detail.contains("duplicate window of 120s"),
            "{name}: {}",
            replayed.results[0].detail
        );
        assert_eq!(
            list(&mut running, KEY_A, "CONSUMER_FAILED").await.len(),
            1,
            "{name}: the entry stays"
        );
        assert_eq!(stored_events(&running.bus, 1).await.len(), 1, "{name}");
    }
}
