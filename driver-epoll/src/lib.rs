//! The epoll driver of passt-rs: runs [`passt_core::Core`] over real sockets.

pub mod cli;
pub mod conf;
pub mod netlink;
pub mod resolv;

/// Entry point shared by the `passt` and `pasta` binaries. The mode is chosen
/// from the program name, as upstream does: a name containing "pasta" runs
/// pasta, one containing "passt" runs passt.
pub fn main() -> i32 {
    let argv0 = std::env::args_os().next().unwrap_or_default();
    let name = std::path::Path::new(&argv0)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if name.contains("pasta") || name.contains("passt") {
        eprintln!("{name}: not yet runnable");
        1
    } else {
        eprintln!("{name}: run me as passt or pasta");
        1
    }
}
