//! The stress test as part of the suite, on DATABASE_URL and FLASH_CACHE_URL
//! (SQLite + in-process by default; several processes with a server cache).
//! The lease-less variant must find stale entries: the checks can fail.

use std::process::Command;

fn stress(extra: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_flash"))
        .args([
            "stress",
            "--ops",
            "6000",
            "--readers",
            "12",
            "--writers",
            "3",
            "--fill-delay-ms",
            "10",
        ])
        .args(extra)
        .output()
        .expect("run flash stress");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn stale_found(text: &str) -> u64 {
    text.lines()
        .find_map(|l| l.trim().strip_prefix("stale entries found: "))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no verdict in the output:\n{text}"))
}

// One test, two runs in sequence: each run is several processes already.
#[test]
fn stress_finds_no_stale_entries_and_the_lease_less_variant_does() {
    let (ok, text) = stress(&[]);
    assert!(ok, "{text}");
    assert_eq!(stale_found(&text), 0, "{text}");
    assert!(
        text.contains("burst of 1000 misses on one key: 1\n"),
        "{text}"
    );

    let (ok, text) = stress(&["--no-leases", "--expect-stale"]);
    assert!(ok, "{text}");
    assert!(
        stale_found(&text) > 0,
        "the checks must be able to fail:\n{text}"
    );
}
