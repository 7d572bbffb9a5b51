//! How a program enters its sandbox, and what the sandbox reports back besides its output.
//!
//! The host never writes a file into a sandbox: the program travels over the container's stdin
//! as one line holding a length, then a tar archive of that many bytes (the main file and any
//! further files), then the program's own stdin. A fixed bootstrap unpacks the archive into the
//! sandbox's private tmpfs and runs it. The bootstrap does not depend on the program, which is
//! what lets a container be started, and wait in the warm pool, before its program is known.
//!
//! When the program ends, the bootstrap appends one trailer line to stderr with the peak memory
//! of the sandbox's cgroup; the worker strips it before anyone sees stderr.

use std::time::{SystemTime, UNIX_EPOCH};

use voidrunner_shared::events::SourceFile;
use voidrunner_shared::Language;

/// Exit code of the bootstrap when the program's files could not be unpacked.
pub const BOOTSTRAP_FAILED_EXIT: i64 = 240;
/// Exit code of the bootstrap when a compiled language's program did not compile.
pub const COMPILE_FAILED_EXIT: i64 = 242;
const PEAK_MEMORY_TRAILER: &[u8] = b"\x1evoidrunner-peak-memory=";
/// Room kept on stderr for the trailer, beyond the output cap.
pub const TRAILER_ROOM: usize = 64;

/// A program to run, in the language of the image it will run in.
#[derive(Debug, Clone)]
pub struct Program {
    pub language: Language,
    pub code: String,
    pub files: Vec<SourceFile>,
    pub stdin: Vec<u8>,
}

impl Program {
    /// What the worker writes to the sandbox's stdin: length line, archive, then the stdin.
    pub fn stdin_payload(&self) -> std::io::Result<Vec<u8>> {
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
            archive.append_data(&mut header, &file.path, file.content.as_bytes())?;
        }
        let archive = archive.into_inner()?;
        let mut payload = format!("{}\n", archive.len()).into_bytes();
        payload.extend_from_slice(&archive);
        payload.extend_from_slice(&self.stdin);
        Ok(payload)
    }
}

/// The command a sandbox of `language` starts with.
pub fn bootstrap_command(language: Language) -> Vec<String> {
    let run = match language {
        Language::Python => "python3 -u main.py".to_owned(),
        Language::Javascript => "node main.js".to_owned(),
        Language::Bash => "bash main.sh".to_owned(),
        Language::Go => format!(
            "GO111MODULE=off go build -o /tmp/.voidrunner-main . || exit {COMPILE_FAILED_EXIT}\n/tmp/.voidrunner-main"
        ),
    };
    // `head -c` reads no further than it must, leaving the rest of stdin to the program. The
    // program runs as a child (not exec'd) so that its peak memory can be read afterwards.
    let script = format!(
        "IFS= read -r size || exit {BOOTSTRAP_FAILED_EXIT}\n\
         mkdir -p /tmp/work && cd /tmp/work || exit {BOOTSTRAP_FAILED_EXIT}\n\
         head -c \"$size\" | tar -xf - || exit {BOOTSTRAP_FAILED_EXIT}\n\
         {run}\n\
         code=$?\n\
         peak=$(cat /sys/fs/cgroup/memory/memory.max_usage_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.peak 2>/dev/null)\n\
         printf '\\036voidrunner-peak-memory=%s\\n' \"$peak\" >&2\n\
         exit $code\n"
    );
    vec!["/bin/sh".into(), "-c".into(), script]
}

/// Removes the bootstrap's trailer from the end of stderr and returns the peak memory it holds.
pub fn take_peak_memory(stderr: &mut Vec<u8>) -> Option<u64> {
    let start = stderr
        .windows(PEAK_MEMORY_TRAILER.len())
        .rposition(|window| window == PEAK_MEMORY_TRAILER)?;
    let value = std::str::from_utf8(&stderr[start + PEAK_MEMORY_TRAILER.len()..])
        .ok()?
        .trim_end_matches('\n')
        .to_owned();
    if !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stderr.truncate(start);
    value.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_payload_is_a_length_line_an_archive_and_then_stdin() {
        let program = Program {
            language: Language::Python,
            code: "print(input())".into(),
            files: vec![SourceFile {
                path: "lib/helper.py".into(),
                content: "X = 1\n".into(),
            }],
            stdin: b"hello\n".to_vec(),
        };
        let payload = program.stdin_payload().expect("archive builds");
        let newline = payload
            .iter()
            .position(|&b| b == b'\n')
            .expect("length line");
        let size: usize = std::str::from_utf8(&payload[..newline])
            .expect("ascii")
            .parse()
            .expect("number");
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
        assert_eq!(paths, ["main.py", "lib/helper.py"]);
    }

    #[test]
    fn the_trailer_is_stripped_from_stderr_and_read() {
        let mut stderr = b"warning\n\x1evoidrunner-peak-memory=1048576\n".to_vec();
        assert_eq!(take_peak_memory(&mut stderr), Some(1_048_576));
        assert_eq!(stderr, b"warning\n");
        let mut unmeasured = b"\x1evoidrunner-peak-memory=\n".to_vec();
        assert_eq!(take_peak_memory(&mut unmeasured), None);
        let mut plain = b"no trailer".to_vec();
        assert_eq!(take_peak_memory(&mut plain), None);
        assert_eq!(plain, b"no trailer");
    }
}
