fn main() {
    std::process::exit(passt_driver_epoll::main());
}
