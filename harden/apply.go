package harden

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Errors Apply wraps (errors.Is).
var (
	// ErrMemoryLock: mlock = "required" and memory cannot be locked.
	ErrMemoryLock = errors.New("harden: cannot lock memory")
	// ErrSyscall: an extra_syscalls entry is unknown on this architecture
	// or is one vaultd never allows.
	ErrSyscall = errors.New("harden: syscall not allowed in extra_syscalls")
	// ErrSeccomp: the seccomp filter could not be built or installed.
	ErrSeccomp = errors.New("harden: seccomp")
	// ErrPrctl: setrlimit/prctl failed.
	ErrPrctl = errors.New("harden: process attribute")
	// ErrConfig: a mode Apply does not know.
	ErrConfig = errors.New("harden: bad setting")
)

// sys holds the syscalls Apply makes that tests need to replace (a root
// test process can always lock memory).
type sys struct {
	mlock func([]byte) error
}

func defaultSys() sys { return sys{mlock: unix.Mlock} }

// report is what the start-up line says.
type report struct {
	dumpable     bool
	noNewPrivs   bool
	mlockResult  string // "locked", "unavailable", "off"
	memlockLimit string
	lockedKB     int64
	seccompCount int
}

func (s sys) apply(ctx context.Context, h Options, log *slog.Logger) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// Build the filter first: a bad extra_syscalls entry should stop
	// start-up before anything irreversible has been done.
	var pol *filterPolicy
	switch h.Seccomp {
	case SeccompEnforce, SeccompLog:
		p, err := buildPolicy(h.Seccomp, h.ExtraSyscalls, os.Getpid())
		if err != nil {
			return err
		}
		pol = p
	case SeccompOff:
	default:
		return fmt.Errorf("%w: seccomp = %q", ErrConfig, h.Seccomp)
	}
	switch h.Mlock {
	case MlockRequired, MlockBestEffort, MlockOff:
	default:
		return fmt.Errorf("%w: mlock = %q", ErrConfig, h.Mlock)
	}

	rep := report{dumpable: h.Dumpable, noNewPrivs: h.NoNewPrivs}

	// 1. No core files; the hard limit too, so it cannot be raised back.
	if err := unix.Setrlimit(unix.RLIMIT_CORE, &unix.Rlimit{Cur: 0, Max: 0}); err != nil {
		return fmt.Errorf("%w: setrlimit(RLIMIT_CORE, 0): %w", ErrPrctl, err)
	}

	// 2. Not dumpable.
	if !h.Dumpable {
		if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
			return fmt.Errorf("%w: prctl(PR_SET_DUMPABLE, 0): %w", ErrPrctl, err)
		}
	}

	// 3. Memory locking works (or, for best-effort, we say it does not).
	rep.memlockLimit = memlockLimit()
	switch h.Mlock {
	case MlockOff:
		rep.mlockResult = "off"
	default:
		if err := s.probeLock(); err != nil {
			if h.Mlock == MlockRequired {
				return fmt.Errorf("%w (mlock = %q; raise LimitMEMLOCK= or grant CAP_IPC_LOCK): %w",
					ErrMemoryLock, h.Mlock, err)
			}
			rep.mlockResult = "unavailable"
		} else {
			rep.mlockResult = "locked"
		}
	}

	// 4. no_new_privs and seccomp, on every thread.
	switch {
	case pol != nil:
		if err := installFilter(pol, h.NoNewPrivs); err != nil {
			return err
		}
		rep.seccompCount = pol.allowed
	case h.NoNewPrivs:
		// PR_SET_NO_NEW_PRIVS is per thread and a cgo binary cannot use
		// syscall.AllThreadsSyscall; an allow-all filter installed with
		// TSYNC is the kernel's way to carry the bit to every thread.
		if err := installFilter(allowAllPolicy(), true); err != nil {
			return err
		}
	}
	if err := verifyThreads(pol != nil || h.NoNewPrivs, h.NoNewPrivs); err != nil {
		return err
	}
	rep.lockedKB = statusKB("VmLck")

	extra := h.ExtraSyscalls
	if extra == nil {
		extra = []string{}
	}
	lvl := slog.LevelInfo
	if rep.mlockResult == "unavailable" {
		lvl = slog.LevelWarn
	}
	log.Log(ctx, lvl, "process hardening",
		"dumpable", rep.dumpable,
		"core_limit", 0,
		"no_new_privs", rep.noNewPrivs,
		"mlock", string(h.Mlock),
		"mlock_result", rep.mlockResult,
		"memlock_limit", rep.memlockLimit,
		"locked_kb", rep.lockedKB,
		"seccomp", string(h.Seccomp),
		"seccomp_syscalls", rep.seccompCount,
		"extra_syscalls", extra,
	)
	return nil
}

// probeLock locks and releases one anonymous page. It fails exactly when
// lockedmem would: no CAP_IPC_LOCK and RLIMIT_MEMLOCK exhausted.
func (s sys) probeLock() error {
	page := os.Getpagesize()
	mem, err := unix.Mmap(-1, 0, page, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return fmt.Errorf("mmap: %w", err)
	}
	defer func() { _ = unix.Munmap(mem) }()
	if err := s.mlock(mem); err != nil {
		return fmt.Errorf("mlock: %w", err)
	}
	_ = unix.Munlock(mem)
	return nil
}

func memlockLimit() string {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_MEMLOCK, &rl); err != nil {
		return "unknown"
	}
	if rl.Cur == unix.RLIM_INFINITY {
		return "unlimited"
	}
	return strconv.FormatUint(rl.Cur, 10)
}

// statusKB reads a "<key>: <n> kB" line of /proc/self/status (-1 if absent).
func statusKB(key string) int64 {
	v, ok := statusField("/proc/self/status", key)
	if !ok {
		return -1
	}
	n, err := strconv.ParseInt(strings.TrimSuffix(v, " kB"), 10, 64)
	if err != nil {
		return -1
	}
	return n
}

func statusField(path, key string) (string, bool) {
	f, err := os.Open(path)
	if err != nil {
		return "", false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && k == key {
			return strings.TrimSpace(v), true
		}
	}
	return "", false
}

// verifyThreads checks every thread of the process: the seccomp syscall
// reports a TSYNC failure as a positive thread id, not as an error, so the
// outcome is read back from the kernel rather than assumed.
func verifyThreads(wantSeccomp, wantNNP bool) error {
	if !wantSeccomp && !wantNNP {
		return nil
	}
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return fmt.Errorf("%w: cannot verify threads: %w", ErrSeccomp, err)
	}
	for _, e := range ents {
		path := "/proc/self/task/" + e.Name() + "/status"
		if wantSeccomp {
			v, ok := statusField(path, "Seccomp")
			if !ok {
				continue // thread exited meanwhile
			}
			if v != "2" {
				return fmt.Errorf("%w: thread %s has Seccomp %s after TSYNC", ErrSeccomp, e.Name(), v)
			}
		}
		if wantNNP {
			if v, ok := statusField(path, "NoNewPrivs"); ok && v != "1" {
				return fmt.Errorf("%w: thread %s has NoNewPrivs %s", ErrSeccomp, e.Name(), v)
			}
		}
	}
	return nil
}
