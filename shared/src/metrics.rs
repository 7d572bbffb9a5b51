//! The metrics every service exposes, in Prometheus' text format. Their names and labels are
//! part of the product (dashboards and alert rules depend on them; the README lists them), so
//! they are spelled here, once, with their help texts. Each process has one recorder; `render`
//! adds the process's own metrics (memory, CPU, open files) at every scrape.

use std::sync::OnceLock;

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

// The api's, at the execution's transitions and at each scrape.
pub const EXECUTIONS: &str = "voidrunner_executions_total";
pub const QUEUE_SECONDS: &str = "voidrunner_execution_queue_seconds";
pub const END_TO_END_SECONDS: &str = "voidrunner_execution_end_to_end_seconds";
pub const HTTP_REQUESTS: &str = "voidrunner_http_requests_total";
pub const HTTP_REQUEST_SECONDS: &str = "voidrunner_http_request_duration_seconds";
pub const OUTBOX_PENDING: &str = "voidrunner_outbox_pending";
pub const EXECUTIONS_HELD: &str = "voidrunner_executions_held";
pub const DEAD_LETTERS: &str = "voidrunner_dead_letters_total";
pub const WEBHOOK_DELIVERIES: &str = "voidrunner_webhook_deliveries_total";
pub const SECURITY_EVENTS: &str = "voidrunner_security_events_total";
pub const CONSUMER_PENDING: &str = "voidrunner_jetstream_consumer_pending";
pub const CONSUMER_ACK_PENDING: &str = "voidrunner_jetstream_consumer_ack_pending";
pub const REDELIVERED: &str = "voidrunner_jetstream_redelivered_total";
// The worker's.
pub const WORKER_SLOTS: &str = "voidrunner_worker_slots";
pub const WORKER_SLOTS_BUSY: &str = "voidrunner_worker_slots_busy";
pub const SANDBOX_RUN_SECONDS: &str = "voidrunner_sandbox_run_seconds";
pub const SANDBOX_START_SECONDS: &str = "voidrunner_sandbox_start_seconds";
pub const WARM_POOL_SIZE: &str = "voidrunner_warm_pool_size";
pub const WARM_POOL_MISSES: &str = "voidrunner_warm_pool_misses_total";
pub const OOM_KILLS: &str = "voidrunner_sandbox_oom_kills_total";
pub const OUTPUT_TRUNCATED: &str = "voidrunner_sandbox_output_truncated_total";
pub const CONTAINERS_REMOVED: &str = "voidrunner_containers_removed_total";
// Every service's.
pub const BUILD_INFO: &str = "voidrunner_build_info";

/// Every metric VoidRunner defines (the process's own come from the collector).
pub const ALL: &[&str] = &[
    EXECUTIONS,
    QUEUE_SECONDS,
    END_TO_END_SECONDS,
    HTTP_REQUESTS,
    HTTP_REQUEST_SECONDS,
    OUTBOX_PENDING,
    EXECUTIONS_HELD,
    DEAD_LETTERS,
    WEBHOOK_DELIVERIES,
    SECURITY_EVENTS,
    CONSUMER_PENDING,
    CONSUMER_ACK_PENDING,
    REDELIVERED,
    WORKER_SLOTS,
    WORKER_SLOTS_BUSY,
    SANDBOX_RUN_SECONDS,
    SANDBOX_START_SECONDS,
    WARM_POOL_SIZE,
    WARM_POOL_MISSES,
    OOM_KILLS,
    OUTPUT_TRUNCATED,
    CONTAINERS_REMOVED,
    BUILD_INFO,
];

/// Latency buckets, in seconds: from a warm sandbox's few milliseconds to a long queue wait.
const SECONDS_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0,
];

/// The process's recorder.
pub struct Recorder {
    handle: PrometheusHandle,
    process: metrics_process::Collector,
}

static RECORDER: OnceLock<Recorder> = OnceLock::new();

/// The process's recorder, installed by the first call (an api and a worker in one process
/// share it).
pub fn recorder() -> &'static Recorder {
    RECORDER.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
            .expect("the buckets are not empty")
            .build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("another metrics recorder was installed first; /metrics shows nothing of this process's own");
        }
        describe();
        let process = metrics_process::Collector::default();
        process.describe();
        metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
        Recorder { handle, process }
    })
}

impl Recorder {
    /// Everything recorded, in Prometheus' text exposition format.
    pub fn render(&self) -> String {
        self.process.collect();
        self.handle.render()
    }
}

/// The `Content-Type` of `render`'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

fn describe() {
    describe_counter!(
        EXECUTIONS,
        "Executions that reached a final state, by language and final status"
    );
    describe_histogram!(
        QUEUE_SECONDS,
        Unit::Seconds,
        "Time from an execution's creation to a worker starting it, by lane (observed when it ends)"
    );
    describe_histogram!(
        END_TO_END_SECONDS,
        Unit::Seconds,
        "Time from an execution's creation to its final state, by language"
    );
    describe_counter!(
        HTTP_REQUESTS,
        "HTTP requests answered, by method, route template and status code"
    );
    describe_histogram!(
        HTTP_REQUEST_SECONDS,
        Unit::Seconds,
        "Time to answer an HTTP request (to its headers, for streams), by method and route template"
    );
    describe_gauge!(
        OUTBOX_PENDING,
        "Executions admitted but not yet published to their lane (the outbox)"
    );
    describe_gauge!(
        EXECUTIONS_HELD,
        "Queued executions held back by their user's limit of active executions"
    );
    describe_counter!(
        DEAD_LETTERS,
        "Executions the fleet gave up on and dead-lettered"
    );
    describe_counter!(
        WEBHOOK_DELIVERIES,
        "Webhook delivery attempts, by outcome (delivered, retrying, failed)"
    );
    describe_counter!(
        SECURITY_EVENTS,
        "Messages refused because they do not answer their execution's dispatch, by kind"
    );
    describe_gauge!(
        CONSUMER_PENDING,
        "Messages a JetStream consumer has not yet delivered, by consumer"
    );
    describe_gauge!(
        CONSUMER_ACK_PENDING,
        "Messages a JetStream consumer delivered that are not yet acknowledged, by consumer"
    );
    describe_counter!(
        REDELIVERED,
        "Messages JetStream's consumers delivered more than once, summed over the fleet's consumers"
    );
    describe_gauge!(WORKER_SLOTS, "Executions this worker runs at once at most");
    describe_gauge!(WORKER_SLOTS_BUSY, "Executions this worker is running now");
    describe_histogram!(
        SANDBOX_RUN_SECONDS,
        Unit::Seconds,
        "Time a sandbox ran a program, by language and status"
    );
    describe_histogram!(
        SANDBOX_START_SECONDS,
        Unit::Seconds,
        "Time to get a sandbox ready for a program, by language and path (warm or cold)"
    );
    describe_gauge!(
        WARM_POOL_SIZE,
        "Sandboxes ready and waiting for a program, by language"
    );
    describe_counter!(
        WARM_POOL_MISSES,
        "Executions that found their language's warm pool empty, by language"
    );
    describe_counter!(OOM_KILLS, "Sandboxes killed for exceeding their memory");
    describe_counter!(
        OUTPUT_TRUNCATED,
        "Executions whose output was cut at the output limit"
    );
    describe_counter!(
        CONTAINERS_REMOVED,
        "Sandbox containers removed, by reason (finished, pool, orphan, shutdown)"
    );
    describe_gauge!(
        BUILD_INFO,
        "Always 1; the version label says which build runs"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recorder_renders_build_info_process_metrics_and_histogram_buckets() {
        let recorder = recorder();
        metrics::histogram!(QUEUE_SECONDS, "lane" => "p0").record(0.02);
        let text = recorder.render();
        assert!(
            text.contains(&format!(
                "{BUILD_INFO}{{version=\"{}\"}} 1",
                env!("CARGO_PKG_VERSION")
            )),
            "{text}"
        );
        assert!(text.contains("process_resident_memory_bytes"), "{text}");
        assert!(
            text.contains(&format!(
                "{QUEUE_SECONDS}_bucket{{lane=\"p0\",le=\"0.025\"}} 1"
            )),
            "{text}"
        );
        assert!(text.contains(&format!("# HELP {QUEUE_SECONDS}")), "{text}");
    }

    #[test]
    fn every_metric_is_in_the_readme_and_the_dashboard_reads_only_metrics_that_exist() {
        let readme = include_str!("../../README.md");
        for name in ALL {
            assert!(
                readme.contains(&format!("`{name}")),
                "the README's metric table lacks {name}"
            );
        }
        let dashboard = include_str!("../../monitoring/grafana/dashboards/voidrunner.json");
        for word in dashboard.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if let Some(name) = word.strip_prefix("voidrunner_") {
                let name = format!("voidrunner_{name}");
                let base = ["_bucket", "_count", "_sum"]
                    .iter()
                    .find_map(|suffix| name.strip_suffix(suffix))
                    .unwrap_or(&name);
                assert!(
                    ALL.contains(&base),
                    "the dashboard reads {name}, which no service exports"
                );
            }
        }
    }
}
