//! Helpers several test files share: running the gpl binary, reading fixture numbers.

use serde_json::Value;
use std::process::Command;

/// Runs the gpl binary with `args`: exit code, stdout, stderr.
pub fn gpl(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gpl"))
        .args(args)
        .output()
        .expect("run gpl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A JSON array of numbers from a fixture.
pub fn f64s(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}
