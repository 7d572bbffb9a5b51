//! `voidrunner run FILE…`: submits the files as a one-shot run, streams the program's stdout and
//! stderr to the terminal's as they are printed, and exits as the program did. Ctrl-C cancels
//! the execution (twice leaves at once).

use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::signal::unix::{signal, Signal, SignalKind};
use voidrunner_shared::Language;

use super::exit;
use crate::client::{sse, Client, ClientError};

/// What `voidrunner run` was asked.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The program's main file, then any further files it needs (put beside it by name).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// The language (default: from the main file's extension).
    #[arg(long = "lang", short = 'l')]
    pub language: Option<String>,
    /// A file to feed the program's stdin, or `-` for this command's stdin.
    #[arg(long)]
    pub stdin: Option<PathBuf>,
    /// Wall-clock limit in seconds.
    #[arg(long)]
    pub timeout: Option<u32>,
    /// Memory limit in MiB.
    #[arg(long)]
    pub memory: Option<u32>,
    /// Submit and print the execution's id without waiting for it.
    #[arg(long)]
    pub no_wait: bool,
    /// Print the final execution document as JSON instead of the program's output.
    #[arg(long)]
    pub json: bool,
}

/// The request body for `POST /runs`.
fn request(args: &RunArgs) -> Result<Value, ClientError> {
    let read = |path: &Path| {
        std::fs::read_to_string(path)
            .map_err(|error| ClientError::Other(format!("reading {}: {error}", path.display())))
    };
    let main = &args.files[0];
    let language = match &args.language {
        Some(name) => name
            .parse::<Language>()
            .map_err(|error| ClientError::Other(format!("--lang: {error}")))?,
        None => {
            let extension = main.extension().map(|e| e.to_string_lossy().into_owned());
            extension
                .and_then(|extension| Language::for_extension(&extension))
                .ok_or_else(|| {
                    let known: Vec<&str> = Language::all().iter().map(|l| l.as_str()).collect();
                    ClientError::Other(format!(
                        "cannot tell the language of {} from its extension: pass --lang (one of {})",
                        main.display(),
                        known.join(", ")
                    ))
                })?
        }
    };
    let mut files = Vec::new();
    for path in &args.files[1..] {
        let name = path
            .file_name()
            .ok_or_else(|| ClientError::Other(format!("{} is not a file", path.display())))?;
        files.push(json!({ "path": name.to_string_lossy(), "content": read(path)? }));
    }
    let stdin = match args.stdin.as_deref() {
        None => String::new(),
        Some(path) if path == Path::new("-") => std::io::read_to_string(std::io::stdin())
            .map_err(|error| ClientError::Other(format!("reading stdin: {error}")))?,
        Some(path) => read(path)?,
    };
    let mut body = json!({ "language": language.as_str(), "code": read(main)?, "stdin": stdin });
    if !files.is_empty() {
        body["files"] = Value::Array(files);
    }
    if let Some(timeout) = args.timeout {
        body["timeout_seconds"] = json!(timeout);
    }
    if let Some(memory) = args.memory {
        body["memory_mb"] = json!(memory);
    }
    Ok(body)
}

/// Runs the program; the exit code to leave with.
pub async fn run(client: &Client, args: RunArgs) -> Result<u8, ClientError> {
    let body = request(&args)?;
    // Taken before the submission, so that a Ctrl-C from then on cancels what was submitted.
    let mut interrupts = interrupts()?;
    let submitted = client.post("/runs", &body).await?;
    let id = submitted["id"]
        .as_str()
        .ok_or_else(|| {
            ClientError::Other(format!("the api answered no execution id: {submitted}"))
        })?
        .to_owned();
    if args.no_wait {
        if args.json {
            crate::commands::table::out(format_args!("{}", pretty(&submitted)));
        } else {
            crate::commands::table::out(format_args!("{id}"));
        }
        return Ok(0);
    }
    let mut output = Output::new(!args.json);
    let ended = follow(
        client,
        &id,
        &mut output,
        (&mut interrupts, OnInterrupt::Cancel),
    )
    .await?;
    let execution = if args.json {
        let execution = client.get(&format!("/executions/{id}")).await?;
        crate::commands::table::out(format_args!("{}", pretty(&execution)));
        execution
    } else {
        output.finish(&ended);
        ended
    };
    let (code, why) = exit::of_execution(&execution);
    if let Some(why) = why.filter(|_| !args.json) {
        eprintln!("voidrunner: {why} (execution {id})");
    }
    Ok(code)
}

/// `voidrunner executions logs ID [-f]`: the output so far, or all of it as it comes.
pub async fn logs(client: &Client, id: &str, follow_live: bool) -> Result<u8, ClientError> {
    let mut output = Output::new(true);
    let ended = if follow_live {
        let mut interrupts = interrupts()?;
        follow(
            client,
            id,
            &mut output,
            (&mut interrupts, OnInterrupt::Leave),
        )
        .await?
    } else {
        client.get(&format!("/executions/{id}")).await?
    };
    output.finish(&ended);
    Ok(0)
}

/// SIGINT (Ctrl-C), from now on delivered to this command instead of ending the process.
fn interrupts() -> Result<Signal, ClientError> {
    signal(SignalKind::interrupt())
        .map_err(|error| ClientError::Other(format!("listening for Ctrl-C: {error}")))
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

/// What Ctrl-C does while an execution is followed.
#[derive(Clone, Copy, PartialEq)]
enum OnInterrupt {
    /// Cancel the execution and wait for it to end (a second Ctrl-C leaves at once).
    Cancel,
    /// Stop following; the execution goes on.
    Leave,
}

/// Follows the execution's events until its result: output goes to `output` as it comes.
/// A dropped stream is resumed where it stopped.
async fn follow(
    client: &Client,
    id: &str,
    output: &mut Output,
    (interrupts, on_interrupt): (&mut Signal, OnInterrupt),
) -> Result<Value, ClientError> {
    let mut last_event: Option<String> = None;
    let mut cancelling = false;
    loop {
        let response = client.events(id, last_event.as_deref()).await?;
        let mut body = response.bytes_stream();
        let mut decoder = sse::Decoder::default();
        loop {
            let chunk = tokio::select! {
                chunk = body.next() => chunk,
                _ = interrupts.recv() => {
                    if on_interrupt == OnInterrupt::Leave {
                        std::process::exit(i32::from(exit::CANCELLED));
                    }
                    if cancelling {
                        eprintln!("voidrunner: left execution {id} without waiting for its cancellation");
                        std::process::exit(i32::from(exit::CANCELLED));
                    }
                    cancelling = true;
                    eprintln!("voidrunner: cancelling execution {id} (Ctrl-C again to leave at once)");
                    client.call(reqwest::Method::POST, &format!("/executions/{id}/cancel"), None).await?;
                    continue;
                }
            };
            let Some(Ok(chunk)) = chunk else { break };
            for event in decoder.push(&chunk) {
                if let Some(event_id) = &event.id {
                    last_event = Some(event_id.clone());
                }
                let data: Value = serde_json::from_str(&event.data).unwrap_or(Value::Null);
                match event.event.as_str() {
                    "output" => output.event(&data),
                    "result" => return Ok(data),
                    _ => {}
                }
            }
        }
        // The stream ended without the result: an execution that ended long ago may have no
        // result left in the stream, so its document speaks for it.
        let execution = client.get(&format!("/executions/{id}")).await?;
        if is_final(&execution) {
            return Ok(execution);
        }
    }
}

fn is_final(execution: &Value) -> bool {
    !matches!(
        execution["status"].as_str(),
        Some("queued" | "running") | None
    )
}

/// The bytes of a captured stream as the api sends them (`text` with `encoding`, in a result
/// event's object or an execution document's fields).
fn captured(text: &Value, encoding: &Value) -> Vec<u8> {
    let text = text.as_str().unwrap_or_default();
    match encoding.as_str() {
        Some("base64") => base64::engine::general_purpose::STANDARD
            .decode(text)
            .unwrap_or_default(),
        _ => text.as_bytes().to_vec(),
    }
}

/// The program's output on its way to this process's stdout and stderr.
struct Output {
    shown: bool,
    written: [usize; 2],
}

impl Output {
    fn new(shown: bool) -> Output {
        Output {
            shown,
            written: [0, 0],
        }
    }

    fn write(&mut self, stream: usize, bytes: &[u8]) {
        self.written[stream] += bytes.len();
        if !self.shown {
            return;
        }
        // Written and flushed at once, so that a line shows while the program still runs; a
        // closed pipe is no reason to stop following the execution.
        let _ = if stream == 0 {
            let mut out = std::io::stdout().lock();
            out.write_all(bytes).and_then(|()| out.flush())
        } else {
            let mut err = std::io::stderr().lock();
            err.write_all(bytes).and_then(|()| err.flush())
        };
    }

    /// An `output` event: `{ stream, seq, data: { text, encoding } }`.
    fn event(&mut self, event: &Value) {
        let stream = usize::from(event["stream"].as_str() == Some("stderr"));
        let bytes = captured(&event["data"]["text"], &event["data"]["encoding"]);
        self.write(stream, &bytes);
    }

    /// What the live events did not bring (none came for a program that ended before the
    /// stream was opened and whose events expired), from the final output.
    fn finish(&mut self, ended: &Value) {
        for (stream, name) in ["stdout", "stderr"].into_iter().enumerate() {
            let bytes = match &ended[name] {
                Value::Object(object) => captured(&object["text"], &object["encoding"]),
                text => captured(text, &ended[format!("{name}_encoding")]),
            };
            if let Some(rest) = bytes.get(self.written[stream]..) {
                let rest = rest.to_vec();
                self.write(stream, &rest);
            }
        }
    }
}
