//! Segment's and RudderStack's Python libraries against the whole platform
//! in one process (`rtim up`): `tests/python/tracking_sdks_test.py` runs the
//! same scenario with each library, and the profiles must show every call
//! exactly once. Runs when `RTIM_PYTHON` names a Python with both libraries
//! (`.ci/run` installs them).

mod common;

use std::time::Duration;

use common::embedded::{self, Embedded};
use common::{Gateway, wait_until};
use serde_json::{Value, json};

/// Events of one run of the scenario: 2 pages, 3 screens, 121 product
/// views, 1 identify, 1 group, 1 alias and 1 order.
const SCENARIO_EVENTS: i64 = 130;
/// How long the consumers may take to apply every event of the runs.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracking_sdks_land_once() {
    let Ok(python) = std::env::var("RTIM_PYTHON") else {
        eprintln!("skipping the tracking libraries: RTIM_PYTHON is not set (.ci/run sets it)");
        return;
    };
    let mesh = embedded::start().await;
    let gateway = mesh.gateway();
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();

    run_sdk_script(&python, &mesh, &run_id);
    post_same_batch_twice(&gateway, &run_id).await;
    wait_for_marker(&gateway, &run_id).await;

    for prefix in ["seg", "rud", "retry"] {
        check_scenario_profile(&gateway, &format!("{prefix}-{run_id}")).await;
    }
    let profile = profile(&gateway, &format!("twice-{run_id}")).await;
    assert_eq!(
        profile["event_counts"],
        json!({"Product Viewed": 3}),
        "a batch posted twice is applied once"
    );
}

fn run_sdk_script(python: &str, mesh: &Embedded, run_id: &str) {
    let output = std::process::Command::new(python)
        .arg("tests/python/tracking_sdks_test.py")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("RTIM_GATEWAY_URL", format!("http://{}", mesh.address("gateway")))
        .env("RTIM_API_KEY", &mesh.key)
        .env("RTIM_RUN_ID", run_id)
        .output()
        .expect("the tracking libraries script runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    eprintln!("{stdout}");
    assert!(
        output.status.success(),
        "tracking libraries script failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("3 passed, 0 failed"), "{stdout}");
}

/// Posts one batch twice, as a client does when the reply to its first
/// attempt is lost, and checks that the second post reports duplicates.
async fn post_same_batch_twice(gateway: &Gateway, run_id: &str) {
    let user = format!("twice-{run_id}");
    let items: Vec<Value> = (0..3)
        .map(|index| {
            json!({
                "type": "track",
                "userId": user,
                "event": "Product Viewed",
                "messageId": format!("{user}-{index}"),
                "properties": {"product_id": format!("p-{index}")},
            })
        })
        .collect();
    let body = json!({"batch": items});
    let (status, first) = gateway.post("/v1/batch", &body).await;
    assert_eq!(status, 200, "first post: {first}");
    let (status, second) = gateway.post("/v1/batch", &body).await;
    assert_eq!(status, 200, "second post: {second}");
    assert_eq!(first["accepted"], 3, "first post: {first}");
    let duplicates: Vec<&Value> = second["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|result| &result["duplicate"])
        .collect();
    assert_eq!(duplicates, [true, true, true], "second post: {second}");
}

/// Sends a marker event after everything else and waits until its profile
/// exists. The profile consumer applies the stream in order, so every
/// earlier event is applied by then and the counts below are final.
async fn wait_for_marker(gateway: &Gateway, run_id: &str) {
    let marker = format!("marker-{run_id}");
    let (status, body) = gateway
        .post("/v1/track", &json!({"userId": marker, "event": "Marker"}))
        .await;
    assert_eq!(status, 200, "marker: {body}");
    wait_until("the marker's profile", SETTLE_TIMEOUT, || {
        gateway.profile_with_total(&marker, 1)
    })
    .await;
}

async fn profile(gateway: &Gateway, user_id: &str) -> Value {
    let (status, profile) = gateway.get(&format!("/v1/profiles/{user_id}")).await;
    assert_eq!(status, 200, "profile of {user_id}: {profile}");
    profile
}

/// Checks the profile of one run of the scenario that
/// `tests/python/tracking_sdks_test.py` describes.
async fn check_scenario_profile(gateway: &Gateway, prefix: &str) {
    let user = format!("{prefix}-user");
    let profile = profile(gateway, &user).await;
    let expected_counts = json!({
        "Page Viewed": 2,
        "Screen Viewed": 3,
        "Product Viewed": 121,
        "Identify": 1,
        "Group": 1,
        "Alias": 1,
        "Order Completed": 1,
    });
    assert_eq!(profile["event_counts"], expected_counts, "event counts of {user}");
    let total: i64 = expected_counts
        .as_object()
        .unwrap()
        .values()
        .filter_map(Value::as_i64)
        .sum();
    assert_eq!(total, SCENARIO_EVENTS, "scenario size");
    assert_eq!(
        profile["traits"],
        json!({"email": format!("{prefix}@example.com"), "plan": "gold"}),
        "identify traits of {user}"
    );
    assert_eq!(
        profile["groups"],
        json!({format!("{prefix}-acme"): {"name": "Acme", "employees": 42}}),
        "groups of {user}"
    );
    assert_eq!(
        profile["anonymous_ids"],
        json!([format!("{prefix}-anon")]),
        "alias merged the anonymous profile into {user}"
    );
    assert_eq!(profile["order_count"], 1, "orders of {user}");
    assert_eq!(profile["total_spent"], 99.5, "revenue of {user}");
    assert_eq!(profile["recently_viewed"][0], "p-120", "last viewed product of {user}");

    let by_anonymous = self::profile(gateway, &format!("{prefix}-anon")).await;
    assert_eq!(
        by_anonymous["profile_id"], profile["profile_id"],
        "the anonymous id of {user} leads to the merged profile"
    );
}
