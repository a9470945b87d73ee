//! `resources::parse_config_file_contents`: the JSON of
//! `podvm serve --config-file` (Firecracker's format). Nothing may panic;
//! every error must print.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The file is read as a string before it is parsed.
    let Ok(json) = std::str::from_utf8(data) else {
        return;
    };
    match resources::parse_config_file_contents(json) {
        Ok(contents) => {
            // The builder validates the spec next; a spec that passes has
            // a root drive at most once.
            if contents.spec.validate(32).is_ok() {
                let roots = contents.spec.drives.iter().filter(|d| d.is_root_device).count();
                assert!(roots <= 1, "{roots} root drives validated");
            }
            let _ = contents.spec.boot_source.cmdline();
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
