package config

import (
	"errors"
	"slices"
	"strconv"
	"strings"

	"github.com/pelletier/go-toml/v2/unstable"
)

// keyIndex maps every key path written in the document to the line it is on:
// "server.listen", "principals[1].roles", "providers.example.scopes".
// Validation uses it to name the line of a bad value, and to tell an absent
// key (take the default) from one written explicitly empty (an error).
//
// It is built by a pre-pass over the document with go-toml's parser because
// the decoder matches keys case-insensitively ("LISTEN" would silently fill
// server.listen, and a later duplicate would silently win); the pre-pass
// refuses any key that is not written exactly as documented.
type keyIndex map[string]int

func (ix keyIndex) has(path string) bool { _, ok := ix[path]; return ok }

// line returns the line of path, or of its nearest written ancestor.
func (ix keyIndex) line(path string) int {
	for path != "" {
		if l, ok := ix[path]; ok {
			return l
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			break
		}
		path = path[:i]
	}
	return 0
}

// maxIndexed bounds the pre-pass (a fuzzer or a mistaken -config can hand us
// anything; a real config has a few hundred keys at most).
const maxIndexed = 100000

// buildIndex parses data and indexes its keys. A syntax error is returned as
// an *Error naming its line; a key that is not lower case is returned as an
// unknown key.
func buildIndex(file string, data []byte) (keyIndex, *Error) {
	ix := keyIndex{}
	var p unstable.Parser
	p.Reset(data)
	// Offsets of the newlines, so a key's line is a binary search rather
	// than a scan from the start (which is quadratic in the key count).
	var newlines []int
	for i, c := range data {
		if c == '\n' {
			newlines = append(newlines, i)
		}
	}
	lineOf := func(n *unstable.Node) int {
		if n == nil || n.Raw.Length == 0 && n.Raw.Offset == 0 {
			return 0
		}
		line, _ := slices.BinarySearch(newlines, int(n.Raw.Offset))
		return line + 1
	}
	arrays := map[string]int{}
	prefix := ""
	var walkErr, caseErr *Error
	var record func(path string, parts []string, line int, value *unstable.Node)
	record = func(path string, parts []string, line int, value *unstable.Node) {
		if walkErr != nil || len(ix) >= maxIndexed {
			return
		}
		if badKeyPart(parts) {
			// Reported only once the document is known to be a config
			// (see below), because it echoes the key.
			if caseErr == nil {
				caseErr = &Error{File: file, Line: line,
					Msg: "unknown key " + quote(path) + " (keys are lower case, as documented)"}
			}
			return
		}
		if _, ok := ix[path]; !ok {
			ix[path] = line
		}
		if value == nil {
			return
		}
		// The decoder reports a non-string duration without its position,
		// so the pre-pass, which has it, reports it instead.
		if isDurationKey(parts) && value.Kind != unstable.String {
			walkErr = &Error{File: file, Line: line, Key: "key " + quote(path),
				Msg: "expected " + friendlyType("config.Duration") + ", not " + kindName(value.Kind)}
			return
		}
		if isDurationListKey(parts) {
			if value.Kind != unstable.Array {
				walkErr = &Error{File: file, Line: line, Key: "key " + quote(path),
					Msg: "expected " + friendlyType("[]config.Duration") + ", not " + kindName(value.Kind)}
				return
			}
			j := 0
			for it := value.Children(); it.Next(); {
				el := it.Node()
				if el.Kind == unstable.Comment {
					continue
				}
				if el.Kind != unstable.String {
					walkErr = &Error{File: file, Line: line, Key: "key " + quote(path+"["+strconv.Itoa(j)+"]"),
						Msg: "expected " + friendlyType("config.Duration") + ", not " + kindName(el.Kind)}
					return
				}
				j++
			}
		}
		if (path == "principals" || path == "webhooks") && value.Kind == unstable.InlineTable {
			walkErr = &Error{File: file, Line: line, Key: path,
				Msg: "write [[" + path + "]] or an array of inline tables, not a single table"}
			return
		}
		switch value.Kind {
		case unstable.InlineTable:
			for it := value.Children(); it.Next(); {
				kv := it.Node()
				if kv.Kind != unstable.KeyValue {
					continue
				}
				sub := keyParts(kv)
				record(path+"."+strings.Join(sub, "."), slices.Concat(parts, sub), lineOrDefault(lineOf(firstKey(kv)), line), kv.Value())
			}
		case unstable.Array:
			i := 0
			for it := value.Children(); it.Next(); {
				el := it.Node()
				if el.Kind == unstable.InlineTable {
					record(path+"["+strconv.Itoa(i)+"]", parts, line, el)
				}
				if el.Kind != unstable.Comment {
					i++
				}
			}
		}
	}
	for p.NextExpression() && walkErr == nil {
		e := p.Expression()
		switch e.Kind {
		case unstable.Table:
			parts := keyParts(e)
			prefix = strings.Join(parts, ".")
			if prefix == "principals" || prefix == "webhooks" {
				// The decoder would take a single [principals] as a one-element
				// array; a second one would then fail with a baffling message.
				walkErr = &Error{File: file, Line: lineOf(firstKey(e)), Key: prefix,
					Msg: "write [[" + prefix + "]] (an array of tables), not [" + prefix + "]"}
				continue
			}
			record(prefix, parts, lineOf(firstKey(e)), nil)
		case unstable.ArrayTable:
			parts := keyParts(e)
			base := strings.Join(parts, ".")
			n := arrays[base]
			arrays[base] = n + 1
			prefix = base + "[" + strconv.Itoa(n) + "]"
			record(prefix, parts, lineOf(firstKey(e)), nil)
		case unstable.KeyValue:
			parts := keyParts(e)
			path := strings.Join(parts, ".")
			all := parts
			if prefix != "" {
				path = prefix + "." + path
				all = slices.Concat(strings.Split(prefix, "."), parts)
			}
			record(path, all, lineOf(firstKey(e)), e.Value())
		}
	}
	if walkErr != nil {
		return nil, walkErr
	}
	if err := p.Error(); err != nil {
		return nil, syntaxError(file, data, err)
	}
	// Unknown keys are echoed by name. A secret file handed over as the
	// config (vaultd -config /etc/vaultd/hsm.pin) can parse as TOML when
	// the secret contains "="; refuse such a document without naming any
	// of its keys.
	if !looksLikeConfig(ix) {
		return nil, &Error{File: file, Msg: "not a vaultd config: it has none of the tables [server], [hsm], [storage]"}
	}
	if caseErr != nil {
		return nil, caseErr
	}
	return ix, nil
}

var topLevel = map[string]bool{
	"config_version": true, "server": true, "hsm": true, "storage": true, "audit": true,
	"harden": true, "tenant_context": true, "principals": true, "providers": true, "connect": true,
	"lifecycle": true, "webhooks": true,
}

func looksLikeConfig(ix keyIndex) bool {
	for path := range ix {
		top, _, _ := strings.Cut(path, ".")
		top, _, _ = strings.Cut(top, "[")
		if topLevel[top] {
			return true
		}
	}
	return false
}

func syntaxError(file string, data []byte, err error) *Error {
	{
		e := &Error{File: file, Msg: "syntax error"}
		var pe *unstable.ParserError
		if errors.As(err, &pe) {
			e.Msg = "syntax error: " + sanitize(pe.Message)
			e.Line = lineAt(data, pe.Highlight)
		}
		return e
	}
}

func lineOrDefault(l, def int) int {
	if l > 0 {
		return l
	}
	return def
}

func firstKey(n *unstable.Node) *unstable.Node {
	it := n.Key()
	if it.Next() {
		return it.Node()
	}
	return nil
}

func keyParts(n *unstable.Node) []string {
	var parts []string
	for it := n.Key(); it.Next(); {
		parts = append(parts, string(it.Node().Data))
	}
	return parts
}

// badKeyPart reports a key part the decoder would match case-insensitively.
// Provider names (providers.NAME) are map keys, matched exactly, and have
// their own, more helpful, validation message.
func badKeyPart(parts []string) bool {
	for i, k := range parts {
		if i == 1 && parts[0] == "providers" {
			continue
		}
		// authorize_params names are the provider's vocabulary, sent as
		// written (some use camelCase) and decoded as exact map keys.
		if i == 3 && parts[0] == "providers" && parts[2] == "authorize_params" {
			continue
		}
		if strings.IndexFunc(k, func(r rune) bool { return r >= 'A' && r <= 'Z' }) >= 0 {
			return true
		}
	}
	return false
}

// lineAt finds the line of highlight, a sub-slice of data (0 if it is not).
func lineAt(data, highlight []byte) int {
	off := cap(data) - cap(highlight)
	if highlight == nil || off < 0 || off > len(data) {
		return 0
	}
	return 1 + strings.Count(string(data[:off]), "\n")
}

// isDurationKey reports whether parts is the path of a Duration field.
func isDurationKey(parts []string) bool {
	switch len(parts) {
	case 2:
		switch parts[0] + "." + parts[1] {
		case "server.request_timeout", "server.shutdown_timeout", "storage.lock_timeout", "hsm.health_interval",
			"audit.checkpoint_interval", "audit.sync_interval",
			"tenant_context.max_lifetime", "tenant_context.clock_skew", "connect.session_ttl",
			"lifecycle.idle_disconnect_after", "lifecycle.reauth_purge_after", "lifecycle.revocation_retry_for",
			"lifecycle.revocation_retry_initial", "lifecycle.sweep_interval":
			return true
		}
	case 3:
		if parts[0] == "providers" {
			switch parts[2] {
			case "refresh_margin", "default_token_lifetime", "timeout", "refresh_token_max_idle":
				return true
			}
		}
	}
	return false
}

// isDurationListKey reports whether parts is the path of a []Duration
// field: [[webhooks]] retry_schedule (the first part is "webhooks" or,
// under an array table, "webhooks[N]").
func isDurationListKey(parts []string) bool {
	if len(parts) != 2 || parts[1] != "retry_schedule" {
		return false
	}
	top, _, _ := strings.Cut(parts[0], "[")
	return top == "webhooks"
}

func kindName(k unstable.Kind) string {
	switch k {
	case unstable.Integer:
		return "integer"
	case unstable.Float:
		return "float"
	case unstable.Bool:
		return "boolean"
	case unstable.Array:
		return "array"
	case unstable.InlineTable:
		return "inline table"
	case unstable.LocalDate, unstable.LocalTime, unstable.LocalDateTime, unstable.DateTime:
		return "date/time"
	}
	return "value"
}
