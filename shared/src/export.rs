//! The contract as files under `nats/`: JSON Schemas of the events, and stream and consumer
//! definitions that the NATS CLI accepts (`nats stream add --config nats/streams/TASKS.json`).
//! `voidrunner export-contract nats` writes them; a test keeps the committed copies current.

use crate::config::NatsConfig;
use crate::provision::{lane_consumer_config, stream_configs};
use crate::{Lane, Language, Namespace};

/// Every contract file, by path relative to `nats/`, with its contents, for the default prefix.
pub fn contract_files() -> Vec<(String, String)> {
    let ns = Namespace::new(Namespace::DEFAULT_PREFIX).expect("the default prefix is valid");
    let nats: NatsConfig = crate::config::from_env(std::iter::empty())
        .expect("the defaults are a valid configuration");
    let pretty = |value: serde_json::Value| {
        serde_json::to_string_pretty(&value).expect("JSON values serialise") + "\n"
    };
    let mut files = Vec::new();
    for (file, schema) in crate::events::json_schemas() {
        let value = serde_json::to_value(&schema).expect("schemas serialise");
        files.push((format!("schemas/{file}"), pretty(value)));
    }
    for config in stream_configs(&ns, &nats) {
        let value = serde_json::to_value(&config).expect("stream configs serialise");
        files.push((format!("streams/{}.json", config.name), pretty(value)));
    }
    for lane in Lane::BY_PRECEDENCE {
        for &language in Language::all() {
            let config = lane_consumer_config(&ns, &nats, lane, language);
            let value = serde_json::to_value(&config).expect("consumer configs serialise");
            files.push((
                format!("consumers/{}.json", ns.lane_consumer(lane, language)),
                pretty(value),
            ));
        }
    }
    files
}

#[cfg(test)]
mod tests {
    #[test]
    fn committed_contract_files_match_the_rust_definitions() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../nats");
        for (path, expected) in super::contract_files() {
            let committed = std::fs::read_to_string(dir.join(&path)).unwrap_or_default();
            assert!(
                committed == expected,
                "nats/{path} is out of date with the Rust definitions: run `voidrunner export-contract nats`"
            );
        }
    }
}
