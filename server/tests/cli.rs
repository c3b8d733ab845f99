//! The `unisono` binary's command line. (Also makes `cargo test` build the real binary, which
//! the end-to-end tests in `tests/` run.)
//!
//! The flags checked are taken from the parser itself (`Config`'s clap definition), so a new
//! flag is covered the day it is added: every flag is shown by `serve --help`, has an
//! environment variable and a help text, and is documented in `docs/configuration.md`.

use std::process::Command;

use clap::Args;
use unisono_server::config::Config;

/// Every `unisono serve` flag, as the parser defines it: (long name, env var, has help).
fn serve_flags() -> Vec<(String, Option<String>, bool)> {
    let cmd = Config::augment_args(clap::Command::new("serve"));
    cmd.get_arguments()
        .filter_map(|a| {
            let long = a.get_long()?.to_owned();
            let env = a.get_env().map(|e| e.to_string_lossy().into_owned());
            Some((long, env, a.get_help().is_some()))
        })
        .collect()
}

#[test]
fn every_serve_flag_is_shown_has_an_env_var_and_is_documented() {
    let flags = serve_flags();
    assert!(flags.len() > 30, "the parser defines the serve flags: {flags:?}");
    let out = Command::new(env!("CARGO_BIN_EXE_unisono")).args(["serve", "--help"]).output().expect("run unisono");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/configuration.md"))
        .expect("docs/configuration.md");
    for (long, env, has_help) in &flags {
        let flag = format!("--{long}");
        assert!(help.contains(&flag), "`serve --help` does not show {flag}");
        assert!(has_help, "{flag} has no help text");
        let env = env.as_deref().unwrap_or_else(|| panic!("{flag} has no environment variable"));
        assert!(env.starts_with("UNISONO_"), "{flag}'s variable {env} is not UNISONO_*");
        assert!(docs.contains(&format!("`{flag}`")), "docs/configuration.md does not document {flag}");
        assert!(docs.contains(env), "docs/configuration.md does not name {env}");
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
