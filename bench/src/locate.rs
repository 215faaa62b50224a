//! Finding (and, when needed, building) the `vsmmud` under test, and the
//! workspace paths the report goes to.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

/// The workspace root: the parent of this crate's manifest directory when
/// it still exists (a run from the source tree), else the current directory.
pub fn workspace_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    if root.join("Cargo.toml").is_file() {
        root.canonicalize().unwrap_or(root)
    } else {
        std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."))
    }
}

/// `target/vsmmu-bench.json` at the workspace root.
pub fn default_json_path() -> PathBuf {
    workspace_root().join("target").join("vsmmu-bench.json")
}

/// The `vsmmud` to measure: `explicit` (`--vsmmud`), else `$VSMMUD_BIN`,
/// else the one next to this executable (`target/<profile>/vsmmud`).
///
/// The default one is built with cargo, in the same profile and target
/// directory as this executable, when it is missing, and also when this
/// process runs under `cargo run` (so a stale server is never measured; an
/// up-to-date build is a no-op). `build = false` never runs cargo.
pub fn vsmmud(explicit: Option<PathBuf>, build: bool) -> anyhow::Result<PathBuf> {
    let given = explicit.or_else(|| std::env::var_os("VSMMUD_BIN").map(PathBuf::from));
    if let Some(p) = given {
        if !p.is_file() {
            bail!("vsmmud binary {} does not exist", p.display());
        }
        return Ok(p);
    }
    let exe = std::env::current_exe().context("current_exe")?;
    let dir = exe
        .parent()
        .context("this executable has no parent directory")?;
    let bin = dir.join("vsmmud");
    let under_cargo = std::env::var_os("CARGO").is_some();
    if build && (under_cargo || !bin.is_file()) {
        if let Err(e) = cargo_build(dir) {
            if bin.is_file() {
                eprintln!(
                    "warning: rebuilding vsmmud failed ({e:#}); measuring the existing {}",
                    bin.display()
                );
            } else {
                return Err(e);
            }
        }
    }
    if !bin.is_file() {
        bail!(
            "{} is missing: build it with `cargo build --release -p vsmmu-server --bin vsmmud`, \
             or pass --vsmmud PATH",
            bin.display()
        );
    }
    Ok(bin)
}

/// `cargo build -p vsmmu-server --bin vsmmud` into `profile_dir`
/// (`<target-dir>/<profile>`, the directory of this executable).
fn cargo_build(profile_dir: &Path) -> anyhow::Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    let target_dir = profile_dir
        .parent()
        .context("executable directory has no parent")?;
    let profile = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .context("executable directory name")?;
    let manifest = workspace_root().join("Cargo.toml");
    let mut cmd = Command::new(&cargo);
    cmd.arg("build")
        .arg("--quiet")
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target-dir")
        .arg(target_dir)
        .args(["-p", "vsmmu-server", "--bin", "vsmmud"]);
    match profile {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    eprintln!("building vsmmud ({profile}) with cargo ...");
    let status = cmd
        .status()
        .with_context(|| format!("running {}", Path::new(&cargo).display()))?;
    if !status.success() {
        bail!("`cargo build -p vsmmu-server --bin vsmmud` failed: {status}");
    }
    Ok(())
}
