//! Raw mode for the controlling terminal while the guest owns the console:
//! keys go to the guest as typed (no line editing, no echo, Ctrl-C is the
//! guest's), and the terminal is restored when podvm exits, also when it is
//! ended by SIGTERM, SIGINT or SIGHUP.

use std::sync::Mutex;

/// The settings to restore, when raw mode is on.
static SAVED: Mutex<Option<libc::termios>> = Mutex::new(None);
/// A copy readable from a signal handler without locking.
static mut SAVED_FOR_SIGNAL: Option<libc::termios> = None;

/// Whether standard input is a terminal.
pub fn stdin_is_tty() -> bool {
    // SAFETY: isatty only inspects the descriptor.
    unsafe { libc::isatty(libc::STDIN_FILENO) == 1 }
}

extern "C" fn restore_and_exit(sig: libc::c_int) {
    // SAFETY: tcsetattr and _exit are async-signal-safe; the saved settings
    // were written before this handler was installed and never change
    // while it is.
    unsafe {
        if let Some(t) = *std::ptr::addr_of!(SAVED_FOR_SIGNAL) {
            libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &t);
        }
        libc::_exit(128 + sig);
    }
}

/// Puts the terminal on standard input in raw mode. Returns whether it did.
pub fn enter_raw_mode() -> bool {
    if !stdin_is_tty() {
        return false;
    }
    // SAFETY: termios is plain data; tcgetattr fills it from a valid fd.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: valid fd and pointer.
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
    // SAFETY: single-threaded at this point (before vCPUs start); the
    // static is written once before the handlers that read it exist.
    unsafe { SAVED_FOR_SIGNAL = Some(saved) };
    *SAVED.lock().unwrap_or_else(|e| e.into_inner()) = Some(saved);
    for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
        // SAFETY: installs a handler that only calls async-signal-safe
        // functions.
        unsafe { libc::signal(sig, restore_and_exit as *const () as libc::sighandler_t) };
    }
    // SAFETY: valid fd and pointer.
    unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &t) == 0 }
}

/// Restores the terminal settings saved by [`enter_raw_mode`].
pub fn restore() {
    if let Some(t) = SAVED.lock().unwrap_or_else(|e| e.into_inner()).take() {
        // SAFETY: valid fd and pointer.
        unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &t) };
    }
}
