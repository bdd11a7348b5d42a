//! pasta between a test's "host" namespace and a guest namespace, the set-up
//! of the suites that move streams through it (`tcp_ns`, `splice_ns`,
//! `hostile_ns`, `offload_ns`).
//!
//! The host namespace is [`Netns::host`]; the guest namespace belongs to a
//! user namespace of the test user ([`UserNetns`]), which pasta, run as the
//! test user in the host namespace, joins (`--userns`, `--netns`) with
//! `--config-net`. The test's own sockets are made by threads that enter
//! either namespace ([`in_ns`]), so both ends of a connection are in the
//! test's process.

#![allow(dead_code)]

use crate::ns_support::*;
use crate::stream_support::{cpu_ticks, cpu_time, in_ns};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

/// What "configured" means before [`Pasta::start_with`] returns.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ready {
    /// The host's IPv4 and (non-tentative) IPv6 addresses and the default
    /// routes.
    Dual,
    /// The host's IPv4 address and the IPv4 default route.
    V4,
}

/// A host namespace, a guest namespace, and pasta connecting them. Dropped
/// in order: pasta first, then the namespaces and the scratch directory.
pub(crate) struct Pasta {
    pub(crate) p: Proc,
    pub(crate) g: UserNetns,
    pub(crate) h: Netns,
    pub(crate) dir: Scratch,
    /// pasta's PID, from its PID file (see [`Pasta::pid`]).
    pid: u32,
}

impl Pasta {
    /// pasta's PID, from its PID file.
    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// pasta with `--config-net` and `extra` options; returns once the
    /// guest has its IPv4 and (non-tentative) IPv6 addresses and routes.
    pub(crate) fn start(tag: &str, extra: &[&str]) -> Pasta {
        Pasta::start_with(tag, &[], extra, Ready::Dual)
    }

    /// pasta with `--config-net` and `extra` options, its command line
    /// behind `prefix` (run as root before the switch to the test user,
    /// such as `prlimit`); returns once the guest is configured as `ready`
    /// says, or at once with `--splice-only` (no interface to wait for).
    pub(crate) fn start_with(tag: &str, prefix: &[&str], extra: &[&str], ready: Ready) -> Pasta {
        Pasta::start_in(Netns::host(tag), tag, prefix, extra, ready)
    }

    /// [`Pasta::start_with`] in a host namespace the caller built, with
    /// the addresses and default routes of [`Netns::host`] (the readiness
    /// check looks for them) on an interface of its choice.
    pub(crate) fn start_in(
        h: Netns,
        tag: &str,
        prefix: &[&str],
        extra: &[&str],
        ready: Ready,
    ) -> Pasta {
        let g = UserNetns::new(&format!("{tag}g"));
        let dir = Scratch::new(tag);
        let pidf = dir.join("pasta.pid");
        let mut pre: Vec<String> = prefix.iter().map(|a| a.to_string()).collect();
        pre.extend(as_test_user());
        let userns = g.userns_path().display().to_string();
        let mut args = vec!["-f", "--config-net"];
        args.extend(extra);
        args.extend(["--userns", &userns, "--netns", &g.name]);
        let p = h.start_ready(pre, &bin("pasta"), &pidf, dir.join("pasta.log"), &args);
        let pid = read_pid(&pidf);
        if !extra.contains(&"--splice-only") {
            let (script, v6) = match ready {
                Ready::Dual => (
                    "ip -o addr show; ip -4 route show default; ip -6 route show default",
                    true,
                ),
                Ready::V4 => ("ip -o -4 addr show; ip -4 route show default", false),
            };
            let configured = eventually(10, || {
                let a = g.sh(script);
                (a.contains(HOST_IP4)
                    && (!v6 || (a.contains(HOST_IP6) && !a.contains("tentative")))
                    && a.contains("default via"))
                .then_some(())
            });
            assert!(configured.is_some(), "guest not configured: {}", p.output());
        }
        Pasta { p, g, h, pid, dir }
    }

    /// Sets `/proc/sys/KEY` (e.g. `net/ipv4/tcp_timestamps`) in the guest's
    /// network namespace.
    pub(crate) fn guest_sysctl(&self, key: &str, value: &str) {
        let path = format!("/proc/sys/{key}");
        in_ns(&self.g, || std::fs::write(&path, value)).expect(key);
    }

    pub(crate) fn listen_host(&self, addr: SocketAddr) -> TcpListener {
        in_ns(&self.h, || TcpListener::bind(addr).expect("host listener"))
    }

    pub(crate) fn listen_guest(&self, addr: SocketAddr) -> TcpListener {
        in_ns(&self.g, || TcpListener::bind(addr).expect("guest listener"))
    }

    pub(crate) fn connect_guest(&self, addr: SocketAddr) -> std::io::Result<TcpStream> {
        in_ns(&self.g, || {
            TcpStream::connect_timeout(&addr, Duration::from_secs(10))
        })
    }

    pub(crate) fn connect_host(&self, addr: SocketAddr) -> std::io::Result<TcpStream> {
        in_ns(&self.h, || {
            TcpStream::connect_timeout(&addr, Duration::from_secs(10))
        })
    }

    /// Open descriptors of pasta.
    pub(crate) fn fds(&self) -> usize {
        open_fds(self.pid)
    }

    /// pasta's CPU time so far (user + system), from `/proc/PID/stat`.
    pub(crate) fn cpu(&self) -> Duration {
        cpu_time(self.pid)
    }

    /// pasta's CPU time so far, in clock ticks.
    pub(crate) fn cpu_ticks(&self) -> u64 {
        cpu_ticks(self.pid)
    }
}

/// Open descriptors of process `pid` (0 once it is gone).
pub(crate) fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Each interface in a `/proc/net/dev` text, with the counters after its
/// name: receive bytes, packets, errors, drops and four more, then the
/// same for transmit from the ninth on.
pub(crate) fn net_dev(text: &str) -> Vec<(String, Vec<u64>)> {
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(name, v)| {
            let v = v.split_whitespace().filter_map(|x| x.parse().ok());
            (name.trim().to_string(), v.collect())
        })
        .collect()
}
