package softhsmtest

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

func TestMain(m *testing.M) { os.Exit(Main(m)) }

func TestNewTokenIsListed(t *testing.T) {
	a := NewToken(t)
	b := NewToken(t)
	if a.Label == b.Label || a.PIN == b.PIN {
		t.Fatalf("tokens not unique: %q %q", a.Label, b.Label)
	}
	if os.Getenv("SOFTHSM2_CONF") != a.ConfPath {
		t.Fatalf("SOFTHSM2_CONF = %q, want %q", os.Getenv("SOFTHSM2_CONF"), a.ConfPath)
	}
	out, err := exec.Command("softhsm2-util", "--show-slots").CombinedOutput()
	if err != nil {
		t.Fatalf("show-slots: %v: %s", err, out)
	}
	for _, l := range []string{a.Label, b.Label} {
		if !strings.Contains(string(out), l) {
			t.Errorf("token %q not listed:\n%s", l, out)
		}
	}
}

func TestNewConfIsIndependent(t *testing.T) {
	c := NewConf(t)
	if c.Path == Current(t).Path {
		t.Fatal("NewConf reused the process conf")
	}
	tok := c.NewToken(t)
	cmd := exec.Command("softhsm2-util", "--show-slots")
	cmd.Env = append(os.Environ(), tok.Env())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("show-slots: %v: %s", err, out)
	}
	if !strings.Contains(string(out), tok.Label) {
		t.Fatalf("token %q not listed under its own conf:\n%s", tok.Label, out)
	}
	// The process-wide conf does not see it.
	out, err = exec.Command("softhsm2-util", "--show-slots").CombinedOutput()
	if err != nil {
		t.Fatalf("show-slots: %v: %s", err, out)
	}
	if strings.Contains(string(out), tok.Label) {
		t.Fatalf("token %q leaked into the process conf", tok.Label)
	}
}

func TestModuleFound(t *testing.T) {
	m, err := Module()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(m); err != nil {
		t.Fatal(err)
	}
}

func TestSetupTwiceFails(t *testing.T) {
	if _, err := Setup(); err == nil {
		t.Fatal("second Setup succeeded")
	}
}
