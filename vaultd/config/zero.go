package config

import (
	"reflect"
	"slices"
	"strconv"
	"strings"
)

var durationType = reflect.TypeFor[Duration]()

// zeroDurations refuses a written zero duration ("0", "0s", "0d") at every
// key except those tagged `zero:"off"`, whose documentation says 0 turns
// them off. The decoder accepts zero for all of them (it cannot tell the
// keys apart), so this walks the decoded Config; a new Duration field is
// covered without being listed. The message is the decoder's, at the key's
// line, as if the value had been refused while decoding.
func (v *validator) zeroDurations() error {
	return v.walkZero("", reflect.ValueOf(v.cfg).Elem())
}

func (v *validator) walkZero(prefix string, val reflect.Value) error {
	typ := val.Type()
	for i := 0; i < typ.NumField(); i++ {
		f := typ.Field(i)
		tag := f.Tag.Get("toml")
		if tag == "" || tag == "-" {
			continue
		}
		path := prefix + tag
		fv := val.Field(i)
		if err := v.zeroValue(path, fv, f.Tag.Get("zero") == "off"); err != nil {
			return err
		}
	}
	return nil
}

func (v *validator) zeroValue(path string, fv reflect.Value, allowed bool) error {
	switch {
	case fv.Type() == durationType:
		// A written zero is the only way a key in the index holds zero:
		// the decoder refuses negatives, and defaults are never zero
		// where zero is refused.
		if !allowed && fv.Interface().(Duration).IsZero() && v.ix.has(path) {
			return &Error{File: v.cfg.File, Line: v.ix.line(path), Key: "key " + quote(path), Msg: errBadDuration.Error()}
		}
	case fv.Kind() == reflect.Pointer:
		if !fv.IsNil() && fv.Elem().Kind() == reflect.Struct {
			return v.walkZero(path+".", fv.Elem())
		}
	case fv.Kind() == reflect.Struct:
		return v.walkZero(path+".", fv)
	case fv.Kind() == reflect.Slice:
		for j := 0; j < fv.Len(); j++ {
			// Elements of a slice of durations (retry_schedule) have no
			// index entry of their own; their own range checks refuse zero.
			if err := v.zeroValue(path+"["+strconv.Itoa(j)+"]", fv.Index(j), allowed); err != nil {
				return err
			}
		}
	case fv.Kind() == reflect.Map:
		// Sorted, so that the first of two errors is always the same one.
		keys := fv.MapKeys()
		slices.SortFunc(keys, func(a, b reflect.Value) int { return strings.Compare(a.String(), b.String()) })
		for _, k := range keys {
			if err := v.zeroValue(path+"."+k.String(), fv.MapIndex(k), allowed); err != nil {
				return err
			}
		}
	}
	return nil
}
