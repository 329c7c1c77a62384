package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// floorProxy is a running "vaultd-bench floorproxy": the minimal Go mTLS reverse
// proxy (and its variants with an audit-like append), the floor vaultd is
// compared with when it cannot reach nginx.
type floorProxy struct {
	addr   string
	cmd    *exec.Cmd
	exited chan struct{}
}

// startFloor runs "bin floorproxy" (bin is this program) in front of the upstream with the static token.
// mode is "" (proxy only), "write" (one write(2) per request) or "fsync"
// (write + fdatasync per request); the file lives in dir, on the same
// filesystem as vaultd's database.
func startFloor(bin, dir string, p *pki, up *upstream, static, mode string) (*floorProxy, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	tokFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokFile, []byte(static), 0o600); err != nil {
		return nil, err
	}
	args := []string{"floorproxy", "-cert", p.path("server.crt"), "-key", p.path("server.key"), "-client-ca", p.path("ca.crt"),
		"-upstream", up.url("/api"), "-token-file", tokFile}
	switch mode {
	case "":
	case "write":
		args = append(args, "-audit-file", filepath.Join(dir, "audit.log"))
	case "fsync":
		args = append(args, "-audit-file", filepath.Join(dir, "audit.log"), "-fsync")
	default:
		return nil, fmt.Errorf("floor proxy mode %q", mode)
	}
	lf, err := os.Create(filepath.Join(dir, "stderr.log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stderr = lf
	out, err := cmd.StdoutPipe()
	if err != nil {
		lf.Close()
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, err
	}
	f := &floorProxy{cmd: cmd, exited: make(chan struct{})}
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if a, ok := strings.CutPrefix(sc.Text(), "ready "); ok {
				ready <- a
			}
		}
	}()
	go func() { _ = cmd.Wait(); lf.Close(); close(f.exited) }()
	select {
	case f.addr = <-ready:
		return f, nil
	case <-f.exited:
		b, _ := os.ReadFile(filepath.Join(dir, "stderr.log"))
		return nil, fmt.Errorf("floor proxy exited: %s", b)
	case <-time.After(10 * time.Second):
		f.stop()
		return nil, errors.New("floor proxy not ready within 10s")
	}
}

func (f *floorProxy) url(path string) string { return "https://localhost:" + port(f.addr) + path }

func (f *floorProxy) stop() {
	_ = f.cmd.Process.Signal(os.Interrupt)
	select {
	case <-f.exited:
	case <-time.After(10 * time.Second):
		_ = f.cmd.Process.Kill()
		<-f.exited
	}
}

// fdatasyncFloor appends a ~300-byte line and fdatasyncs it, n times or for
// d (both bounds), on a file in dir: what one durable append costs on the
// database's filesystem, the least "sync = always" must wait per request.
func fdatasyncFloor(dir string, n int, d time.Duration) (result, error) {
	f, err := os.OpenFile(filepath.Join(dir, "fdatasync.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return result{}, err
	}
	defer f.Close()
	line := []byte(strings.Repeat("x", 299) + "\n")
	lat := make([]time.Duration, 0, n)
	deadline := time.Now().Add(d)
	start := time.Now()
	for i := 0; i < n && time.Now().Before(deadline); i++ {
		t0 := time.Now()
		if _, err := f.Write(line); err != nil {
			return result{}, err
		}
		if err := syscall.Fdatasync(int(f.Fd())); err != nil {
			return result{}, fmt.Errorf("fdatasync: %w", err)
		}
		lat = append(lat, time.Since(t0))
	}
	r := summarize(lat)
	r.Name, r.Callers, r.Elapsed = "append + fdatasync", 1, time.Since(start)
	r.RPS = float64(r.N) / r.Elapsed.Seconds()
	return r, nil
}
