package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// hsmWithPIN returns a parsed [hsm] whose pin_file is dir/hsm.pin.
func hsmWithPIN(t *testing.T, dir string) *HSMConfig {
	t.Helper()
	path := writeConfig(t, dir, base)
	cfg, err := Load(path, ModeSyntax)
	if err != nil {
		t.Fatal(err)
	}
	return &cfg.HSM
}

func TestLoadPINNewlines(t *testing.T) {
	t.Setenv(credentialsDirectoryEnv, "")
	for _, tc := range []struct{ file, want string }{
		{"1234", "1234"},
		{"1234\n", "1234"},
		{"1234\r\n", "1234"},
		{"1234\n\n", "1234\n"},       // only one newline is stripped
		{"1234\r\n\r\n", "1234\r\n"}, // likewise for CRLF
		{"12 34\n", "12 34"},         // inner bytes are the PIN's
		{"\n1234\n", "\n1234"},       // leading newline kept: it is not trailing
		{"1234\r", "1234\r"},         // a lone CR is not a line ending
	} {
		dir := t.TempDir()
		write(t, dir, "hsm.pin", tc.file)
		pin, err := hsmWithPIN(t, dir).LoadPIN()
		if err != nil {
			t.Errorf("%q: %v", tc.file, err)
			continue
		}
		if pin.Reveal() != tc.want {
			t.Errorf("%q: PIN = %q, want %q", tc.file, pin.Reveal(), tc.want)
		}
	}
}

func TestLoadPINErrors(t *testing.T) {
	t.Setenv(credentialsDirectoryEnv, "")
	dir := t.TempDir()
	h := hsmWithPIN(t, dir)
	cfgPath := filepath.Join(dir, "vaultd.toml")

	for _, tc := range []struct {
		name    string
		content *string
		want    string
		is      error
	}{
		{"absent", nil, "hsm: cannot read PIN: open " + filepath.Join(dir, "hsm.pin") + ": no such file or directory", os.ErrNotExist},
		{"empty", ptr(""), "hsm: cannot read PIN: " + filepath.Join(dir, "hsm.pin") + ": file is empty", ErrSecretEmpty},
		{"only newline", ptr("\n"), "file is empty", ErrSecretEmpty},
		{"only CRLF", ptr("\r\n"), "file is empty", ErrSecretEmpty},
		{"too long", ptr(strings.Repeat("9", maxPINBytes+1)), "file is too large for a secret", ErrSecretTooLong},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, "hsm.pin")
			_ = os.Remove(p)
			if tc.content != nil {
				write(t, dir, "hsm.pin", *tc.content)
			}
			pin, err := h.LoadPIN()
			checkErrShape(t, err, cfgPath)
			if err == nil {
				return
			}
			if !pin.IsZero() {
				t.Error("PIN returned with an error")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %q, want it to contain %q", err, tc.want)
			}
			if !errors.Is(err, tc.is) {
				t.Errorf("got %v, want errors.Is %v", err, tc.is)
			}
		})
	}

	t.Run("directory", func(t *testing.T) {
		d := t.TempDir()
		h := hsmWithPIN(t, d)
		if err := os.Mkdir(filepath.Join(d, "hsm.pin"), 0o700); err != nil {
			t.Fatal(err)
		}
		_, err := h.LoadPIN()
		checkErrShape(t, err, filepath.Join(d, "vaultd.toml"))
	})

	t.Run("no source", func(t *testing.T) {
		cfg, err := Parse([]byte(edit(t, `pin_file    = "hsm.pin"`, "")), t.TempDir(), ModeSyntax)
		if err != nil {
			t.Fatal(err)
		}
		_, err = cfg.HSM.LoadPIN()
		checkErrShape(t, err, "<input>")
		if err != nil && !strings.Contains(err.Error(), "no PIN source") {
			t.Errorf("got %v", err)
		}
	})
}

func ptr(s string) *string { return &s }

func TestLoadPINCredentialsDirectory(t *testing.T) {
	dir := env(t) // pin_file holds "1234\n"
	creds := t.TempDir()
	t.Setenv(credentialsDirectoryEnv, creds)
	path := writeConfig(t, dir, base)

	// Set but without hsm-pin: pin_file is used.
	cfg, err := Load(path, ModeDaemon)
	if err != nil {
		t.Fatal(err)
	}
	pin, err := cfg.HSM.LoadPIN()
	if err != nil || pin.Reveal() != "1234" {
		t.Fatalf("without credential: %q %v", pin.Reveal(), err)
	}

	// The credential wins over pin_file.
	write(t, creds, "hsm-pin", "from-credential\n")
	pin, err = cfg.HSM.LoadPIN()
	if err != nil || pin.Reveal() != "from-credential" {
		t.Fatalf("with credential: %q %v", pin.Reveal(), err)
	}

	// ... even when pin_file is absent or not configured at all.
	// pin_file is not consulted (nor required to exist) when the credential wins.
	rm(t, dir, "hsm.pin")
	if _, err := Load(path, ModeDaemon); err != nil {
		t.Errorf("credential present, pin_file absent: %v", err)
	}
	noPinFile := writeConfig(t, dir, edit(t, `pin_file    = "hsm.pin"`, ""))
	cfg, err = Load(noPinFile, ModeDaemon)
	if err != nil {
		t.Fatalf("credential only: %v", err)
	}
	pin, err = cfg.HSM.LoadPIN()
	if err != nil || pin.Reveal() != "from-credential" {
		t.Fatalf("credential only: %q %v", pin.Reveal(), err)
	}

	// A credential that exists but cannot be read is an error, not a silent
	// fall-back to pin_file.
	rm(t, creds, "hsm-pin")
	if err := os.Mkdir(filepath.Join(creds, "hsm-pin"), 0o700); err != nil {
		t.Fatal(err)
	}
	_, err = cfg.HSM.LoadPIN()
	checkErrShape(t, err, noPinFile)
	if _, err := Load(noPinFile, ModeInit); err == nil {
		t.Error("ModeInit accepted an unreadable credential")
	}
}

// The distinctive secret of TestSecretsNeverInErrors.
const distinctive = "Zq7-SECRET-9f3c-HUNTER2"

// TestSecretsNeverInErrors feeds the loader a secret in every place a
// careless implementation could echo it: as the config file itself (a
// mistaken -config), inside a malformed config, as PIN and client-secret
// file contents with the config broken around them.
func TestSecretsNeverInErrors(t *testing.T) {
	t.Setenv(credentialsDirectoryEnv, "")
	var errs []error

	// Malformed documents with the secret in them, and the secret file
	// passed as the config.
	docs := []string{
		distinctive,
		distinctive + "\n",
		"pin = " + distinctive + "\n",
		"pin = \"" + distinctive + "\n",
		"pin = '" + distinctive,
		"[" + distinctive + "\n",
		"[[" + distinctive + "]\n",
		"x = [\"" + distinctive + "\", \n",
		"x = {a = \"" + distinctive + "\"\n",
		"client_secret = \"" + distinctive + "\"\n",
		"[hsm]\npin = \"" + distinctive + "\"\n",
		"[hsm]\nmax_sessions = \"" + distinctive + "\"\n",
		"[hsm]\nmax_sessions = 1" + distinctive + "\n",
		"[hsm]\nmax_sessions = 9" + strings.Repeat("9", 30) + "\n",
		"[hsm]\nmax_sessions = 1.5e" + distinctive + "\n",
		"[server]\nrequest_timeout = \"" + distinctive + "\"\n",
		"[server]\nlisten = \"" + distinctive + "\"\n",
		"[server]\nhttp3 = " + distinctive + "\n",
		"[server]\nlisten = \"a\\" + distinctive + "\"\n",
		"[server]\nlisten = \"\\u" + distinctive + "\"\n",
		"[server]\nlisten = 1979-05-27T07:" + distinctive + "\n",
		"# " + distinctive + "\n[server]\nlistn = 1\n",
		edit(t, `token_url          = "https://oauth.example.com/token"`, `token_url = "http://`+distinctive+`@example.com/token"`),
		edit(t, `token_url          = "https://oauth.example.com/token"`, `token_url = "https://example.com/token#`+distinctive+`"`),
		edit(t, `api_base_url       = "https://api.example.com/v2"`, `api_base_url = "https://api.example.com/v2?k=`+distinctive+`"`),
		edit(t, `listen    = "127.0.0.1:8443"`, `listen = "127.0.0.1:`+distinctive+`"`),
		edit(t, `tenant  = ""`, `tenant = "/`+distinctive+`"`),
	}
	for _, d := range docs {
		dir := t.TempDir()
		p := writeConfig(t, dir, d)
		for _, mode := range []Mode{ModeSyntax, ModeDaemon} {
			_, err := Load(p, mode)
			if err == nil {
				t.Errorf("accepted: %q", d)
				continue
			}
			errs = append(errs, err)
		}
	}

	// The secret in the PIN and client-secret files, with the config broken
	// after they have been read.
	dir := env(t)
	write(t, dir, "hsm.pin", distinctive+"\n")
	write(t, dir, "secrets/example", distinctive+"\n")
	write(t, dir, "tls/provider.pem", distinctive)
	broken := edit(t, `client_id          = "abc"`, `client_id = "abc"`+"\nca_file = \"tls/provider.pem\"")
	_, err := Load(writeConfig(t, dir, broken), ModeDaemon)
	if err == nil {
		t.Fatal("a CA file without certificates was accepted")
	}
	errs = append(errs, err)
	// The secret file given as the config, the config given as a secret.
	_, err = Load(filepath.Join(dir, "secrets/example"), ModeDaemon)
	errs = append(errs, err)
	_, err = Load(filepath.Join(dir, "hsm.pin"), ModeDaemon)
	errs = append(errs, err)
	// A PIN file too large, full of the secret.
	write(t, dir, "hsm.pin", strings.Repeat(distinctive, 100))
	cfg, err := Load(writeConfig(t, dir, base), ModeDaemon)
	if err != nil {
		t.Fatal(err)
	}
	_, err = cfg.HSM.LoadPIN()
	errs = append(errs, err)

	// And a loaded config printed every way it might be logged.
	write(t, dir, "hsm.pin", distinctive+"\n")
	cfg, err = Load(writeConfig(t, dir, base), ModeDaemon)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Providers["example"].ClientSecret.Reveal() != distinctive {
		t.Fatal("client secret not loaded")
	}
	printed := fmt.Sprintf("%v %+v %#v %v %+v", cfg, *cfg, *cfg, *cfg.Providers["example"], cfg.Providers)

	for _, err := range errs {
		if err == nil {
			t.Error("missing error")
			continue
		}
		msg := err.Error()
		for _, frag := range []string{distinctive, "SECRET", "HUNTER2", "Zq7"} {
			if strings.Contains(msg, frag) {
				t.Errorf("error echoes the secret (%q): %s", frag, msg)
			}
		}
		if strings.ContainsAny(msg, "\n\r") || !strings.HasPrefix(msg, "config ") {
			t.Errorf("bad error shape: %q", msg)
		}
	}
	if strings.Contains(printed, distinctive) {
		t.Errorf("printed config contains the client secret")
	}
}
