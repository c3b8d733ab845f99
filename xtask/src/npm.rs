//! `cargo xtask npm-pack`: the `unisono` npm package, built and packed.
//!
//! wasm-pack builds `wasm-pkg` for its three targets (the cargo build is shared, only
//! wasm-bindgen runs three times); the outputs go side by side into one package directory,
//! `target/npm/unisono/`, whose `package.json` routes each consumer to its build, and `npm pack`
//! turns it into `target/npm/unisono-VERSION.tgz`:
//!
//! | consumer | condition | build |
//! |---|---|---|
//! | bundlers (webpack, Vite, esbuild, Rollup), whatever their target | `module` | `bundler/` (ES module importing the `.wasm`) |
//! | Node, `require` and `import` | `node` | `node/` (CommonJS, reads the `.wasm` from disk) |
//! | anything else | `default` | `bundler/` |
//! | `<script type="module">` without a bundler: `unisono/web` | | `web/` (ES module, `await init()`) |
//!
//! `module` comes before `node` because a bundler building for Node also sets `node`, and the
//! Node build (which reads `__dirname`) cannot be bundled. TypeScript finds `unisono.d.ts`
//! through `types`.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::{ensure_wasm_bindgen_cli, ensure_wasm_target, root, run, tool_path};

/// The wasm-pack that was tested with wasm-bindgen 0.2.130 (`--mode no-install`: never downloads).
const WASM_PACK: &str = "0.15.1";

/// (wasm-pack target, folder in the package, module type of that folder's `.js`).
const TARGETS: [(&str, &str, &str); 3] =
    [("bundler", "bundler", "module"), ("nodejs", "node", "commonjs"), ("web", "web", "module")];

/// What `npm-pack` produced.
pub struct Packed {
    pub tarball: PathBuf,
    /// Per target folder: the `.wasm` size, raw and gzip -9, in bytes.
    pub wasm_sizes: Vec<(&'static str, u64, u64)>,
}

fn ensure_wasm_pack() -> Result<()> {
    crate::ensure_cargo_tool("wasm-pack", "wasm-pack", WASM_PACK, true, "builds the npm package")
}

/// The package's `.wasm` budget, gzip -9 bytes (issue 3; docs/benchmarks.md). `cargo xtask test`
/// fails above it: the size is deterministic for the pinned toolchain, and every byte of it is
/// downloaded and compiled by every page that uses the package.
pub const WASM_GZIP_BUDGET: u64 = 40_000;

/// Builds the three targets, assembles the package and packs it.
pub fn pack() -> Result<Packed> {
    ensure_wasm_target()?;
    ensure_wasm_bindgen_cli()?;
    ensure_wasm_pack()?;
    // wasm-opt (wasm-pack runs it, see wasm-pkg/Cargo.toml) comes from npm's binaryen.
    crate::ensure_node_modules()?;
    let out = root().join("target/npm");
    let pkg = out.join("unisono");
    if pkg.exists() {
        fs::remove_dir_all(&pkg).with_context(|| format!("removing {}", pkg.display()))?;
    }
    for (target, dir, _) in TARGETS {
        let mut c = Command::new("wasm-pack");
        c.current_dir(root())
            .env("PATH", tool_path())
            // Size over speed for the package's wasm, as for the web app (`web-release`). Only
            // this wasm32 build sees these; the server's native release build keeps its own.
            .env("CARGO_PROFILE_RELEASE_OPT_LEVEL", "z")
            .env("CARGO_PROFILE_RELEASE_LTO", "true")
            .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "1")
            .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
            .args(["build", "wasm-pkg", "--mode", "no-install", "--release", "--target", target])
            .args(["--out-name", "unisono", "--out-dir"])
            .arg(pkg.join(dir))
            // No std in the package's wasm: the crate brings its own panic handler (lib.rs).
            .args(["--", "--no-default-features", "--features", "js,panic-handler"]);
        run(&format!("wasm-pack build --release --target {target}"), c)?;
    }
    // Name, version, description, licence and repository as wasm-pack derives them from Cargo.
    let generated: Value = serde_json::from_str(&fs::read_to_string(pkg.join("bundler/package.json"))?)
        .context("wasm-pack's package.json")?;
    for (_, dir, kind) in TARGETS {
        let dir = pkg.join(dir);
        for extra in ["README.md", ".gitignore", "LICENSE", "LICENSE-MIT", "LICENSE-APACHE"] {
            let _ = fs::remove_file(dir.join(extra));
        }
        // Only the module type: tells Node (and webpack) how to read the folder's `.js`.
        fs::write(dir.join("package.json"), format!("{{ \"type\": \"{kind}\" }}\n"))?;
        // wasm-bindgen's snippets (`js/adapters.js`) are ES modules; the CommonJS build
        // `require`s them, which Node does for ES modules from 20.19 (`require(esm)`).
        if kind == "commonjs" && dir.join("snippets").is_dir() {
            fs::write(dir.join("snippets/package.json"), "{ \"type\": \"module\" }\n")?;
        }
    }
    fs::copy(root().join("wasm-pkg/README.md"), pkg.join("README.md"))?;
    let manifest = manifest(&generated)?;
    serde_json::from_str::<Value>(&manifest).context("the assembled package.json is not JSON")?;
    fs::write(pkg.join("package.json"), manifest)?;

    let o = Command::new("npm")
        .current_dir(&pkg)
        .args(["pack", "--json", "--pack-destination"])
        .arg(&out)
        .output()
        .context("starting npm pack")?;
    if !o.status.success() {
        bail!("npm pack failed: {}", String::from_utf8_lossy(&o.stderr));
    }
    let packed: Value = serde_json::from_slice(&o.stdout).context("npm pack --json output")?;
    let name = packed[0]["filename"].as_str().context("npm pack: no filename")?;
    let mut wasm_sizes = Vec::new();
    for (_, dir, _) in TARGETS {
        let wasm = pkg.join(dir).join("unisono_bg.wasm");
        wasm_sizes.push((dir, fs::metadata(&wasm)?.len(), gzip_size(&wasm)?));
    }
    Ok(Packed { tarball: out.join(name), wasm_sizes })
}

/// The package's `package.json`. Written as text: `exports` conditions are matched in order.
fn manifest(g: &Value) -> Result<String> {
    let field = |k: &str| -> Result<String> {
        let v = g.get(k).with_context(|| format!("wasm-pack's package.json has no {k}"))?;
        Ok(serde_json::to_string(v)?)
    };
    let repository = match g.get("repository") {
        Some(r) => format!("\n  \"repository\": {},", serde_json::to_string(r)?),
        None => String::new(),
    };
    Ok(format!(
        r#"{{
  "name": {name},
  "version": {version},
  "description": {description},
  "license": {license},{repository}
  "keywords": ["sync", "playback", "websocket", "wasm", "webassembly"],
  "engines": {{ "node": "^20.19.0 || >=22.12.0" }},
  "files": ["bundler/", "node/", "web/", "README.md"],
  "main": "./node/unisono.js",
  "module": "./bundler/unisono.js",
  "types": "./bundler/unisono.d.ts",
  "sideEffects": ["./bundler/unisono.js", "./bundler/snippets/*"],
  "exports": {{
    ".": {{
      "types": "./bundler/unisono.d.ts",
      "module": "./bundler/unisono.js",
      "node": "./node/unisono.js",
      "default": "./bundler/unisono.js"
    }},
    "./web": {{
      "types": "./web/unisono.d.ts",
      "default": "./web/unisono.js"
    }},
    "./web/unisono_bg.wasm": "./web/unisono_bg.wasm",
    "./package.json": "./package.json"
  }}
}}
"#,
        name = field("name")?,
        version = field("version")?,
        description = field("description")?,
        license = field("license")?,
    ))
}

/// Size after `gzip -9`, what a server with static compression sends.
fn gzip_size(path: &Path) -> Result<u64> {
    let o = Command::new("gzip").args(["-9", "-c"]).arg(path).output().context("starting gzip")?;
    if !o.status.success() {
        bail!("gzip {} failed", path.display());
    }
    Ok(o.stdout.len() as u64)
}

/// `cargo xtask npm-pack`: the tarball's path on stdout, the `.wasm` sizes on stderr.
pub fn npm_pack() -> Result<()> {
    let p = pack()?;
    for (dir, raw, gz) in &p.wasm_sizes {
        eprintln!("{dir}/unisono_bg.wasm: {raw} bytes ({:.1} KB), gzip -9 {gz} bytes ({:.1} KB)", kb(*raw), kb(*gz));
    }
    println!("{}", p.tarball.display());
    Ok(())
}

fn kb(bytes: u64) -> f64 {
    bytes as f64 / 1000.0
}
