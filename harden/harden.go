// Package harden applies process hardening once vaultd's HSM session, store
// and listeners are up and before the first request is served.
//
// Apply runs these steps, in this order, each governed by Options (vaultd
// fills them from the [harden] table of its config file), and reports all
// of them in one "process hardening" log line:
//
//  1. setrlimit(RLIMIT_CORE, 0/0): no core file, ever (the hard limit is
//     lowered too, so the process cannot raise it back).
//  2. prctl(PR_SET_DUMPABLE, 0) unless dumpable = true: no core dump through
//     a pipe handler either, /proc/<pid>/mem and friends become root-only,
//     and same-uid processes can no longer ptrace vaultd.
//  3. Memory locking (mlock). Secrets never sit in ordinary heap memory for
//     long: plaintext DEKs live in internal/lockedmem buffers (mlocked,
//     guard-paged, MADV_DONTDUMP) and envelope.NewKeys already refuses to
//     start when it cannot lock them. Apply probes that locking works (one
//     page, locked and released) so the start-up line states the truth,
//     and with mlock = "required" a failed probe stops vaultd.
//     Apply deliberately does NOT call mlockall. With MCL_CURRENT|MCL_FUTURE
//     every mapping is locked, including bbolt's read-only mmap of the whole
//     database file: with MCL_ONFAULT each page read is pinned for good, so
//     a scan of a large database ends with the file resident and unswappable
//     and, once RLIMIT_MEMLOCK (LimitMEMLOCK=) is reached, with mmap/page
//     faults failing (bbolt's remap on growth returns EAGAIN/ENOMEM) - a
//     denial of service caused by the database size rather than load.
//     Without MCL_ONFAULT it is worse: mlockall populates the whole mapping
//     at once. File-backed database pages are ciphertext and need no
//     locking; what remains (transient plaintext in Go heap buffers while a
//     request is handled) is kept out of swap for the whole service by the
//     unit's MemorySwapMax=0, which costs nothing per page and cannot fail.
//     See docs/hardening.md.
//  4. no_new_privs (default true) and a seccomp allow-list filter installed
//     on every thread with SECCOMP_FILTER_FLAG_TSYNC (see syscalls.go for the
//     list and why each entry is there, seccomp.go for the program). "enforce" refuses everything else
//     with EPERM; "log" lets it through and has the kernel log it (to the
//     audit log), which is how a new PKCS#11 module is qualified; "off"
//     installs no filter. A few syscalls (ptrace, exec, mount, module and
//     kexec loading, bpf, io_uring, namespaces, keyrings...) are refused in
//     both modes and cannot be enabled through extra_syscalls.
//
// Seccomp comes last because the steps before it use syscalls (setrlimit,
// prctl) the filter then refuses - including the ones that would undo them.
// Any failure is returned and vaultd does not start: hardening fails closed.
package harden

import (
	"context"
	"log/slog"
)

// Apply hardens the running process as opts say.
func Apply(ctx context.Context, opts Options, log *slog.Logger) error {
	return defaultSys().apply(ctx, opts, log)
}
