//! Starting as a normal user: the README's quick start, and start-up
//! failures that name the step and the object that failed.

use super::*;

/// The README's quick start as a normal user, and `pasta -- true`.
#[test]
fn readme_quick_start_as_a_normal_user() {
    let h = Netns::host("rlreadme");
    let out = h.user_pasta(&["--config-net"], &["ip", "address", "show"], 30);
    let text = ok_text(&out);
    assert!(text.contains(&format!("inet {HOST_IP4}/24")), "{text}");
    assert!(text.contains(&format!("inet6 {HOST_IP6}/64")), "{text}");
    for args in [&["--", "true"][..], &["--config-net", "--", "true"][..]] {
        let mut v = vec![s(&pasta())];
        v.extend(args.iter().map(|a| a.to_string()));
        let out = h.user_run(&v, 30);
        assert_eq!(
            out.status.code(),
            Some(0),
            "pasta {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Exit status 1 and a message naming the step and the object (no bare
/// error number).
fn fails_naming(out: &std::process::Output, code: i32, wants: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{err}");
    for w in wants {
        assert!(err.contains(w), "{w:?} in {err:?}");
    }
    assert!(!err.contains("os error"), "bare error number: {err}");
}

/// Without a tun device (an empty /dev/net in a mount namespace of its
/// own), pasta says which device it could not open.
#[test]
fn missing_tun_device_is_named() {
    let h = Netns::host("rltun");
    let mut v = vec![
        "unshare".to_string(),
        "--mount".into(),
        "--propagation".into(),
        "private".into(),
        "--".into(),
        "sh".into(),
        "-c".into(),
        "mount -t tmpfs none /dev/net && exec \"$@\"".into(),
        "sh".into(),
    ];
    v.extend(as_test_user());
    v.extend([
        s(&pasta()),
        "--config-net".into(),
        "--".into(),
        "true".into(),
    ]);
    let out = h.run(&v, 30);
    fails_naming(&out, 1, &["/dev/net/tun", "No such file or directory"]);
}

/// Start-up failures as an unprivileged user: each names what pasta was
/// doing and on what.
#[test]
fn start_up_failures_name_step_and_object() {
    let h = Netns::host("rlfail");
    let dir = Scratch::new("rlfail");
    let run = |args: &[String]| {
        let mut v = vec![s(&pasta())];
        v.extend(args.iter().cloned());
        h.user_run(&v, 30)
    };
    // A network namespace of root's: not the test user's to join (its
    // process's namespace files are not even the user's to open).
    let theirs = Netns::new("rlfailg");
    let holder = Proc::spawn(
        theirs.cmd(&["sleep", "60"]),
        "holder",
        dir.join("holder.log"),
    );
    let pid = holder.pid().to_string();
    let out = run(&["--config-net".into(), pid.clone()]);
    fails_naming(
        &out,
        1,
        &[
            &format!("network namespace of PID {pid}"),
            "Permission denied",
        ],
    );
    let out = run(&["--config-net".into(), "--netns".into(), s(&theirs.path())]);
    fails_naming(
        &out,
        1,
        &[
            &format!("joining the network namespace {}", theirs.path().display()),
            "--userns",
        ],
    );
    let out = run(&[
        "--config-net".into(),
        "--netns".into(),
        "/nonexistent/ns".into(),
    ]);
    fails_naming(
        &out,
        1,
        &[
            "opening the network namespace /nonexistent/ns",
            "No such file",
        ],
    );
    let out = run(&["--config-net".into(), (i32::MAX - 1).to_string()]);
    fails_naming(
        &out,
        1,
        &[&format!("PID {}", i32::MAX - 1), "no such process"],
    );
    let out = run(&[
        "-P".into(),
        "/nonexistent/pid".into(),
        "--".into(),
        "true".into(),
    ]);
    fails_naming(&out, 1, &["creating the PID file /nonexistent/pid"]);
    let out = run(&[
        "-p".into(),
        "/nonexistent/x.pcap".into(),
        "--".into(),
        "true".into(),
    ]);
    fails_naming(&out, 1, &["creating the capture file /nonexistent/x.pcap"]);
    // The command itself: its status, as a shell's.
    let out = run(&["--".into(), "/nonexistent/cmd".into()]);
    fails_naming(&out, 127, &["running /nonexistent/cmd", "No such file"]);
}
