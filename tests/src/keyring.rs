//! A process the kernel refuses the keyring to, as Docker's default seccomp profile does
//! (`add_key`, `request_key` and `keyctl` answer EPERM: the kernel keyring is not
//! namespaced, so containers are kept away from it). Used through the `without-keyring`
//! binary, which installs the filter on itself and then runs the command it was given: the
//! filter holds across `exec` and for every child.

use std::collections::BTreeMap;

use seccompiler::{BpfProgram, SeccompAction, SeccompFilter};

/// The filter: every keyring system call fails with EPERM, everything else is allowed.
pub fn keyring_refused() -> BpfProgram {
    let rules = [libc::SYS_add_key, libc::SYS_request_key, libc::SYS_keyctl]
        .into_iter()
        .map(|call| (call, Vec::new()))
        .collect::<BTreeMap<_, _>>();
    let arch = std::env::consts::ARCH
        .try_into()
        .expect("seccomp filters for x86_64, aarch64 and riscv64");
    SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .and_then(BpfProgram::try_from)
    .expect("a valid seccomp filter")
}
