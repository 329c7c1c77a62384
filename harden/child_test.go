package harden

// Hardening is irreversible, so every test that applies it runs in a child:
// the test binary re-executed with HARDEN_CHILD=<scenario>. The child
// applies, probes, and prints its observations as one JSON object; the
// parent test asserts on them.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	sddaemon "github.com/coreos/go-systemd/v22/daemon"
	bbolt "go.etcd.io/bbolt"

	hsmpkcs11 "github.com/vaultd/vaultd/hsm/pkcs11"
	"github.com/vaultd/vaultd/internal/lockedmem"
	"github.com/vaultd/vaultd/internal/secret"
)

const childEnv = "HARDEN_CHILD"

// Environment the parent passes to a child.
const (
	envDir      = "HARDEN_DIR"       // a private temp dir
	envModule   = "HARDEN_P11"       // PKCS#11 module
	envToken    = "HARDEN_TOKEN"     // token label
	envPIN      = "HARDEN_PIN"       // user PIN
	envMlock    = "HARDEN_MLOCK"     // [harden] mlock
	envSeccomp  = "HARDEN_SECCOMP"   // [harden] seccomp
	envExtra    = "HARDEN_EXTRA"     // comma-separated extra_syscalls
	envNNP      = "HARDEN_NNP"       // "0" = no_new_privs false
	envDumpable = "HARDEN_DUMPABLE"  // "1" = dumpable true
	envNoLock   = "HARDEN_NO_IPCLCK" // "1" = drop CAP_IPC_LOCK and RLIMIT_MEMLOCK=0 first
	envKEK      = "HARDEN_KEK"       // KEK label (default harden-kek); set on a shared token
	envSign     = "HARDEN_SIGN"      // "1" = make the audit key first, sign after hardening
)

// obs is what a child saw.
type obs map[string]any

func runChild(scenario string) int {
	o := obs{"scenario": scenario}
	defer func() {
		if r := recover(); r != nil {
			o["panic"] = fmt.Sprint(r)
		}
		_ = json.NewEncoder(os.Stdout).Encode(o)
	}()
	ctx := context.Background()
	opts := Options{
		Mlock: MlockMode(os.Getenv(envMlock)), Seccomp: SeccompMode(os.Getenv(envSeccomp)),
		NoNewPrivs: os.Getenv(envNNP) != "0", Dumpable: os.Getenv(envDumpable) == "1",
	}
	if x := os.Getenv(envExtra); x != "" {
		opts.ExtraSyscalls = strings.Split(x, ",")
	}
	var logBuf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&logBuf, nil))
	o["ppid_before"] = os.Getppid()
	o["core_before"] = coreLimit()

	// What the daemon has open before hardening: the HSM, bbolt.
	var kr *hsmpkcs11.PKCS11
	if os.Getenv(envModule) != "" {
		kek := os.Getenv(envKEK)
		if kek == "" {
			kek = "harden-kek"
		}
		hcfg := hsmpkcs11.Config{Module: os.Getenv(envModule), TokenLabel: os.Getenv(envToken),
			PIN: secret.NewString(os.Getenv(envPIN)), KEKLabel: kek}
		if _, _, err := hsmpkcs11.InitKEK(ctx, hcfg, log); err != nil {
			o["setup_err"] = "InitKEK: " + err.Error()
			return 0
		}
		if os.Getenv(envSign) == "1" {
			if _, err := hsmpkcs11.InitAuditKey(ctx, hcfg, log); err != nil {
				o["setup_err"] = "InitAuditKey: " + err.Error()
				return 0
			}
		}
		var err error
		if kr, err = hsmpkcs11.Open(ctx, hcfg, log); err != nil {
			o["setup_err"] = "hsm.Open: " + err.Error()
			return 0
		}
	}
	var db *bbolt.DB
	dir := os.Getenv(envDir)
	if dir != "" {
		var err error
		if db, err = bbolt.Open(filepath.Join(dir, "probe.db"), 0o600, &bbolt.Options{Timeout: time.Second}); err != nil {
			o["setup_err"] = "bbolt: " + err.Error()
			return 0
		}
	}

	if os.Getenv(envNoLock) == "1" {
		// Capabilities are per thread: drop CAP_IPC_LOCK on this one and
		// keep Apply's memory probe on it.
		runtime.LockOSThread()
		if err := dropCap(unix.CAP_IPC_LOCK); err != nil {
			o["setup_err"] = "capset: " + err.Error()
			return 0
		}
		if err := unix.Setrlimit(unix.RLIMIT_MEMLOCK, &unix.Rlimit{Cur: 0, Max: 0}); err != nil {
			o["setup_err"] = "setrlimit: " + err.Error()
			return 0
		}
	}

	err := Apply(ctx, opts, log)
	o["apply_err"] = errString(err)
	o["err_memory_lock"] = errors.Is(err, ErrMemoryLock)
	o["err_syscall"] = errors.Is(err, ErrSyscall)
	o["log"] = logLines(logBuf.String())
	if err != nil {
		// Nothing irreversible may have happened for a refused config.
		o["seccomp_after_error"] = statusValue("Seccomp")
		o["core_after_error"] = coreLimit()
		return 0
	}

	// Kernel view.
	o["seccomp_status"] = statusValue("Seccomp")
	o["seccomp_filters"] = statusValue("Seccomp_filters")
	o["no_new_privs"] = statusValue("NoNewPrivs")
	o["threads"] = threadStates()
	o["core_limit"] = coreLimit()
	d, _ := unix.PrctlRetInt(unix.PR_GET_DUMPABLE, 0, 0, 0, 0)
	o["dumpable"] = d

	// Refused (or, in log mode, let through) syscalls. The arguments are
	// such that, unfiltered, each would fail differently (ENOENT, ESRCH)
	// or succeed harmlessly - so EPERM can only come from the filter.
	o["mount"] = errno(unix.Mount("none", "/nonexistent-harden-probe", "tmpfs", 0, ""))
	_, _, e := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_PEEKDATA, 0x7ffffff0, 0, 0, 0, 0)
	o["ptrace"] = errno(e)
	o["execve"] = errno(unix.Exec("/nonexistent-harden-probe", []string{"x"}, nil))
	o["os_exec"] = errno(exec.Command("/bin/true").Run())
	o["kill_init"] = errno(unix.Kill(1, 0))
	o["kill_self"] = errno(unix.Kill(os.Getpid(), 0))
	o["set_dumpable"] = errno(unix.Prctl(unix.PR_SET_DUMPABLE, 1, 0, 0, 0))
	o["raise_core"] = errno(unix.Setrlimit(unix.RLIMIT_CORE, &unix.Rlimit{Cur: 0, Max: 0}))
	var rl unix.Rlimit
	o["get_core"] = errno(unix.Getrlimit(unix.RLIMIT_CORE, &rl))
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM, 0)
	if err == nil {
		unix.Close(fd)
	}
	o["socket_packet"] = errno(err)
	ppid, _, e := unix.RawSyscall(unix.SYS_GETPPID, 0, 0, 0)
	o["getppid"] = errno(e)
	o["getppid_ok"] = e == 0 && int(ppid) == o["ppid_before"]
	_, _, e = unix.Syscall6(unix.SYS_KEYCTL, 0, 0, 0, 0, 0, 0)
	o["keyctl"] = errno(e)

	// Allowed work.
	o["files"] = errString(fileWork(dir))
	if db != nil {
		o["bbolt"] = errString(boltWork(db, dir))
	}
	o["net_tcp"] = errString(tcpWork())
	o["net_udp"] = errString(udpWork())
	o["sd_notify"] = errString(notifyWork(dir))
	_, err = net.DefaultResolver.LookupHost(ctx, "localhost")
	o["dns_default"] = errString(err)
	_, err = (&net.Resolver{PreferGo: true}).LookupHost(ctx, "localhost")
	o["dns_go"] = errString(err)
	if kr != nil {
		if os.Getenv(envSign) == "1" {
			o["hsm_sign"] = errString(hsmSignWork(ctx, kr))
		}
		o["hsm"] = errString(hsmWork(ctx, kr))
		o["hsm_close"] = errString(kr.Close())
	}
	buf, err := lockedmem.Alloc(64, lockedmem.Required)
	o["lockedmem"] = errString(err)
	if err == nil {
		o["vmlck_kb"] = statusKB("VmLck")
		o["lockedmem_free"] = errString(buf.Free())
	}
	o["new_threads"] = newThreads()
	return 0
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// errno names the errno in err ("" for nil, "other: ..." if none).
func errno(err error) string {
	if err == nil {
		return ""
	}
	var e syscall.Errno
	if errors.As(err, &e) {
		if e == 0 {
			return ""
		}
		return unix.ErrnoName(e)
	}
	return "other: " + err.Error()
}

func statusValue(key string) string {
	v, _ := statusField("/proc/self/status", key)
	return v
}

func coreLimit() string {
	b, err := os.ReadFile("/proc/self/limits")
	if err != nil {
		return err.Error()
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "Max core file size") {
			return strings.Join(strings.Fields(strings.TrimPrefix(l, "Max core file size")), " ")
		}
	}
	return "missing"
}

// threadStates is "<Seccomp>/<NoNewPrivs>" for every thread.
func threadStates() []string {
	ents, _ := os.ReadDir("/proc/self/task")
	var out []string
	for _, e := range ents {
		p := "/proc/self/task/" + e.Name() + "/status"
		s, _ := statusField(p, "Seccomp")
		n, _ := statusField(p, "NoNewPrivs")
		out = append(out, s+"/"+n)
	}
	return out
}

// newThreads forces the runtime to start threads after hardening (clone
// via glibc: clone3 refused with ENOSYS, then clone) and reports their
// states.
func newThreads() []string {
	before := map[string]bool{}
	ents, _ := os.ReadDir("/proc/self/task")
	for _, e := range ents {
		before[e.Name()] = true
	}
	const n = 4
	release := make(chan struct{})
	var wg, ready sync.WaitGroup
	ready.Add(n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread() // each blocks its own thread
			ready.Done()
			<-release
		}()
	}
	ready.Wait()
	var out []string
	ents, _ = os.ReadDir("/proc/self/task")
	for _, e := range ents {
		if !before[e.Name()] {
			p := "/proc/self/task/" + e.Name() + "/status"
			s, _ := statusField(p, "Seccomp")
			nn, _ := statusField(p, "NoNewPrivs")
			out = append(out, s+"/"+nn)
		}
	}
	close(release)
	wg.Wait()
	return out
}

func dropCap(c int) error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return err
	}
	data[c/32].Effective &^= 1 << (uint(c) % 32)
	data[c/32].Permitted &^= 1 << (uint(c) % 32)
	return unix.Capset(&hdr, &data[0])
}

func logLines(s string) []map[string]any {
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil && m["msg"] == "process hardening" {
			out = append(out, m)
		}
	}
	return out
}

// fileWork does what bbolt, the audit mirror and SoftHSM do to files.
func fileWork(dir string) error {
	if dir == "" {
		return nil
	}
	sub := filepath.Join(dir, "sub")
	if err := os.Mkdir(sub, 0o700); err != nil {
		return err
	}
	p := filepath.Join(sub, "f")
	f, err := os.OpenFile(p, os.O_CREATE|os.O_RDWR|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return fmt.Errorf("flock: %w", err)
	}
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0}
	if err := unix.FcntlFlock(f.Fd(), unix.F_SETLKW, &lk); err != nil {
		return fmt.Errorf("fcntl lock: %w", err)
	}
	if err := f.Chmod(0o600); err != nil {
		return fmt.Errorf("fchmod: %w", err)
	}
	if _, err := f.Write([]byte("audit line\n")); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := unix.Fdatasync(int(f.Fd())); err != nil {
		return err
	}
	if err := f.Truncate(4); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(p, p+".2"); err != nil {
		return err
	}
	b, err := os.ReadFile(p + ".2")
	if err != nil || string(b) != "audi" {
		return fmt.Errorf("read back %q: %v", b, err)
	}
	if _, err := os.ReadDir(sub); err != nil {
		return err
	}
	if err := os.Remove(p + ".2"); err != nil {
		return err
	}
	return os.Remove(sub)
}

// boltWork grows the database well past its first mmap (remap, ftruncate,
// fdatasync), reads it back, and reopens it.
func boltWork(db *bbolt.DB, dir string) error {
	val := make([]byte, 4096)
	if _, err := rand.Read(val); err != nil {
		return err
	}
	for i := range 8 {
		err := db.Update(func(tx *bbolt.Tx) error {
			b, err := tx.CreateBucketIfNotExists([]byte("b"))
			if err != nil {
				return err
			}
			for j := range 128 {
				if err := b.Put(fmt.Appendf(nil, "k-%d-%d", i, j), val); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	n := 0
	if err := db.View(func(tx *bbolt.Tx) error {
		return tx.Bucket([]byte("b")).ForEach(func(k, v []byte) error { n++; return nil })
	}); err != nil {
		return err
	}
	if n != 8*128 {
		return fmt.Errorf("read %d keys", n)
	}
	if err := db.Close(); err != nil {
		return err
	}
	db2, err := bbolt.Open(filepath.Join(dir, "probe.db"), 0o600, &bbolt.Options{Timeout: time.Second, ReadOnly: true})
	if err != nil {
		return fmt.Errorf("reopen: %w", err)
	}
	return db2.Close()
}

func tcpWork() error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer ln.Close()
	errc := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			errc <- err
			return
		}
		defer c.Close()
		buf := make([]byte, 4)
		if _, err := c.Read(buf); err != nil {
			errc <- err
			return
		}
		_, err = c.Write(buf)
		errc <- err
	}()
	c, err := net.DialTimeout("tcp", ln.Addr().String(), 10*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.Write([]byte("ping")); err != nil {
		return err
	}
	buf := make([]byte, 4)
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Read(buf); err != nil || string(buf) != "ping" {
		return fmt.Errorf("echo %q: %v", buf, err)
	}
	return <-errc
}

// notifyWork is the daemon's READY=1/WATCHDOG=1 path, to a unixgram
// socket standing in for systemd's.
func notifyWork(dir string) error {
	if dir == "" {
		return nil
	}
	addr := &net.UnixAddr{Name: filepath.Join(dir, "notify"), Net: "unixgram"}
	l, err := net.ListenUnixgram("unixgram", addr)
	if err != nil {
		return err
	}
	defer l.Close()
	if err := os.Setenv("NOTIFY_SOCKET", addr.Name); err != nil {
		return err
	}
	sent, err := sddaemon.SdNotify(false, sddaemon.SdNotifyReady)
	if err != nil || !sent {
		return fmt.Errorf("sd_notify sent=%v: %v", sent, err)
	}
	buf := make([]byte, 64)
	_ = l.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := l.Read(buf)
	if err != nil || string(buf[:n]) != sddaemon.SdNotifyReady {
		return fmt.Errorf("notify read %q: %v", buf[:n], err)
	}
	return nil
}

func udpWork() error {
	a, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return err
	}
	defer a.Close()
	b, err := net.DialUDP("udp", nil, a.LocalAddr().(*net.UDPAddr))
	if err != nil {
		return err
	}
	defer b.Close()
	if _, err := b.Write([]byte("quic")); err != nil {
		return err
	}
	buf := make([]byte, 16)
	_ = a.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, _, err := a.ReadFromUDP(buf)
	if err != nil || string(buf[:n]) != "quic" {
		return fmt.Errorf("udp %q: %v", buf[:n], err)
	}
	return nil
}

// hsmWork is what the daemon asks of the token once serving: wrap and
// unwrap DEKs, ping, rescan the KEKs; plus a KEK rotation, which creates a
// token object file.
// hsmSignWork is the HSM work that needs no wrapping mechanism: a
// checkpoint signature, ping, KEK rotation and reload.
func hsmSignWork(ctx context.Context, kr *hsmpkcs11.PKCS11) error {
	if _, err := kr.AuditPublicKey(ctx); err != nil {
		return fmt.Errorf("audit public key: %w", err)
	}
	digest := make([]byte, 32)
	if _, err := kr.SignAudit(ctx, digest); err != nil {
		return fmt.Errorf("sign: %w", err)
	}
	if err := kr.Ping(ctx); err != nil {
		return fmt.Errorf("ping: %w", err)
	}
	if _, err := kr.RotateKEK(ctx); err != nil {
		return fmt.Errorf("rotate: %w", err)
	}
	if err := kr.Reload(ctx); err != nil {
		return fmt.Errorf("reload: %w", err)
	}
	return nil
}

func hsmWork(ctx context.Context, kr *hsmpkcs11.PKCS11) error {
	dek := make([]byte, 32)
	if _, err := rand.Read(dek); err != nil {
		return err
	}
	aad := []byte("tenant:acme")
	w, err := kr.Wrap(ctx, dek, aad)
	if err != nil {
		return fmt.Errorf("wrap: %w", err)
	}
	got, err := kr.Unwrap(ctx, w, aad)
	if err != nil {
		return fmt.Errorf("unwrap: %w", err)
	}
	if !bytes.Equal(got.Reveal(), dek) {
		return errors.New("unwrap: different key")
	}
	if err := kr.Ping(ctx); err != nil {
		return fmt.Errorf("ping: %w", err)
	}
	if _, err := kr.RotateKEK(ctx); err != nil {
		return fmt.Errorf("rotate: %w", err)
	}
	if err := kr.Reload(ctx); err != nil {
		return fmt.Errorf("reload: %w", err)
	}
	if _, err := kr.Unwrap(ctx, w, aad); err != nil {
		return fmt.Errorf("unwrap under old KEK: %w", err)
	}
	return nil
}
