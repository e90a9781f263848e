//! The mesh on the real backends: every service and the gateway a separate
//! `rtim serve` process on PostgreSQL, Redis and NATS JetStream, with a
//! unique schema prefix, subject prefix and key prefix per test.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use super::{ChildGuard, Gateway, free_port, rtim, wait_until};

pub const SERVICES: [&str; 7] = [
    "ingestion",
    "profile",
    "decisioning",
    "recommendations",
    "surveys",
    "gamification",
    "gateway",
];

pub struct Backends {
    pub database: String,
    pub nats: String,
    pub redis: String,
}

pub fn backends() -> Option<Backends> {
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

pub struct Mesh {
    pub ports: HashMap<&'static str, u16>,
    pub environment: Vec<(String, String)>,
    pub processes: HashMap<&'static str, ChildGuard>,
    pub key: String,
    _dir: tempfile::TempDir,
}

impl Mesh {
    pub fn new(backends: &Backends) -> Self {
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

    pub fn start(&mut self, service: &'static str) {
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

    pub fn kill(&mut self, service: &'static str) {
        if let Some(mut process) = self.processes.remove(service) {
            process.kill();
        }
    }

    pub fn gateway(&self) -> Gateway {
        Gateway::new(&format!("127.0.0.1:{}", self.ports["gateway"]), &self.key)
    }
}

fn sha256_hex(key: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(key.as_bytes()))
}

pub async fn wait_for_health(gateway: &Gateway) {
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
