//! Project automation, so a fresh machine needs only cargo:
//!
//! - `cargo xtask serve [ARGS…]`: builds the web app into `dist/` (trunk, installed if missing),
//!   then builds and runs the server serving it, on embedded defaults (SQLite file in `./data`,
//!   listening on 127.0.0.1:8080); extra arguments go to `unisono serve`.
//! - `cargo xtask web`: only builds the web app into `dist/`.
//! - `cargo xtask test`: installs what is missing (the wasm32 target, wasm-bindgen-cli,
//!   wasm-pack), then runs formatting, lints, the wasm build of `core`, the whole test suite
//!   (end-to-end tests included), the wasm package's tests in Node, the packed npm tarball in a
//!   temp project (Node and webpack) and the browser end-to-end test.
//!   This is the README's test command and what `.ci/run` runs.
//! - `cargo xtask npm-pack`: builds the `unisono` npm package (wasm-pack, targets bundler, nodejs
//!   and web, in one package) and packs it into `target/npm/unisono-VERSION.tgz` (`npm.rs`);
//!   prints the tarball's path and the `.wasm` sizes.
//! - `cargo xtask bench [ARGS…]`: builds release binaries and runs the load generator
//!   (`docs/benchmarks.md` lists the scenarios and the figures measured).
//! - `cargo xtask bench sio-devices [ARGS…]`: builds the server and runs the Socket.IO device
//!   benchmark in Node (`benches/sio/run.mjs`: Unisono and/or a plain Node socket.io relay).
//! - `cargo xtask fuzz [--secs N] [--jobs J] [TARGET…]`: builds the libFuzzer targets of
//!   `fuzz/` on stable Rust and runs each for N seconds (`fuzz.rs`); `cargo xtask test` runs
//!   every target for 10 s.
//! - `cargo xtask cluster [ARGS…]`: three nodes on 127.0.0.1:8081-8083 against the local Redis
//!   and PostgreSQL (docs/cluster.md); extra arguments go to every node.

use std::{
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use anyhow::{Context, Result, bail};

mod fuzz;
mod npm;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."))
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

fn run(what: &str, mut cmd: Command) -> Result<()> {
    eprintln!("\n==> {what}");
    let status = cmd.status().with_context(|| format!("starting: {what}"))?;
    if !status.success() {
        bail!("failed: {what} ({status})");
    }
    Ok(())
}

fn ensure_wasm_target() -> Result<()> {
    let out = Command::new("rustup").args(["target", "list", "--installed"]).output();
    match out {
        Ok(o) if String::from_utf8_lossy(&o.stdout).contains("wasm32-unknown-unknown") => Ok(()),
        Ok(_) => {
            let mut c = Command::new("rustup");
            c.args(["target", "add", "wasm32-unknown-unknown"]);
            run("install the wasm32 target", c)
        }
        Err(e) => bail!("rustup is needed to add the wasm32 target: {e}"),
    }
}

/// The wasm-bindgen version pinned in `wasm-pkg/Cargo.toml`; the CLI must match it exactly.
const WASM_BINDGEN: &str = "0.2.130";

/// Installs `krate` at exactly `version` with `cargo install` unless `bin --version` already
/// reports that version. `locked`: use the crate's lock file (see TOOLCHAIN.md for which can).
pub(crate) fn ensure_cargo_tool(bin: &str, krate: &str, version: &str, locked: bool, why: &str) -> Result<()> {
    let have = Command::new(bin).env("PATH", tool_path()).arg("--version").output();
    if let Ok(o) = have
        && String::from_utf8_lossy(&o.stdout).contains(version)
    {
        return Ok(());
    }
    let mut c = cargo();
    c.arg("install");
    if locked {
        c.arg("--locked");
    }
    c.args([krate, "--version", version]);
    run(&format!("install {krate} {version} ({why})"), c)
}

fn ensure_wasm_bindgen_cli() -> Result<()> {
    // Not --locked: a locked dependency of this version is missing from the registry.
    ensure_cargo_tool("wasm-bindgen", "wasm-bindgen-cli", WASM_BINDGEN, false, "test runner for wasm")
}

/// Installs schemathesis (PyPI, the versions of `tests/schemathesis/requirements.txt`) into
/// `target/schemathesis-venv`, where `tests/tests/schemathesis.rs` finds it, unless it is there.
fn ensure_schemathesis() -> Result<()> {
    let root = root();
    let venv = root.join("target/schemathesis-venv");
    let requirements = root.join("tests/schemathesis/requirements.txt");
    let marker = venv.join("installed-requirements.txt");
    if std::fs::read(&marker).ok() == std::fs::read(&requirements).ok() && venv.join("bin/schemathesis").exists() {
        return Ok(());
    }
    let mut c = Command::new("python3");
    c.args(["-m", "venv"]).arg(&venv);
    run("create the schemathesis virtualenv (python3 -m venv)", c)?;
    let mut c = Command::new(venv.join("bin/pip"));
    c.args(["install", "--quiet", "-r"]).arg(&requirements);
    run("install schemathesis from PyPI (OpenAPI tests of the REST API)", c)?;
    std::fs::copy(&requirements, &marker)?;
    Ok(())
}

/// Installs the root package.json's npm packages (exact versions from package-lock.json) when
/// missing or older than the lock file.
pub(crate) fn ensure_node_modules() -> Result<()> {
    let root = root();
    let marker = root.join("node_modules/.package-lock.json");
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let fresh = match (modified(&marker), modified(&root.join("package-lock.json"))) {
        (Some(installed), Some(lock)) => installed >= lock,
        _ => false,
    };
    if fresh {
        return Ok(());
    }
    let mut c = Command::new("npm");
    c.args(["ci", "--no-audit", "--no-fund"]).current_dir(&root);
    run("npm ci (Node test tooling)", c)
}

fn test() -> Result<()> {
    ensure_wasm_target()?;
    let mut c = cargo();
    c.args(["fmt", "--all", "--", "--check"]);
    run("cargo fmt --check", c)?;
    let mut c = cargo();
    c.args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]);
    run("cargo clippy", c)?;
    // The end-to-end tests run this binary.
    let mut c = cargo();
    c.args(["build", "-p", "unisono-server", "--bin", "unisono"]);
    run("build the unisono binary", c)?;
    // The Socket.IO and browser tests drive real npm clients (socket.io-client, ws).
    ensure_node_modules()?;
    ensure_schemathesis()?;
    // Tests that need a local service (PostgreSQL, Redis) are `#[ignore]`d, so that a plain `cargo test`
    // never reports them as passed without running them. Here they run whenever the service is
    // up, and always under CI=true, where a missing service fails them.
    let mut c = cargo();
    c.args(["test", "--workspace", "--no-fail-fast"]);
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let missing: Vec<&str> = SERVICES.iter().filter(|(_, addr)| !service_up(addr)).map(|(name, _)| *name).collect();
    if ci || missing.is_empty() {
        c.args(["--", "--include-ignored"]);
        run("cargo test --workspace (with the PostgreSQL and Redis tests)", c)?;
    } else {
        run("cargo test --workspace", c)?;
        eprintln!(
            "\n==> SKIPPED the tests that need {}: not reachable (CI=true makes this a failure)",
            missing.join(", ")
        );
    }
    // The same core compiled to wasm, run in Node: the test vectors must match bit for bit.
    ensure_wasm_bindgen_cli()?;
    if Command::new("node").arg("--version").output().is_err() {
        bail!("node is needed to run the wasm tests (apt-get install nodejs)");
    }
    run("core's whole suite compiled to wasm, in Node (wasm-bindgen-test)", wasm_test(&["-p", "unisono-core"], false))?;
    run("wasm-pkg tests in Node (wasm-bindgen-test)", wasm_test(&["-p", "unisono", "--test", "node"], false))?;
    browser_test()?;
    // Every parser of network and peer input, briefly: a regression shows (fuzz/regressions).
    fuzz::fuzz(&fuzz::Options { secs: 10, jobs: 2, targets: fuzz::TARGETS.iter().map(|t| (*t).to_owned()).collect() })
}

/// Local services some tests need: (name, address).
const SERVICES: &[(&str, &str)] =
    &[("PostgreSQL at 127.0.0.1:5432", "127.0.0.1:5432"), ("Redis at 127.0.0.1:6379", "127.0.0.1:6379")];

/// True when something accepts TCP connections at `addr`.
fn service_up(addr: &str) -> bool {
    addr.parse().is_ok_and(|a| std::net::TcpStream::connect_timeout(&a, std::time::Duration::from_secs(1)).is_ok())
}

/// `node SCRIPT ARGS…` from the repository root.
fn node_script<S: AsRef<std::ffi::OsStr>>(script: &str, args: &[S]) -> Command {
    let mut c = Command::new("node");
    c.current_dir(root()).arg(script).args(args);
    c
}

/// The JavaScript-facing tests: the packed npm tarball installed into a temp project and used
/// from plain Node (`require` and `import`: a full room session against the binary, every test
/// vector) and through webpack (`tests/npm/run.mjs`), the small reconnect storm and the 2-minute
/// soak (`benches/storm`, `benches/soak`), the wasm-pkg tests (test vectors) in
/// headless Chromium, and the browser end-to-end test (`tests/browser/sync.mjs`: the built web
/// app in two Chromium pages) against the debug binary. Chromium needs Debian's `chromium` and
/// `chromium-driver` (`.ci/run` installs them); without them those steps are skipped loudly,
/// except under `CI=true`, where they fail.
fn browser_test() -> Result<()> {
    let packed = npm::pack()?;
    for (dir, raw, gz) in &packed.wasm_sizes {
        eprintln!("npm package {dir}/unisono_bg.wasm: {raw} bytes raw, {gz} bytes gzip -9");
        if *gz > npm::WASM_GZIP_BUDGET {
            bail!(
                "npm package {dir}/unisono_bg.wasm is {gz} bytes gzip -9, over its budget of {} \
                 (docs/benchmarks.md, \"npm package size\", says where the bytes go)",
                npm::WASM_GZIP_BUDGET
            );
        }
    }
    let mut c = Command::new("node");
    c.current_dir(root())
        .arg("tests/npm/run.mjs")
        .arg("--tarball")
        .arg(&packed.tarball)
        .args(["--bin", "target/debug/unisono"]);
    run("the packed npm tarball in a temp project: Node (require, import) and webpack", c)?;
    // The reconnect storm, small: every client back in its room after SIGTERM and kill -9.
    let c = node_script(
        "benches/storm/storm.mjs",
        &[
            "--ws",
            "200",
            "--sio",
            "100",
            "--rooms",
            "20",
            "--timeout-secs",
            "30",
            "--assert",
            "--server-bin",
            "target/debug/unisono",
        ],
    );
    run("reconnect storm (300 clients, SIGTERM and kill -9; benches/storm)", c)?;
    // The soak, short: no errors, tasks, file descriptors and RSS not growing under steady
    // load with connections dropped every 2 s.
    let c =
        node_script("benches/soak/soak.mjs", &["--minutes", "2", "--assert", "--server-bin", "target/debug/unisono"]);
    run("soak, 2 minutes (rooms, devices, admins, drops; benches/soak)", c)?;
    if !Path::new("/usr/bin/chromium").exists() || !Path::new("/usr/bin/chromedriver").exists() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            bail!("chromium or chromedriver is missing (apt-get install -y chromium chromium-driver)");
        }
        eprintln!("\n==> SKIPPED Chromium tests: /usr/bin/chromium or /usr/bin/chromedriver not found");
        return Ok(());
    }
    run("core's whole suite compiled to wasm, in headless Chromium", wasm_test(&["-p", "unisono-core"], true))?;
    run("wasm-pkg tests (test vectors) in headless Chromium", wasm_test(&["-p", "unisono", "--test", "node"], true))?;
    build_web()?;
    sync_test("browser end-to-end (two Chromium pages in one room)", &[])?;
    sync_test("browser end-to-end behind a 50 ± 20 ms proxy", &["--delay", "50", "--jitter", "20"])?;
    // YouTube songs through the IFrame Player API (answered by a stand-in: no internet here).
    run("browser end-to-end (a YouTube song in two pages)", browser_script("youtube.mjs"))?;
    // Spotify songs through the Web Playback SDK and the Web API (stand-ins, as for YouTube).
    run("browser end-to-end (a Spotify track in two pages)", browser_script("spotify.mjs"))?;
    // The admin dashboard against a fake Socket.IO device.
    run("browser end-to-end (admin dashboard, fake device)", browser_script("admin.mjs"))
}

/// `cargo test --target wasm32-unknown-unknown ARGS` run by wasm-bindgen-test-runner: in Node,
/// or in headless Chromium through Debian's chromedriver.
fn wasm_test(args: &[&str], chromium: bool) -> Command {
    let mut c = cargo();
    c.arg("test")
        .args(args)
        .args(["--target", "wasm32-unknown-unknown"])
        .env("PATH", tool_path())
        .env("CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER", "wasm-bindgen-test-runner");
    if chromium {
        c.env("WASM_BINDGEN_USE_BROWSER", "1").env("CHROMEDRIVER", "/usr/bin/chromedriver");
    }
    c
}

/// `node tests/browser/SCRIPT --bin target/debug/unisono` (the built app in `dist/`).
fn browser_script(script: &str) -> Command {
    node_script(&format!("tests/browser/{script}"), &["--bin", "target/debug/unisono"])
}

/// Runs `tests/browser/sync.mjs` with its precision targets enforced (`--strict`). A run that
/// fails is run once more and both results stay in the log: on this 2-core machine a single
/// run can lose its CPU to a neighbour, and the figure then measures the machine, not the sync.
fn sync_test(what: &str, extra: &[&str]) -> Result<()> {
    let attempt = || {
        let mut c = browser_script("sync.mjs");
        c.arg("--strict").args(extra);
        run(what, c)
    };
    attempt().or_else(|e| {
        eprintln!("\n==> {what} failed ({e:#}); running it once more");
        attempt()
    })
}

/// trunk builds the web app; 0.22 needs a newer rustc than ours.
const TRUNK: &str = "0.21.14";

fn ensure_trunk() -> Result<()> {
    ensure_cargo_tool("trunk", "trunk", TRUNK, true, "builds the web app; about 6 minutes, once")
}

/// PATH with `node_modules/.bin` (wasm-opt 132 from npm binaryen: Debian's is too old) and
/// cargo's bin folder first, so trunk runs offline with the pinned tools.
fn tool_path() -> std::ffi::OsString {
    let cargo_bin = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .map(|p| p.join("bin"));
    let mut dirs = vec![root().join("node_modules/.bin")];
    dirs.extend(cargo_bin);
    dirs.extend(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()));
    std::env::join_paths(dirs).unwrap_or_default()
}

/// Builds the Yew app into `dist/` (trunk, offline, release profile `web-release`).
fn build_web() -> Result<()> {
    ensure_wasm_target()?;
    ensure_wasm_bindgen_cli()?;
    ensure_trunk()?;
    if !root().join("node_modules/.bin/wasm-opt").exists() {
        let mut c = Command::new("npm");
        c.current_dir(root()).arg("install");
        run("npm install (wasm-opt for the web build)", c)?;
    }
    let mut c = Command::new("trunk");
    c.current_dir(root()).env("PATH", tool_path()).args(["build", "--release"]);
    run("build the web app (trunk → dist/)", c)
}

fn serve(args: &[String]) -> Result<()> {
    build_web()?;
    let mut c = cargo();
    c.args(["run", "--release", "-p", "unisono-server", "--bin", "unisono", "--", "serve"]);
    if !args.iter().any(|a| a.starts_with("--web-dir")) {
        c.arg("--web-dir").arg(root().join("dist"));
    }
    c.args(args);
    run("unisono serve", c)
}

fn bench(args: &[String]) -> Result<()> {
    let mut c = cargo();
    c.args(["build", "--release", "-p", "unisono-server", "-p", "unisono-bench"]);
    run("build release binaries", c)?;
    let mut c = Command::new(root().join("target/release/unisono-bench"));
    c.current_dir(root()).args(args);
    run("unisono-bench", c)
}

/// The Socket.IO device benchmark: a Node load generator (`benches/sio/`), since the devices
/// must be real `socket.io-client`s. `run.mjs` starts the server(s) itself.
fn bench_sio_devices(args: &[String]) -> Result<()> {
    let mut c = cargo();
    c.args(["build", "--release", "-p", "unisono-server", "--bin", "unisono"]);
    run("build the release server", c)?;
    if !root().join("node_modules/socket.io-client").is_dir() {
        let mut c = Command::new("npm");
        c.current_dir(root()).args(["ci", "--no-audit", "--no-fund"]);
        run("npm ci (socket.io, socket.io-client)", c)?;
    }
    run("benches/sio/run.mjs", node_script("benches/sio/run.mjs", args))
}

/// `cargo xtask cluster`: three nodes on 127.0.0.1:8081-8083 against the local Redis and
/// PostgreSQL (database `unisono_cluster`, created if missing), sharing one JWT secret kept in
/// `data/cluster/jwt-secret`; prints their addresses and an admin token, and stops them all on
/// Ctrl-C or when one exits.
fn cluster(args: &[String]) -> Result<()> {
    let mut c = cargo();
    c.args(["build", "--release", "-p", "unisono-server", "--bin", "unisono"]);
    run("build the release server", c)?;
    for (name, addr) in SERVICES {
        if !service_up(addr) {
            bail!("{name} is needed for the local cluster");
        }
    }
    let db = "unisono_cluster";
    let exists = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-Atc",
            &format!("SELECT 1 FROM pg_database WHERE datname = '{db}'"),
        ])
        .output()
        .context("psql (the PostgreSQL client) is needed")?;
    if !String::from_utf8_lossy(&exists.stdout).contains('1') {
        let mut c = Command::new("psql");
        c.args(["-h", "127.0.0.1", "-U", "postgres", "-c", &format!("CREATE DATABASE {db}")]);
        run("create the cluster's database", c)?;
    }
    let dir = root().join("data/cluster");
    std::fs::create_dir_all(&dir)?;
    let secret_file = dir.join("jwt-secret");
    if !secret_file.exists() {
        let mut bytes = [0u8; 32];
        std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut bytes)?;
        let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        std::fs::write(&secret_file, secret)?;
    }
    let secret = std::fs::read_to_string(&secret_file)?.trim().to_owned();
    let bin = root().join("target/release/unisono");
    let mut children = Vec::new();
    for (i, name) in ["node-a", "node-b", "node-c"].iter().enumerate() {
        let listen = format!("127.0.0.1:{}", 8081 + i);
        let child = Command::new(&bin)
            .args(["serve", "--listen", &listen, "--node-id", name])
            .arg("--data-dir")
            .arg(dir.join(name))
            .arg("--web-dir")
            .arg(root().join("dist"))
            .args(["--database-url", &format!("postgres://postgres@127.0.0.1:5432/{db}")])
            .args(["--redis-url", "redis://127.0.0.1:6379", "--jwt-secret", &secret])
            .args(args)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        eprintln!("{name}: http://{listen}");
        children.push(child);
    }
    let token = Command::new(&bin)
        .args(["token", "--jwt-secret", &secret, "--tenant", "default", "--role", "admin", "--sub", "local"])
        .output()?;
    eprintln!(
        "admin token (tenant default): {}\nstatus: curl -H \"Authorization: Bearer $TOKEN\" http://127.0.0.1:8081/api/cluster",
        String::from_utf8_lossy(&token.stdout).trim()
    );
    // Until one node exits (or Ctrl-C, which reaches every child of the terminal).
    loop {
        for c in &mut children {
            if let Some(status) = c.try_wait()? {
                eprintln!("a node exited ({status}); stopping the others");
                for other in &mut children {
                    let _ = other.kill();
                    let _ = other.wait();
                }
                return Ok(());
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test(),
        Some("serve") => serve(&args[1..]),
        Some("web") => build_web(),
        Some("npm-pack") => npm::npm_pack(),
        Some("bench") if args.get(1).map(String::as_str) == Some("sio-devices") => bench_sio_devices(&args[2..]),
        Some("bench") => bench(&args[1..]),
        Some("cluster") => cluster(&args[1..]),
        Some("fuzz") => fuzz::Options::parse(&args[1..]).and_then(|o| fuzz::fuzz(&o)),
        _ => {
            eprintln!(
                "usage: cargo xtask <serve [ARGS…] | web | npm-pack | test | bench [ARGS…] | cluster [ARGS…] | fuzz [--secs N] [--jobs J] [TARGET…]>"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}
