//! Raw mode for the controlling terminal while the guest owns the console:
//! keys go to the guest as typed (no line editing, no echo, Ctrl-C is the
//! guest's), and the terminal is restored when podvm exits.
//!
//! Every way podvm ends goes through [`restore`]: the guest ending, the
//! API's `Shutdown`, an error, a panic (a hook installed in `main`), and
//! SIGTERM, SIGINT or SIGHUP — those are blocked in every thread before
//! raw mode is entered (`vmm::EventLoop::new`) and read by the event loop,
//! which then ends the VM in order, so no signal handler is needed.

use std::sync::Mutex;

/// The settings to restore, when raw mode is on.
static SAVED: Mutex<Option<libc::termios>> = Mutex::new(None);

/// Whether standard input is a terminal.
pub fn stdin_is_tty() -> bool {
    // SAFETY: isatty only inspects the descriptor.
    unsafe { libc::isatty(libc::STDIN_FILENO) == 1 }
}

/// Puts the terminal on standard input in raw mode. Returns whether it did.
pub fn enter_raw_mode() -> bool {
    if !stdin_is_tty() {
        return false;
    }
    // SAFETY: termios is plain data, valid when zeroed.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: tcgetattr fills the struct it is given from a valid fd.
    if unsafe { libc::tcgetattr(libc::STDIN_FILENO, &mut t) } != 0 {
        return false;
    }
    let saved = t;
    // cfmakeraw(3), except that output processing stays on so the guest's
    // and podvm's "\n" still return the cursor to the left margin.
    let oflag = t.c_oflag;
    // SAFETY: cfmakeraw only edits the termios struct it is given.
    unsafe { libc::cfmakeraw(&mut t) };
    t.c_oflag = oflag;
    t.c_cc[libc::VMIN] = 1;
    t.c_cc[libc::VTIME] = 0;
    *SAVED.lock().unwrap_or_else(|e| e.into_inner()) = Some(saved);
    // SAFETY: tcsetattr reads the struct it is given; the fd is valid.
    unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &t) == 0 }
}

/// Restores the terminal settings saved by [`enter_raw_mode`], once.
pub fn restore() {
    // `try_lock`: a panic while the lock is held (there is none in this
    // module) must not deadlock the panic hook.
    let Ok(mut saved) = SAVED.try_lock() else {
        return;
    };
    if let Some(t) = saved.take() {
        // SAFETY: tcsetattr reads the struct it is given; the fd is valid.
        unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &t) };
    }
}
