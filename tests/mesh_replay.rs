//! The mesh: every service and the gateway a separate `rtim serve` process on
//! PostgreSQL, Redis and NATS JetStream. The profile process is killed with
//! SIGKILL during the replay and started again; the final counts must still
//! match the file exactly. A second test replays the DIGINETICA views and
//! purchases into such a mesh and checks the profiles against figures
//! computed from those files.

mod common;

use std::time::Duration;

use common::diginetica;
use common::expected::Expected;
use common::mesh::{Mesh, SERVICES, backends, wait_for_health};
use common::{count, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_survives_profile_kill_during_replay() {
    let (Some(file), Some(backends)) = (common::rees46_path(), backends()) else {
        return;
    };
    let expected = Expected::from_file(&file);
    let mut mesh = Mesh::new(&backends);
    for service in SERVICES {
        mesh.start(service);
    }
    let gateway = mesh.gateway();
    wait_for_health(&gateway).await;

    let ingestion = format!("http://127.0.0.1:{}", mesh.ports["ingestion"]);
    let key = mesh.key.clone();
    let replay_file = file.clone();
    let started = std::time::Instant::now();
    // Small batches stretch the replay over several seconds, long enough to
    // kill the profile service in the middle of it.
    let replay =
        std::thread::spawn(move || common::replay_with(&replay_file, &ingestion, &key, &["--batch-size", "20"]));

    // Kill the profile service once it has applied a twentieth of the file.
    let middle_user = expected.user_first_seen_after(0.05).to_owned();
    wait_until(
        "a profile from the first twentieth of the file",
        Duration::from_secs(120),
        || gateway.profile_with_total(&middle_user, 1),
    )
    .await;
    eprintln!(
        "a twentieth of the file applied after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(
        !replay.is_finished(),
        "the replay is still running when the profile service is killed"
    );
    mesh.kill("profile");
    eprintln!("killed profile after {:.1} s", started.elapsed().as_secs_f64());
    tokio::time::sleep(Duration::from_millis(500)).await;
    mesh.start("profile");

    let output = replay.join().expect("replay thread finishes");
    eprintln!("{output}");
    assert!(output.contains("accepted    17424"), "every row is accepted: {output}");

    common::check_top_profiles(&gateway, &expected, Duration::from_secs(240)).await;
    eprintln!(
        "mesh replay and consumers settled in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // Nothing counted twice: after everything settled, the counts stay put.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for shopper in expected.top_shoppers(10) {
        let (_, profile) = gateway.get(&format!("/v1/profiles/{}", shopper.user_id)).await;
        assert_eq!(
            count(&profile, "Product Viewed"),
            shopper.views,
            "views of {} after settling",
            shopper.user_id
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_replays_diginetica() {
    let (Some(folder), Some(backends)) = (common::diginetica_path(), backends()) else {
        return;
    };
    let expected = diginetica::Expected::from_folder(&folder);
    let mut mesh = Mesh::new(&backends);
    for service in SERVICES {
        mesh.start(service);
    }
    let gateway = mesh.gateway();
    wait_for_health(&gateway).await;

    let ingestion = format!("http://127.0.0.1:{}", mesh.ports["ingestion"]);
    let output = common::replay_format("diginetica", &folder, &ingestion, &mesh.key, &[]);
    eprintln!("{output}");
    let events = expected.events();
    assert!(output.contains(&format!("accepted    {events}\n")), "{output}");
    let shoppers = diginetica::check_top_shoppers(&gateway, &expected, Duration::from_secs(240)).await;

    // Within JetStream's duplicate window the stream drops the retried ids itself.
    let again = common::replay_format("diginetica", &folder, &ingestion, &mesh.key, &[]);
    assert!(
        again.contains(&format!("duplicates  {events} ")),
        "a second replay stores nothing: {again}"
    );
    common::wait_for_marker(&gateway, "diginetica-marker", Duration::from_secs(60)).await;
    for shopper in &shoppers {
        let (_, profile) = gateway.get(&format!("/v1/profiles/{}", shopper.id)).await;
        diginetica::check_profile(&profile, shopper);
    }
}
