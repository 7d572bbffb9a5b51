//! What each command reads from the environment, loaded and validated the way it starts, and
//! the effective configuration `voidrunner config check` prints (secrets redacted).
//!
//! The service commands load their settings here and nowhere else, so that `config check`
//! refuses exactly what the service would refuse.

use serde::Serialize;
use serde_json::Value;
use voidrunner_api::config::ApiConfig;
use voidrunner_shared::config::{ConfigError, LogConfig, NatsConfig, SandboxPolicy};
use voidrunner_worker::config::WorkerConfig;

use crate::client::ClientConfig;
use crate::serve::ServeConfig;

type Vars = [(String, String)];

/// What `voidrunner config check` checks: the settings of one command.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// `voidrunner api`: the REST api and result recorder.
    Api,
    /// `voidrunner worker`.
    Worker,
    /// `voidrunner serve`: api and worker in one process.
    #[default]
    Serve,
    /// The client commands (`run`, `executions`, …).
    Client,
}

/// Every configuration error of a command, one per bad variable.
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// `voidrunner api`.
#[derive(Serialize)]
pub struct ApiSettings {
    #[serde(flatten)]
    pub log: LogConfig,
    #[serde(flatten)]
    pub api: ApiConfig,
    #[serde(flatten)]
    pub nats: NatsConfig,
    #[serde(flatten)]
    pub policy: SandboxPolicy,
}

/// `voidrunner worker`.
#[derive(Serialize)]
pub struct WorkerSettings {
    #[serde(flatten)]
    pub log: LogConfig,
    #[serde(flatten)]
    pub worker: WorkerConfig,
    #[serde(flatten)]
    pub nats: NatsConfig,
    #[serde(flatten)]
    pub policy: SandboxPolicy,
}

/// `voidrunner serve`: everything embedded mode resolves from the environment (the data
/// directory fills in what is unset when it starts).
#[derive(Serialize)]
pub struct Embedded {
    #[serde(flatten)]
    pub log: LogConfig,
    #[serde(flatten)]
    pub api: ApiConfig,
    #[serde(flatten)]
    pub worker: WorkerConfig,
    #[serde(flatten)]
    pub nats: NatsConfig,
    #[serde(flatten)]
    pub policy: SandboxPolicy,
    #[serde(flatten)]
    pub serve: ServeConfig,
}

/// Collects the errors of the parts of one command's settings.
#[derive(Default)]
struct Loader {
    errors: Vec<ConfigError>,
}

impl Loader {
    /// Loads one part. An error that names a variable that is set puts that variable aside and
    /// loads the part again, so that one check names every bad variable, not only the first.
    fn part<T>(
        &mut self,
        vars: &Vars,
        load: impl Fn(Vec<(String, String)>) -> Result<T, ConfigError>,
    ) -> Option<T> {
        let mut vars = vars.to_vec();
        let mut failed = false;
        loop {
            match load(vars.clone()) {
                Ok(part) => return (!failed).then_some(part),
                Err(error) => {
                    failed = true;
                    let set = error
                        .variable()
                        .and_then(|name| vars.iter().position(|(key, _)| *key == name));
                    if !self
                        .errors
                        .iter()
                        .any(|seen| seen.to_string() == error.to_string())
                    {
                        self.errors.push(error);
                    }
                    match set {
                        Some(index) => {
                            vars.remove(index);
                        }
                        None => return None,
                    }
                }
            }
        }
    }

    /// A check on parts that loaded.
    fn check(&mut self, outcome: Result<(), ConfigError>) {
        if let Err(error) = outcome {
            self.errors.push(error);
        }
    }

    fn finish<T>(self, settings: Option<T>) -> Result<T, ConfigErrors> {
        match settings {
            Some(settings) if self.errors.is_empty() => Ok(settings),
            _ => Err(ConfigErrors(self.errors)),
        }
    }
}

pub fn log(vars: &Vars) -> Result<LogConfig, ConfigErrors> {
    let mut loader = Loader::default();
    let log = loader.part(vars, LogConfig::from_env);
    loader.finish(log)
}

pub fn api(vars: &Vars) -> Result<ApiSettings, ConfigErrors> {
    let mut loader = Loader::default();
    let log = loader.part(vars, LogConfig::from_env);
    let api = loader.part(vars, ApiConfig::from_env);
    let nats = loader.part(vars, NatsConfig::from_env);
    let policy = loader.part(vars, SandboxPolicy::from_env);
    // The distributed api starts no server and keeps no state of its own.
    if let Some(nats) = &nats {
        loader.check(nats.required_url().map(drop));
    }
    if let Some(api) = &api {
        loader.check(api.required_database_url().map(drop));
        loader.check(api.required_jwt_secret().map(drop));
    }
    let settings = (|| {
        Some(ApiSettings {
            log: log?,
            api: api?,
            nats: nats?,
            policy: policy?,
        })
    })();
    loader.finish(settings)
}

pub fn worker(vars: &Vars) -> Result<WorkerSettings, ConfigErrors> {
    let mut loader = Loader::default();
    let log = loader.part(vars, LogConfig::from_env);
    let worker = loader.part(vars, WorkerConfig::from_env);
    let nats = loader.part(vars, NatsConfig::from_env);
    let policy = loader.part(vars, SandboxPolicy::from_env);
    if let Some(nats) = &nats {
        loader.check(nats.required_url().map(drop));
    }
    let settings = (|| {
        Some(WorkerSettings {
            log: log?,
            worker: worker?,
            nats: nats?,
            policy: policy?,
        })
    })();
    loader.finish(settings)
}

pub fn serve(vars: &Vars) -> Result<Embedded, ConfigErrors> {
    let mut loader = Loader::default();
    let log = loader.part(vars, LogConfig::from_env);
    let api = loader.part(vars, ApiConfig::from_env);
    let worker = loader.part(vars, WorkerConfig::from_env);
    let nats = loader.part(vars, NatsConfig::from_env);
    let policy = loader.part(vars, SandboxPolicy::from_env);
    let serve = loader.part(vars, voidrunner_shared::config::from_env::<ServeConfig>);
    let settings = (|| {
        Some(Embedded {
            log: log?,
            api: api?,
            worker: worker?,
            nats: nats?,
            policy: policy?,
            serve: serve?,
        })
    })();
    loader.finish(settings)
}

pub fn client(vars: &Vars) -> Result<ClientConfig, ConfigErrors> {
    let mut loader = Loader::default();
    let client = loader.part(vars, ClientConfig::from_env);
    loader.finish(client)
}

/// The effective configuration of `target`, variable by variable (secrets redacted), each
/// with whether it was set or is the default.
pub fn effective(target: Target, vars: &Vars) -> Result<Vec<Setting>, ConfigErrors> {
    let value = match target {
        Target::Api => serde_json::to_value(api(vars)?),
        Target::Worker => serde_json::to_value(worker(vars)?),
        Target::Serve => serde_json::to_value(serve(vars)?),
        Target::Client => serde_json::to_value(client(vars)?),
    }
    .map_err(|error| ConfigErrors(vec![ConfigError::Unparsable(error.to_string())]))?;
    let Value::Object(fields) = value else {
        return Ok(Vec::new());
    };
    let mut settings: Vec<Setting> = fields
        .into_iter()
        .map(|(field, value)| {
            let variable = variable_of(&field);
            let set = vars.iter().any(|(key, _)| *key == variable);
            Setting {
                variable,
                value,
                set,
            }
        })
        .collect();
    settings.sort_by(|a, b| a.variable.cmp(&b.variable));
    Ok(settings)
}

/// The variable a configuration field is read from (`foo_bar` is `VOIDRUNNER_FOO_BAR`).
pub fn variable_of(field: &str) -> String {
    format!(
        "{}{}",
        voidrunner_shared::config::ENV_PREFIX,
        field.to_ascii_uppercase()
    )
}

/// One line of the effective configuration.
#[derive(Debug, Serialize)]
pub struct Setting {
    pub variable: String,
    /// `null` when unset and without a default.
    pub value: Value,
    /// Whether the environment sets it (otherwise it is the default).
    pub set: bool,
}

/// Every variable some command reads, for the README's configuration table.
pub fn every_variable() -> Result<Vec<String>, ConfigErrors> {
    // With the variables the distributed services require, every command's settings load.
    let vars = [
        ("VOIDRUNNER_NATS_URL", "nats://127.0.0.1:4222"),
        ("VOIDRUNNER_DATABASE_URL", "sqlite::memory:"),
        (
            "VOIDRUNNER_JWT_SECRET",
            "a-secret-long-enough-for-the-check-0123456789",
        ),
    ]
    .map(|(key, value)| (key.to_owned(), value.to_owned()));
    let mut variables = Vec::new();
    for target in [Target::Api, Target::Worker, Target::Serve, Target::Client] {
        let settings = effective(target, &vars)?;
        variables.extend(settings.into_iter().map(|setting| setting.variable));
    }
    variables.sort();
    variables.dedup();
    Ok(variables)
}
