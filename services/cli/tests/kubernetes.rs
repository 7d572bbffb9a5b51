//! The Kubernetes manifests in `deploy/kubernetes/`, checked offline: every built-in resource
//! against the Kubernetes schemas (`kubernetes-validate --strict`), and against the code they
//! configure: each variable they set is one the services read (the README's configuration
//! table), the KEDA triggers name the installation's real stream and lane consumers, the probes
//! and scrape annotations use the ports the services listen on.

use std::path::{Path, PathBuf};

use voidrunner_shared::{Lane, Namespace};

fn manifests() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/kubernetes")
}

fn read(name: &str) -> String {
    std::fs::read_to_string(manifests().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

const BUILT_IN: [&str; 6] = [
    "namespace.yaml",
    "migrate-job.yaml",
    "api.yaml",
    "worker.yaml",
    "worker-native.yaml",
    "secrets.example.yaml",
];

#[test]
fn the_built_in_resources_are_valid_kubernetes() {
    let output = std::process::Command::new("kubernetes-validate")
        .arg("--strict")
        .args(BUILT_IN)
        .current_dir(manifests())
        .output()
        .expect("kubernetes-validate (pip install kubernetes-validate)");
    let report = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{report}");
    // One "passed" line per resource: nothing was skipped for want of a schema.
    let resources: usize = BUILT_IN
        .iter()
        .map(|name| {
            read(name).matches("\nkind: ").count() + usize::from(read(name).starts_with("kind: "))
        })
        .sum();
    assert_eq!(report.matches(" passed ").count(), resources, "{report}");
}

#[test]
fn the_kustomization_lists_every_manifest_but_the_example_secrets() {
    let kustomization = read("kustomization.yaml");
    for name in [
        "namespace.yaml",
        "migrate-job.yaml",
        "api.yaml",
        "worker.yaml",
        "keda-scaledobject.yaml",
    ] {
        assert!(
            kustomization.contains(&format!("- {name}")),
            "{name} is not listed"
        );
    }
    assert!(!kustomization.contains("- secrets.example.yaml"));
    // The native workers are the alternative to the Docker ones, never both at once.
    assert!(!kustomization.contains("- worker-native.yaml"));
}

#[test]
fn every_variable_the_manifests_set_is_one_the_services_read() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
            .expect("README");
    for name in [
        "api.yaml",
        "worker.yaml",
        "worker-native.yaml",
        "migrate-job.yaml",
    ] {
        let manifest = read(name);
        let variables: Vec<&str> = manifest
            .split("name: ")
            .skip(1)
            .filter_map(|rest| rest.split([',', ' ', '\n', '}']).next())
            .filter(|word| word.starts_with("VOIDRUNNER_"))
            .collect();
        assert!(!variables.is_empty(), "{name} sets no variable");
        for variable in variables {
            assert!(
                readme.contains(&format!("`{variable}`")),
                "{name} sets {variable}, which the README's configuration does not know"
            );
        }
    }
}

#[test]
fn keda_scales_the_worker_deployment_on_the_backlog_of_every_lane_consumer() {
    let scaled = read("keda-scaledobject.yaml");
    let worker = read("worker.yaml");
    assert!(
        scaled.contains("name: voidrunner-worker") && worker.contains("name: voidrunner-worker")
    );
    // The query adds the pending counts of the consumers whose names the contract gives.
    let ns = Namespace::new(Namespace::DEFAULT_PREFIX).expect("default prefix");
    let query = scaled
        .lines()
        .find_map(|line| line.trim().strip_prefix("query: "))
        .expect("a query");
    assert!(
        query.contains(voidrunner_shared::metrics::CONSUMER_PENDING),
        "{query}"
    );
    let pattern = query
        .split("consumer=~\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a consumer pattern");
    let prefix = pattern.strip_suffix(".+").expect("a prefix pattern");
    for lane in Lane::BY_PRECEDENCE {
        for &language in voidrunner_shared::Language::all() {
            let consumer = ns.lane_consumer(lane, language);
            assert!(consumer.starts_with(prefix), "{consumer} escapes {pattern}");
        }
    }
    assert!(!ns.recorder_consumer().starts_with(prefix));
    // The api pods, whose /metrics carry the gauge, are scraped.
    assert!(read("api.yaml").contains("prometheus.io/scrape: \"true\""));
}

#[test]
fn probes_and_scrapes_use_the_ports_the_services_listen_on() {
    let api = read("api.yaml");
    assert!(api.contains("value: \"0.0.0.0:8080\"") && api.contains("containerPort: 8080"));
    assert!(api.contains("path: /health") && api.contains("path: /ready"));
    assert!(api.contains("prometheus.io/port: \"8080\""));
    let worker = read("worker.yaml");
    assert!(worker.contains("value: \"0.0.0.0:9464\"") && worker.contains("containerPort: 9464"));
    assert!(worker.contains("path: /health") && worker.contains("path: /ready"));
    assert!(worker.contains("prometheus.io/port: \"9464\""));
    // Workers never provision: their NATS role may not.
    assert!(worker.contains("VOIDRUNNER_NATS_PROVISION, value: \"false\""));
    // Each Deployment mounts only its own role's NATS password.
    assert!(
        api.contains("secretName: voidrunner-nats-api") && !api.contains("voidrunner-nats-worker")
    );
    assert!(
        worker.contains("secretName: voidrunner-nats-worker")
            && !worker.contains("voidrunner-nats-api")
    );
}
