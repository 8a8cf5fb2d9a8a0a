// Package toml decodes the part of TOML v1.0 that porthole's config file needs
// into a struct: tables, dotted keys, strings (all four kinds), integers,
// booleans, arrays of strings and inline tables. It is not a general TOML
// library: floats, dates and times and arrays of tables are rejected with an
// error that names the line and the key, and so are keys and tables the
// struct does not have. Whatever it accepts decodes as
// github.com/BurntSushi/toml decodes it (a differential fuzz test checks
// that); it replaces that package in the device binary, where it cost about
// 0.19 MiB. It refuses, as TOML v1.0 does, a few documents BurntSushi/toml
// takes: a dotted key that adds to a table a [table] line or an inline table
// made, and a [table] line for a table dotted keys made.
package toml

import (
	"bytes"
	"encoding"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"unicode/utf8"
)

// ParseError is a document Unmarshal does not accept: a syntax error, a key
// or table the struct does not have, a key or table defined twice, or a value
// the field cannot hold.
type ParseError struct {
	_    [0]func() // not comparable: no equality function in the binary (docs/size.md)
	Line int       // 1-based
	Err  error     // what is wrong; names the key where there is one
}

func (e *ParseError) Error() string { return fmt.Sprintf("line %d: %v", e.Line, e.Err) }

// Unwrap returns Err: for a value a field's UnmarshalText refused, its error.
func (e *ParseError) Unwrap() error { return e.Err }

func errorAt(line int, format string, args ...any) error {
	return &ParseError{Line: line, Err: fmt.Errorf(format, args...)}
}

// Unmarshal decodes the TOML document data into v, a pointer to a struct.
// Only exported fields with a `toml:"name"` tag are keys. A field may be a
// string, a bool, an integer of any size, an encoding.TextUnmarshaler (given a
// string value, or an integer as its decimal text, as BurntSushi/toml does), a
// slice of strings, a map of strings by string key, or a struct (a table; it
// may also be written as an inline table). Other field
// types are a programmer's error, reported without a line. Every other
// problem is a *ParseError; a value is never quoted in one, as it may be a
// secret.
func Unmarshal(data []byte, v any) error {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() || rv.Elem().Kind() != reflect.Struct {
		return fmt.Errorf("toml: Unmarshal needs a non-nil pointer to a struct, not %T", v)
	}
	if err := checkStruct(rv.Elem().Type()); err != nil {
		return err
	}
	if len(data) > 1 && (data[0] == 0xff && data[1] == 0xfe || data[0] == 0xfe && data[1] == 0xff || data[1] == 0) {
		// A byte order mark of UTF-16, or ASCII text in UTF-16LE without one.
		return errorAt(1, "the file is saved as UTF-16 (as Windows PowerShell's > and Notepad's \"Unicode\" save one), not UTF-8: save it as UTF-8")
	}
	for i := 0; i < len(data); {
		r, n := utf8.DecodeRune(data[i:])
		if r == utf8.RuneError && n == 1 {
			return errorAt(1+bytes.Count(data[:i], []byte("\n")), "invalid UTF-8 (save the file as UTF-8)")
		}
		i += n
	}
	d := &decoder{
		s:       scanner{b: bytes.TrimPrefix(data, []byte("\uFEFF")), line: 1},
		root:    rv.Elem(),
		table:   rv.Elem(),
		defined: map[string]definition{},
	}
	return d.decode()
}

type decoder struct {
	s    scanner
	root reflect.Value
	// table is where key/value pairs go: the struct or map of the last
	// [header], at path.
	table reflect.Value
	path  []string
	// defined has every key and table so far, by keyString of its path: TOML
	// allows none to be defined twice.
	defined map[string]definition
}

// definition is where and how a key or table was defined.
type definition struct {
	line int
	how  int
}

const (
	implied  = iota // [a.b] implies table a, which a later [a] may define
	header          // [a] defines table a
	assigned        // a = value
	dotted          // a.b = value defines table a; a.c = value adds to it
)

func (d *decoder) decode() error {
	for {
		d.s.skipSpace()
		switch c := d.s.peek(); {
		case d.s.eof():
			return nil
		case c == '[':
			if err := d.header(); err != nil {
				return err
			}
		case c != '#' && c != '\n' && c != '\r':
			if err := d.keyValue(); err != nil {
				return err
			}
		}
		if err := d.s.endOfLine(); err != nil {
			return err
		}
	}
}

// header reads [a.b] and makes that table the one key/value pairs go to.
func (d *decoder) header() error {
	line := d.s.line
	d.s.pos++
	if d.s.peek() == '[' {
		return d.s.errorf("arrays of tables [[...]] are not supported")
	}
	path, err := d.s.keyPath()
	if err != nil {
		return err
	}
	if d.s.peek() != ']' {
		return d.s.unexpected("want ] after a table name")
	}
	d.s.pos++
	t, err := d.descend(d.root, path, 0, len(path), line, header)
	d.table, d.path = t, path
	return err
}

// descend walks from t, the table at path[:i], down to the table at path[:n],
// making the tables on the way: those a [header] names (how is header, n is
// len(path)) or a dotted key's (how is dotted, n is len(path)-1).
func (d *decoder) descend(t reflect.Value, path []string, i, n, line, how int) (reflect.Value, error) {
	format := "%s"
	if how == header {
		format = "[%s]"
	}
	what := fmt.Sprintf(format, keyString(path))
	for ; i < n; i++ {
		name, last := keyString(path[:i+1]), how == header && i == n-1
		def, seen := d.defined[name]
		switch {
		case seen && def.how == assigned:
			return t, errorAt(line, "%s: %s was already set on line %d", what, name, def.line)
		case seen && last && def.how != implied:
			return t, errorAt(line, "duplicate table [%s] (first on line %d)", name, def.line)
		case seen && how == dotted && def.how != dotted:
			// TOML v1.0, "Table": dotted keys cannot add to a table a
			// [table] line defined, nor here to one it only implied, which
			// a later [table] line may still define.
			return t, errorAt(line, "%s: dotted keys cannot add to table %s, made by the [table] line on line %d", what, name, def.line)
		case t.Kind() == reflect.Map:
			return t, errorAt(line, "%s: want %s, got a table", name, describe(t.Type().Elem()))
		}
		f, ok := field(t, path[i])
		if !ok {
			return t, errorAt(line, "unknown table "+format, name)
		}
		if !isTable(f.Type()) {
			return t, errorAt(line, "%s: want %s, got a table", name, describe(f.Type()))
		}
		switch {
		case last:
			d.defined[name] = definition{line, header}
		case !seen && how == header:
			d.defined[name] = definition{line, implied}
		case !seen:
			d.defined[name] = definition{line, dotted}
		}
		t = f
	}
	if t.Kind() == reflect.Map && t.IsNil() {
		t.Set(reflect.MakeMap(t.Type()))
	}
	return t, nil
}

// keyValue reads key = value, or a.b.c = value, into the current table.
func (d *decoder) keyValue() error {
	line := d.s.line
	k, err := d.s.keyPath()
	if err != nil {
		return err
	}
	if err := d.s.equals(); err != nil {
		return err
	}
	path := append(d.path[:len(d.path):len(d.path)], k...)
	v, err := d.s.value()
	if err != nil {
		if pe, ok := err.(*ParseError); ok {
			pe.Err = fmt.Errorf("%s: %w", keyString(path), pe.Err)
		}
		return err
	}
	return d.set(d.table, path, len(d.path), v, line)
}

// set stores v under path; t is the table (a struct or a map) at path[:i].
// The parts of path after i but the last are a dotted key's, naming the
// tables v goes in, which set makes on the way: TOML v1.0, "Keys": a.b.c = v
// defines tables a and a.b. (The first releases, with BurntSushi/toml, took
// dotted keys: a config with one must still start.)
func (d *decoder) set(t reflect.Value, path []string, i int, v any, line int) error {
	t, err := d.descend(t, path, i, len(path)-1, line, dotted)
	if err != nil {
		return err
	}
	name := keyString(path)
	if def, seen := d.defined[name]; seen {
		return errorAt(line, "duplicate key %s (first on line %d)", name, def.line)
	}
	d.defined[name] = definition{line, assigned}
	key := path[len(path)-1]
	if t.Kind() == reflect.Map {
		e := reflect.New(t.Type().Elem()).Elem()
		if err := d.assign(e, path, v, line); err != nil {
			return err
		}
		t.SetMapIndex(reflect.ValueOf(key).Convert(t.Type().Key()), e)
		return nil
	}
	f, ok := field(t, key)
	if !ok {
		return errorAt(line, "unknown key %s", name)
	}
	return d.assign(f, path, v, line)
}

// assign stores v in f, the field or map element at path.
func (d *decoder) assign(f reflect.Value, path []string, v any, line int) error {
	t := f.Type()
	if isText(t) {
		if n, ok := v.(int64); ok {
			// As BurntSushi/toml does: `idle_timeout = 0` is the text "0".
			v = strconv.FormatInt(n, 10)
		}
		if s, ok := v.(string); ok {
			if err := f.Addr().Interface().(encoding.TextUnmarshaler).UnmarshalText([]byte(s)); err != nil {
				return errorAt(line, "%s: %w", keyString(path), err)
			}
			return nil
		}
		return errorAt(line, "%s: want a string, got %s", keyString(path), kindOf(v))
	}
	switch t.Kind() {
	case reflect.String:
		if s, ok := v.(string); ok {
			f.SetString(s)
			return nil
		}
	case reflect.Bool:
		if b, ok := v.(bool); ok {
			f.SetBool(b)
			return nil
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		if n, ok := v.(int64); ok {
			if f.OverflowInt(n) {
				return errorAt(line, "%s: %d is out of range for %s", keyString(path), n, t.Kind())
			}
			f.SetInt(n)
			return nil
		}
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		if n, ok := v.(int64); ok {
			if n < 0 || f.OverflowUint(uint64(n)) {
				return errorAt(line, "%s: %d is out of range for %s", keyString(path), n, t.Kind())
			}
			f.SetUint(uint64(n))
			return nil
		}
	case reflect.Slice:
		if a, ok := v.([]any); ok {
			s := reflect.MakeSlice(t, len(a), len(a))
			for i, e := range a {
				es, ok := e.(string)
				if !ok {
					return errorAt(line, "%s: want an array of strings, got %s in it", keyString(path), kindOf(e))
				}
				s.Index(i).SetString(es)
			}
			f.Set(s)
			return nil
		}
	case reflect.Map, reflect.Struct:
		if it, ok := v.(inlineTable); ok {
			if f.Kind() == reflect.Map && f.IsNil() {
				f.Set(reflect.MakeMap(t))
			}
			for _, kv := range it {
				if err := d.set(f, append(path[:len(path):len(path)], kv.key...), len(path), kv.val, kv.line); err != nil {
					return err
				}
			}
			return nil
		}
	}
	return errorAt(line, "%s: want %s, got %s", keyString(path), describe(t), kindOf(v))
}

var textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()

// isText reports a type whose pointer decodes itself from a string.
func isText(t reflect.Type) bool { return reflect.PointerTo(t).Implements(textUnmarshaler) }

func isTable(t reflect.Type) bool {
	return !isText(t) && (t.Kind() == reflect.Struct || t.Kind() == reflect.Map)
}

func isString(t reflect.Type) bool { return !isText(t) && t.Kind() == reflect.String }

// tagName is a field's key, "" if it has none.
func tagName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
	if name == "-" {
		return ""
	}
	return name
}

// field is the field of struct t whose key is key.
func field(t reflect.Value, key string) (reflect.Value, bool) {
	for i := range t.NumField() {
		if tagName(t.Type().Field(i)) == key {
			return t.Field(i), true
		}
	}
	return reflect.Value{}, false
}

// checkStruct rejects a struct with a keyed field of a type Unmarshal does not
// decode, wherever it is, before any input can reach it.
func checkStruct(t reflect.Type) error {
	for i := range t.NumField() {
		f := t.Field(i)
		if tagName(f) == "" {
			continue
		}
		ft := f.Type
		k := ft.Kind()
		switch {
		case !f.IsExported():
			return fmt.Errorf("toml: field %s.%s has a toml tag but is not exported", t, f.Name)
		case isText(ft), isString(ft), k == reflect.Bool, reflect.Int <= k && k <= reflect.Uintptr:
		case k == reflect.Slice && isString(ft.Elem()):
		case k == reflect.Map && ft.Key().Kind() == reflect.String && isString(ft.Elem()):
		case k == reflect.Struct:
			if err := checkStruct(ft); err != nil {
				return err
			}
		default:
			return fmt.Errorf("toml: field %s.%s: type %s is not supported", t, f.Name, ft)
		}
	}
	return nil
}

// describe says what TOML value a field of type t takes.
func describe(t reflect.Type) string {
	switch {
	case isText(t) || t.Kind() == reflect.String:
		return "a string"
	case t.Kind() == reflect.Bool:
		return "a boolean"
	case t.Kind() == reflect.Slice:
		return "an array of strings"
	case isTable(t):
		return "a table"
	}
	return "an integer"
}

// kindOf says what TOML value v is.
func kindOf(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case int64:
		return "an integer"
	case bool:
		return "a boolean"
	case []any:
		return "an array"
	}
	return "a table"
}
