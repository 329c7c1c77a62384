// Package ids is the syntax of tenant and integration ids. It is a leaf so
// that every layer that meets an id can check it without depending on
// another: the config file (a principal's fixed tenant), policy (the tenant
// claim of a tenant-context JWT) and storage (every record key).
package ids

import "regexp"

var re = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// Valid reports whether id is usable as a tenant or integration id:
// 1-128 characters of [A-Za-z0-9._-], starting alphanumeric.
func Valid(id string) bool { return re.MatchString(id) }
