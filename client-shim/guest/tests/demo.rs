//! The README's main job, small: the demo runs end to end against the real
//! `vsmmud` under the default seccomp filter and its accounting balances.

use std::process::Command;

use vsmmu_tests::vsmmud_bin;

#[test]
fn demo_balances() {
    // Cargo builds the demo for this test.
    let out = Command::new(env!("CARGO_BIN_EXE_vsmmu-demo"))
        .args(["--dmas", "4000", "--vsmmud"])
        .arg(vsmmud_bin())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed: {text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("(seccomp mode 2: filter on)"), "{text}");
    assert!(text.contains("accounting balances"), "{text}");
    // The storm overflowed both queues and the guest was told.
    assert!(
        text.contains("arm-smmu-v3: EVTQ overflow detected -- events lost"),
        "{text}"
    );
    for kind in ["F_TRANSLATION", "F_PERMISSION", "F_ACCESS"] {
        assert!(text.contains(kind), "no {kind} in {text}");
    }
}
