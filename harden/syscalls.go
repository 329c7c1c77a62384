package harden

import "golang.org/x/sys/unix"

// The allow-list. It was found empirically (strace -f of vaultd through
// the whole e2e suite, then seccomp = "log"; see docs/hardening.md) and
// checked against the Go runtime's and glibc's sources. Only what happens
// AFTER start-up matters: dlopen of the PKCS#11 module, C_Initialize,
// C_Login, bbolt's open, socket binding and certificate loading all happen
// before Apply.
//
// Names absent on the running architecture (the legacy x86_64 entries such
// as open, stat, poll on arm64) are skipped; TestListsAreKnownSyscalls
// checks that every name exists on x86_64 or aarch64.
var allowGroups = []struct {
	why   string
	names []string
}{
	{"Go scheduler, glibc and SoftHSM's threads (mutexes, sleeping, signals for preemption)", []string{
		"futex", "sched_yield", "nanosleep", "clock_nanosleep",
		"rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "sigaltstack", "restart_syscall",
		"gettid", "getpid", "exit", "exit_group",
		"set_robust_list", "rseq", // glibc, at every pthread_create
		"sched_getaffinity", // GOMAXPROCS, re-read by the runtime
		"getuid", "geteuid", "getgid", "getegid",
		"uname",
	}},
	{"clocks and timers (vDSO fallbacks; runtime profiling timers)", []string{
		"clock_gettime", "clock_getres", "gettimeofday", "time",
		"setitimer", "timer_create", "timer_settime", "timer_delete",
	}},
	{"memory: Go heap, glibc malloc, OpenSSL inside SoftHSM, bbolt's remap, lockedmem buffers for new DEKs", []string{
		"mmap", "munmap", "mprotect", "madvise", "mremap", "brk", "mincore",
		"mlock", "munlock",
	}},
	{"netpoller and glibc's blocking waits", []string{
		"epoll_create1", "epoll_ctl", "epoll_pwait", "epoll_pwait2", "epoll_wait",
		"eventfd2", "pipe2", "poll", "ppoll",
	}},
	{"networking: API (TCP), HTTP/3 (UDP with GSO/GRO, batched), outbound calls to providers and DNS, sd_notify", []string{
		"connect", "bind", "listen", "accept4", "accept",
		"setsockopt", "getsockopt", "getsockname", "getpeername", "shutdown",
		"sendto", "recvfrom", "sendmsg", "recvmsg", "sendmmsg", "recvmmsg",
	}},
	{"files: bbolt (pwrite, fdatasync, flock, ftruncate, fallocate), audit mirror, SoftHSM token files (fcntl locks, directory scans, object files), SIGHUP reload, /proc and cgroup reads by the runtime", []string{
		"openat", "open", "close", "read", "write", "readv", "writev",
		"pread64", "pwrite64", "lseek",
		"fstat", "newfstatat", "stat", "lstat", "statx", "fstatfs", "statfs",
		"fsync", "fdatasync", "flock", "fcntl", "ftruncate", "fallocate",
		"rename", "renameat", "renameat2", "unlink", "unlinkat", "mkdir", "mkdirat",
		"getdents64", "readlink", "readlinkat", "access", "faccessat", "faccessat2",
		"dup", "dup3", "getcwd",
		"fchmod", // os.File.Chmod on our own files (storage's backup states 0600 with it)
	}},
	{"randomness: crypto/rand, OpenSSL", []string{"getrandom"}},
	// Found with strace of the harden child test on Debian 12's
	// opencryptoki 3.8 (ock_test.go): refused, fchown left a new token
	// object without the pkcs11 group that pkcsslotd and other members
	// read it through; shmdt runs at C_Finalize. Neither reaches beyond
	// files and mappings vaultd already holds.
	{"openCryptoki's module: a new token object file gets the pkcs11 group (fchown), its shared memory is detached at C_Finalize (shmdt)", []string{
		"fchown", "shmdt",
	}},
}

// neverAllowed are refused in every seccomp mode and refused as
// extra_syscalls: nothing in a token vault needs them and each is a way to
// read another process's (or our own) memory from outside, run other
// code, change the kernel, escape the sandbox, or reach kernel attack
// surface that seccomp cannot see into (io_uring performs I/O without
// syscalls, so it would bypass this very filter).
var neverAllowed = []string{
	// other processes' memory, and ours from outside
	"ptrace", "process_vm_readv", "process_vm_writev", "process_madvise", "pidfd_getfd", "kcmp",
	// running other programs
	"execve", "execveat",
	// filesystems and namespaces
	"mount", "umount2", "umount", "mount_setattr", "move_mount", "open_tree", "fsopen", "fsconfig",
	"fsmount", "fspick", "pivot_root", "chroot", "setns", "unshare",
	"open_by_handle_at", "name_to_handle_at",
	// the kernel itself
	"init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load", "reboot",
	"bpf", "perf_event_open", "userfaultfd", "iopl", "ioperm", "modify_ldt",
	"swapon", "swapoff", "acct", "syslog", "quotactl", "quotactl_fd", "vhangup", "uselib",
	"lookup_dcookie", "sysfs", "_sysctl", "nfsservctl",
	"io_uring_setup", "io_uring_enter", "io_uring_register",
	// keyrings (cross-process secret store, historically buggy)
	"keyctl", "add_key", "request_key",
	// clocks and identity of the machine
	"settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "sethostname", "setdomainname",
	// execution domain (e.g. READ_IMPLIES_EXEC)
	"personality",
}

// Flags used by the argument conditions.
const (
	// Namespace flags that must never be passed to clone. CLONE_NEWTIME
	// shares bits with the exit signal in clone(2), so it is not listed
	// (clone3, the only way to pass it, is refused).
	cloneNamespaces = unix.CLONE_NEWNS | unix.CLONE_NEWCGROUP | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC |
		unix.CLONE_NEWUSER | unix.CLONE_NEWPID | unix.CLONE_NEWNET

	archSetFS = 0x1002 // ARCH_SET_FS (amd64): TLS of a new Go thread
	archGetFS = 0x1003 // ARCH_GET_FS
)

// socketDomains are the address families vaultd uses after start-up:
// AF_INET/AF_INET6 (outbound calls, DNS, HTTP/3) and AF_UNIX (sd_notify,
// glibc's nscd probe) - the same three the unit's RestrictAddressFamilies=
// allows. AF_NETLINK is left out: glibc's resolver copes without it, and
// nothing in vaultd lists interfaces once serving.
var socketDomains = []uint64{unix.AF_UNIX, unix.AF_INET, unix.AF_INET6}

// prctlOptions: PR_SET_VMA names the runtime's anonymous mappings (Go
// 1.25+); PR_SET_NAME/PR_GET_NAME are thread names; PR_GET_DUMPABLE is a
// read. Everything else - PR_SET_DUMPABLE above all - is refused.
var prctlOptions = []uint64{unix.PR_SET_VMA, unix.PR_SET_NAME, unix.PR_GET_NAME, unix.PR_GET_DUMPABLE}
