//! `rtim replay --format diginetica` and `--format segment` into the whole
//! platform in one process (`rtim up`), checked through the profiles.

mod common;

use std::path::Path;
use std::time::Duration;

use common::diginetica::{self, Expected};
use common::{Gateway, count, embedded, replay_format, run_replay, wait_until};
use serde_json::{Value, json};

/// Time for the consumers to apply a replay on a shared two-core machine.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(180);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_replays_diginetica() {
    let Some(folder) = common::diginetica_path() else {
        return;
    };
    let expected = Expected::from_folder(&folder);
    let mesh = embedded::start().await;
    let gateway = mesh.gateway();

    let output = replay_format("diginetica", &folder, &mesh.ingestion(), &mesh.key, &[]);
    eprintln!("{output}");
    let events = expected.events();
    assert!(
        output.contains(&format!("accepted    {events}\n")),
        "one event per view and per order: {output}"
    );
    assert!(output.contains("rejected    0\n"), "{output}");

    let shoppers = diginetica::check_top_shoppers(&gateway, &expected, SETTLE_TIMEOUT).await;

    let again = replay_format("diginetica", &folder, &mesh.ingestion(), &mesh.key, &[]);
    assert!(
        again.contains(&format!("duplicates  {events} ")),
        "a second replay stores nothing: {again}"
    );
    common::wait_for_marker(&gateway, "diginetica-marker", SETTLE_TIMEOUT).await;
    for shopper in &shoppers {
        let (status, profile) = gateway.get(&format!("/v1/profiles/{}", shopper.id)).await;
        assert_eq!(status, 200, "profile of {}", shopper.id);
        diginetica::check_profile(&profile, shopper);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_replays_segment_lines() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/segment-events.jsonl");
    let mesh = embedded::start().await;
    let gateway = mesh.gateway();

    let output = replay_format("segment", &file, &mesh.ingestion(), &mesh.key, &[]);
    eprintln!("{output}");
    assert!(output.contains("accepted    12\n"), "every line is accepted: {output}");
    assert!(output.contains("rejected    0\n"), "{output}");

    let ada = wait_until("profile of user-ada", SETTLE_TIMEOUT, || {
        gateway.profile_with_total("user-ada", 7)
    })
    .await;
    let counts = json!({
        "Page Viewed": 1, "Product Viewed": 2, "Identify": 1, "Product Added": 2, "Order Completed": 1,
    });
    assert_eq!(
        ada["event_counts"], counts,
        "events of user-ada, before and after identify"
    );
    assert_eq!(
        ada["anonymous_ids"],
        json!(["anon-3f9a2c"]),
        "identify links the anonymous id"
    );
    assert_eq!(
        ada["traits"],
        json!({"email": "ada@example.com", "first_name": "Ada", "plan": "member"})
    );
    assert_eq!(ada["order_count"].as_i64(), Some(1), "order count");
    assert_eq!(ada["total_spent"].as_f64(), Some(84.5), "revenue of the order");
    assert_eq!(ada["recently_viewed"], json!(["p-205", "p-100"]), "views by time");
    assert_eq!(ada["first_seen"], "2026-11-20T09:00:00.000Z");
    assert_eq!(ada["last_seen"], "2026-11-20T09:10:00.000Z");

    let ben = wait_until("profile of user-ben", SETTLE_TIMEOUT, || {
        gateway.profile_with_total("user-ben", 5)
    })
    .await;
    let total: i64 = ben["event_counts"]
        .as_object()
        .unwrap()
        .values()
        .filter_map(Value::as_i64)
        .sum();
    assert_eq!(total, 5, "two screens, alias, group and a view: {ben}");
    assert_eq!(count(&ben, "Alias"), 1, "alias of user-ben");
    assert_eq!(count(&ben, "Product Viewed"), 1, "views of user-ben");
    assert_eq!(ben["anonymous_ids"], json!(["device-77"]), "alias merges the device");
    // The first screen has no timestamp: 18:30:07 (receivedAt) minus the
    // 5 s between originalTimestamp and sentAt.
    assert_eq!(ben["first_seen"], "2026-11-21T18:30:02.000Z", "skew corrected");

    let again = replay_format("segment", &file, &mesh.ingestion(), &mesh.key, &[]);
    assert!(
        again.contains("duplicates  12 "),
        "a second replay stores nothing: {again}"
    );

    check_bad_lines(&mesh, &gateway).await;
    common::wait_for_marker(&gateway, "segment-marker", SETTLE_TIMEOUT).await;
    let (_, ada_after) = gateway.get("/v1/profiles/user-ada").await;
    assert_eq!(ada_after["event_counts"], counts, "nothing applied twice");
}

const BAD_LINES: &str = r#"{"type":"track","messageId":"cy-1","userId":"user-cy","event":"Product Viewed","timestamp":"2026-11-22T08:00:00.000Z"}
{"type":"track","userId":"user-cy","event":"Product Viewed","timestamp":"tomorrow"}
{"type":"purchase","userId":"user-cy"}
{"type":"track","userId":

{"type":"track","event":"Product Viewed"}
{"type":"track","messageId":"cy-2","userId":"user-cy","event":"Product Viewed","timestamp":"2026-11-22T08:05:00.000Z"}
"#;

/// Checks that a bad line stops a replay with `--strict`, and that without
/// it bad lines are skipped and each is reported by line and field.
async fn check_bad_lines(mesh: &embedded::Embedded, gateway: &Gateway) {
    let folder = tempfile::tempdir().unwrap();
    let file = folder.path().join("bad-lines.jsonl");
    std::fs::write(&file, BAD_LINES).unwrap();
    let path_text = file.display();

    let strict = run_replay("segment", &file, &mesh.ingestion(), &mesh.key, &["--strict"]);
    let stdout = String::from_utf8_lossy(&strict.stdout);
    let stderr = String::from_utf8_lossy(&strict.stderr);
    assert!(!strict.status.success(), "a strict replay fails: {stdout}");
    assert!(
        stderr.contains(&format!("{path_text}:2: timestamp (INVALID_FIELD): 'tomorrow'")),
        "the first bad line is named: {stderr}"
    );
    assert!(stderr.contains("stopped by --strict"), "{stderr}");
    assert!(
        stdout.contains("accepted    1\n"),
        "the line before it was sent: {stdout}"
    );

    let lenient = run_replay("segment", &file, &mesh.ingestion(), &mesh.key, &[]);
    let stdout = String::from_utf8_lossy(&lenient.stdout);
    let stderr = String::from_utf8_lossy(&lenient.stderr);
    assert!(lenient.status.success(), "bad lines are skipped: {stdout}\n{stderr}");
    for expected in [
        format!("{path_text}:2: timestamp (INVALID_FIELD)"),
        format!("{path_text}:3: type (INVALID_FIELD): unknown type 'purchase'"),
        format!("{path_text}:4: line (INVALID_JSON)"),
        format!("{path_text}:6: rejected by ingestion (MISSING_IDENTITY): user_id"),
    ] {
        assert!(stderr.contains(&expected), "reports '{expected}': {stderr}");
    }
    assert_eq!(stderr.lines().count(), 4, "one report per bad line: {stderr}");
    assert!(stdout.contains("accepted    2\n"), "{stdout}");
    assert!(
        stdout.contains("duplicates  1 "),
        "cy-1 was stored by the strict run: {stdout}"
    );
    assert!(stdout.contains("rejected    4\n"), "{stdout}");
    assert!(stdout.contains("INVALID_FIELD        2\n"), "{stdout}");

    let cy = wait_until("profile of user-cy", SETTLE_TIMEOUT, || {
        gateway.profile_with_total("user-cy", 2)
    })
    .await;
    assert_eq!(
        cy["event_counts"],
        json!({"Product Viewed": 2}),
        "valid lines beside bad ones"
    );
}
