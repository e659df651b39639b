//! Shared by the integration tests: rendering a page in headless Chromium (Debian's
//! `chromium`, installed by scripts/install-test-browser.sh when missing).

use std::path::{Path, PathBuf};
use std::process::Command;

pub fn find_chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| ["chromium", "chromium-browser"].map(|b| dir.join(b)))
        .find(|p| p.is_file())
}

pub fn chromium() -> PathBuf {
    if let Some(found) = find_chromium() {
        return found;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/install-test-browser.sh");
    let status = Command::new("bash").arg(&script).status();
    match (status, find_chromium()) {
        (Ok(s), Some(found)) if s.success() => found,
        (status, _) => panic!(
            "the report rendering test needs Debian's `chromium`; {} could not install it ({status:?}). \
             Install it with `apt-get install -y chromium` and rerun.",
            script.display()
        ),
    }
}

/// Renders `html` headless and returns its DOM; fails on any console error or failed load.
pub fn render_dom(html: &Path) -> String {
    let browser = chromium();
    let profile = tempfile::tempdir().unwrap();
    let url = format!("file://{}", html.canonicalize().unwrap().display());
    let output = Command::new("timeout")
        .arg("180")
        .arg(&browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(&url)
        .output()
        .expect("chromium starts");
    let dom = String::from_utf8_lossy(&output.stdout);
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "chromium failed ({:?}):\n{log}",
        output.status
    );
    // Console messages and failed loads as Chromium logs them.
    let problems: Vec<&str> = log
        .lines()
        .filter(|l| {
            l.contains("CONSOLE")
                || l.contains("Uncaught")
                || l.contains("net::ERR")
                || l.contains("Failed to load")
        })
        .collect();
    assert!(
        problems.is_empty(),
        "console errors while rendering report.html:\n{}",
        problems.join("\n")
    );
    dom.into_owned()
}
