//! The shim's C ABI as a C VMM uses it: `examples/vmm.c` is compiled with
//! `cc` against this crate's libraries and run against the real `vsmmud`;
//! its exit status and its `NAME=VALUE` lines are checked exactly.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use vsmmu_client::{Client, SpawnOptions};
use vsmmu_protocol::smmu::regs::IDR1_CMDQS;
use vsmmu_protocol::stats::Stats;
use vsmmu_tests::{vsmmud_bin, TempDir, TestServer};

/// This crate's directory (`client-shim/capi`).
fn crate_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `target/<profile>/deps`, where this test binary lives.
fn deps_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent().expect("deps dir").to_path_buf()
}

/// A library of this crate (`libvsmmu.a` or `.so`), built from the current
/// sources.
///
/// Cargo builds no staticlib or cdylib for a crate's own integration tests
/// (only an rlib, which this crate has not), so build the crate here,
/// once per test run, with the profile of this test, into a separate
/// target dir (so it never waits on a lock of the one in use).
fn shim_lib(file: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let out = BUILT.get_or_init(|| {
        let deps = deps_dir();
        let profile_dir = deps.parent().expect("profile dir");
        let profile = profile_dir
            .file_name()
            .and_then(|n| n.to_str())
            .expect("profile name");
        let target = profile_dir.parent().expect("target dir").join("c-abi");
        let mut cargo = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
        cargo
            .args(["build", "-p", "vsmmu-capi", "--profile"])
            .arg(if profile == "debug" { "dev" } else { profile })
            .arg("--manifest-path")
            .arg(crate_dir().join("Cargo.toml"))
            .arg("--target-dir")
            .arg(&target);
        let status = cargo.status().expect("run cargo build -p vsmmu-capi");
        assert!(status.success(), "cargo build -p vsmmu-capi failed");
        target.join(profile)
    });
    let p = out.join(file);
    assert!(p.exists(), "{} is missing after cargo build", p.display());
    p
}

/// How `vmm.c` links the shim.
enum Link {
    /// The staticlib, by path, with the system libraries Rust's std needs.
    Static,
    /// The cdylib via `-L`/`-l` and an rpath, as a VMM's build would.
    Dynamic,
}

/// Compiles `examples/vmm.c` into `dir` and returns the program.
fn build_vmm(dir: &Path, link: Link) -> PathBuf {
    let root = crate_dir();
    let out = dir.join("vmm");
    let mut cc = Command::new(std::env::var_os("CC").unwrap_or_else(|| "cc".into()));
    cc.args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-g", "-o"])
        .arg(&out)
        .arg(root.join("examples/vmm.c"))
        .arg("-I")
        .arg(root.join("include"));
    match link {
        Link::Static => {
            cc.arg(shim_lib("libvsmmu.a"));
            // `rustc --print native-static-libs` for linux-gnu.
            cc.args([
                "-lgcc_s",
                "-lutil",
                "-lrt",
                "-lpthread",
                "-lm",
                "-ldl",
                "-lc",
            ]);
        }
        Link::Dynamic => {
            let lib = shim_lib("libvsmmu.so");
            let lib_dir = lib.parent().expect("lib dir");
            cc.arg(format!("-L{}", lib_dir.display()))
                .arg("-lvsmmu")
                .arg(format!("-Wl,-rpath,{}", lib_dir.display()));
        }
    }
    let o = cc
        .output()
        .unwrap_or_else(|e| panic!("run cc (install gcc): {e}"));
    assert!(
        o.status.success(),
        "cc failed:\n{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

/// Runs the program (killed after 60 s) and returns (success, stdout, stderr).
fn run(prog: &Path, args: &[&std::ffi::OsStr], dir: &Path) -> (bool, String, String) {
    let (out, err) = (dir.join("stdout"), dir.join("stderr"));
    let mut child = Command::new(prog)
        .args(args)
        // `cargo test` points LD_LIBRARY_PATH at target dirs, which would
        // override the rpath (RUNPATH) the program was linked with.
        .env_remove("LD_LIBRARY_PATH")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).expect("stdout file"))
        .stderr(std::fs::File::create(&err).expect("stderr file"))
        .spawn()
        .expect("run vmm");
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait vmm") {
            break s;
        }
        if t0.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "vmm hung: {}",
                std::fs::read_to_string(&err).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    (status.success(), read(&out), read(&err))
}

/// IDR0, IDR1, IIDR and AIDR as a Rust client reads them from a fresh server.
fn id_registers() -> [u32; 4] {
    let mut c = Client::spawn(&SpawnOptions::new(vsmmud_bin())).expect("spawn vsmmud");
    c.negotiate(true).expect("negotiate");
    let ids = [0x0, 0x4, 0x18, 0x1c].map(|off| c.read32(off).expect("read id register"));
    c.close().expect("close");
    ids
}

/// The lines `vmm.c` must print for the probe scenario, with `stats=` last
/// (its value is checked apart).
fn probe_lines(mode: &str) -> Vec<String> {
    let [idr0, idr1, iidr, aidr] = id_registers();
    let log2 = IDR1_CMDQS.get32(idr1).min(8);
    vec![
        format!("mode={mode}"),
        format!("IDR0={idr0:#010x}"),
        format!("IDR1={idr1:#010x}"),
        format!("IIDR={iidr:#010x}"),
        format!("AIDR={aidr:#010x}"),
        "CR0ACK=0x00000000".into(),
        "CR1=0x00000d75".into(),
        "CR2=0x00000006".into(),
        "STRTAB_BASE=0x4000000040020000".into(),
        "STRTAB_BASE_CFG=0x00000005".into(),
        format!(
            "CMDQ_BASE={:#018x}",
            1u64 << 62 | 0x4001_0000 | u64::from(log2)
        ),
        "detach_unknown=-2".into(),
        "host_dev_id=1".into(),
        "stats=".into(),
        "alive=1".into(),
        "CR1_after_reset=0x00000000".into(),
        "invalidations=1 kind=1 iotlb=0/0".into(),
    ]
}

/// Checks the output line by line; the `stats=` line must be the server's
/// counters with nothing consumed yet.
fn check_output(stdout: &str, expected: &[String]) {
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), expected.len(), "output:\n{stdout}");
    for (got, want) in lines.iter().zip(expected) {
        if want == "stats=" {
            let json = got
                .strip_prefix("stats=")
                .unwrap_or_else(|| panic!("{got:?} is not stats"));
            let s = Stats::from_json(json.as_bytes()).expect("stats are the counters' JSON");
            // Every counter, by its wire name: the text is what `Stats` writes.
            assert_eq!(json.as_bytes(), s.to_json(), "{json}");
            assert_eq!(
                (
                    s.cmds_consumed,
                    s.guest_events_written,
                    s.host_events_read,
                    s.host_invalidate_calls
                ),
                (0, 0, 0, 0),
                "{json}"
            );
        } else {
            assert_eq!(got, want, "output:\n{stdout}");
        }
    }
}

/// `vmm VSMMUD`: spawns the server through `vsmmu_spawn`, probes, attaches,
/// reads stats, resets, closes; then spawns a second one, SIGKILLs it and
/// sees `vsmmu_server_alive` drop to 0 and the next call fail with -EPIPE.
#[test]
fn c_vmm_spawns_probes_and_survives_a_killed_server() {
    let dir = TempDir::new("c-abi-spawn");
    let vmm = build_vmm(dir.path(), Link::Static);
    let bin = vsmmud_bin();
    let (ok, stdout, stderr) = run(&vmm, &[bin.as_os_str()], dir.path());
    assert!(ok, "vmm failed:\n{stdout}\n{stderr}");
    let mut expected = probe_lines("spawn");
    expected.extend(
        [
            "alive_after_kill=0",
            "read_after_kill=-EPIPE",
            "result=PASS",
        ]
        .map(String::from),
    );
    check_output(&stdout, &expected);
}

/// `vmm --socket PATH` linked against the cdylib: the same probe against a
/// server listening on a socket path.
#[test]
fn c_vmm_connects_to_a_listening_server() {
    let dir = TempDir::new("c-abi-socket");
    let vmm = build_vmm(dir.path(), Link::Dynamic);
    let srv = TestServer::start(&[]);
    let (ok, stdout, stderr) = run(
        &vmm,
        &["--socket".as_ref(), srv.socket().as_os_str()],
        dir.path(),
    );
    assert!(
        ok,
        "vmm failed:\n{stdout}\n{stderr}\nserver log:\n{}",
        srv.log_text()
    );
    let mut expected = probe_lines("socket");
    expected.push("result=PASS".into());
    check_output(&stdout, &expected);
}
