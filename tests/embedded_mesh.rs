//! The whole platform in one process (`rtim up`), fed the REES46 file with
//! `rtim replay`, checked against figures computed from the file.

mod common;

use std::time::Duration;

use common::embedded::{self, Embedded};
use common::expected::{Expected, Shopper};
use common::{Gateway, wait_until};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_mesh_replays_rees46() {
    let Some(file) = common::rees46_path() else {
        return;
    };
    let expected = Expected::from_file(&file);
    let mesh = embedded::start().await;
    let gateway = Gateway::new(mesh.endpoints["gateway"].as_str().unwrap(), &mesh.key);
    let ingestion = format!("http://{}", mesh.endpoints["ingestion"].as_str().unwrap());

    let started = std::time::Instant::now();
    let output = common::replay(&file, &ingestion, &mesh.key);
    eprintln!("{output}");
    assert!(output.contains("accepted    17424"), "every row is accepted: {output}");

    common::check_top_profiles(&gateway, &expected, Duration::from_secs(180)).await;
    eprintln!(
        "replay and consumers settled in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    if let Some(kib) = mesh.process.resident_kib() {
        eprintln!("rtim up resident memory after the replay: {} MiB", kib / 1024);
    }
    check_decisions(&gateway, &expected).await;
    check_recommendations(&gateway, &expected).await;
    check_points(&gateway, &expected).await;
    check_surveys(&gateway, &expected).await;
    check_bad_input(&gateway).await;
    check_python_client(&mesh, &expected).await;
}

/// Waits until every event of `shopper` is in the profile, so that figures
/// derived from it are final.
async fn settled(gateway: &Gateway, shopper: &Shopper) {
    wait_until(
        &format!("profile of {}", shopper.user_id),
        Duration::from_secs(180),
        || gateway.profile_with_total(&shopper.user_id, shopper.events),
    )
    .await;
}

async fn check_decisions(gateway: &Gateway, expected: &Expected) {
    let mut shoppers: Vec<&Shopper> = expected.shoppers.values().collect();
    shoppers.sort_by(|a, b| a.user_id.cmp(&b.user_id));
    let buyer = shoppers.iter().find(|s| s.purchases > 0);
    let big_cart = shoppers.iter().find(|s| s.purchases == 0 && s.cart_value >= 300.0);
    let small_cart = shoppers
        .iter()
        .find(|s| s.purchases == 0 && s.cart_value > 0.0 && s.cart_value < 300.0);
    let cases = [
        (buyer, "returning-buyer-reward"),
        (big_cart, "free-shipping-big-cart"),
        (small_cart, "cart-reminder"),
    ];
    for (shopper, action) in cases {
        let shopper = shopper.unwrap_or_else(|| panic!("the file has a shopper for {action}"));
        settled(gateway, shopper).await;
        let (status, decision) = gateway
            .post(
                "/v1/decide",
                &json!({"placement": "cart", "user_id": shopper.user_id, "limit": 10}),
            )
            .await;
        assert_eq!(status, 200, "decide for {}: {decision}", shopper.user_id);
        let ids: Vec<&str> = decision["actions"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|action| action["id"].as_str())
            .collect();
        assert_eq!(ids, [action], "cart actions for {} ({shopper:?})", shopper.user_id);
        assert!(decision["decision_id"].as_str().is_some_and(|id| !id.is_empty()));
    }
}

async fn check_recommendations(gateway: &Gateway, expected: &Expected) {
    let (product, neighbour, sessions) = expected.product_with_clear_neighbour();
    let path = format!("/v1/recommendations?item_id={product}&limit=5");
    let recommendations = wait_until(
        &format!("co-visitation of {product}"),
        Duration::from_secs(60),
        || async {
            let (status, body) = gateway.get(&path).await;
            let first = body["recommendations"][0].clone();
            (status == 200 && first["score"].as_f64() == Some(sessions as f64)).then_some(body)
        },
    )
    .await;
    assert_eq!(
        recommendations["recommendations"][0]["item_id"].as_str(),
        Some(neighbour.as_str()),
        "most co-visited product of {product}: {recommendations}"
    );
}

async fn check_points(gateway: &Gateway, expected: &Expected) {
    let mut buyers: Vec<&Shopper> = expected.shoppers.values().filter(|s| s.purchases > 0).collect();
    buyers.sort_by(|a, b| b.purchases.cmp(&a.purchases).then(a.user_id.cmp(&b.user_id)));
    for buyer in buyers.iter().take(3) {
        let expected_points = buyer.purchase_points + 5 * buyer.big_cart_adds;
        let path = format!("/v1/points/{}", buyer.user_id);
        let balance = wait_until(
            &format!("points of {}", buyer.user_id),
            Duration::from_secs(60),
            || async {
                let (status, body) = gateway.get(&path).await;
                (status == 200 && body["balance"].as_i64() == Some(expected_points)).then_some(body)
            },
        )
        .await;
        assert_eq!(
            balance["balance"].as_i64(),
            Some(expected_points),
            "points of {}",
            buyer.user_id
        );
    }
}

async fn check_surveys(gateway: &Gateway, expected: &Expected) {
    let mut shoppers: Vec<&Shopper> = expected.shoppers.values().collect();
    shoppers.sort_by(|a, b| a.user_id.cmp(&b.user_id));
    let buyers: Vec<&&Shopper> = shoppers.iter().filter(|s| s.purchases > 0).take(5).collect();
    let browser = shoppers.iter().find(|s| s.purchases == 0).unwrap();
    settled(gateway, browser).await;

    let eligible = |user: String| async move {
        let (status, body) = gateway.get(&format!("/v1/surveys/eligible?user_id={user}")).await;
        assert_eq!(status, 200, "eligible surveys of {user}: {body}");
        body["surveys"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|survey| survey["id"].as_str().map(str::to_owned))
            .collect::<Vec<_>>()
    };
    let scores = [10, 9, 7, 3, 10];
    for (buyer, score) in buyers.iter().zip(scores) {
        settled(gateway, buyer).await;
        let surveys = eligible(buyer.user_id.clone()).await;
        assert!(
            surveys.contains(&"post-purchase-nps".to_owned()),
            "buyer {} eligible: {surveys:?}",
            buyer.user_id
        );
        let body = json!({"user_id": buyer.user_id, "answers": [{"question_id": "likelihood", "score": score}]});
        let (status, response) = gateway.post("/v1/surveys/post-purchase-nps/responses", &body).await;
        assert!(
            status == 200 || status == 201,
            "response of {}: {status} {response}",
            buyer.user_id
        );
    }
    let surveys = eligible(browser.user_id.clone()).await;
    assert!(
        !surveys.contains(&"post-purchase-nps".to_owned()),
        "non-buyer not eligible: {surveys:?}"
    );

    let (status, results) = gateway.get("/v1/surveys/post-purchase-nps/results").await;
    assert_eq!(status, 200, "{results}");
    // Promoters 10, 9, 10; passive 7; detractor 3: (3 - 1) / 5 = 40.
    let nps = &results["nps"][0];
    assert_eq!(nps["promoters"].as_i64(), Some(3), "{results}");
    assert_eq!(nps["detractors"].as_i64(), Some(1), "{results}");
    assert_eq!(nps["score"].as_f64(), Some(40.0), "{results}");
}

async fn check_bad_input(gateway: &Gateway) {
    let (status, problem) = gateway.post("/v1/track", &json!({"event": "Product Viewed"})).await;
    assert_eq!(status, 400, "{problem}");
    assert!(
        problem.to_string().contains("user_id"),
        "names the identity field: {problem}"
    );

    let body = json!({"userId": "bad-time", "event": "Product Viewed", "timestamp": "yesterday"});
    let (status, problem) = gateway.post("/v1/track", &body).await;
    assert_eq!(status, 400, "{problem}");
    assert!(
        problem.to_string().contains("timestamp"),
        "names the timestamp field: {problem}"
    );

    let stranger = Gateway::new(gateway.base.trim_start_matches("http://"), "not-a-key");
    let (status, problem) = stranger.post("/v1/track", &json!({"userId": "u", "event": "x"})).await;
    assert_eq!(status, 401, "{problem}");

    let padding = "x".repeat(2_000);
    let items: Vec<Value> = (0..260)
        .map(|i| json!({"type": "track", "userId": format!("big-{i}"), "event": "Product Viewed", "properties": {"pad": padding}}))
        .collect();
    let (status, problem) = gateway.post("/v1/batch", &json!({"batch": items})).await;
    assert_eq!(status, 413, "{problem}");
    assert!(
        problem["detail"].to_string().contains("512000"),
        "names the limit in bytes: {problem}"
    );
    let (status, _) = gateway.get("/v1/profiles/big-0").await;
    assert_eq!(status, 404, "nothing of an oversized batch is stored");

    let batch = json!({"batch": [
        {"type": "track", "userId": "mixed-1", "event": "Product Viewed"},
        {"type": "track", "event": "Product Viewed"},
        {"type": "track", "userId": "mixed-2", "event": "Product Viewed"},
    ]});
    let (status, body) = gateway.post("/v1/batch", &batch).await;
    assert_eq!(status, 200, "{body}");
    for user in ["mixed-1", "mixed-2"] {
        wait_until(&format!("profile of {user}"), Duration::from_secs(30), || {
            gateway.profile_with_total(user, 1)
        })
        .await;
    }
}

async fn check_python_client(mesh: &Embedded, expected: &Expected) {
    let Ok(python) = std::env::var("RTIM_PYTHON") else {
        eprintln!("skipping the Python client: RTIM_PYTHON is not set (.ci/run sets it)");
        return;
    };
    let shopper = &expected.top_shoppers(1)[0];
    let output = std::process::Command::new(python)
        .arg("tests/python/grpc_client_test.py")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("RTIM_GRPC_DECISIONING", mesh.endpoints["decisioning"].as_str().unwrap())
        .env("RTIM_GRPC_INGESTION", mesh.endpoints["ingestion"].as_str().unwrap())
        .env("RTIM_API_KEY", &mesh.key)
        .env("RTIM_SHOPPER_ID", &shopper.user_id)
        .output()
        .expect("the Python client runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "Python client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    eprintln!("{stdout}");
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
}
