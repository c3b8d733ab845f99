//! The `unisono` binary's command line. (Also makes `cargo test` build the real binary, which
//! the end-to-end tests in `tests/` run.)

use std::process::Command;

#[test]
fn serve_help_lists_every_limit_flag() {
    let out = Command::new(env!("CARGO_BIN_EXE_unisono")).args(["serve", "--help"]).output().expect("run unisono");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--listen",
        "--database-url",
        "--max-frame-bytes",
        "--session-queue",
        "--frames-per-sec",
        "--joins-per-min",
        "--resume-grace-secs",
        "--host-grace-secs",
        "--empty-room-ttl-secs",
        "--max-rooms",
        "--max-members",
        "--max-queue",
        "--commit-delay-ms",
        "--snapshot-members",
        "--presence-max-members",
        "--log-format",
    ] {
        assert!(help.contains(flag), "missing {flag} in:\n{help}");
    }
}

#[test]
fn unsupported_database_url_fails_with_a_clear_message() {
    let out = Command::new(env!("CARGO_BIN_EXE_unisono"))
        .args(["serve", "--listen", "127.0.0.1:0", "--database-url", "mysql://nope"])
        .output()
        .expect("run unisono");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unsupported database URL"), "{err}");
}
