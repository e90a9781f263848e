//! The mesh: every service and the gateway a separate `rtim serve` process on
//! PostgreSQL, Redis and NATS JetStream. The profile process is killed with
//! SIGKILL during the replay and started again; the final counts must still
//! match the file exactly. A second test replays the DIGINETICA views and
//! purchases into such a mesh and checks the profiles against figures
//! computed from those files.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use common::diginetica;
use common::expected::Expected;
use common::{ChildGuard, Gateway, count, free_port, rtim, wait_until};

const SERVICES: [&str; 7] = [
    "ingestion",
    "profile",
    "decisioning",
    "recommendations",
    "surveys",
    "gamification",
    "gateway",
];

struct Backends {
    database: String,
    nats: String,
    redis: String,
}

fn backends() -> Option<Backends> {
    let read = |name: &str| std::env::var(name).ok();
    match (
        read("RTIM_TEST_DATABASE_URL"),
        read("RTIM_TEST_NATS_URL"),
        read("RTIM_TEST_REDIS_URL"),
    ) {
        (Some(database), Some(nats), Some(redis)) => Some(Backends { database, nats, redis }),
        _ => {
            eprintln!("skipping: set RTIM_TEST_DATABASE_URL, RTIM_TEST_NATS_URL and RTIM_TEST_REDIS_URL");
            None
        }
    }
}

struct Mesh {
    ports: HashMap<&'static str, u16>,
    environment: Vec<(String, String)>,
    processes: HashMap<&'static str, ChildGuard>,
    key: String,
    _dir: tempfile::TempDir,
}

impl Mesh {
    fn new(backends: &Backends) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let key = format!("mesh-test-{}", uuid::Uuid::new_v4().simple());
        let keys_file = dir.path().join("keys.yaml");
        let keys = format!(
            "keys:\n  - tenant: demo\n    scopes: [write, read, decide, admin]\n    sha256: {}\n",
            sha256_hex(&key)
        );
        std::fs::write(&keys_file, keys).unwrap();

        let ports: HashMap<&'static str, u16> = SERVICES.iter().map(|service| (*service, free_port())).collect();
        let unique = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
        let mut environment = vec![
            ("RTIM__DATABASE__URL".to_owned(), backends.database.clone()),
            ("RTIM__DATABASE__SCHEMA_PREFIX".to_owned(), format!("{unique}_")),
            ("RTIM__BUS__URL".to_owned(), backends.nats.clone()),
            ("RTIM__BUS__SUBJECT_PREFIX".to_owned(), unique.clone()),
            ("RTIM__BUS__ACK_WAIT".to_owned(), "5s".to_owned()),
            ("RTIM__CACHE__URL".to_owned(), backends.redis.clone()),
            ("RTIM__CACHE__PREFIX".to_owned(), format!("{unique}:")),
            ("RTIM__AUTH__KEYS_FILE".to_owned(), keys_file.display().to_string()),
            (
                "RTIM__DECISIONING__ACTIONS_FILE".to_owned(),
                examples.join("actions.yaml").display().to_string(),
            ),
            (
                "RTIM__SURVEYS__SURVEYS_FILE".to_owned(),
                examples.join("surveys.yaml").display().to_string(),
            ),
            (
                "RTIM__GAMIFICATION__RULES_FILE".to_owned(),
                examples.join("point-rules.yaml").display().to_string(),
            ),
            ("RUST_LOG".to_owned(), "warn".to_owned()),
        ];
        for service in SERVICES.iter().filter(|service| **service != "gateway") {
            environment.push((
                format!("RTIM__ENDPOINTS__{}", service.to_uppercase()),
                format!("http://127.0.0.1:{}", ports[service]),
            ));
        }
        Self {
            ports,
            environment,
            processes: HashMap::new(),
            key,
            _dir: dir,
        }
    }

    fn start(&mut self, service: &'static str) {
        let mut command = rtim();
        command.args(["serve", service]).envs(self.environment.iter().cloned());
        let address = format!("127.0.0.1:{}", self.ports[service]);
        if service == "gateway" {
            command.env("RTIM__GATEWAY__LISTEN", &address);
        } else {
            command.env("RTIM__SERVER__LISTEN", &address);
        }
        self.processes.insert(service, ChildGuard::spawn(service, &mut command));
    }

    fn kill(&mut self, service: &'static str) {
        if let Some(mut process) = self.processes.remove(service) {
            process.kill();
        }
    }

    fn gateway(&self) -> Gateway {
        Gateway::new(&format!("127.0.0.1:{}", self.ports["gateway"]), &self.key)
    }
}

fn sha256_hex(key: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(key.as_bytes()))
}

async fn wait_for_health(gateway: &Gateway) {
    wait_until("the gateway to answer", Duration::from_secs(60), || async {
        let response = gateway
            .http
            .get(format!("{}/healthz", gateway.base))
            .send()
            .await
            .ok()?;
        response.status().is_success().then_some(())
    })
    .await;
}

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
