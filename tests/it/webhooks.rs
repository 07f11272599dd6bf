//! Webhook subscriptions and deliveries in the storage engine: exactly-once fan-out, retries,
//! dead letters, disabling and replay. (The HTTP delivery worker builds on these.)

use std::time::Duration;

use integration_tests::temp_storage;
use storage::model::*;
use storage::webhooks::{Outcome, Subscription};

use crate::index::{new_transfer, party};

fn subscription(consumer: u32, resource: &str, type_filter: Option<&str>) -> Subscription {
    Subscription {
        id: 0,
        consumer: party(consumer),
        end_point: "http://127.0.0.1:1/hook".into(),
        resource_filter: ResourceId::parse(resource).unwrap(),
        subject_filter: party(consumer),
        type_filter: type_filter.map(str::to_owned),
        created: Timestamp::now(),
        validated: false,
        disabled: None,
        secrets: vec!["whsec_test".into()],
        from_seq: 0,
        failing_since: None,
    }
}

#[tokio::test]
async fn fan_out_is_exactly_once_and_only_to_validated_matching_subscriptions() {
    let (_dir, storage) = temp_storage().await;
    // Events before the subscription existed are not its business.
    storage.insert_transfer(new_transfer("res", 1, &[2], true)).await.unwrap();
    let sender_sub = storage.create_subscription(subscription(1, "res", None)).await.unwrap();
    let recipient_sub = storage
        .create_subscription(subscription(2, "res", Some("no.altinn.broker.published")))
        .await
        .unwrap();
    let other_resource = storage.create_subscription(subscription(1, "other", None)).await.unwrap();
    let now = Timestamp::now();
    storage.insert_transfer(new_transfer("res", 1, &[2], true)).await.unwrap();
    // Not validated yet: nothing goes out, and the cursor still moves past those events.
    assert_eq!(storage.fan_out(now, 100).await.unwrap(), 0);
    for id in [sender_sub.id, recipient_sub.id, other_resource.id] {
        storage.modify_subscription(id, |s| s.validated = true).await.unwrap();
    }
    let t = new_transfer("res", 1, &[2], true);
    storage.insert_transfer(t.clone()).await.unwrap();
    assert_eq!(storage.fan_out(now, 100).await.unwrap(), 1, "the sender's initialized event");
    assert_eq!(storage.fan_out(now, 100).await.unwrap(), 0, "fanned out twice");
    // Publishing addresses the sender and the recipient; the recipient filters on `published`.
    storage.update_transfer(t.id, |t| Ok(t.start_upload(Timestamp::now())?)).await.unwrap();
    let mut upload =
        storage.open_upload(UploadId::for_transfer(t.id), Timestamp::now()).await.unwrap();
    upload.write(bytes::Bytes::from_static(b"data")).await.unwrap();
    storage.complete_upload(t.id, upload, Timestamp::now()).await.unwrap();
    storage
        .update_transfer(t.id, |t| Ok(t.record_scan(&ScanOutcome::Clean, Timestamp::now())?))
        .await
        .unwrap();
    assert_eq!(
        storage.fan_out(now, 100).await.unwrap(),
        3,
        "uploadprocessing + published to the sender, published to the recipient"
    );
    let due = storage.due_deliveries(now, 100).unwrap();
    let mut seen: Vec<(u64, &str)> =
        due.iter().map(|(_, s, e)| (s.id, e.kind.type_string())).collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            (sender_sub.id, "no.altinn.broker.filetransferinitialized"),
            (sender_sub.id, "no.altinn.broker.published"),
            (sender_sub.id, "no.altinn.broker.uploadprocessing"),
            (recipient_sub.id, "no.altinn.broker.published"),
        ]
    );
}

#[tokio::test]
async fn failed_deliveries_retry_then_die_and_replay_and_410_disables() {
    let (_dir, storage) = temp_storage().await;
    let sub = storage.create_subscription(subscription(1, "res", None)).await.unwrap();
    storage.modify_subscription(sub.id, |s| s.validated = true).await.unwrap();
    for _ in 0..3 {
        storage.insert_transfer(new_transfer("res", 1, &[2], true)).await.unwrap();
    }
    let now = Timestamp::now();
    assert_eq!(storage.fan_out(now, 100).await.unwrap(), 3);
    let due = storage.due_deliveries(now, 100).unwrap();
    let (first, second) = (due[0].0.id, due[1].0.id);

    // Success removes; a failure waits for its retry time.
    storage.record_delivery(first, Outcome::Delivered, now).await.unwrap();
    let later = now.saturating_add(Duration::from_secs(10));
    storage
        .record_delivery(second, Outcome::Retry { at: later, error: "500".into() }, now)
        .await
        .unwrap();
    let due_now: Vec<u64> =
        storage.due_deliveries(now, 100).unwrap().iter().map(|(d, _, _)| d.id).collect();
    assert!(!due_now.contains(&first) && !due_now.contains(&second));
    let (retried, _, _) = storage
        .due_deliveries(later, 100)
        .unwrap()
        .into_iter()
        .find(|(d, _, _)| d.id == second)
        .unwrap();
    assert_eq!((retried.attempts, retried.last_error.as_deref()), (1, Some("500")));
    assert!(storage.subscription(sub.id).unwrap().unwrap().failing_since.is_some());

    // Out of attempts: a dead letter, kept and replayable.
    storage
        .record_delivery(second, Outcome::GiveUp { error: "still 500".into() }, later)
        .await
        .unwrap();
    assert_eq!(storage.dead_letters(sub.id).unwrap().len(), 1);

    // 410 Gone: the subscription stops, everything pending joins the dead letters.
    let third = storage.due_deliveries(later, 100).unwrap()[0].0.id;
    storage
        .record_delivery(third, Outcome::Disable { reason: "410 Gone".into() }, later)
        .await
        .unwrap();
    let disabled = storage.subscription(sub.id).unwrap().unwrap();
    assert_eq!(disabled.disabled.as_deref(), Some("410 Gone"));
    assert_eq!(storage.dead_letters(sub.id).unwrap().len(), 2);
    assert!(storage.due_deliveries(later, 100).unwrap().is_empty());
    // New events do not go to a disabled subscription.
    storage.insert_transfer(new_transfer("res", 1, &[2], true)).await.unwrap();
    assert_eq!(storage.fan_out(later, 100).await.unwrap(), 0);

    // Replay: re-enabled, dead letters due again with fresh attempts.
    assert_eq!(storage.replay_dead_letters(sub.id, later).await.unwrap(), 2);
    let replayed = storage.due_deliveries(later, 100).unwrap();
    assert_eq!(replayed.len(), 2);
    assert!(replayed.iter().all(|(d, s, _)| d.attempts == 0 && s.disabled.is_none()));
    // Deleting the subscription takes its deliveries with it.
    storage.delete_subscription(sub.id).await.unwrap();
    assert!(storage.due_deliveries(later, 100).unwrap().is_empty());
    assert!(storage.subscription(sub.id).unwrap().is_none());
}
