package config

import (
	"strings"
	"testing"
)

// TestOpsListenLoopbackOnly: the ops listener is plain HTTP without client
// certificates, so an address other than loopback is refused unless
// [server] ops_allow_non_loopback = true says the exposure is intended.
func TestOpsListenLoopbackOnly(t *testing.T) {
	for _, tc := range []struct {
		addr     string
		loopback bool
	}{
		{"127.0.0.1:9090", true},
		{"127.0.0.2:9090", true}, // all of 127.0.0.0/8 is loopback
		{"[::1]:9090", true},
		{"localhost:9090", true},
		{"LOCALHOST:9090", true}, // host names are case-insensitive
		{"127.0.0.1:0", true},
		{"0.0.0.0:0", false},
		{"0.0.0.0:9090", false},
		{":9090", false}, // empty host: every interface
		{"[::]:9090", false},
		{"10.1.2.3:9090", false},
		{"192.168.0.1:9090", false},
		{"[fe80::1%eth0]:9090", false},
		{"[::ffff:10.0.0.1]:9090", false},
		{"vaultd.internal:9090", false}, // a name other than localhost may resolve anywhere
		{"localhost.example.com:9090", false},
		{"127.0.0.1.nip.io:9090", false},
		{"localhost.:9090", false},
	} {
		t.Run(tc.addr, func(t *testing.T) {
			doc := edit(t, "[server]\n", "[server]\nops_listen = \""+tc.addr+"\"\n")
			_, err := Parse([]byte(doc), t.TempDir(), ModeSyntax)
			if tc.loopback {
				if err != nil {
					t.Fatalf("loopback %s refused: %v", tc.addr, err)
				}
			} else {
				checkErrShape(t, err, "<input>")
				if err != nil {
					for _, w := range []string{"line 2: server.ops_listen: ", "loopback", "ops_allow_non_loopback"} {
						if !strings.Contains(err.Error(), w) {
							t.Errorf("got  %q\nwant it to contain %q", err, w)
						}
					}
				}
			}

			// With the opt-in every well-formed address is accepted.
			doc = edit(t, "[server]\n", "[server]\nops_listen = \""+tc.addr+"\"\nops_allow_non_loopback = true\n")
			cfg, err := Parse([]byte(doc), t.TempDir(), ModeSyntax)
			if err != nil {
				t.Fatalf("with ops_allow_non_loopback = true: %v", err)
			}
			if cfg.Server.OpsListen != tc.addr || !cfg.Server.OpsAllowNonLoopback {
				t.Fatalf("server = %+v", cfg.Server)
			}
		})
	}
}

// TestOpsAllowNonLoopbackKey: the opt-in is a boolean defaulting to false,
// and an explicit false refuses like the default; it does not relax any
// other check of ops_listen.
func TestOpsAllowNonLoopbackKey(t *testing.T) {
	cfg, err := Parse([]byte(base), t.TempDir(), ModeSyntax)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Server.OpsAllowNonLoopback {
		t.Fatal("ops_allow_non_loopback defaults to true")
	}
	for _, tc := range []struct{ name, server, want string }{
		{"explicit false", "ops_listen = \"0.0.0.0:9090\"\nops_allow_non_loopback = false\n", "line 2: server.ops_listen: "},
		{"not a bool", "ops_allow_non_loopback = \"yes\"\n", `key "server.ops_allow_non_loopback": expected a boolean`},
		{"still host:port", "ops_listen = \"0.0.0.0\"\nops_allow_non_loopback = true\n", "server.ops_listen: not a host:port address"},
		{"still differs from listen", "ops_listen = \"127.0.0.1:8443\"\nops_allow_non_loopback = true\n", "server.ops_listen: must differ from server.listen"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			doc := edit(t, "[server]\n", "[server]\n"+tc.server)
			_, err := Parse([]byte(doc), t.TempDir(), ModeSyntax)
			checkErrShape(t, err, "<input>")
			if err != nil && !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got  %q\nwant it to contain %q", err, tc.want)
			}
		})
	}
	// Without ops_listen the opt-in changes nothing.
	doc := edit(t, "[server]\n", "[server]\nops_allow_non_loopback = true\n")
	if _, err := Parse([]byte(doc), t.TempDir(), ModeSyntax); err != nil {
		t.Fatal(err)
	}
}
