//! The REST API against its own OpenAPI document (`/api/openapi.json`), with schemathesis
//! (PyPI): thousands of generated requests, valid and invalid, for every operation, with every
//! check (`--checks all`: no 5xx, every status and body as documented, schema-valid requests
//! accepted, invalid ones refused, 405 and `Allow` for undeclared methods, auth enforced).
//! Each operation runs with the credential its document names: an admin JWT, a staff JWT for
//! `/api/staff/stats`, the server API key for `/api/publish`; a real room's code is supplied so
//! `GET /api/rooms/{code}` is reached past its 404.
//!
//! `cargo xtask test` installs schemathesis into `target/schemathesis-venv`
//! (`tests/schemathesis/requirements.txt`); without it this test is skipped loudly, except under
//! `CI=true`, where it fails.

use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::json;
use unisono_e2e::{Client, Server, repo_root, token};

const SECRET: &str = "schemathesis-test-secret";
const API_KEY: &str = "acme-key-0123456789abcdef";

#[tokio::test]
async fn the_rest_api_matches_its_openapi_document_under_generated_requests() -> Result<()> {
    let bin = repo_root().join("target/schemathesis-venv/bin/schemathesis");
    if !bin.exists() {
        if std::env::var("CI").as_deref() == Ok("true") {
            bail!("{} is missing (cargo xtask test installs it)", bin.display());
        }
        eprintln!("SKIPPED: {} not found (run cargo xtask test to install it)", bin.display());
        return Ok(());
    }
    // Generated bad tokens must meet 401, not the per-address lockout.
    let server = Server::start(&[
        "--jwt-secret",
        SECRET,
        "--api-key",
        &format!("acme={API_KEY}"),
        "--auth-failures-per-min",
        "1000000",
        "--anonymous",
        "false",
    ])?;
    let admin = token(SECRET, "acme", "admin", "ops")?;
    let staff = token(SECRET, "acme", "staff", "support")?;
    let mut host = Client::connect_url(&format!("{}?token={admin}", server.ws_url())).await?;
    let code = host.ok("create-room", json!({ "name": "api" })).await?["code"].as_str().context("code")?.to_owned();

    let dir = unisono_e2e::temp_dir("schemathesis");
    let config = dir.join("schemathesis.toml");
    std::fs::write(
        &config,
        format!("[[operations]]\ninclude-name = \"GET /api/rooms/{{code}}\"\nparameters = {{ code = \"{code}\" }}\n"),
    )?;
    let runs: [(&str, &str, &[&str]); 3] = [
        ("admin JWT", &admin, &["--exclude-path", "/api/staff/stats", "--exclude-path", "/api/publish"]),
        ("staff JWT", &staff, &["--include-path", "/api/staff/stats"]),
        ("server API key", API_KEY, &["--include-path", "/api/publish"]),
    ];
    for (who, credential, filter) in runs {
        let out = Command::new(&bin)
            .arg("--config-file")
            .arg(&config)
            .arg("run")
            .arg(server.http_url("/api/openapi.json"))
            .args(["--header", &format!("Authorization: Bearer {credential}")])
            .args(["--checks", "all", "--max-examples", "100", "--no-color"])
            .args(filter)
            .env("SCHEMATHESIS_HOOKS", "")
            // Its cache of crashes goes in the working folder: the test's own.
            .current_dir(&dir)
            .output()
            .context("running schemathesis")?;
        let text = String::from_utf8_lossy(&out.stdout);
        let summary = text.lines().rev().find(|l| l.contains("generated")).unwrap_or("(no summary)");
        eprintln!("schemathesis with the {who}: {}", summary.trim());
        if !out.status.success() {
            bail!("schemathesis found failures with the {who}:\n{text}\n{}", String::from_utf8_lossy(&out.stderr));
        }
    }
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}
