//! The manual page and shell completions, generated from the option table
//! in `cli/mod.rs` so that they cannot drift from what the parser accepts.
//!
//! `passt --print-manpage` and `pasta --print-manpage` print a page in
//! man(7) format with upstream's sections (NAME, SYNOPSIS, DESCRIPTION,
//! OPTIONS with the options of this program only in a subsection of their
//! own, EXAMPLES, NOTES, LIMITATIONS, AUTHORS, REPORTING BUGS, COPYRIGHT,
//! SEE ALSO); `--print-completions SHELL` prints a completion script for
//! bash, zsh, fish, elvish or PowerShell. Both options are hidden from the
//! help. The README shows how to install them.

use crate::cli::{command, Mode, PASST_ONLY, PASTA_ONLY};
use clap_mangen::roff::{bold, italic, roman, Roff};
use clap_mangen::Man;

/// The option table of `mode` with only the arguments `keep` says yes to
/// visible.
fn only(mode: Mode, keep: impl Fn(&str) -> bool) -> clap::Command {
    let mut cmd = command(mode);
    let ids: Vec<String> = cmd
        .get_arguments()
        .map(|a| a.get_id().as_str().to_string())
        .collect();
    for id in ids {
        if !keep(&id) {
            cmd = cmd.mut_arg(id, |a| a.hide(true));
        }
    }
    cmd
}

/// The OPTIONS section of `cmd` as clap_mangen renders it, with its heading
/// replaced by `heading` (a subsection when `sub`).
fn options(cmd: clap::Command, heading: &str, sub: bool) -> String {
    let mut out = Vec::new();
    // Writing to a vector cannot fail.
    let _ = Man::new(cmd).render_options_section(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let mac = if sub { ".SS" } else { ".SH" };
    text.replacen(".SH OPTIONS", &format!("{mac} \"{heading}\""), 1)
}

fn para(r: &mut Roff, text: &str) {
    r.control("PP", []).text([roman(text)]);
}

/// The manual page of `mode`.
pub(crate) fn man_page(mode: Mode) -> String {
    let name = mode.name();
    let own: &[(&str, &str)] = match mode {
        Mode::Passt => PASST_ONLY,
        Mode::Pasta => PASTA_ONLY,
    };
    let is_own = |id: &str| own.iter().any(|(o, _)| *o == id);
    let mode_only = |id: &str| {
        PASST_ONLY.iter().any(|(o, _)| *o == id) || PASTA_ONLY.iter().any(|(o, _)| *o == id)
    };
    let cmd = command(mode);
    let man = Man::new(cmd.clone())
        .title(name.to_uppercase())
        .section("1")
        .source(format!("passt-rs {}", env!("CARGO_PKG_VERSION")))
        .manual("User Commands");
    let mut out = Vec::new();
    let _ = man.render_title(&mut out);

    let mut r = Roff::new();
    r.control("SH", ["NAME"]);
    r.text([roman(match mode {
        Mode::Passt => {
            "passt - user-mode networking for a qemu or libvirt guest, without privileges"
        }
        Mode::Pasta => "pasta - user-mode networking for a network namespace, without privileges",
    })]);
    let _ = r.to_writer(&mut out);
    let _ = man.render_synopsis_section(&mut out);

    let mut r = Roff::new();
    r.control("SH", ["DESCRIPTION"]);
    description(&mut r, mode);
    let _ = r.to_writer(&mut out);

    let common = only(mode, |id| !mode_only(id) && id != "command");
    out.extend_from_slice(options(common, "OPTIONS", false).as_bytes());
    let own_heading = format!("{name}-only options");
    let own_cmd = only(mode, is_own).disable_help_flag(true);
    out.extend_from_slice(options(own_cmd, &own_heading, true).as_bytes());

    let mut r = Roff::new();
    r.control("SS", ["Port forwarding specifications"]);
    r.text([roman(
        "Each of -t and -u (and pasta's -T and -U) takes a SPEC, and may be given \
         several times:",
    )]);
    r.control("nf", []);
    for l in crate::cli::SPEC_HELP.lines().skip(1) {
        r.text([roman(l.trim_start())]);
        r.control("br", []);
    }
    r.control("fi", []);

    examples(&mut r, mode);

    notes_to_see_also(&mut r, mode);
    let _ = r.to_writer(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// DESCRIPTION of the man page of `mode`.
fn description(r: &mut Roff, mode: Mode) {
    match mode {
        Mode::Passt => {
            r.control("PP", []).text([
                bold("passt"),
                roman(
                    " connects the virtual network interface of a qemu guest to the host's \
                     network. It speaks Ethernet with the guest over a UNIX domain socket \
                     (qemu's stream netdev, or vhost-user) and turns the guest's TCP, UDP and \
                     ICMP echo traffic into ordinary sockets of the host, so the guest's \
                     connections look like the host's own applications' to the rest of the \
                     network. No capability or privilege is needed.",
                ),
            ]);
            para(
                r,
                "It answers ARP, NDP (with router advertisements), DHCP and DHCPv6 itself, \
                 handing the guest the host's own addresses, routes and resolvers unless \
                 told otherwise. TCP is not terminated in passt: the host kernel's socket \
                 does the TCP work, and data read from it stays queued there until the \
                 guest acknowledges it.",
            );
            para(
                r,
                "Ports of the host can be forwarded to the guest (-t, -u). qemu 7.2 and \
                 later connect with -netdev stream or start passt themselves with \
                 -netdev passt; libvirt starts it for interfaces of type user with the \
                 passt back-end.",
            );
        }
        Mode::Pasta => {
            r.control("PP", []).text([
                bold("pasta"),
                roman(
                    " does for a network namespace what passt does for a virtual machine: \
                     it creates a tap device in the namespace and translates what the \
                     namespace sends there into sockets of the host, without capabilities \
                     or privileges.",
                ),
            ]);
            para(
                r,
                "Given a PID, pasta joins that process's user and network namespaces; \
                 given --netns, that namespace. Otherwise it creates new user and network \
                 namespaces and runs COMMAND (by default the user's shell) in them. With \
                 --config-net it configures the tap device itself (addresses, routes, \
                 MTU) instead of leaving that to DHCP, NDP and DHCPv6.",
            );
            para(
                r,
                "Without an explicit -t or -u, ports bound in the namespace are forwarded \
                 from the host as they appear (auto). pasta returns (forks to the \
                 background) only once the namespace is configured and every forwarded \
                 port is bound, and exits when the namespace goes away.",
            );
            para(
                r,
                "Traffic between the loopbacks never crosses the tap device: TCP \
                 connections and UDP datagrams from the host's loopback to a forwarded \
                 port (-t, -u), and from the namespace's loopback to the ports of -T and \
                 -U, are joined to a socket in the other namespace (splice(2) through \
                 pipes for TCP, recvmmsg(2) and sendmmsg(2) for UDP). --no-splice turns \
                 this off; --splice-only keeps only this path, with no tap device at all.",
            );
        }
    }
}

/// EXAMPLES of the man page of `mode`.
fn examples(r: &mut Roff, mode: Mode) {
    r.control("SH", ["EXAMPLES"]);
    let example = |r: &mut Roff, what: &str, cmd: &str| {
        r.control("TP", []).text([roman(what)]);
        r.control("nf", []).text([bold(cmd)]).control("fi", []);
    };
    match mode {
        Mode::Passt => {
            example(
                r,
                "Serve a qemu guest, forwarding host port 2222 to the guest's 22:",
                "passt -t 2222:22",
            );
            example(
                r,
                "qemu connecting to it:",
                "qemu-system-x86_64 ... -netdev stream,id=n,server=off,addr.type=unix,addr.path=/tmp/passt_1.socket -device virtio-net-pci,netdev=n",
            );
            example(
                r,
                "One guest, one connection, in the foreground:",
                "passt -f -1 -s /run/user/1000/vm1.socket",
            );
        }
        Mode::Pasta => {
            example(
                r,
                "A shell in new namespaces, its interface configured:",
                "pasta --config-net",
            );
            example(
                r,
                "Forward host port 8080 to the namespace's 80, nothing else:",
                "pasta --config-net -t 8080:80 -u none -T none -U none -- nginx",
            );
            example(
                r,
                "Connect the namespaces of an existing process (as rootlesskit does):",
                "pasta --config-net 12345",
            );
            example(
                r,
                "Connect a namespace file, from inside its user namespace (as Podman does):",
                "pasta --config-net --netns /run/user/1000/netns/netns-1",
            );
        }
    }
}

/// NOTES to SEE ALSO: the sections after the options.
fn notes_to_see_also(r: &mut Roff, mode: Mode) {
    r.control("SH", ["NOTES"]);
    r.control("SS", ["Loopback addresses"]);
    para(
        r,
        "Connections the guest makes to the address of --map-host-loopback (by \
         default the gateway) reach the host's loopback; connections from the host's \
         loopback to a forwarded port reach the guest from that address. \
         --no-map-gw or --map-host-loopback none turns this off.",
    );
    r.control("SS", ["DNS"]);
    para(
        r,
        "Queries sent to the --dns-forward address (TCP and UDP, ports 53 and 853) go \
         to the host's resolver (--dns-host, by default the first of \
         /etc/resolv.conf), including one on the host's loopback.",
    );
    r.control("SS", ["Ports below 1024"]);
    para(
        r,
        "Forwarded ports are bound before privileges are dropped: started as root \
         (then running as nobody or --runas), passt and pasta can forward them; \
         otherwise net.ipv4.ip_unprivileged_port_start decides.",
    );
    r.control("SS", ["Sandbox"]);
    para(
        r,
        "Once set up, the process runs in new namespaces with an empty, read-only \
         root, without capabilities (pasta keeps CAP_NET_BIND_SERVICE for automatic \
         forwarding), under a seccomp filter that allows only the system calls it \
         needs; --seccomp-log logs calls outside it instead of killing the process.",
    );

    r.control("SH", ["LIMITATIONS"]);
    para(
        r,
        "No IGMP/MLD proxying and no SCTP. Differences from upstream passt and pasta \
         are listed in docs/differences.md of the source tree.",
    );
    r.control("SH", ["AUTHORS"]);
    para(r, "The passt-rs contributors.");
    r.control("SH", ["REPORTING BUGS"]);
    para(
        r,
        "Please report problems on the issue tracker of passt-rs, with the output of \
         --debug (or --trace) where possible.",
    );
    r.control("SH", ["COPYRIGHT"]);
    r.control("PP", []).text([
        bold("passt"),
        roman(" and "),
        bold("pasta"),
        roman(
            " (passt-rs) are free software under the MIT licence: you may use, change and \
             redistribute them. There is NO WARRANTY, to the extent permitted by law.",
        ),
    ]);
    r.control("SH", ["SEE ALSO"]);
    r.text([
        bold(match mode {
            Mode::Passt => "pasta",
            Mode::Pasta => "passt",
        }),
        roman("(1), "),
        bold("namespaces"),
        roman("(7), "),
        bold("qemu"),
        roman("(1), "),
        bold("slirp4netns"),
        roman("(1), "),
        italic("https://passt.top"),
        roman("."),
    ]);
}

/// A completion script of `mode` for `shell`.
pub(crate) fn completions(mode: Mode, shell: clap_complete::Shell) -> String {
    // Only what the help shows: the generators list hidden options too.
    let full = command(mode);
    let mut cmd = clap::Command::new(mode.name())
        .version(env!("CARGO_PKG_VERSION"))
        .disable_version_flag(true);
    for a in full.get_arguments().filter(|a| !a.is_hide_set()) {
        cmd = cmd.arg(a.clone());
    }
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, mode.name(), &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_as_upstream() {
        for mode in [Mode::Passt, Mode::Pasta] {
            let page = man_page(mode);
            let mut at = 0;
            for s in [
                ".TH",
                ".SH NAME",
                ".SH SYNOPSIS",
                ".SH DESCRIPTION",
                ".SH \"OPTIONS\"",
                &format!(".SS \"{}-only options\"", mode.name()),
                ".SH EXAMPLES",
                ".SH NOTES",
                ".SH LIMITATIONS",
                ".SH AUTHORS",
                ".SH \"REPORTING BUGS\"",
                ".SH COPYRIGHT",
                ".SH \"SEE ALSO\"",
            ] {
                let i = page[at..]
                    .find(s)
                    .unwrap_or_else(|| panic!("{}: no {s} after byte {at}", mode.name()));
                at += i + s.len();
            }
        }
    }

    /// Every option the help shows is in the page, under its own heading.
    #[test]
    fn every_visible_option_documented() {
        for mode in [Mode::Passt, Mode::Pasta] {
            let page = man_page(mode);
            let own_at = page
                .find(&format!("{}-only options", mode.name()))
                .expect("subsection");
            let own: &[(&str, &str)] = match mode {
                Mode::Passt => PASST_ONLY,
                Mode::Pasta => PASTA_ONLY,
            };
            for a in command(mode).get_arguments().filter(|a| !a.is_hide_set()) {
                let Some(long) = a.get_long() else { continue };
                // The entry: the name in bold, its dashes escaped.
                let needle = format!("\\fB\\-\\-{}", long.replace('-', "\\-"));
                let at = page
                    .find(&needle)
                    .unwrap_or_else(|| panic!("{}: --{long} missing", mode.name()));
                let is_own = own.iter().any(|(id, _)| a.get_id() == *id);
                assert_eq!(at > own_at, is_own, "{}: --{long} heading", mode.name());
            }
            let other = match mode {
                Mode::Passt => "\\-\\-ns\\-ifname",
                Mode::Pasta => "\\-\\-vhost\\-user",
            };
            assert!(!page.contains(other), "{}: {other}", mode.name());
        }
    }

    #[test]
    fn completions_name_options() {
        let bash = completions(Mode::Pasta, clap_complete::Shell::Bash);
        assert!(bash.contains("--config-net") && bash.contains("--netns"));
        let zsh = completions(Mode::Passt, clap_complete::Shell::Zsh);
        assert!(zsh.contains("--socket") && !zsh.contains("--config-net"));
    }
}
