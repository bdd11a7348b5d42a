//! A vhost-user guest that reboots and reconnects: passt serves each
//! round of the same guest.

use super::*;

/// Port of the host server that tells the guest of `rounds.sh` what to do
/// after a round.
const CTL_PORT: u16 = 6101;

/// Bytes each way in a round.
const ROUND_BYTES: usize = 8 << 20;

/// One round of `tests/vm/rounds.sh` (one boot), its marks from the
/// `from`-th on: the lease, ping, data out and in with their checksums.
/// Returns the index after the round's last mark.
fn round(h: &Netns, dir: &Scratch, vm: &mut Vm, from: usize, n: u32) -> usize {
    let out = dir.join(&format!("round_out{n}"));
    let mut rcv = socat_recv(
        h,
        dir,
        &format!("round_out{n}"),
        format!("TCP4-LISTEN:{TCP_OUT4},bind=127.0.0.1,reuseaddr"),
        &out,
    );
    let (i, lease) = vm.wait_mark_from("round", from, 300);
    assert_eq!(
        field(&lease, "ip").as_deref(),
        Some(HOST_IP4),
        "round {n}: {lease}"
    );
    let (_, p) = vm.wait_mark_from("round_ping", i, 60);
    assert_eq!(field(&p, "replies").as_deref(), Some("3"), "round {n}: {p}");
    let (_, o) = vm.wait_mark_from("round_out", i, 300);
    let st = rcv.wait_exit(60);
    assert!(st.success(), "round {n}: receiver: {}", rcv.output());
    assert_eq!(
        field(&o, "bytes"),
        Some(ROUND_BYTES.to_string()),
        "round {n}"
    );
    assert_eq!(
        field(&o, "sha"),
        Some(sha256(&out)),
        "round {n}: guest → host"
    );
    vm.wait_mark_from("round_listen", i, 60);
    let data = dir.join(&format!("round_in{n}"));
    let head = dir.join(&format!("round_in{n}.head"));
    random_files(&data, ROUND_BYTES, &head, 1);
    socat_send(h, &data, format!("TCP4:127.0.0.1:{TCP_IN4}"), 300);
    let (_, got) = vm.wait_mark_from("round_in", i, 300);
    assert_eq!(
        field(&got, "bytes"),
        Some(ROUND_BYTES.to_string()),
        "round {n}"
    );
    assert_eq!(
        field(&got, "sha"),
        Some(sha256(&data)),
        "round {n}: host → guest"
    );
    let (j, _) = vm.wait_mark_from("round_next", i, 60);
    j + 1
}

/// passt with `--vhost-user` across a guest reboot and a new qemu: the guest
/// moves data both ways, reboots (the device is reset: its queues stopped
/// and set up again from scratch), does it again and powers off; then a
/// second qemu connects to the same passt and does it a third time.
#[test]
fn passt_vhost_user_reboot_and_reconnect() {
    let started = Instant::now();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let h = Netns::host("vmr");
    h.sh("sysctl -q -w net.ipv4.ping_group_range='0 2147483647'");
    let dir = Scratch::new("vmr");
    // What the guest does after a round: the content of this file.
    let next = dir.join("next");
    std::fs::write(&next, "reboot\n").expect("control file");
    let ctl = [
        "socat".to_string(),
        format!("TCP4-LISTEN:{CTL_PORT},bind=127.0.0.1,reuseaddr,fork"),
        format!("SYSTEM:cat {}", next.display()),
    ];
    let _ctl = peer(&h, &dir, "ctl", &ctl);
    let fwd = TCP_IN4.to_string();
    let passt = Passt::start(&h, &dir, &["-d", "-t", &fwd, "--vhost-user"]);
    let script = guest_script(
        "rounds.sh",
        &[
            ("DATA_BYTES", ROUND_BYTES.to_string()),
            ("TCP_IN4", TCP_IN4.to_string()),
            ("TCP_OUT4", TCP_OUT4.to_string()),
            ("CTL_PORT", CTL_PORT.to_string()),
        ],
    );
    let mut spec = VmSpec::new(Backend::VhostUser.nic(passt.sock.clone()), script);
    spec.reboot = true;
    spec.mem_mib = 512;

    let mut vm = Vm::start(&h, &dir, &spec);
    let from = round(&h, &dir, &mut vm, 0, 1);
    let (b, _) = vm.wait_mark_from("boot", from, 300);
    std::fs::write(&next, "exit\n").expect("control file");
    round(&h, &dir, &mut vm, b, 2);
    let st = vm.qemu.wait_exit(120);
    assert!(st.success(), "qemu: {st}");
    let t_reboot = started.elapsed();
    let log = passt.proc.output();
    // The reset stopped both queues (GET_VRING_BASE), and they ran again.
    for q in [0, 1] {
        let stops = log.matches(&format!("queue {q} stopped")).count();
        assert!(stops >= 1, "queue {q} never stopped: {log}");
    }

    // qemu is gone: passt waits for the next one, which gets a new device.
    let dir2 = Scratch::new("vmr2");
    let mut vm2 = Vm::start(&h, &dir2, &spec);
    round(&h, &dir, &mut vm2, 0, 3);
    let st = vm2.qemu.wait_exit(120);
    assert!(st.success(), "qemu: {st}");
    let mut passt = passt;
    passt.proc.assert_running();
    let log = passt.proc.output();
    assert_eq!(
        log.matches("vhost-user front-end connected").count(),
        2,
        "{log}"
    );
    eprintln!(
        "vm: vhost-user reboot and reconnect on {:?}; load before: {}; reboot part {:.0} s, \
         total {:.0} s; marks: {}; second qemu: {}",
        vm.accel,
        load.trim(),
        t_reboot.as_secs_f64(),
        started.elapsed().as_secs_f64(),
        vm.timeline_text(),
        vm2.timeline_text()
    );
}
