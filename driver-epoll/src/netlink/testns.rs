//! Throw-away network namespaces for tests (needs root).

use std::process::Command;

/// Runs `f` in a thread of its own, in a new network namespace that goes
/// away with the thread. `None` if namespaces can't be created here.
pub(crate) fn in_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    std::thread::spawn(move || {
        if let Err(e) = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET) {
            eprintln!("skipped: can't create a network namespace ({e})");
            return None;
        }
        Some(f())
    })
    .join()
    .expect("test thread panicked")
}

/// Asserts that `text` (an `ip` output, a summary) contains each of
/// `parts`.
pub(crate) fn assert_contains(text: &str, parts: &[&str]) {
    for p in parts {
        assert!(text.contains(p), "no {p:?} in: {text}");
    }
}

/// Runs an `ip` command line (in the calling thread's namespace).
pub(crate) fn ip(args: &str) {
    let out = Command::new("ip")
        .args(args.split_whitespace())
        .output()
        .expect("ip");
    assert!(
        out.status.success(),
        "ip {args}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Output of an `ip` command line.
pub(crate) fn ip_out(args: &str) -> String {
    let out = Command::new("ip")
        .args(args.split_whitespace())
        .output()
        .expect("ip");
    assert!(out.status.success(), "ip {args}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}
