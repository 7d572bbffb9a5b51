//! How a program enters its sandbox, and what the sandbox reports back besides its output.
//!
//! The host never writes a file into a sandbox: the program travels over the container's stdin
//! as one line holding a length, then a tar archive of that many bytes (the main file and any
//! further files), then the program's own stdin. A fixed bootstrap unpacks the archive into the
//! sandbox's private tmpfs and runs it. The bootstrap does not depend on the program, which is
//! what lets a container be started, and wait in the warm pool, before its program is known.
//!
//! When the program ends, the bootstrap ends each stream with a marker; the one on stderr holds
//! the exit code, and the peak memory and OOM kills of the sandbox's cgroup. Once both have arrived, the worker
//! has every byte of output and the exit code without waiting for the container to stop. It
//! strips the markers before anyone sees the output.

use std::time::{SystemTime, UNIX_EPOCH};

use voidrunner_shared::events::SourceFile;
use voidrunner_shared::Language;

/// Exit code of the bootstrap when the program's files could not be unpacked.
pub const BOOTSTRAP_FAILED_EXIT: i64 = 240;
/// Exit code of the bootstrap when a compiled language's program did not compile.
pub const COMPILE_FAILED_EXIT: i64 = 242;
/// The markers start with this, then the run's nonce.
const MARKER_PREFIX: &str = "\x1evoidrunner-end ";
/// Room kept on each stream for its marker, beyond the output cap.
pub const MARKER_ROOM: usize = 128;
/// The directory of the program's files inside the sandbox.
const WORK_DIR: &str = "work";
/// What a sandbox started for the warm pool writes on stdout once it can take a program at
/// once: its bootstrap waits for one and, with a prestart, its runtime has started (the
/// prestart scripts of the catalog write it). The pool takes it off before any program runs.
pub const READY_MARKER: &str = "\x1evoidrunner-ready\n";
/// The FIFO that tells a prestarted runtime its program is there (in /tmp, beside `WORK_DIR`).
const START_FIFO: &str = ".voidrunner-start";

/// A program to run, in the language of the image it will run in.
#[derive(Debug, Clone)]
pub struct Program {
    pub language: Language,
    pub code: String,
    pub files: Vec<SourceFile>,
    pub stdin: Vec<u8>,
}

impl Program {
    /// What the worker writes to the sandbox's stdin: a line with the archive's length and the
    /// run's nonce (which the end markers repeat, so the program cannot guess them), the
    /// archive, then the program's stdin.
    pub fn stdin_payload(&self, nonce: &str) -> std::io::Result<Vec<u8>> {
        let mtime = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|elapsed| elapsed.as_secs().saturating_sub(1))
            .unwrap_or(0);
        let mut archive = tar::Builder::new(Vec::new());
        let main = SourceFile {
            path: self.language.main_file().to_owned(),
            content: self.code.clone(),
        };
        for file in std::iter::once(&main).chain(&self.files) {
            let mut header = tar::Header::new_ustar();
            header.set_size(file.content.len() as u64);
            header.set_mode(0o644);
            header.set_mtime(mtime);
            header.set_entry_type(tar::EntryType::Regular);
            let path = format!("{WORK_DIR}/{}", file.path);
            archive.append_data(&mut header, path, file.content.as_bytes())?;
        }
        let archive = archive.into_inner()?;
        let mut payload = format!("{} {nonce}\n", archive.len()).into_bytes();
        payload.extend_from_slice(&archive);
        payload.extend_from_slice(&self.stdin);
        Ok(payload)
    }
}

/// What a sandbox is started for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartedFor {
    /// The warm pool: it waits for a program it does not know yet. A language with a prestart
    /// starts its runtime while it waits, so that the program does not wait for it.
    Pool,
    /// A program at hand, written to it at once. Starting the runtime before the program's
    /// files are unpacked would gain next to nothing and cost the prestart's own work.
    Program,
}

/// The command a sandbox of `language` starts with.
pub fn bootstrap_command(language: Language, started_for: StartedFor) -> Vec<String> {
    let definition = language.definition();
    let run = match &definition.compile {
        // What a compiler prints is its report, whichever stream it picked: stderr.
        Some(compile) => format!(
            "{{ {compile}\n}} >&2 || exit {COMPILE_FAILED_EXIT}\n{}",
            definition.run
        ),
        None => definition.run.clone(),
    };
    // `head -c` reads no further than it must, leaving the rest of stdin to the program. The
    // program runs as a child (not exec'd) so that the markers can follow it; only builtins
    // run after it, so that the end is reported without another process start.
    let receive = format!(
        "IFS=' ' read -r size nonce || exit {BOOTSTRAP_FAILED_EXIT}\n\
         head -c \"$size\" | tar -xf - || exit {BOOTSTRAP_FAILED_EXIT}\n\
         cd /tmp/{WORK_DIR} || exit {BOOTSTRAP_FAILED_EXIT}\n"
    );
    let prestart = definition
        .prestart
        .as_ref()
        .filter(|_| started_for == StartedFor::Pool);
    let body = match prestart {
        // The runtime starts before the program arrives, on the program's stdin (an
        // asynchronous command's stdin is /dev/null unless given) and on a FIFO that both ends
        // open read-write, so neither open waits for the other: the line written once the files
        // are there stays in the FIFO until the runtime reads it.
        Some(prestart) => format!(
            "cd /tmp || exit {BOOTSTRAP_FAILED_EXIT}\n\
             mkfifo {START_FIFO} || exit {BOOTSTRAP_FAILED_EXIT}\n\
             exec 4<&0\n\
             {prestart} 3<>{START_FIFO} <&4 4<&- &\n\
             started=$!\n\
             exec 3<>{START_FIFO} 4<&-\n\
             {receive}\
             echo /tmp/{WORK_DIR} >&3\n\
             wait $started\n"
        ),
        None => {
            let ready = if started_for == StartedFor::Pool {
                "printf '\\036voidrunner-ready\\n'\n"
            } else {
                ""
            };
            format!("cd /tmp || exit {BOOTSTRAP_FAILED_EXIT}\n{ready}{receive}{run}\n")
        }
    };
    let script = format!(
        "{body}\
         code=$?\n\
         peak=\n\
         read -r peak 2>/dev/null < /sys/fs/cgroup/memory/memory.max_usage_in_bytes || read -r peak 2>/dev/null < /sys/fs/cgroup/memory.peak\n\
         oom=\n\
         for f in /sys/fs/cgroup/memory/memory.oom_control /sys/fs/cgroup/memory.events; do\n\
         [ -r \"$f\" ] || continue\n\
         while read -r key value; do [ \"$key\" = oom_kill ] && oom=$value; done < \"$f\"\n\
         break\n\
         done\n\
         printf '\\036voidrunner-end %s\\n' \"$nonce\"\n\
         printf '\\036voidrunner-end %s exit=%s peak=%s oom=%s\\n' \"$nonce\" \"$code\" \"$peak\" \"$oom\" >&2\n\
         exit $code\n"
    );
    vec!["/bin/sh".into(), "-c".into(), script]
}

/// What the bootstrap reports once the program has ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ending {
    pub exit_code: i64,
    pub peak_memory_bytes: Option<u64>,
    /// How many processes the kernel's OOM killer took in the sandbox (None: not readable).
    pub oom_kills: Option<u64>,
}

fn stdout_marker(nonce: &str) -> Vec<u8> {
    format!("{MARKER_PREFIX}{nonce}\n").into_bytes()
}

impl Ending {
    /// How the run exited, as the bootstrap reported it.
    pub fn exit(&self) -> super::Exit {
        super::Exit::Exited {
            code: self.exit_code,
            oom_killed: self.oom_kills.is_some_and(|kills| kills > 0),
        }
    }
}

/// The ending reported on stderr, with where its marker starts, if stderr ends with one.
fn stderr_ending(stderr: &[u8], nonce: &str) -> Option<(usize, Ending)> {
    let marker = format!("{MARKER_PREFIX}{nonce} exit=").into_bytes();
    let start = stderr
        .windows(marker.len())
        .rposition(|window| window == marker.as_slice())?;
    let line = std::str::from_utf8(&stderr[start + marker.len()..]).ok()?;
    let (exit, rest) = line.strip_suffix('\n')?.split_once(" peak=")?;
    let (peak, oom) = rest.split_once(" oom=").unwrap_or((rest, ""));
    let ending = Ending {
        exit_code: exit.parse().ok()?,
        peak_memory_bytes: peak.parse().ok(),
        oom_kills: oom.parse().ok(),
    };
    Some((start, ending))
}

/// The ending, once both streams carry the run's markers: then all output has arrived.
pub fn ending(stdout: &[u8], stderr: &[u8], nonce: &str) -> Option<Ending> {
    if !stdout.ends_with(&stdout_marker(nonce)) {
        return None;
    }
    stderr_ending(stderr, nonce).map(|(_, ending)| ending)
}

/// The part of an output chunk that is the program's: everything before the run's marker.
pub fn before_marker<'a>(chunk: &'a [u8], nonce: &str) -> &'a [u8] {
    let marker = format!("{MARKER_PREFIX}{nonce}").into_bytes();
    match chunk
        .windows(marker.len())
        .position(|window| window == marker.as_slice())
    {
        Some(start) => &chunk[..start],
        None => chunk,
    }
}

/// Removes the run's markers from the ends of the streams and returns the reported ending.
pub fn strip_markers(stdout: &mut Vec<u8>, stderr: &mut Vec<u8>, nonce: &str) -> Option<Ending> {
    let marker = stdout_marker(nonce);
    if stdout.ends_with(&marker) {
        stdout.truncate(stdout.len() - marker.len());
    }
    let (start, ending) = stderr_ending(stderr, nonce)?;
    stderr.truncate(start);
    Some(ending)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_pooled_sandbox_reports_ready_and_prestarts_its_runtime() {
        let script = |language: &str, started_for| {
            let language: Language = language.parse().expect("in the catalog");
            bootstrap_command(language, started_for).join(" ")
        };
        let ready = "printf '\\036voidrunner-ready\\n'";
        // Without a prestart, the bootstrap reports it before it waits for the program.
        assert!(script("bash", StartedFor::Pool).contains(ready));
        assert!(!script("bash", StartedFor::Program).contains(ready));
        // With one, the prestarted runtime reports it, once started.
        let pooled = script("python", StartedFor::Pool);
        assert!(pooled.contains("prestart.py") && !pooled.contains(ready));
        let fresh = script("python", StartedFor::Program);
        assert!(!fresh.contains("prestart") && !fresh.contains(ready));
        assert!(fresh.contains(
            &"python"
                .parse::<Language>()
                .expect("in the catalog")
                .definition()
                .run
        ));
    }

    #[test]
    fn the_payload_is_a_length_line_an_archive_and_then_stdin() {
        let program = Program {
            language: "python".parse().expect("in the catalog"),
            code: "print(input())".into(),
            files: vec![SourceFile {
                path: "lib/helper.py".into(),
                content: "X = 1\n".into(),
            }],
            stdin: b"hello\n".to_vec(),
        };
        let payload = program.stdin_payload("n0nce").expect("archive builds");
        let newline = payload
            .iter()
            .position(|&b| b == b'\n')
            .expect("length line");
        let line = std::str::from_utf8(&payload[..newline]).expect("ascii");
        let (size, nonce) = line.split_once(' ').expect("size and nonce");
        assert_eq!(nonce, "n0nce");
        let size: usize = size.parse().expect("number");
        let archive = &payload[newline + 1..newline + 1 + size];
        assert_eq!(&payload[newline + 1 + size..], b"hello\n");
        let mut entries = tar::Archive::new(archive);
        let paths: Vec<String> = entries
            .entries()
            .expect("entries")
            .map(|entry| {
                entry
                    .expect("entry")
                    .path()
                    .expect("path")
                    .display()
                    .to_string()
            })
            .collect();
        assert_eq!(paths, ["work/main.py", "work/lib/helper.py"]);
    }

    #[test]
    fn the_markers_are_recognised_only_when_both_streams_ended() {
        let mut stdout = b"out\n\x1evoidrunner-end n0nce\n".to_vec();
        let mut stderr = b"warning\n\x1evoidrunner-end n0nce exit=3 peak=1048576 oom=0\n".to_vec();
        let expected = Ending {
            exit_code: 3,
            peak_memory_bytes: Some(1_048_576),
            oom_kills: Some(0),
        };
        assert_eq!(ending(&stdout, &stderr, "n0nce"), Some(expected));
        assert_eq!(ending(b"out\n", &stderr, "n0nce"), None);
        assert_eq!(
            ending(&stdout, b"\x1evoidrunner-end n0nce exit=3 pe", "n0nce"),
            None
        );
        assert_eq!(
            strip_markers(&mut stdout, &mut stderr, "n0nce"),
            Some(expected)
        );
        assert_eq!(stdout, b"out\n");
        assert_eq!(stderr, b"warning\n");
    }

    #[test]
    fn markers_without_the_runs_nonce_are_the_programs_own_output() {
        let mut stdout = b"\x1evoidrunner-end guess\n".to_vec();
        let mut stderr = b"\x1evoidrunner-end guess exit=0 peak=1\n".to_vec();
        assert_eq!(ending(&stdout, &stderr, "n0nce"), None);
        assert_eq!(strip_markers(&mut stdout, &mut stderr, "n0nce"), None);
        assert_eq!(stdout, b"\x1evoidrunner-end guess\n");
    }

    #[test]
    fn live_chunks_are_cut_before_the_marker() {
        assert_eq!(
            before_marker(b"tail\n\x1evoidrunner-end n exit=0 peak=1\n", "n"),
            b"tail\n"
        );
        assert_eq!(before_marker(b"\x1evoidrunner-end n\n", "n"), b"");
        assert_eq!(before_marker(b"plain output", "n"), b"plain output");
    }

    #[test]
    fn an_unmeasured_peak_still_ends_the_run() {
        let mut stdout = b"\x1evoidrunner-end n\n".to_vec();
        let mut stderr = b"\x1evoidrunner-end n exit=0 peak= oom=\n".to_vec();
        let found = strip_markers(&mut stdout, &mut stderr, "n").expect("ending");
        assert_eq!(found.peak_memory_bytes, None);
        assert_eq!(found.oom_kills, None);
        assert!(stdout.is_empty() && stderr.is_empty());
    }
}
