//! Ctrl-C as a flag: set by the SIGINT handler a supervisor installs ([`catch_interrupt`]) or
//! by an embedding ([`interrupt`]), read by long calls ([`interrupted`]) and by every plugin's
//! `cancelled()`. A module of its own, importing nothing of the crate, so that the plugin
//! context can read it without depending on the isolation machinery.

use std::sync::atomic::{AtomicBool, Ordering};

/// Set by the SIGINT handler the supervisor installs, or by [`interrupt`].
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Set by [`leave_sigint_to_embedding`]: [`catch_interrupt`] then installs nothing.
static EMBEDDED: AtomicBool = AtomicBool::new(false);

/// Tells the host that the process embedding it owns SIGINT (the Python module: Ctrl-C is
/// Python's `KeyboardInterrupt`, which the module turns into [`interrupt`]). From then on
/// [`catch_interrupt`] leaves the process's signal handler alone.
pub fn leave_sigint_to_embedding() {
    EMBEDDED.store(true, Ordering::SeqCst);
}

/// Installs (once) a SIGINT handler that only sets a flag: the supervisor then cancels the
/// running calls, waits for them and stops, instead of dying mid-row. Does nothing in an
/// embedding that owns SIGINT ([`leave_sigint_to_embedding`]).
pub fn catch_interrupt() {
    if EMBEDDED.load(Ordering::SeqCst) {
        return;
    }
    extern "C" fn on_sigint(_: libc::c_int) {
        INTERRUPTED.store(true, Ordering::SeqCst);
    }
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        let handler = on_sigint as extern "C" fn(libc::c_int);
        // SAFETY: the handler only stores into an atomic, which is async-signal-safe.
        unsafe {
            libc::signal(libc::SIGINT, handler as libc::sighandler_t);
        }
    });
}

/// Whether Ctrl-C was pressed since [`catch_interrupt`] (or [`interrupt`] called), and
/// [`clear_interrupt`] was not called since.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Sets the flag a SIGINT sets: running calls are cancelled and a bench stops, as on
/// Ctrl-C. An embedding that handles Ctrl-C itself (the Python module, on
/// `KeyboardInterrupt`) calls it.
pub fn interrupt() {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Resets the flag [`interrupt`] and a SIGINT set, so that the next call runs. An embedding
/// calls it before each long call; the command line never does (one Ctrl-C ends its run).
pub fn clear_interrupt() {
    INTERRUPTED.store(false, Ordering::SeqCst);
}
