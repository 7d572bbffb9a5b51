//! Who may do what on the bus: one NATS user per role, with the least privilege that role
//! needs, rendered as a nats-server `authorization` block. `serve` writes one with generated
//! passwords; `voidrunner nats-config` prints one for a deployment; the tests run every
//! service under it, so a permission missing here fails them.
//!
//! - `api`: owns the installation's streams, consumers and buckets (creates and updates them),
//!   publishes dispatches, cancellations, the results it reports for the fleet and dead
//!   letters; records results and `started` events.
//! - `worker`: pulls its lanes, publishes results, events, dead letters and heartbeats, watches
//!   cancellations and answers `$SRV` discovery. It cannot publish a dispatch or create a
//!   stream.
//! - `observer`: for people with the NATS CLI: lists and inspects streams and consumers, reads
//!   results, events and dead letters, discovers workers; it publishes nothing.
//!
//! Each role's replies come on an inbox of its own (`_INBOX_<role>.>`), so no role reads
//! another's (a worker's inbox receives the programs it pulls).

use crate::Namespace;

/// A kind of client of the bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Api,
    Worker,
    Observer,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Api, Role::Worker, Role::Observer];

    /// Its NATS user name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Api => "api",
            Role::Worker => "worker",
            Role::Observer => "observer",
        }
    }

    /// The prefix of its reply subjects (`nats --inbox-prefix` for the observer).
    pub fn inbox_prefix(self) -> String {
        format!("_INBOX_{}", self.as_str())
    }
}

/// What a role may publish and subscribe to; everything else is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permissions {
    pub publish: Vec<String>,
    pub subscribe: Vec<String>,
    /// Whether it may answer requests it received (on their reply subject only).
    pub allow_responses: bool,
}

/// The JetStream API to use an existing stream: its info, reading messages by subject, and
/// consuming through consumers (ephemeral ones included: ordered consumers, KV watchers).
fn use_stream(stream: &str) -> Vec<String> {
    vec![
        format!("$JS.API.STREAM.INFO.{stream}"),
        format!("$JS.API.DIRECT.GET.{stream}"),
        format!("$JS.API.DIRECT.GET.{stream}.>"),
        format!("$JS.API.STREAM.MSG.GET.{stream}"),
        format!("$JS.API.CONSUMER.CREATE.{stream}"),
        format!("$JS.API.CONSUMER.CREATE.{stream}.>"),
        format!("$JS.API.CONSUMER.INFO.{stream}.*"),
        format!("$JS.API.CONSUMER.DELETE.{stream}.*"),
        format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.*"),
        format!("$JS.ACK.{stream}.>"),
        format!("$JS.FC.{stream}.>"),
    ]
}

/// What owning a stream adds: creating and updating it and its durable consumers.
fn own_stream(stream: &str) -> Vec<String> {
    let mut subjects = use_stream(stream);
    subjects.extend([
        format!("$JS.API.STREAM.CREATE.{stream}"),
        format!("$JS.API.STREAM.UPDATE.{stream}"),
        format!("$JS.API.CONSUMER.DURABLE.CREATE.{stream}.*"),
    ]);
    subjects
}

/// Inspecting a stream without consuming it: what `nats stream info`, `consumer info` and
/// `stream get` do.
fn inspect_stream(stream: &str) -> Vec<String> {
    vec![
        format!("$JS.API.STREAM.INFO.{stream}"),
        format!("$JS.API.CONSUMER.NAMES.{stream}"),
        format!("$JS.API.CONSUMER.LIST.{stream}"),
        format!("$JS.API.CONSUMER.INFO.{stream}.*"),
    ]
}

fn kv_stream(bucket: &str) -> String {
    format!("KV_{bucket}")
}

/// The permissions of `role` in the installation `ns`.
pub fn permissions(role: Role, ns: &Namespace) -> Permissions {
    let prefix = ns.prefix();
    let (tasks, results, events, dlq) = (
        ns.tasks_stream(),
        ns.results_stream(),
        ns.events_stream(),
        ns.dead_letter_stream(),
    );
    let (workers, cancellations) = (ns.heartbeat_bucket(), ns.cancellation_bucket());
    let inbox = format!("{}.>", role.inbox_prefix());
    match role {
        Role::Api => {
            let mut publish = vec![
                "$JS.API.INFO".to_owned(),
                format!("{prefix}.tasks.>"),
                format!("{prefix}.results.*"),
                format!("{prefix}.dlq.>"),
                format!("$KV.{cancellations}.>"),
                format!("$JS.API.STREAM.MSG.DELETE.{tasks}"),
                // `/workers` asks the fleet through `$SRV`.
                "$SRV.>".to_owned(),
                format!("{prefix}.workers.*.status"),
            ];
            for stream in [&tasks, &results, &events, &dlq] {
                publish.extend(own_stream(stream));
            }
            for bucket in [&workers, &cancellations] {
                publish.extend(own_stream(&kv_stream(bucket)));
            }
            Permissions {
                publish,
                subscribe: vec![
                    inbox,
                    format!("{prefix}.results.*"),
                    format!("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{tasks}.*"),
                ],
                allow_responses: false,
            }
        }
        Role::Worker => {
            let mut publish = vec![
                "$JS.API.INFO".to_owned(),
                format!("{prefix}.results.*"),
                format!("{prefix}.events.>"),
                format!("{prefix}.dlq.>"),
                format!("$KV.{workers}.>"),
                format!("$JS.API.STREAM.INFO.{tasks}"),
                format!("$JS.API.CONSUMER.INFO.{tasks}.*"),
                format!("$JS.API.CONSUMER.MSG.NEXT.{tasks}.*"),
                format!("$JS.ACK.{tasks}.>"),
                format!("$JS.API.STREAM.INFO.{events}"),
                format!("$JS.API.STREAM.INFO.{dlq}"),
            ];
            publish.extend(use_stream(&results));
            for bucket in [&workers, &cancellations] {
                publish.extend(use_stream(&kv_stream(bucket)));
            }
            Permissions {
                publish,
                subscribe: vec![
                    inbox,
                    format!("{prefix}.wakeup.>"),
                    format!("{prefix}.workers.*.status"),
                    "$SRV.>".to_owned(),
                ],
                allow_responses: true,
            }
        }
        Role::Observer => {
            let mut publish = vec![
                "$JS.API.INFO".to_owned(),
                "$JS.API.STREAM.NAMES".to_owned(),
                "$JS.API.STREAM.LIST".to_owned(),
                "$SRV.>".to_owned(),
            ];
            for stream in [&tasks, &results, &events, &dlq] {
                publish.extend(inspect_stream(stream));
            }
            for stream in [&results, &events, &dlq] {
                publish.push(format!("$JS.API.STREAM.MSG.GET.{stream}"));
                publish.push(format!("$JS.API.DIRECT.GET.{stream}"));
                publish.push(format!("$JS.API.DIRECT.GET.{stream}.>"));
            }
            // `nats kv ls/get` on the fleet and the cancellation requests.
            for bucket in [&workers, &cancellations] {
                let stream = kv_stream(bucket);
                publish.extend(inspect_stream(&stream));
                publish.push(format!("$JS.API.DIRECT.GET.{stream}"));
                publish.push(format!("$JS.API.DIRECT.GET.{stream}.>"));
            }
            // `nats req <prefix>.workers.<id>.status`: one worker's load.
            publish.push(format!("{prefix}.workers.*.status"));
            Permissions {
                publish,
                subscribe: vec![
                    inbox,
                    format!("{prefix}.results.*"),
                    format!("{prefix}.events.>"),
                    format!("{prefix}.dlq.>"),
                ],
                allow_responses: false,
            }
        }
    }
}

/// A nats-server `authorization` block with one user per role (`passwords` in `Role::ALL`
/// order). Connections without one of these users are refused.
pub fn authorization_block(ns: &Namespace, passwords: &[(Role, String)]) -> String {
    let quote = |items: &[String]| {
        items
            .iter()
            .map(|item| format!("{item:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut users = Vec::new();
    for (role, password) in passwords {
        let permissions = permissions(*role, ns);
        let responses = if permissions.allow_responses {
            "\n        allow_responses: true"
        } else {
            ""
        };
        users.push(format!(
            "    {{\n      user: {user:?}\n      password: {password:?}\n      permissions: {{\n        \
             publish: {{ allow: [{publish}] }}\n        subscribe: {{ allow: [{subscribe}] }}{responses}\n      }}\n    }}",
            user = role.as_str(),
            publish = quote(&permissions.publish),
            subscribe = quote(&permissions.subscribe),
        ));
    }
    format!(
        "# Generated by VoidRunner for the installation {prefix:?}: one user per role.\n\
         authorization {{\n  users: [\n{users}\n  ]\n}}\n",
        prefix = ns.prefix(),
        users = users.join("\n")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_api_may_publish_dispatches_and_the_observer_only_asks() {
        let ns = Namespace::new("vr").expect("prefix");
        let dispatch = "vr.tasks.";
        for role in Role::ALL {
            let publish = permissions(role, &ns).publish;
            let may_dispatch = publish.iter().any(|subject| subject.starts_with(dispatch));
            assert_eq!(may_dispatch, role == Role::Api, "{role:?}");
            if role == Role::Observer {
                assert!(
                    publish.iter().all(|subject| (!subject.starts_with("vr.")
                        || subject == "vr.workers.*.status")
                        && !subject.starts_with("$KV.")
                        && !subject.contains(".CREATE.")
                        && !subject.contains(".UPDATE.")
                        && !subject.contains(".DELETE.")
                        && !subject.contains(".CONSUMER.CREATE.")),
                    "{publish:?}"
                );
            }
        }
    }

    #[test]
    fn the_authorization_block_names_every_role_with_its_inbox() {
        let ns = Namespace::new("vr").expect("prefix");
        let passwords: Vec<_> = Role::ALL
            .iter()
            .map(|role| (*role, format!("pw-{}", role.as_str())))
            .collect();
        let block = authorization_block(&ns, &passwords);
        for role in Role::ALL {
            assert!(block.contains(&format!("user: \"{}\"", role.as_str())));
            assert!(block.contains(&format!("\"{}.>\"", role.inbox_prefix())));
        }
        assert_eq!(block.matches("allow_responses: true").count(), 1);
    }
}
