//! pasta's namespace worker: a thread that lives in the guest's network
//! namespace and creates sockets there for the main thread.
//!
//! A socket belongs to the namespace it was created in, and entering a
//! namespace changes only the calling thread. During set-up, a short-lived
//! thread enters the namespace for each job (`netns::in_netns`). Once the
//! sandbox is on, that would need `clone`, `mmap`, `setns` and
//! `CAP_SYS_ADMIN` at run time; instead, the last sandbox stage starts one
//! thread that enters the namespace, drops every capability and then only
//! runs the jobs the main thread hands it, one at a time (a mutex and a
//! condition variable: `futex`). It is started after `pivot_root` and the
//! fork into the background, so it shares the main thread's empty root and
//! PID namespace; it blocks every signal, so signals reach the main thread.

use super::{caps, Syscall};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex, OnceLock};

/// System calls of the worker and of handing it jobs.
pub(crate) const SYSCALLS: &[Syscall] = super::syscalls![
    // Waiting for a job and for its result.
    SYS_futex,
];

type Job = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct State {
    job: Option<Job>,
    done: bool,
    /// Set if the thread could not enter the namespace.
    failed: Option<io::Error>,
    ready: bool,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    cv: Condvar,
}

/// The guest's network namespace, and the worker in it once started.
#[derive(Debug)]
pub(crate) struct GuestNs {
    fd: OwnedFd,
    worker: OnceLock<Worker>,
}

struct Worker {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Worker")
    }
}

impl GuestNs {
    pub(crate) fn new(fd: OwnedFd) -> Self {
        GuestNs {
            fd,
            worker: OnceLock::new(),
        }
    }

    /// Runs `f` inside the namespace: on the worker once it runs, else on
    /// a short-lived thread that enters the namespace.
    pub(crate) fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> io::Result<T> {
        match self.worker.get() {
            Some(w) => w.call(f),
            None => crate::netns::in_netns(self.fd.as_fd(), f),
        }
    }

    /// Starts the worker: it enters the namespace (needs `CAP_SYS_ADMIN`
    /// here), blocks every signal and drops all its capabilities. Returns
    /// once it is ready.
    pub(crate) fn start_worker(&self) -> io::Result<()> {
        if self.worker.get().is_some() {
            return Ok(());
        }
        let shared = Arc::new(Shared::default());
        let ns = self.fd.try_clone()?;
        let s2 = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("pasta-ns".into())
            .stack_size(256 << 10)
            .spawn(move || serve(&s2, ns))?;
        let mut st = lock(&shared.state);
        while !st.ready {
            st = shared
                .cv
                .wait(st)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        if let Some(e) = st.failed.take() {
            return Err(e);
        }
        drop(st);
        let _ = self.worker.set(Worker { shared });
        Ok(())
    }
}

fn lock(m: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Enters the namespace and sheds everything, in the worker thread.
fn enter(ns: &OwnedFd) -> io::Result<()> {
    // SAFETY: setns takes a descriptor we own and a flag.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } < 0 {
        return Err(super::step(
            "entering the namespace",
            io::Error::last_os_error(),
        ));
    }
    // SAFETY: a full set, blocked for this thread only.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut set);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    caps::keep_only(0)?;
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn serve(shared: &Shared, ns: OwnedFd) {
    let r = enter(&ns);
    drop(ns);
    let mut st = lock(&shared.state);
    st.ready = true;
    if let Err(e) = r {
        st.failed = Some(e);
        shared.cv.notify_all();
        return;
    }
    shared.cv.notify_all();
    loop {
        let job = loop {
            if let Some(j) = st.job.take() {
                break j;
            }
            st = shared
                .cv
                .wait(st)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        };
        drop(st);
        // A job that panics leaves no result (the caller gets an error),
        // not a worker gone and a caller waiting for ever.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
        st = lock(&shared.state);
        st.done = true;
        shared.cv.notify_all();
    }
}

impl Worker {
    fn call<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> io::Result<T> {
        let out: Arc<Mutex<Option<T>>> = Arc::new(Mutex::new(None));
        let o2 = Arc::clone(&out);
        let job: Job = Box::new(move || {
            let v = f();
            *o2.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(v);
        });
        let sh = &self.shared;
        let mut st = lock(&sh.state);
        st.done = false;
        st.job = Some(job);
        sh.cv.notify_all();
        while !st.done {
            st = sh
                .cv
                .wait(st)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        drop(st);
        let v = out
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        v.ok_or_else(|| io::Error::other("namespace worker: job failed"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netns::tests::ns_inode as ino;

    /// Jobs run in the namespace, on one thread, before and after the
    /// worker starts; the caller's namespace does not change.
    #[test]
    fn jobs_run_inside_the_namespace() {
        let (ns, want) = crate::netns::tests::new_netns_with_inode();
        let g = GuestNs::new(ns);
        let here = ino("/proc/thread-self/ns/net");
        assert_eq!(g.run(|| ino("/proc/thread-self/ns/net")).unwrap(), want);
        g.start_worker().unwrap();
        let tid1 = g.run(|| unsafe { libc::gettid() }).unwrap();
        let tid2 = g.run(|| unsafe { libc::gettid() }).unwrap();
        assert_eq!(tid1, tid2, "one worker thread");
        assert_eq!(g.run(|| ino("/proc/thread-self/ns/net")).unwrap(), want);
        assert_eq!(g.run(|| caps::get().unwrap().effective).unwrap(), 0);
        let fd = g
            .run(|| {
                // SAFETY: socket takes integers.
                unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) }
            })
            .unwrap();
        assert!(fd >= 0);
        // SAFETY: the descriptor was created for us above.
        unsafe { libc::close(fd) };
        assert_eq!(here, ino("/proc/thread-self/ns/net"));
    }
}
