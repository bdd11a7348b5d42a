//! From argument list to [`Options`]: the clap command with per-mode help,
//! upstream's error wording, options of the other mode refused, deprecation
//! warnings, and the checks that span several options.

use super::*;

/// What `--version` prints after the program's name, in upstream's shape:
/// the version on the first line, then the copyright and licence.
pub const VERSION_BLOB: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (passt-rs)\n",
    "Copyright the passt-rs contributors\n",
    "MIT License <https://opensource.org/licenses/MIT>\n",
    "This is free software: you are free to change and redistribute it.\n",
    "There is NO WARRANTY, to the extent permitted by law.\n"
);

/// The clap command for `mode`: options of the other mode hidden, help texts
/// adapted.
pub fn command(mode: Mode) -> clap::Command {
    let mut cmd = Options::command()
        .name(mode.name())
        .bin_name(mode.name())
        .version(env!("CARGO_PKG_VERSION"))
        .long_version(VERSION_BLOB)
        .arg(
            clap::Arg::new("version")
                .long("version")
                .action(ArgAction::Version)
                .help("Print the version and exit"),
        );
    let hide: &[(&str, &str)] = match mode {
        Mode::Passt => PASTA_ONLY,
        Mode::Pasta => PASST_ONLY,
    };
    for (id, _) in hide {
        cmd = cmd.mut_arg(*id, |a| a.hide(true));
    }
    match mode {
        Mode::Passt => {
            cmd = cmd
                .about("Connect a qemu or libvirt guest to the host's network through a UNIX domain socket, without privileges.")
                .override_usage("passt [OPTION]...")
                .mut_arg("command", |a| a.hide(true))
                .mut_arg("tcp_ports", |a| {
                    a.help("Forward TCP ports from the host to the guest (repeatable; see SPEC below) [default: none]")
                })
                .mut_arg("udp_ports", |a| {
                    a.help("Forward UDP ports from the host to the guest (repeatable; see SPEC below) [default: none]")
                });
        }
        Mode::Pasta => {
            cmd = cmd
                .about("Connect a network namespace to the host's network through a tap device, without privileges. Without a PID or --netns, run COMMAND (or your shell) in new user and network namespaces.")
                .override_usage("pasta [OPTION]... [COMMAND [ARG]...]\n       pasta [OPTION]... PID\n       pasta [OPTION]... --netns PATH|NAME")
                .mut_arg("tcp_ports", |a| {
                    a.help("Forward TCP ports from the host to the namespace (repeatable; see SPEC below) [default: auto]")
                })
                .mut_arg("udp_ports", |a| {
                    a.help("Forward UDP ports from the host to the namespace (repeatable; see SPEC below) [default: auto]")
                })
                .mut_arg("dns", |a| {
                    a.help("Nameserver to use (repeatable, up to 3 per family); 'none' disables DNS [default: from /etc/resolv.conf, advertised only with --dhcp-dns]")
                })
                .mut_arg("search", |a| {
                    a.help("Search domain (repeatable, up to 6); 'none' disables the list [default: from /etc/resolv.conf, advertised only with --dhcp-search]")
                });
        }
    }
    cmd
}

/// Turns a clap error into our one-line message.
pub(super) fn clap_message(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let first = text
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("invalid command line");
    first
        .trim()
        .strip_prefix("error: ")
        .unwrap_or(first.trim())
        .to_string()
}

pub(super) fn given(m: &clap::ArgMatches, id: &str) -> bool {
    matches!(m.value_source(id), Some(ValueSource::CommandLine))
}

/// Parses `args` (without the program name) for `mode`. Help and version are
/// printed here (standard output, [`CliError::Exit`] with status 0); a bad
/// option or value gives [`CliError::Usage`] with one line naming it.
/// Deprecated options print a warning on standard error.
pub fn parse_args(mode: Mode, args: &[OsString]) -> Result<Options, CliError> {
    let mut cmd = command(mode);
    let argv = std::iter::once(OsString::from(mode.name())).chain(args.iter().cloned());
    let m = match cmd.try_get_matches_from_mut(argv) {
        Ok(m) => m,
        Err(e) => {
            use clap::error::ErrorKind;
            return match e.kind() {
                ErrorKind::DisplayHelp
                | ErrorKind::DisplayVersion
                | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                    let _ = e.print();
                    Err(CliError::Exit(0))
                }
                // getopt_long's wording, which clients match on (Podman
                // retries without an option pasta reports this way).
                ErrorKind::UnknownArgument => {
                    use clap::error::{ContextKind, ContextValue};
                    match e.get(ContextKind::InvalidArg) {
                        Some(ContextValue::String(a)) => {
                            let a = a.split('=').next().unwrap_or(a);
                            Err(CliError::Usage(format!("unrecognized option '{a}'")))
                        }
                        _ => Err(CliError::Usage(clap_message(&e))),
                    }
                }
                _ => Err(CliError::Usage(clap_message(&e))),
            };
        }
    };
    let other: &[(&str, &str)] = match mode {
        Mode::Passt => PASTA_ONLY,
        Mode::Pasta => PASST_ONLY,
    };
    for (id, name) in other {
        if given(&m, id) {
            let owner = match mode {
                Mode::Passt => "pasta",
                Mode::Pasta => "passt",
            };
            return Err(CliError::Usage(format!("{name} is for {owner} only")));
        }
    }
    let mut o = Options::from_arg_matches(&m).map_err(|e| CliError::Usage(clap_message(&e)))?;
    o.mode = mode;
    if o.print_manpage {
        print!("{}", crate::cli::man::man_page(mode));
        return Err(CliError::Exit(0));
    }
    if let Some(shell) = o.print_completions {
        print!("{}", crate::cli::man::completions(mode, shell));
        return Err(CliError::Exit(0));
    }
    validate(&mut o)?;
    for (on, name) in [
        (o.stderr, "--stderr"),
        (o.no_copy_routes, "--no-copy-routes"),
        (o.no_copy_addrs, "--no-copy-addrs"),
    ] {
        if on {
            eprintln!("{}: warning: {name} will be dropped soon", mode.name());
        }
    }
    if o.print_capabilities {
        println!("{{\n  \"type\": \"net\"\n}}");
        return Err(CliError::Exit(0));
    }
    Ok(o)
}

pub(super) fn usage<T>(s: impl Into<String>) -> Result<T, CliError> {
    Err(CliError::Usage(s.into()))
}

pub(super) fn validate(o: &mut Options) -> Result<(), CliError> {
    if o.ipv4_only && o.ipv6_only {
        return usage("-4/--ipv4-only and -6/--ipv6-only can't be used together");
    }
    if o.trace {
        o.debug = true;
    }
    // -a ADDR/PREFIX and -n both give the IPv4 prefix: one or the other.
    if o.address.iter().any(|a| a.prefix.is_some()) {
        if o.netmask.is_some() {
            return usage("redundant prefix length: -n/--netmask and -a/--address ADDR/PREFIX");
        }
        if let Some(p) = o
            .address
            .iter()
            .rev()
            .find(|a| a.addr.is_ipv4())
            .and_then(|a| a.prefix)
        {
            o.netmask = Some(p);
        }
    }
    // -S takes one domain or a space-separated list.
    o.search = o
        .search
        .iter()
        .flat_map(|s| {
            let words: Vec<String> = s.split_whitespace().map(str::to_string).collect();
            if words.is_empty() {
                vec![String::new()]
            } else {
                words
            }
        })
        .collect();
    if o.mode == Mode::Passt && o.fd.is_some() {
        o.one_off = true;
    }

    validate_forwards(o)?;

    if let Some(n) = o.map_host_loopback.iter().find_map(|a| match a {
        AddrOrNone::Addr(a) if o.ipv4_only && a.is_ipv6() || o.ipv6_only && a.is_ipv4() => Some(*a),
        _ => None,
    }) {
        return usage(format!(
            "--map-host-loopback {n}: that address family is disabled"
        ));
    }

    if o.mode == Mode::Passt {
        if o.stats.is_some() && !o.foreground {
            return usage("--stats: statistics are printed in the foreground only (-f)");
        }
        if let Some(c) = o.command.first() {
            return usage(format!(
                "extra non-option argument '{}'",
                c.to_string_lossy()
            ));
        }
        return Ok(());
    }

    validate_pasta(o)
}

/// The `-t -u -T -U` specifications: each alone, then all of a kind together
/// (mode conflicts), unless the protocol is disabled.
fn validate_forwards(o: &Options) -> Result<(), CliError> {
    let kind_in = match o.mode {
        Mode::Passt => SpecKind::PasstInbound,
        Mode::Pasta => SpecKind::PastaInbound,
    };
    let tables: [(&Vec<String>, &str, SpecKind, bool); 4] = [
        (&o.tcp_ports, "-t/--tcp-ports", kind_in, o.no_tcp),
        (&o.udp_ports, "-u/--udp-ports", kind_in, o.no_udp),
        (&o.tcp_ns, "-T/--tcp-ns", SpecKind::PastaOutbound, o.no_tcp),
        (&o.udp_ns, "-U/--udp-ns", SpecKind::PastaOutbound, o.no_udp),
    ];
    for (specs, name, kind, disabled) in tables {
        if specs.is_empty() {
            continue;
        }
        if disabled {
            let proto = if name.contains("tcp") { "TCP" } else { "UDP" };
            return usage(format!("{name} given, but {proto} is disabled"));
        }
        for s in specs {
            // Check each one alone and in sequence (mode conflicts).
            if let Err(e) = FwdTable::from_specs(&[s], kind, EPHEMERAL_DEFAULT) {
                return usage(format!("{name} '{s}': {e}"));
            }
        }
        if let Err(e) = FwdTable::from_specs(specs, kind, EPHEMERAL_DEFAULT) {
            return usage(format!("{name}: {e}"));
        }
    }
    Ok(())
}

/// pasta only: `--config-net` dependencies and the target (command, PID or
/// `--netns`).
fn validate_pasta(o: &mut Options) -> Result<(), CliError> {
    if (o.no_copy_routes || o.no_copy_addrs) && !o.config_net {
        let which = if o.no_copy_routes {
            "--no-copy-routes"
        } else {
            "--no-copy-addrs"
        };
        return usage(format!("{which} needs --config-net"));
    }

    let pid = match o.command.as_slice() {
        [one] => one.to_str().and_then(|s| {
            if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
                s.parse::<u32>().ok()
            } else {
                None
            }
        }),
        _ => None,
    };
    o.target = Some(match (&o.netns, pid) {
        (Some(_), _) if !o.command.is_empty() => {
            return usage("--netns can't be combined with a PID or a command");
        }
        (Some(n), _) => {
            let p = if n.as_os_str().to_string_lossy().contains('/') {
                n.clone()
            } else {
                PathBuf::from("/run/netns").join(n)
            };
            PastaTarget::Netns(p)
        }
        (None, Some(0)) => return usage("PID 0 is not a process"),
        (None, Some(p)) => PastaTarget::Pid(p),
        (None, None) => PastaTarget::Spawn(o.command.clone()),
    });
    if o.userns.is_some() && matches!(o.target, Some(PastaTarget::Spawn(_))) {
        return usage("--userns needs --netns or a PID");
    }
    if matches!(o.target, Some(PastaTarget::Netns(_))) && o.userns.is_none() {
        o.netns_only = true;
    }
    let spawn = matches!(o.target, Some(PastaTarget::Spawn(_))) && o.fd.is_none();
    if o.stats.is_some() && !o.foreground && !spawn {
        return usage("--stats: statistics are printed in the foreground only (-f)");
    }
    Ok(())
}
