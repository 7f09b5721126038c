//! `without-keyring COMMAND [ARGS...]`: runs COMMAND where the kernel keyring system calls
//! fail with EPERM (see `lanyard_tests::keyring`), for the tests of the CLI's fallback from
//! the OS keyring to its key file.

use std::os::unix::process::CommandExt;

fn main() {
    let mut args = std::env::args_os().skip(1);
    let Some(program) = args.next() else {
        eprintln!("usage: without-keyring COMMAND [ARGS...]");
        std::process::exit(2);
    };
    if let Err(e) = seccompiler::apply_filter(&lanyard_tests::keyring::keyring_refused()) {
        eprintln!("without-keyring: cannot install the seccomp filter: {e}");
        std::process::exit(2);
    }
    let err = std::process::Command::new(&program).args(args).exec();
    eprintln!(
        "without-keyring: cannot run {}: {err}",
        program.to_string_lossy()
    );
    std::process::exit(127);
}
