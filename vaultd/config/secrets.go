package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/vaultd/vaultd/internal/secret"
)

// Secret-file errors. They say what is wrong with the file, never what is
// in it.
var (
	ErrSecretEmpty   = errors.New("file is empty")
	ErrSecretTooLong = errors.New("file is too large for a secret")
)

// pinSource returns the file the PIN is read from: the systemd credential
// $CREDENTIALS_DIRECTORY/hsm-pin when it exists (LoadCredential= keeps the
// PIN out of the file system's long-lived paths), else pin_file ("" when
// neither is available).
func (h *HSMConfig) pinSource() (string, error) {
	return credentialOr(credentialPIN, h.PINFile)
}

// credentialOr returns $CREDENTIALS_DIRECTORY/name when that file exists,
// else file.
func credentialOr(name, file string) (string, error) {
	if dir := os.Getenv(credentialsDirectoryEnv); dir != "" {
		p := filepath.Join(dir, name)
		_, err := os.Stat(p)
		if err == nil {
			return p, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			// Present but unusable: falling back to the configured file
			// would hide a deployment mistake.
			return "", err
		}
	}
	return file, nil
}

// dsnSource returns the file the PostgreSQL DSN is read from, by the PIN's
// rule: the systemd credential $CREDENTIALS_DIRECTORY/postgres-dsn when it
// exists, else dsn_file ("" when neither is available).
func (s *StorageConfig) dsnSource() (string, error) {
	return credentialOr(credentialDSN, s.DSNFile)
}

// LoadDSN reads the PostgreSQL connection string: from
// $CREDENTIALS_DIRECTORY/postgres-dsn when that file exists, else from
// dsn_file. One trailing "\n" or "\r\n" is not part of it; an empty DSN is
// an error. Errors name the file, never its contents (a DSN may hold the
// database password).
func (s *StorageConfig) LoadDSN() (secret.String, error) {
	src, err := s.dsnSource()
	if err != nil {
		return secret.String{}, &Error{File: s.file, Key: "storage", Msg: "cannot read the PostgreSQL DSN", Err: err}
	}
	if src == "" {
		return secret.String{}, &Error{File: s.file, Key: "storage",
			Msg: "no PostgreSQL DSN source: set storage.dsn_file or provide the systemd credential " + credentialDSN}
	}
	dsn, err := readSecretFile(src, maxDSNBytes)
	if err != nil {
		return secret.String{}, &Error{File: s.file, Key: "storage", Msg: "cannot read the PostgreSQL DSN", Err: err}
	}
	return dsn, nil
}

// LoadPIN reads the HSM user PIN: from $CREDENTIALS_DIRECTORY/hsm-pin when
// that file exists, else from pin_file. One trailing "\n" or "\r\n" is not
// part of the PIN; an empty PIN is an error. Errors name the file, never its
// contents.
func (h *HSMConfig) LoadPIN() (secret.String, error) {
	src, err := h.pinSource()
	if err != nil {
		return secret.String{}, &Error{File: h.file, Key: "hsm", Msg: "cannot read PIN", Err: err}
	}
	if src == "" {
		return secret.String{}, &Error{File: h.file, Key: "hsm",
			Msg: "no PIN source: set hsm.pin_file or provide the systemd credential " + credentialPIN}
	}
	pin, err := readSecretFile(src, maxPINBytes)
	if err != nil {
		return secret.String{}, &Error{File: h.file, Key: "hsm", Msg: "cannot read PIN", Err: err}
	}
	return pin, nil
}

// readSecretFile reads a secret of at most max bytes from path and strips
// one trailing "\n" or "\r\n" (what editors and `echo` leave behind). The
// read buffer is wiped; the returned string is the only copy we keep.
func readSecretFile(path string, max int64) (secret.String, error) {
	f, err := os.Open(path)
	if err != nil {
		return secret.String{}, err
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil {
		return secret.String{}, err
	} else if !fi.Mode().IsRegular() {
		return secret.String{}, fmt.Errorf("%s: not a regular file", path)
	}
	buf, err := io.ReadAll(io.LimitReader(f, max+1))
	defer secret.Zero(buf)
	if err != nil {
		// Read errors come from the OS and carry no file content.
		return secret.String{}, fmt.Errorf("%s: %w", path, stripPath(err))
	}
	if int64(len(buf)) > max {
		return secret.String{}, fmt.Errorf("%s: %w (more than %d bytes)", path, ErrSecretTooLong, max)
	}
	b := buf
	if bytes.HasSuffix(b, []byte("\r\n")) {
		b = b[:len(b)-2]
	} else if bytes.HasSuffix(b, []byte("\n")) {
		b = b[:len(b)-1]
	}
	if len(b) == 0 {
		return secret.String{}, fmt.Errorf("%s: %w", path, ErrSecretEmpty)
	}
	return secret.NewString(string(b)), nil
}
