//! How each language's program enters its sandbox.
//!
//! The host never writes a file into a sandbox: the program travels over the container's stdin,
//! prefixed by one line holding its length in bytes. A fixed bootstrap reads exactly that many
//! bytes into the sandbox's private tmpfs and `exec`s the interpreter on it, so whatever follows
//! on stdin is the program's own input. The bootstrap does not depend on the program, which is
//! what lets a container be started before its program is known.

use voidrunner_shared::Language;

/// A program to run, in the language of the image it will run in.
#[derive(Debug, Clone)]
pub struct Program {
    pub language: Language,
    pub code: String,
}

impl Program {
    /// What the worker writes to the sandbox's stdin: the length line, then the code.
    pub fn stdin_payload(&self) -> Vec<u8> {
        let mut payload = format!("{}\n", self.code.len()).into_bytes();
        payload.extend_from_slice(self.code.as_bytes());
        payload
    }
}

/// The command a sandbox of `language` starts with.
pub fn bootstrap_command(language: Language) -> Vec<String> {
    let (file, interpreter) = match language {
        Language::Python => ("/tmp/main.py", "python3 -u"),
        Language::Javascript => ("/tmp/main.js", "node"),
        Language::Bash => ("/tmp/main.sh", "bash"),
    };
    // `head -c` reads no further than it must, leaving the rest of stdin to the program.
    let script = format!(
        "IFS= read -r size && head -c \"$size\" > {file} && cd /tmp && exec {interpreter} {file}"
    );
    vec!["/bin/sh".into(), "-c".into(), script]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_payload_announces_the_code_length_in_bytes() {
        let program = Program {
            language: Language::Python,
            code: "print('é')".into(),
        };
        let payload = program.stdin_payload();
        assert!(payload.starts_with(b"11\nprint("));
        assert_eq!(payload.len(), 3 + 11);
    }
}
