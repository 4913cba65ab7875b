// Package config provides configuration loading for every yagura command:
// defaults from code, then one YAML file decoded strictly (an unknown key is
// an error naming its path), then YAGURA_… environment variables, then
// command-line flags.
//
// A configuration is a struct whose fields carry `koanf:"name"` tags;
// nested structs become dotted keys (http.listen), and the environment
// variable for a key is YAGURA_ plus the key upper-cased with dots as
// underscores (YAGURA_HTTP_LISTEN).
package config

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/providers/confmap"
	"github.com/knadh/koanf/providers/file"
	"github.com/knadh/koanf/v2"
	goyaml "go.yaml.in/yaml/v3"
)

// EnvPrefix starts every environment variable the loader reads.
const EnvPrefix = "YAGURA_"

// Source says where the configuration comes from.
type Source struct {
	// File is a YAML file; empty for none.
	File string
	// Environ is the environment (os.Environ()); nil for none.
	Environ []string
	// Flags maps keys to values given on the command line.
	Flags map[string]string
	// EnvPrefix replaces EnvPrefix, so that two commands on one host (the
	// agent and the manager) do not read each other's variables.
	EnvPrefix string
}

// Load fills cfg, which must point to a struct already holding the defaults.
func Load(cfg any, src Source) error {
	defaults, err := Flatten(cfg)
	if err != nil {
		return err
	}
	k := koanf.New(".")
	if err := k.Load(confmap.Provider(defaults, "."), nil); err != nil {
		return fmt.Errorf("load defaults: %w", err)
	}
	if src.File != "" {
		fk := koanf.New(".")
		if err := fk.Load(file.Provider(src.File), yaml.Parser()); err != nil {
			return fmt.Errorf("config file %s: %w", src.File, err)
		}
		dropEmptySections(fk, defaults)
		if err := checkKeys(fk.Keys(), defaults, "config file "+src.File); err != nil {
			return err
		}
		if err := k.Merge(fk); err != nil {
			return fmt.Errorf("config file %s: %w", src.File, err)
		}
	}
	env := map[string]any{}
	byEnv := map[string]string{}
	prefix := src.EnvPrefix
	if prefix == "" {
		prefix = EnvPrefix
	}
	for key := range defaults {
		byEnv[EnvName(prefix, key)] = key
	}
	for _, kv := range src.Environ {
		name, val, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(name, prefix) {
			continue
		}
		// Variables for other commands (YAGURA_TOKEN for ctl, …) share the
		// prefix, so an unknown one is not an error here.
		if key, ok := byEnv[name]; ok {
			env[key] = listValue(defaults[key], val)
		}
	}
	if err := k.Load(confmap.Provider(env, "."), nil); err != nil {
		return fmt.Errorf("environment: %w", err)
	}
	flags := map[string]any{}
	for key, val := range src.Flags {
		if _, ok := defaults[key]; !ok {
			return fmt.Errorf("flag for unknown key %q", key) // a programming error
		}
		flags[key] = listValue(defaults[key], val)
	}
	if err := k.Load(confmap.Provider(flags, "."), nil); err != nil {
		return fmt.Errorf("flags: %w", err)
	}
	dc := &mapstructure.DecoderConfig{
		Result:           cfg,
		TagName:          "koanf",
		WeaklyTypedInput: true,
		ErrorUnused:      true,
		DecodeHook: mapstructure.ComposeDecodeHookFunc(
			durationWithUnit,
			mapstructure.StringToTimeDurationHookFunc(),
			mapstructure.StringToSliceHookFunc(","),
		),
	}
	if err := k.UnmarshalWithConf("", cfg, koanf.UnmarshalConf{Tag: "koanf", DecoderConfig: dc}); err != nil {
		return fmt.Errorf("configuration: %w", err)
	}
	return nil
}

// durationWithUnit refuses a bare number for a duration: YAML reads
// `timeout: 90` as an integer, which would otherwise decode as 90ns.
func durationWithUnit(from, to reflect.Type, data any) (any, error) {
	if to != durationType {
		return data, nil
	}
	switch from.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64,
		reflect.Float32, reflect.Float64:
		if !reflect.ValueOf(data).IsZero() {
			return nil, fmt.Errorf("%v has no unit: want a duration such as 90s", data)
		}
	}
	return data, nil
}

// listValue splits comma-separated values for list keys.
func listValue(def any, val string) any {
	if _, ok := def.([]string); ok {
		if val == "" {
			return []string{}
		}
		parts := strings.Split(val, ",")
		for i := range parts {
			parts[i] = strings.TrimSpace(parts[i])
		}
		return parts
	}
	return val
}

// EnvName is the environment variable for a key.
func EnvName(prefix, key string) string {
	return prefix + strings.ToUpper(strings.NewReplacer(".", "_", "-", "_").Replace(key))
}

// dropEmptySections removes sections left empty, such as `server:` with
// every entry commented out (which YAML reads as null) or `tls: {}`: the
// section keeps its defaults instead of being reported as an unknown key.
func dropEmptySections(fk *koanf.Koanf, known map[string]any) {
	for _, k := range fk.Keys() {
		if _, ok := known[k]; ok {
			continue
		}
		v := fk.Get(k)
		if m, isMap := v.(map[string]any); v != nil && (!isMap || len(m) > 0) {
			continue
		}
		for kk := range known {
			if strings.HasPrefix(kk, k+".") {
				fk.Delete(k)
				break
			}
		}
	}
}

func checkKeys(got []string, known map[string]any, where string) error {
	var unknown []string
	for _, k := range got {
		if _, ok := known[k]; !ok {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) == 0 {
		return nil
	}
	slices.Sort(unknown)
	var b strings.Builder
	fmt.Fprintf(&b, "%s: unknown key", where)
	if len(unknown) > 1 {
		b.WriteString("s")
	}
	for i, u := range unknown {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, " %q", u)
		if s := closest(u, known); s != "" {
			fmt.Fprintf(&b, " (did you mean %q?)", s)
		}
	}
	return errors.New(b.String())
}

// closest suggests a known key at a small edit distance.
func closest(key string, known map[string]any) string {
	best, bestD := "", 4
	for k := range known {
		if d := distance(key, k); d < bestD || (d == bestD && k < best) {
			best, bestD = k, d
		}
	}
	return best
}

func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// Flatten renders a config struct as dotted keys, durations as text, which
// is also its dump form.
func Flatten(cfg any) (map[string]any, error) {
	v := reflect.ValueOf(cfg)
	if v.Kind() == reflect.Pointer {
		v = v.Elem()
	}
	if v.Kind() != reflect.Struct {
		return nil, fmt.Errorf("config: want a struct, got %s", v.Kind())
	}
	out := map[string]any{}
	flatten(v, "", out)
	return out, nil
}

var durationType = reflect.TypeFor[time.Duration]()

func flatten(v reflect.Value, prefix string, out map[string]any) {
	t := v.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("koanf")
		if tag == "" || tag == "-" || !f.IsExported() {
			continue
		}
		key := prefix + tag
		fv := v.Field(i)
		switch {
		case fv.Type() == durationType:
			out[key] = time.Duration(fv.Int()).String()
		case fv.Kind() == reflect.Struct:
			flatten(fv, key+".", out)
		case fv.Kind() == reflect.Slice:
			out[key] = slices.Clone(fv.Interface().([]string))
		default:
			out[key] = fv.Interface()
		}
	}
}

// Dump renders the effective configuration as YAML, secrets masked by the
// caller's keys.
func Dump(cfg any, secretKeys ...string) (string, error) {
	flat, err := Flatten(cfg)
	if err != nil {
		return "", err
	}
	for _, s := range secretKeys {
		if v, ok := flat[s].(string); ok && v != "" {
			flat[s] = "<redacted>"
		}
	}
	k := koanf.New(".")
	if err := k.Load(confmap.Provider(flat, "."), nil); err != nil {
		return "", err
	}
	b, err := goyaml.Marshal(k.Raw())
	if err != nil {
		return "", err
	}
	return string(b), nil
}
