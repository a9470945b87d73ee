//! `api::route`: a method, a path and a body, as the API thread hands
//! them over after hyper parsed the request. Nothing may panic, and every
//! refusal must render as a response.
//!
//! Input: byte 0 picks the method; the path runs to the first `\n`, the
//! body is the rest.

#![no_main]

use hyper::Method;
use libfuzzer_sys::fuzz_target;

const METHODS: &[&str] = &["GET", "PUT", "PATCH", "POST", "DELETE", "HEAD", "OPTIONS"];

fuzz_target!(|data: &[u8]| {
    let Some((&m, rest)) = data.split_first() else {
        return;
    };
    let method = Method::from_bytes(METHODS[usize::from(m) % METHODS.len()].as_bytes())
        .expect("a standard method");
    let (path, body) = match rest.iter().position(|&b| b == b'\n') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    // hyper hands over the path of a parsed URI: always valid UTF-8.
    let Ok(path) = std::str::from_utf8(path) else {
        return;
    };
    if let Err(e) = api::route(&method, path, body) {
        let response = api::error_response(&e);
        assert!(
            response.status().is_client_error() || response.status().is_server_error(),
            "an error answered {}",
            response.status()
        );
    }
});
