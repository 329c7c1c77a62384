package harden

import (
	"fmt"
	"regexp"
	"slices"

	"github.com/elastic/go-seccomp-bpf/arch"
)

// Options say how far Apply hardens the process. vaultd's wiring fills
// them from the [harden] table of its config file; harden itself knows
// nothing of that file.
type Options struct {
	Mlock   MlockMode
	Seccomp SeccompMode
	// ExtraSyscalls are allowed on top of the built-in filter (CheckSyscalls
	// says whether a list is usable on this machine).
	ExtraSyscalls []string
	NoNewPrivs    bool
	// Dumpable leaves the process dumpable (core dumps, same-uid ptrace).
	Dumpable bool
}

// MlockMode says whether memory locking must work.
type MlockMode string

// Memory locking modes.
const (
	MlockRequired   MlockMode = "required"    // refuse to start when memory cannot be locked
	MlockBestEffort MlockMode = "best-effort" // lock when possible, warn otherwise
	MlockOff        MlockMode = "off"         // do not probe
)

// SeccompMode says what the syscall filter does with a syscall outside the
// allow-list.
type SeccompMode string

// Seccomp modes.
const (
	SeccompEnforce SeccompMode = "enforce" // refuse it (EPERM)
	SeccompLog     SeccompMode = "log"     // allow it and have the kernel log it
	SeccompOff     SeccompMode = "off"     // install no filter
)

// ParseMlock reads a memory locking mode as written in a config file; ""
// (not set) is the default, MlockRequired. A refusal's message is the bare
// reason, for the caller to prefix with where the value came from; it
// matches ErrConfig.
func ParseMlock(s string) (MlockMode, error) {
	switch m := MlockMode(s); m {
	case "":
		return MlockRequired, nil
	case MlockRequired, MlockBestEffort, MlockOff:
		return m, nil
	}
	return "", &settingError{fmt.Sprintf("not allowed (want %q, %q or %q)", MlockRequired, MlockBestEffort, MlockOff)}
}

// ParseSeccomp reads a seccomp mode as written in a config file; "" is the
// default, SeccompEnforce. Refusals are as ParseMlock's.
func ParseSeccomp(s string) (SeccompMode, error) {
	switch m := SeccompMode(s); m {
	case "":
		return SeccompEnforce, nil
	case SeccompEnforce, SeccompLog, SeccompOff:
		return m, nil
	}
	return "", &settingError{fmt.Sprintf("not allowed (want %q, %q or %q)", SeccompEnforce, SeccompLog, SeccompOff)}
}

// settingError is a refused setting: its text is only the reason, so that
// the config error built from it reads "harden.mlock: not allowed (...)".
type settingError struct{ reason string }

func (e *settingError) Error() string { return e.reason }
func (e *settingError) Unwrap() error { return ErrConfig }

var syscallNameRE = regexp.MustCompile(`^[a-z0-9_]{1,64}$`)

// CheckSyscalls says whether names can be Options.ExtraSyscalls on this
// machine: each a syscall of its architecture that vaultd may allow
// (none of neverAllowed), none twice. It lets a bad entry in the config
// file fail when the file is loaded, at its line, rather than when the
// filter is installed. A refusal gives the index of the entry and matches
// ErrSyscall; its message is the bare reason ("not a syscall on x86_64"),
// for the caller to prefix with where the name came from.
func CheckSyscalls(names []string) (int, error) {
	info, archErr := arch.GetInfo("")
	seen := make(map[string]bool, len(names))
	for i, name := range names {
		if !syscallNameRE.MatchString(name) {
			return i, &syscallError{"not a syscall name"}
		}
		if slices.Contains(neverAllowed, name) {
			return i, &syscallError{"never allowed"}
		}
		if archErr == nil {
			if _, ok := info.SyscallNames[name]; !ok {
				return i, &syscallError{"not a syscall on " + info.Name}
			}
		}
		if seen[name] {
			return i, &syscallError{"listed twice"}
		}
		seen[name] = true
	}
	return -1, nil
}

// syscallError is a refused extra syscall; like settingError, its text is
// only the reason.
type syscallError struct{ reason string }

func (e *syscallError) Error() string { return e.reason }
func (e *syscallError) Unwrap() error { return ErrSyscall }
