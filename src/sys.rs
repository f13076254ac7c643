//! The few raw system calls the standard library and mio do not offer (waiting on one descriptor, sendfile), and
//! socket reads and writes without libc's cancellation-point wrappers.

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

/// Blocks until `fd` is readable (or writable) or `timeout` passes.
///
/// # Errors
/// `TimedOut` when the deadline passes, and poll failures.
pub fn wait_fd(fd: RawFd, writable: bool, timeout: Duration) -> io::Result<()> {
    let events = if writable { libc::POLLOUT } else { libc::POLLIN };
    let mut pfd = libc::pollfd { fd, events, revents: 0 };
    let millis = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    loop {
        // SAFETY: `pfd` is a valid pollfd for the duration of the call and nfds is 1.
        let n = unsafe { libc::poll(&raw mut pfd, 1, millis) };
        match n {
            0 => return Err(io::Error::new(io::ErrorKind::TimedOut, "socket wait timed out")),
            n if n > 0 => return Ok(()),
            _ => {
                let err = io::Error::last_os_error();
                if err.kind() != io::ErrorKind::Interrupted {
                    return Err(err);
                }
            }
        }
    }
}

/// Copies up to `count` bytes from file `in_fd` at `*offset` to socket `out_fd`, advancing `*offset`.
///
/// # Errors
/// As sendfile(2), including `WouldBlock` for a full non-blocking socket.
pub fn sendfile(out_fd: RawFd, in_fd: RawFd, offset: &mut u64, count: usize) -> io::Result<usize> {
    let mut off = libc::off_t::try_from(*offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: both descriptors are open for the duration of the call and `off` is a valid off_t.
    let n = unsafe { libc::sendfile(out_fd, in_fd, &raw mut off, count) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    *offset = u64::try_from(off).unwrap_or(*offset);
    Ok(n.unsigned_abs())
}

/// How `sendfile_until_full` stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendfileEnd {
    /// All the bytes asked for were sent.
    Sent,
    /// The socket takes no more for now.
    SocketFull,
    /// The file ended first (it shrank under the response).
    FileEnded,
}

/// Sends `*remaining` bytes of file `in_fd` from `*offset` to non-blocking socket `out_fd` with sendfile(2), as far
/// as the socket takes them without waiting; advances `*offset` and lowers `*remaining` by what was sent.
///
/// # Errors
/// As sendfile(2), other than `Interrupted` (retried) and `WouldBlock` (`SocketFull`).
pub fn sendfile_until_full(
    out_fd: RawFd,
    in_fd: RawFd,
    offset: &mut u64,
    remaining: &mut u64,
) -> io::Result<SendfileEnd> {
    while *remaining > 0 {
        let count = usize::try_from((*remaining).min(1 << 30)).unwrap_or(1 << 30);
        match sendfile(out_fd, in_fd, offset, count) {
            Ok(0) => return Ok(SendfileEnd::FileEnded),
            Ok(n) => *remaining -= n as u64,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(SendfileEnd::SocketFull),
            Err(e) => return Err(e),
        }
    }
    Ok(SendfileEnd::Sent)
}

// Socket reads and writes on the request path go through syscall(2) instead of libc's `recv`, `send` and
// `sendmsg`: glibc makes those thread-cancellation points and brackets every call with two atomic updates of the
// thread's cancellation state, which showed as 1.5 % of a hello response's CPU in perf. rustwsgi never cancels a
// thread, so the plain system call does the same work.

/// recv(2) from socket `fd` into `buf`.
///
/// # Errors
/// As recv(2), including `WouldBlock` on an empty non-blocking socket.
pub fn recv(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes during the call; no source address is asked for.
    let n = unsafe {
        libc::syscall(
            libc::SYS_recvfrom,
            libc::c_long::from(fd),
            buf.as_mut_ptr(),
            buf.len(),
            0 as libc::c_long,
            std::ptr::null_mut::<libc::sockaddr>(),
            std::ptr::null_mut::<libc::socklen_t>(),
        )
    };
    syscall_result(n)
}

/// send(2) of `buf` on socket `fd`, never raising SIGPIPE.
///
/// # Errors
/// As send(2), including `WouldBlock` on a full non-blocking socket.
pub fn send(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for reads of `buf.len()` bytes during the call; no destination address is given.
    let n = unsafe {
        libc::syscall(
            libc::SYS_sendto,
            libc::c_long::from(fd),
            buf.as_ptr(),
            buf.len(),
            libc::c_long::from(libc::MSG_NOSIGNAL),
            std::ptr::null::<libc::sockaddr>(),
            0 as libc::c_long,
        )
    };
    syscall_result(n)
}

/// sendmsg(2) of `bufs` in order on socket `fd` (a gathered write), never raising SIGPIPE. At most `IOV_MAX`
/// slices go in one call; the count returned tells the caller where to go on.
///
/// # Errors
/// As sendmsg(2), including `WouldBlock` on a full non-blocking socket.
pub fn send_vectored(fd: RawFd, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
    // SAFETY: an all-zero msghdr (no name, no control data) is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    // `IoSlice` is guaranteed ABI-compatible with `iovec` on Unix.
    msg.msg_iov = bufs.as_ptr().cast_mut().cast::<libc::iovec>();
    msg.msg_iovlen = bufs.len().min(IOV_MAX) as _;
    // SAFETY: `msg` points at `bufs`, whose slices are valid for reads during the call.
    let n = unsafe {
        libc::syscall(
            libc::SYS_sendmsg,
            libc::c_long::from(fd),
            &raw const msg,
            libc::c_long::from(libc::MSG_NOSIGNAL),
        )
    };
    syscall_result(n)
}

/// The kernel's limit on slices in one gathered write.
const IOV_MAX: usize = 1024;

/// A byte count from a system call that returns -1 and sets errno on failure.
fn syscall_result(n: libc::c_long) -> io::Result<usize> {
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// Size of a regular file, or `None` for anything else (pipes, sockets, devices).
#[must_use]
pub fn regular_file_size(fd: RawFd) -> Option<u64> {
    // SAFETY: an all-zero `stat` is a valid value to be overwritten by fstat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is valid writable memory for one stat struct.
    if unsafe { libc::fstat(fd, &raw mut st) } != 0 || st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return None;
    }
    u64::try_from(st.st_size).ok()
}

/// Duplicates a descriptor so the caller owns its copy.
///
/// # Errors
/// As dup(2).
pub fn dup_owned(fd: RawFd) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: F_DUPFD_CLOEXEC on any integer is memory-safe; failure is reported as -1.
    let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if new < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `new` is a freshly duplicated descriptor that nothing else owns.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(new) })
}

/// The calling thread's OS identity, as Python's `threading.get_ident()` reports it.
#[must_use]
pub fn thread_ident() -> u64 {
    // SAFETY: pthread_self has no preconditions and cannot fail.
    let id = unsafe { libc::pthread_self() };
    id as u64
}

/// Seconds since the Unix epoch on the kernel's coarse wall clock (`CLOCK_REALTIME_COARSE`): the `Date` header
/// needs whole seconds, and this read is several times cheaper than `SystemTime::now()` (it lags by at most one
/// timer tick).
#[must_use]
pub fn coarse_unix_seconds() -> u64 {
    coarse_clock(libc::CLOCK_REALTIME_COARSE).as_secs()
}

/// Time on the kernel's coarse monotonic clock (`CLOCK_MONOTONIC_COARSE`): the timestamp of the last timer tick,
/// read without touching the hardware counter, so several times cheaper than `Instant::now()`. Resolution is one
/// tick (1-4 ms): enough for timeouts counted in seconds or tens of milliseconds.
#[must_use]
pub fn coarse_now() -> Duration {
    coarse_clock(libc::CLOCK_MONOTONIC_COARSE)
}

/// Reads one of the kernel's coarse clocks; zero if it cannot be read.
fn coarse_clock(id: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid timespec to write into; both coarse clock ids exist on every supported kernel.
    let rc = unsafe { libc::clock_gettime(id, &raw mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}

/// Where the watcher reads what one thread is doing: its `/proc/self/task/TID/syscall`, or its `stat` where the
/// syscall file cannot be opened (some sandboxed kernels lack it). Opened once, by the thread itself, so that
/// `thread_activity` only reads it: opening a `/proc` file costs about three times reading it, and the watcher asks
/// up to a thousand times a second.
#[derive(Debug)]
pub struct ThreadProbe {
    file: std::fs::File,
    /// The file is `stat`: it tells asleep from running, but not what the thread sleeps on.
    stat_only: bool,
}

/// The calling thread's probe; `None` when neither file can be opened.
#[must_use]
pub fn own_thread_probe() -> Option<ThreadProbe> {
    own_probe_of("syscall").or_else(|| own_probe_of("stat"))
}

/// The calling thread's probe on its `/proc/self/task/TID/` file `name` (`syscall` or `stat`).
fn own_probe_of(name: &str) -> Option<ThreadProbe> {
    // SAFETY: gettid has no preconditions and cannot fail.
    let tid = unsafe { libc::gettid() };
    let file = std::fs::File::open(format!("/proc/self/task/{tid}/{name}")).ok()?;
    Some(ThreadProbe {
        file,
        stat_only: name == "stat",
    })
}

/// What a thread is doing at the moment it is asked about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadActivity {
    /// On a CPU or ready for one; also when it cannot be told.
    Running,
    /// Asleep in futex(2): waiting for a lock or a condition, the interpreter's GIL among them.
    Waiting,
    /// Asleep in any other system call: on a socket, a pipe, a timer, poll. (Any sleep, from a `stat` probe.)
    Blocked,
}

/// What the thread of `probe` is doing. The syscall file reads `running` for a thread on a CPU, and the number and
/// arguments of the system call a sleeping thread is in.
#[must_use]
pub fn thread_activity(probe: &ThreadProbe) -> ThreadActivity {
    use std::os::unix::fs::FileExt;
    let mut buf = [0u8; 512];
    // Each read from offset 0 is a fresh snapshot of the thread.
    let Ok(n) = probe.file.read_at(&mut buf, 0) else {
        return ThreadActivity::Running;
    };
    let text = &buf[..n];
    if probe.stat_only {
        // `pid (comm) S ...`: the state letter follows the last `)`, since comm may itself contain one.
        let state = text
            .iter()
            .rposition(|&b| b == b')')
            .and_then(|close| text.get(close + 2));
        return if state.is_some_and(|&state| matches!(state, b'S' | b'D')) {
            ThreadActivity::Blocked
        } else {
            ThreadActivity::Running
        };
    }
    let number = text.split(|&b| b == b' ').next().unwrap_or_default();
    match std::str::from_utf8(number)
        .ok()
        .and_then(|n| n.parse::<libc::c_long>().ok())
    {
        Some(libc::SYS_futex) => ThreadActivity::Waiting,
        // -1: stopped outside a system call (a page fault, a debugger), with the GIL still held if it had it.
        Some(nr) if nr >= 0 => ThreadActivity::Blocked,
        _ => ThreadActivity::Running,
    }
}

/// Shuts a socket for writing (the peer sees the end of the stream); errors are irrelevant here.
pub fn shutdown_write(fd: RawFd) {
    // SAFETY: shutdown on a descriptor is memory-safe whatever the descriptor is; the caller guarantees it is
    // still the socket it means.
    unsafe {
        libc::shutdown(fd, libc::SHUT_WR);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_activity_tells_running_from_waiting_on_a_lock_from_blocked_on_io() {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let spinner_stop = stop.clone();
        let (spinner, spinner_probe) = spawn_with_probe(own_thread_probe, move || {
            while !spinner_stop.load(std::sync::atomic::Ordering::Relaxed) {
                std::hint::spin_loop();
            }
        });
        let lock = std::sync::Arc::new(std::sync::Mutex::new(()));
        let held = lock.lock().unwrap();
        let waiter_lock = lock.clone();
        let (waiter, waiter_probe) = spawn_with_probe(own_thread_probe, move || drop(waiter_lock.lock().unwrap()));
        let (sleeper, sleeper_probe) = spawn_with_probe(own_thread_probe, sleep_300_ms);
        let (stat_sleeper, stat_sleeper_probe) = spawn_with_probe(own_thread_stat_probe, sleep_300_ms);
        std::thread::sleep(std::time::Duration::from_millis(100));
        // A thread on a CPU between system calls reads as running. (A thread reading its own file would see the
        // read itself: the watcher only asks about other threads.)
        assert!(!spinner_probe.stat_only, "this kernel has the syscall file");
        assert_eq!(thread_activity(&spinner_probe), ThreadActivity::Running);
        assert_eq!(thread_activity(&waiter_probe), ThreadActivity::Waiting);
        assert_eq!(thread_activity(&sleeper_probe), ThreadActivity::Blocked);
        // The fallback tells only asleep from running.
        assert_eq!(thread_activity(&stat_sleeper_probe), ThreadActivity::Blocked);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        spinner.join().unwrap();
        drop(held);
        waiter.join().unwrap();
        sleeper.join().unwrap();
        stat_sleeper.join().unwrap();
        // The same open files, read again, show the threads gone: each read is a fresh snapshot.
        assert_eq!(thread_activity(&sleeper_probe), ThreadActivity::Running);
        assert_eq!(thread_activity(&stat_sleeper_probe), ThreadActivity::Running);
    }

    fn own_thread_stat_probe() -> Option<ThreadProbe> {
        own_probe_of("stat")
    }

    fn sleep_300_ms() {
        std::thread::sleep(std::time::Duration::from_millis(300));
    }

    /// Runs `body` on a new thread, returning the thread and the probe it opened with `probe`.
    fn spawn_with_probe(
        probe: fn() -> Option<ThreadProbe>,
        body: impl FnOnce() + Send + 'static,
    ) -> (std::thread::JoinHandle<()>, ThreadProbe) {
        let (send, receive) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            send.send(probe().expect("probe")).unwrap();
            body();
        });
        (thread, receive.recv().unwrap())
    }
}
