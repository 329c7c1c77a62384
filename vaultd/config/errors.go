package config

import (
	"errors"
	"regexp"
	"strconv"
	"strings"

	toml "github.com/pelletier/go-toml/v2"
)

// ErrInvalid matches (errors.Is) every error returned by Load, Parse and
// LoadPIN: the config, or a file it names, cannot be used.
var ErrInvalid = errors.New("invalid config")

// Error is a config problem. Its message is one line, starts with
// "config <file>:", names the line and key where known, and never contains
// a secret: it never quotes a value from the file (only key names), nor
// anything read from a secret file (PIN, client secrets).
type Error struct {
	File string // config file as given to Load ("<input>" for Parse)
	Line int    // 1-based line in the config file, 0 when unknown
	Key  string // dotted key ("server.listen", "principals[1].roles"), "" when none
	Msg  string // what is wrong
	Err  error  // underlying cause (an *fs.PathError, ...), may be nil

	cause error // an error Msg was taken from (KeyError): unwrapped, not printed
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("config ")
	b.WriteString(e.File)
	b.WriteString(": ")
	if e.Line > 0 {
		b.WriteString("line ")
		b.WriteString(strconv.Itoa(e.Line))
		b.WriteString(": ")
	}
	if e.Key != "" {
		b.WriteString(e.Key)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return oneLine(b.String())
}

// Unwrap exposes ErrInvalid and the underlying cause to errors.Is/As.
func (e *Error) Unwrap() []error {
	errs := []error{ErrInvalid}
	for _, err := range []error{e.Err, e.cause} {
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// oneLine replaces control characters (a quoted TOML key may hold a newline)
// so that a message is always exactly one line in a journal.
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}

// maxEcho bounds how much of a key or enumeration value is echoed.
const maxEcho = 80

// quote renders a name from the file for a message: quoted, escaped and
// bounded.
func quote(s string) string {
	if len(s) > maxEcho {
		s = s[:maxEcho] + "..."
	}
	return strconv.Quote(s)
}

var (
	// The parser prints offending characters as `U+0061 'a'`; even one
	// character of a mis-pointed secret file is not echoed.
	reCharRune = regexp.MustCompile(`character U\+[0-9A-Fa-f]{4,6}(?: '.')?`)
	reRune     = regexp.MustCompile(`U\+[0-9A-Fa-f]{4,6}(?: '.')?`)
	// strconv errors quote their whole input.
	reStrconv = regexp.MustCompile(`strconv\.\w+: parsing "(?:[^"\\]|\\.)*": `)
	// "integer value 123 cannot be stored in int".
	reNumber = regexp.MustCompile(`(integer|float) value \S+`)
	// "cannot decode TOML integer into struct field config.serverConfig.Listen of type string".
	reType = regexp.MustCompile(`cannot decode TOML ([a-z ]+?) into struct field \S+ of type (\S+)`)
)

// sanitize strips everything from a decoder message that could come from
// the document itself rather than from the decoder's vocabulary.
func sanitize(msg string) string {
	msg = strings.TrimPrefix(msg, "toml: ")
	if m := reType.FindStringSubmatch(msg); m != nil {
		return "expected " + friendlyType(m[2]) + ", not " + m[1]
	}
	msg = reCharRune.ReplaceAllString(msg, "character")
	msg = reRune.ReplaceAllString(msg, "a character")
	msg = reStrconv.ReplaceAllString(msg, "")
	msg = reNumber.ReplaceAllString(msg, "$1 value")
	return msg
}

// friendlyType names a Go field type in operator terms.
func friendlyType(t string) string {
	switch t {
	case "string":
		return "a string"
	case "int", "int64", "uint32":
		return "an integer"
	case "bool", "*bool":
		return "a boolean (true or false)"
	case "config.Duration":
		return "a duration string such as 30s"
	case "[]config.Duration":
		return "an array of duration strings"
	case "[]string":
		return "an array of strings"
	case "map[string]string":
		return "a table of strings"
	case "[]config.Principal":
		return "an array of tables ([[principals]])"
	case "[]*config.Webhook":
		return "an array of tables ([[webhooks]])"
	}
	return "a table"
}

// translate turns a go-toml error into an *Error.
func translate(file string, err error) *Error {
	var sm *toml.StrictMissingError
	if errors.As(err, &sm) && len(sm.Errors) > 0 {
		first := &sm.Errors[0]
		line, _ := first.Position()
		key := strings.Join(first.Key(), ".")
		what := "unknown key "
		if strings.Contains(first.Error(), "missing table") {
			what = "unknown table "
		}
		msg := what + quote(key)
		if n := len(sm.Errors) - 1; n > 0 {
			msg += " (and " + strconv.Itoa(n) + " more unknown)"
		}
		return &Error{File: file, Line: line, Msg: msg}
	}
	var de *toml.DecodeError
	if errors.As(err, &de) {
		line, _ := de.Position()
		e := &Error{File: file, Line: line, Msg: sanitize(de.Error())}
		if k := de.Key(); len(k) > 0 {
			e.Key = "key " + quote(strings.Join(k, "."))
		} else {
			e.Msg = "syntax error: " + e.Msg
		}
		return e
	}
	if errors.Is(err, errBadDuration) {
		return &Error{File: file, Msg: errBadDuration.Error()}
	}
	// Reader and other non-positional failures: the decoder's own words are
	// not trusted to be free of document content.
	return &Error{File: file, Msg: "cannot decode TOML"}
}
