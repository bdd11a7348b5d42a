//! Request-response latency and connection rate over TCP, for the benchmark
//! (`tests/bench/run.sh`).
//!
//! ```text
//! tcp_rr server PORT          answer each 1-byte request with 1 byte, per connection
//! tcp_rr rr HOST PORT SECS    one connection, back-to-back 1-byte exchanges
//! tcp_rr crr HOST PORT SECS   connect, exchange 1 byte, close; repeated
//! ```
//!
//! The clients print `<transactions per second> <mean microseconds>`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

fn usage() -> ! {
    eprintln!("usage: tcp_rr server PORT | rr HOST PORT SECS | crr HOST PORT SECS");
    std::process::exit(2)
}

/// Serves one connection at a time, in the accepting thread: both clients
/// are sequential (the next connection comes after the last one closed),
/// and a thread per connection cost more than a whole exchange through a
/// translator, which capped the connection rate at the same value for every
/// translator and for the kernel's own path.
fn serve(port: u16) -> std::io::Result<()> {
    let l = TcpListener::bind(("::", port)).or_else(|_| TcpListener::bind(("0.0.0.0", port)))?;
    for c in l.incoming() {
        let Ok(mut c) = c else { continue };
        let _ = c.set_nodelay(true);
        // A client that vanished without closing does not hold the server
        // for good.
        let _ = c.set_read_timeout(Some(Duration::from_secs(10)));
        let mut b = [0u8; 1];
        while matches!(c.read(&mut b), Ok(1)) {
            if c.write_all(&b).is_err() {
                break;
            }
        }
    }
    Ok(())
}

fn exchange(c: &mut TcpStream) -> std::io::Result<()> {
    let mut b = [7u8; 1];
    c.write_all(&b)?;
    c.read_exact(&mut b)
}

fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let c = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    c.set_nodelay(true)?;
    c.set_read_timeout(Some(Duration::from_secs(5)))?;
    Ok(c)
}

fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| a.get(i).map(String::as_str).unwrap_or_else(|| usage());
    let r = match arg(0) {
        "server" => serve(arg(1).parse().unwrap_or_else(|_| usage())),
        mode @ ("rr" | "crr") => {
            let port: u16 = arg(2).parse().unwrap_or_else(|_| usage());
            let secs: f64 = arg(3).parse().unwrap_or_else(|_| usage());
            let Some(addr) = (arg(1), port)
                .to_socket_addrs()
                .ok()
                .and_then(|mut i| i.next())
            else {
                usage()
            };
            let t0 = Instant::now();
            let until = Duration::from_secs_f64(secs);
            let mut n: u64 = 0;
            let res = (|| -> std::io::Result<()> {
                if mode == "rr" {
                    let mut c = connect(addr)?;
                    while t0.elapsed() < until {
                        exchange(&mut c)?;
                        n += 1;
                    }
                } else {
                    while t0.elapsed() < until {
                        let mut c = connect(addr)?;
                        exchange(&mut c)?;
                        n += 1;
                    }
                }
                Ok(())
            })();
            let el = t0.elapsed().as_secs_f64();
            if n > 0 {
                println!("{:.0} {:.1}", n as f64 / el, el * 1e6 / n as f64);
            }
            res
        }
        _ => usage(),
    };
    if let Err(e) = r {
        eprintln!("tcp_rr: {e}");
        std::process::exit(1);
    }
}
