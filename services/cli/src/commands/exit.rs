//! The exit codes of the client commands: a run exits as its program did, and each way of
//! ending without the program's own exit code has a code of its own (README, "Using the CLI").

use serde_json::Value;

/// The CLI could not do what was asked: the api refused or could not be reached.
pub const CLIENT_ERROR: u8 = 125;
/// The program outlived its time limit (as `timeout(1)` exits).
pub const TIMEOUT: u8 = 124;
/// The program was killed for running out of memory (128 + SIGKILL).
pub const OUT_OF_MEMORY: u8 = 137;
/// The execution was cancelled (128 + SIGINT, as a shell reports Ctrl-C).
pub const CANCELLED: u8 = 130;
/// The program did not compile.
pub const COMPILE_ERROR: u8 = 65;
/// The fleet could not run the program (no image, retries exhausted, ...).
pub const FLEET_ERROR: u8 = 69;

/// How an execution (its document or its result event) ended, as an exit code and, for the
/// ends that are not the program's own, a line that says why.
pub fn of_execution(execution: &Value) -> (u8, Option<String>) {
    let status = execution["status"].as_str().unwrap_or_default();
    let exit_code = execution["exit_code"].as_i64();
    let error = execution["error"].as_str().unwrap_or("no reason given");
    if execution["compile_error"].as_bool() == Some(true) {
        return (COMPILE_ERROR, Some("the program did not compile".into()));
    }
    if execution["oom_killed"].as_bool() == Some(true) {
        return (
            OUT_OF_MEMORY,
            Some("the program was killed: it ran out of memory".into()),
        );
    }
    match status {
        "completed" | "failed" => match exit_code {
            Some(code) => (u8::try_from(code).unwrap_or(1), None),
            None => (1, Some(format!("the program failed: {error}"))),
        },
        "timeout" => (
            TIMEOUT,
            Some("the program was killed: it ran past its time limit".into()),
        ),
        "cancelled" => (CANCELLED, Some("the execution was cancelled".into())),
        "error" => (
            FLEET_ERROR,
            Some(format!("the fleet could not run the program: {error}")),
        ),
        other => (
            CLIENT_ERROR,
            Some(format!("the execution has not ended (status {other:?})")),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn each_end_of_an_execution_has_its_own_exit_code() {
        let cases = [
            (json!({"status": "completed", "exit_code": 0}), 0),
            (json!({"status": "failed", "exit_code": 3}), 3),
            (
                json!({"status": "failed", "exit_code": 137, "oom_killed": true}),
                137,
            ),
            (
                json!({"status": "failed", "exit_code": 1, "compile_error": true}),
                65,
            ),
            (json!({"status": "timeout", "exit_code": null}), 124),
            (json!({"status": "cancelled"}), 130),
            (json!({"status": "error", "error": "no image"}), 69),
            (json!({"status": "running"}), 125),
        ];
        for (execution, code) in cases {
            assert_eq!(of_execution(&execution).0, code, "{execution}");
        }
        assert!(
            of_execution(&json!({"status": "completed", "exit_code": 0}))
                .1
                .is_none()
        );
    }
}
