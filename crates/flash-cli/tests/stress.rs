//! The stress test as part of the suite, on DATABASE_URL and FLASH_CACHE_URL
//! (SQLite + in-process by default; several processes with a server cache).
//! The lease-less variant must find stale entries: the checks can fail. So
//! must the variant without capture, whose foreign writers (raw SQL, plain
//! SeaORM) nothing invalidates.

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

fn differing_entries(text: &str) -> u64 {
    text.lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("(a) cached entries that differ from the database: ")
        })
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no check (a) in the output:\n{text}"))
}

// One test, three runs in sequence: each run is several processes already.
#[test]
fn stress_finds_no_stale_entries_and_the_lease_less_and_capture_less_variants_do() {
    // With one foreign writer per process (the default): capture must leave
    // nothing stale, and their staleness must stay within the bound.
    let (ok, text) = stress(&[]);
    assert!(ok, "{text}");
    assert_eq!(stale_found(&text), 0, "{text}");
    assert_eq!(differing_entries(&text), 0, "{text}");
    assert!(text.contains(": 0 over the bound"), "{text}");
    assert!(
        text.contains("burst of 1000 misses on one key: 1\n"),
        "{text}"
    );

    // Without leases, and without capture, whose re-application of every
    // write's record a few milliseconds later removes the stale fills that
    // land before it (how many do depends on the machine's load).
    let (ok, text) = stress(&[
        "--no-leases",
        "--no-capture",
        "--foreign-writers",
        "0",
        "--expect-stale",
    ]);
    assert!(ok, "{text}");
    assert!(
        stale_found(&text) > 0,
        "the checks must be able to fail:\n{text}"
    );

    // Without capture, what the foreign writers wrote stays cached.
    let (ok, text) = stress(&["--no-capture", "--foreign-writers", "1", "--expect-stale"]);
    assert!(ok, "{text}");
    assert!(
        differing_entries(&text) > 0,
        "foreign writes without capture must leave stale entries:\n{text}"
    );
}
