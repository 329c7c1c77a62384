package harden

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/elastic/go-seccomp-bpf/arch"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"

	"github.com/vaultd/vaultd/internal/softhsmtest"
)

func TestMain(m *testing.M) {
	if s := os.Getenv(childEnv); s != "" {
		os.Exit(runChild(s))
	}
	os.Exit(m.Run())
}

type childOpts struct {
	mlock     MlockMode
	seccomp   SeccompMode
	extra     []string
	noNNP     bool
	dumpable  bool
	noIPCLock bool
	hsm       bool
	// hsmEnv, when set, replaces the SoftHSM token: the environment of
	// another token (openCryptoki's, see ock_test.go).
	hsmEnv []string
}

// child runs the test binary as a hardening child and returns what it saw.
func child(t *testing.T, name string, o childOpts) obs {
	t.Helper()
	dir := t.TempDir()
	env := append(os.Environ(),
		childEnv+"="+name, envDir+"="+dir, envMlock+"="+string(o.mlock), envSeccomp+"="+string(o.seccomp),
		envExtra+"="+strings.Join(o.extra, ","))
	if o.noNNP {
		env = append(env, envNNP+"=0")
	}
	if o.dumpable {
		env = append(env, envDumpable+"=1")
	}
	if o.noIPCLock {
		env = append(env, envNoLock+"=1")
	}
	env = append(env, o.hsmEnv...)
	if o.hsm {
		tok := softhsmtest.NewConf(t).NewToken(t)
		env = append(env, tok.Env(), envModule+"="+tok.Module, envToken+"="+tok.Label, envPIN+"="+tok.PIN)
	}
	// The cgo resolver too (glibc NSS), as a vendor-neutral host may use it.
	env = append(env, "GODEBUG=netdns=cgo")
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = env
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("child %s: %v\nstdout: %s\nstderr: %s", name, err, out, stderr.String())
	}
	var res obs
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("child %s: bad output %q: %v\nstderr: %s", name, out, err, stderr.String())
	}
	if p, ok := res["panic"]; ok {
		t.Fatalf("child %s panicked: %v", name, p)
	}
	if e, ok := res["setup_err"]; ok {
		t.Fatalf("child %s setup: %v", name, e)
	}
	return res
}

// want checks string observations.
func want(t *testing.T, o obs, exp map[string]string) {
	t.Helper()
	for k, v := range exp {
		got, ok := o[k]
		if !ok {
			t.Errorf("%s: not observed", k)
			continue
		}
		if s, _ := got.(string); s != v {
			t.Errorf("%s = %v, want %q", k, got, v)
		}
	}
}

func allThreads(t *testing.T, o obs, key, want string) {
	t.Helper()
	ts, _ := o[key].([]any)
	if len(ts) == 0 {
		t.Errorf("%s: no threads observed", key)
	}
	for _, s := range ts {
		if s != want {
			t.Errorf("%s: a thread is %v, want %s (all: %v)", key, s, want, ts)
		}
	}
}

func oneLogLine(t *testing.T, o obs) map[string]any {
	t.Helper()
	lines, _ := o["log"].([]any)
	if len(lines) != 1 {
		t.Fatalf("want one \"process hardening\" line, got %v", o["log"])
	}
	return lines[0].(map[string]any)
}

// TestEnforce: the production settings, with a real SoftHSM token, a real
// bbolt file and real sockets used after hardening.
func TestEnforce(t *testing.T) {
	o := child(t, "enforce", childOpts{mlock: MlockRequired, seccomp: SeccompEnforce, hsm: true})
	want(t, o, map[string]string{
		"apply_err":      "",
		"seccomp_status": "2",
		"no_new_privs":   "1",
		"core_limit":     "0 0 bytes",
		// refused by the filter
		"mount":         "EPERM",
		"ptrace":        "EPERM",
		"execve":        "EPERM",
		"os_exec":       "EPERM", // the fork (clone without CLONE_THREAD) already
		"kill_init":     "EPERM", // signals only to ourselves
		"set_dumpable":  "EPERM", // cannot be undone
		"raise_core":    "EPERM",
		"socket_packet": "EPERM",
		"getppid":       "EPERM", // not on the list: default action
		"keyctl":        "EPERM",
		// allowed
		"kill_self":      "",
		"get_core":       "",
		"files":          "",
		"bbolt":          "",
		"net_tcp":        "",
		"net_udp":        "",
		"sd_notify":      "",
		"dns_default":    "",
		"dns_go":         "",
		"hsm":            "",
		"hsm_close":      "",
		"lockedmem":      "",
		"lockedmem_free": "",
	})
	if f, _ := o["seccomp_filters"].(string); f == "" || f == "0" {
		t.Errorf("Seccomp_filters = %q, want >= 1", f)
	}
	if d, _ := o["dumpable"].(float64); d != 0 {
		t.Errorf("PR_GET_DUMPABLE = %v, want 0", o["dumpable"])
	}
	if kb, _ := o["vmlck_kb"].(float64); kb <= 0 {
		t.Errorf("VmLck = %v kB with a locked buffer, want > 0", o["vmlck_kb"])
	}
	allThreads(t, o, "threads", "2/1")
	allThreads(t, o, "new_threads", "2/1")

	l := oneLogLine(t, o)
	if l["level"] != "INFO" || l["dumpable"] != false || l["core_limit"] != float64(0) || l["no_new_privs"] != true ||
		l["mlock"] != "required" || l["mlock_result"] != "locked" || l["seccomp"] != "enforce" {
		t.Errorf("log line %v", l)
	}
	if n, _ := l["seccomp_syscalls"].(float64); n < 50 {
		t.Errorf("seccomp_syscalls = %v", l["seccomp_syscalls"])
	}
}

// TestLogMode: nothing on the list is blocked; the never-allowed set still is.
func TestLogMode(t *testing.T) {
	o := child(t, "log", childOpts{mlock: MlockBestEffort, seccomp: SeccompLog})
	want(t, o, map[string]string{
		"apply_err":      "",
		"seccomp_status": "2",
		"no_new_privs":   "1",
		"getppid":        "", // logged, not refused
		"kill_init":      "", // condition fails -> default -> logged
		"set_dumpable":   "", // idem: log mode really lets things through
		"mount":          "EPERM",
		"ptrace":         "EPERM",
		"execve":         "EPERM",
		"keyctl":         "EPERM",
		"files":          "",
		"net_tcp":        "",
	})
	if o["getppid_ok"] != true {
		t.Errorf("getppid returned the wrong value in log mode")
	}
	if l := oneLogLine(t, o); l["seccomp"] != "log" || l["mlock"] != "best-effort" || l["mlock_result"] != "locked" {
		t.Errorf("log line %v", l)
	}
}

// TestExtraSyscalls: an extra name is allowed on top of the list.
func TestExtraSyscalls(t *testing.T) {
	o := child(t, "extra", childOpts{mlock: MlockOff, seccomp: SeccompEnforce, extra: []string{"getppid"}})
	want(t, o, map[string]string{"apply_err": "", "getppid": "", "mount": "EPERM"})
	if o["getppid_ok"] != true {
		t.Errorf("getppid wrong")
	}
	if l := oneLogLine(t, o); l["mlock_result"] != "off" || !slices.Equal(toStrings(l["extra_syscalls"]), []string{"getppid"}) {
		t.Errorf("log line %v", l)
	}
}

// TestBadExtraSyscalls: an unknown or never-allowed name stops start-up
// before anything irreversible happened, and the error names it.
func TestBadExtraSyscalls(t *testing.T) {
	for _, name := range []string{"no_such_syscall", "ptrace", "execve", "io_uring_setup"} {
		o := child(t, "bad-extra", childOpts{mlock: MlockRequired, seccomp: SeccompEnforce, extra: []string{"read", name}})
		msg, _ := o["apply_err"].(string)
		if !strings.Contains(msg, `"`+name+`"`) || o["err_syscall"] != true {
			t.Errorf("%s: apply_err %q (ErrSyscall %v)", name, msg, o["err_syscall"])
		}
		want(t, o, map[string]string{"seccomp_after_error": "0"})
		if o["core_after_error"] != o["core_before"] || o["core_before"] == "0 0 bytes" {
			t.Errorf("%s: core limit %v -> %v: changed before the error", name, o["core_before"], o["core_after_error"])
		}
	}
}

// TestSeccompOff: no filtering, but no_new_privs still reaches every
// thread (through an allow-all TSYNC filter), and the other steps run.
func TestSeccompOff(t *testing.T) {
	o := child(t, "off", childOpts{mlock: MlockRequired, seccomp: SeccompOff})
	want(t, o, map[string]string{
		"apply_err": "", "no_new_privs": "1", "core_limit": "0 0 bytes",
		"mount": "ENOENT", "ptrace": "ESRCH", "getppid": "", "kill_init": "",
	})
	allThreads(t, o, "threads", "2/1")
	if d, _ := o["dumpable"].(float64); d != 0 {
		t.Errorf("dumpable %v", o["dumpable"])
	}
	if l := oneLogLine(t, o); l["seccomp"] != "off" || l["seccomp_syscalls"] != float64(0) {
		t.Errorf("log line %v", l)
	}
}

// TestAllOff: dumpable = true, no_new_privs = false, seccomp and mlock off.
func TestAllOff(t *testing.T) {
	o := child(t, "all-off", childOpts{mlock: MlockOff, seccomp: SeccompOff, noNNP: true, dumpable: true})
	want(t, o, map[string]string{"apply_err": "", "no_new_privs": "0", "seccomp_status": "0", "core_limit": "0 0 bytes"})
	if d, _ := o["dumpable"].(float64); d != 1 {
		t.Errorf("dumpable %v, want 1", o["dumpable"])
	}
}

// TestMlockRequiredFails: without CAP_IPC_LOCK and with RLIMIT_MEMLOCK = 0
// locking fails, and "required" refuses to start.
func TestMlockRequiredFails(t *testing.T) {
	o := child(t, "mlock-fail", childOpts{mlock: MlockRequired, seccomp: SeccompEnforce, noIPCLock: true})
	if o["err_memory_lock"] != true {
		t.Fatalf("apply_err %v, want ErrMemoryLock", o["apply_err"])
	}
	want(t, o, map[string]string{"seccomp_after_error": "0"})
}

// TestMlockBestEffortDegrades: the same failure with "best-effort" starts,
// and the start-up line says locking is unavailable, at WARN.
func TestMlockBestEffortDegrades(t *testing.T) {
	o := child(t, "mlock-degrade", childOpts{mlock: MlockBestEffort, seccomp: SeccompEnforce, noIPCLock: true})
	want(t, o, map[string]string{"apply_err": ""})
	if l := oneLogLine(t, o); l["mlock_result"] != "unavailable" || l["level"] != "WARN" || l["memlock_limit"] != "0" {
		t.Errorf("log line %v", l)
	}
}

// TestProbeLockInjected: the probe reports the mlock error (no subprocess:
// nothing is applied).
func TestProbeLockInjected(t *testing.T) {
	s := sys{mlock: func([]byte) error { return unix.EPERM }}
	if err := s.probeLock(); !errors.Is(err, unix.EPERM) {
		t.Fatalf("probeLock = %v", err)
	}
	if err := defaultSys().probeLock(); err != nil {
		t.Fatalf("root test process cannot lock a page: %v", err)
	}
}

func TestApplyRejectsBadModes(t *testing.T) {
	ctx := t.Context()
	for _, h := range []Options{
		{Mlock: "all", Seccomp: SeccompOff},
		{Mlock: MlockOff, Seccomp: "kill"},
	} {
		// Both fail before any step is applied, so in-process is safe.
		err := Apply(ctx, h, nil)
		if !errors.Is(err, ErrConfig) {
			t.Errorf("%+v: %v", h, err)
		}
	}
	if v := statusValue("Seccomp"); v != "0" {
		t.Fatalf("test process got hardened: Seccomp %s", v)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := Apply(cctx, Options{}, nil); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
}

func toStrings(v any) []string {
	a, _ := v.([]any)
	out := make([]string, 0, len(a))
	for _, x := range a {
		s, _ := x.(string)
		out = append(out, s)
	}
	return out
}

// --- The filter program itself, run in x/net/bpf's VM (no kernel). ---

type vmFilter struct {
	t    *testing.T
	vm   *bpf.VM
	info *arch.Info
}

func newVM(t *testing.T, mode SeccompMode, extra []string, pid int) vmFilter {
	t.Helper()
	p, err := buildPolicy(mode, extra, pid)
	if err != nil {
		t.Fatal(err)
	}
	insns, ok := bpf.Disassemble(p.prog)
	if !ok {
		t.Fatal("program does not disassemble")
	}
	vm, err := bpf.NewVM(insns)
	if err != nil {
		t.Fatal(err)
	}
	info, _ := arch.GetInfo("")
	return vmFilter{t: t, vm: vm, info: info}
}

// run evaluates the filter for syscall name with args on arch a (0: ours).
func (f vmFilter) run(name string, a uint32, args ...uint64) uint32 {
	f.t.Helper()
	nr, ok := f.info.SyscallNames[name]
	if !ok {
		f.t.Fatalf("no syscall %s", name)
	}
	return f.runNr(uint32(nr), a, args...)
}

func (f vmFilter) runNr(nr, a uint32, args ...uint64) uint32 {
	f.t.Helper()
	if a == 0 {
		a = uint32(f.info.ID)
	}
	// seccomp_data: nr, arch, instruction_pointer, args[6]. The VM loads
	// big-endian; LoadAbsolute in the kernel is native-endian, so the
	// buffer is built as the kernel would present it to a byte-swapping
	// reader: each 32-bit word in big-endian.
	buf := make([]byte, 64)
	binary.BigEndian.PutUint32(buf[0:], nr)
	binary.BigEndian.PutUint32(buf[4:], a)
	for i, v := range args {
		lo, hi := argOffsets(i)
		binary.BigEndian.PutUint32(buf[lo:], uint32(v))
		binary.BigEndian.PutUint32(buf[hi:], uint32(v>>32))
	}
	r, err := f.vm.Run(buf)
	if err != nil {
		f.t.Fatal(err)
	}
	return uint32(r)
}

func TestFilterProgram(t *testing.T) {
	const pid = 4242
	f := newVM(t, SeccompEnforce, nil, pid)
	for _, g := range allowGroups {
		for _, n := range g.names {
			if _, ok := f.info.SyscallNames[n]; ok {
				if r := f.run(n, 0); r != retAllow {
					t.Errorf("%s: %#x, want allow", n, r)
				}
			}
		}
	}
	for _, n := range neverAllowed {
		if _, ok := f.info.SyscallNames[n]; ok {
			if r := f.run(n, 0); r != retEPERM {
				t.Errorf("%s: %#x, want EPERM", n, r)
			}
		}
	}
	threadFlags := uint64(unix.CLONE_VM | unix.CLONE_FS | unix.CLONE_FILES | unix.CLONE_SIGHAND | unix.CLONE_THREAD |
		unix.CLONE_SYSVSEM | unix.CLONE_SETTLS | unix.CLONE_PARENT_SETTID | unix.CLONE_CHILD_CLEARTID)
	for _, c := range []struct {
		name string
		args []uint64
		want uint32
	}{
		{"clone3", nil, retENOSYS},
		{"clone", []uint64{threadFlags}, retAllow},
		{"clone", []uint64{uint64(unix.CLONE_VM | unix.CLONE_VFORK | unix.SIGCHLD)}, retEPERM}, // fork for exec
		{"clone", []uint64{threadFlags | unix.CLONE_NEWUSER}, retEPERM},
		{"clone", []uint64{threadFlags | unix.CLONE_NEWNET}, retEPERM},
		{"kill", []uint64{pid, 0}, retAllow},
		{"kill", []uint64{1, 0}, retEPERM},
		{"kill", []uint64{pid | 1<<32, 0}, retEPERM},
		{"tgkill", []uint64{pid, 7, 23}, retAllow},
		{"tgkill", []uint64{pid + 1, 7, 23}, retEPERM},
		{"socket", []uint64{unix.AF_INET6, unix.SOCK_DGRAM}, retAllow},
		{"socket", []uint64{unix.AF_UNIX, unix.SOCK_DGRAM}, retAllow},
		{"socket", []uint64{unix.AF_PACKET, unix.SOCK_RAW}, retEPERM},
		{"socket", []uint64{unix.AF_ALG, unix.SOCK_SEQPACKET}, retEPERM},
		{"socket", []uint64{unix.AF_NETLINK, unix.SOCK_RAW}, retEPERM},
		{"prctl", []uint64{unix.PR_SET_VMA, 0}, retAllow},
		{"prctl", []uint64{unix.PR_GET_DUMPABLE}, retAllow},
		{"prctl", []uint64{unix.PR_SET_DUMPABLE, 1}, retEPERM},
		{"prctl", []uint64{unix.PR_SET_SECCOMP}, retEPERM},
		{"prlimit64", []uint64{0, unix.RLIMIT_CORE, 0, 0xdead0}, retAllow},
		{"prlimit64", []uint64{0, unix.RLIMIT_CORE, 0xdead0, 0}, retEPERM},
		{"prlimit64", []uint64{1, unix.RLIMIT_CORE, 0, 0xdead0}, retEPERM},
		{"getppid", nil, retEPERM},
		{"setrlimit", nil, retEPERM},
		{"seccomp", nil, retEPERM},
		{"fork", nil, retEPERM},
	} {
		if _, ok := f.info.SyscallNames[c.name]; !ok {
			continue // e.g. fork on arm64
		}
		if r := f.run(c.name, 0, c.args...); r != c.want {
			t.Errorf("%s%v: %#x, want %#x", c.name, c.args, r, c.want)
		}
	}
	// Foreign architecture (int 0x80 on x86_64) and the x32 ABI.
	if r := f.run("read", unix.AUDIT_ARCH_I386); r != retEPERM {
		t.Errorf("i386 read: %#x", r)
	}
	if runtime.GOARCH == "amd64" {
		const x32SyscallBit, nrRead = 0x40000000, 0 // __X32_SYSCALL_BIT | __NR_read
		if r := f.runNr(x32SyscallBit+nrRead, 0); r != retEPERM {
			t.Errorf("x32 read: %#x", r)
		}
		if r := f.run("arch_prctl", 0, archSetFS); r != retAllow {
			t.Errorf("arch_prctl(ARCH_SET_FS): %#x", r)
		}
		if r := f.run("arch_prctl", 0, 0x1021); r != retEPERM { // ARCH_SET_CPUID
			t.Errorf("arch_prctl(ARCH_SET_CPUID): %#x", r)
		}
	}
	if r := f.runNr(9999, 0); r != retEPERM {
		t.Errorf("unknown nr: %#x", r)
	}
}

func TestFilterProgramLogMode(t *testing.T) {
	f := newVM(t, SeccompLog, nil, 1)
	for name, want := range map[string]uint32{
		"read": retAllow, "getppid": retLog, "ptrace": retEPERM, "execve": retEPERM, "clone3": retENOSYS,
	} {
		if r := f.run(name, 0); r != want {
			t.Errorf("%s: %#x, want %#x", name, r, want)
		}
	}
	if r := f.run("kill", 0, 2, 0); r != retLog {
		t.Errorf("kill(other): %#x, want log", r)
	}
}

func TestFilterProgramExtra(t *testing.T) {
	f := newVM(t, SeccompEnforce, []string{"getppid", "socket", "clone3", "read"}, 1)
	for name, want := range map[string]uint32{"getppid": retAllow, "clone3": retAllow, "read": retAllow, "ptrace": retEPERM} {
		if r := f.run(name, 0); r != want {
			t.Errorf("%s: %#x, want %#x", name, r, want)
		}
	}
	// socket is now allowed whole, not just for the built-in domains.
	if r := f.run("socket", 0, unix.AF_PACKET); r != retAllow {
		t.Errorf("extra socket(AF_PACKET): %#x", r)
	}
}

func TestBuildPolicyErrors(t *testing.T) {
	for _, extra := range [][]string{{"nope"}, {"ptrace"}, {"read", "bpf"}} {
		if _, err := buildPolicy(SeccompEnforce, extra, 1); !errors.Is(err, ErrSyscall) {
			t.Errorf("%v: %v", extra, err)
		}
	}
	if _, err := buildPolicy(SeccompOff, nil, 1); !errors.Is(err, ErrConfig) {
		t.Errorf("off: %v", err)
	}
}

// TestListsAreKnownSyscalls: no typo hides in the lists (a name unknown
// on both supported architectures would be skipped silently), and no name
// is both allowed and never allowed.
func TestListsAreKnownSyscalls(t *testing.T) {
	known := func(n string) bool {
		_, a := arch.X86_64.SyscallNames[n]
		_, b := arch.AARCH64.SyscallNames[n]
		return a || b
	}
	never := map[string]bool{}
	for _, n := range neverAllowed {
		if !known(n) && n != "nfsservctl" && n != "_sysctl" && n != "umount" {
			t.Errorf("never-allowed %q is not a syscall", n)
		}
		never[n] = true
	}
	for _, r := range builtinRules(1) {
		if !known(r.name) {
			t.Errorf("allowed %q is not a syscall", r.name)
		}
		if never[r.name] {
			t.Errorf("%q is both allowed and never allowed", r.name)
		}
	}
	p, err := buildPolicy(SeccompEnforce, nil, 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.prog) > 1000 {
		t.Errorf("filter has %d instructions", len(p.prog))
	}
}

func TestParseModes(t *testing.T) {
	for _, s := range []string{"required", "best-effort", "off"} {
		if m, err := ParseMlock(s); err != nil || string(m) != s {
			t.Errorf("ParseMlock(%q) = %q, %v", s, m, err)
		}
	}
	for _, s := range []string{"enforce", "log", "off"} {
		if m, err := ParseSeccomp(s); err != nil || string(m) != s {
			t.Errorf("ParseSeccomp(%q) = %q, %v", s, m, err)
		}
	}
	if m, err := ParseMlock(""); m != MlockRequired || err != nil {
		t.Errorf(`ParseMlock("") = %q, %v; want the default`, m, err)
	}
	if m, err := ParseSeccomp(""); m != SeccompEnforce || err != nil {
		t.Errorf(`ParseSeccomp("") = %q, %v; want the default`, m, err)
	}
	for _, s := range []string{"Required", "sometimes", "enforce", " off"} {
		_, err := ParseMlock(s)
		if !errors.Is(err, ErrConfig) || err.Error() != `not allowed (want "required", "best-effort" or "off")` {
			t.Errorf("ParseMlock(%q): %v", s, err)
		}
	}
	for _, s := range []string{"strict", "required", "Off"} {
		_, err := ParseSeccomp(s)
		if !errors.Is(err, ErrConfig) || err.Error() != `not allowed (want "enforce", "log" or "off")` {
			t.Errorf("ParseSeccomp(%q): %v", s, err)
		}
	}
}

func TestCheckSyscalls(t *testing.T) {
	if i, err := CheckSyscalls(nil); i != -1 || err != nil {
		t.Errorf("nil: %d, %v", i, err)
	}
	if i, err := CheckSyscalls([]string{"ioctl", "getppid"}); i != -1 || err != nil {
		t.Errorf("known: %d, %v", i, err)
	}
	info, err := arch.GetInfo("")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		names []string
		i     int
		msg   string
	}{
		{[]string{"read", "Bad Name"}, 1, "not a syscall name"},
		{[]string{""}, 0, "not a syscall name"},
		{[]string{"not_a_syscall_xyz"}, 0, "not a syscall on " + info.Name},
		{[]string{"ioctl", "read", "ioctl"}, 2, "listed twice"},
		// Apply refuses these whatever the mode; the config check must
		// too, so that the file is refused at its line (exit 78, a reload
		// refused) rather than at hardening time (exit 1, restarted).
		{[]string{"read", "ptrace"}, 1, "never allowed"},
		{[]string{"execve"}, 0, "never allowed"},
	} {
		i, err := CheckSyscalls(tc.names)
		if i != tc.i || err == nil || err.Error() != tc.msg || !errors.Is(err, ErrSyscall) {
			t.Errorf("%q: %d, %v; want %d, %q", tc.names, i, err, tc.i, tc.msg)
		}
	}
}
