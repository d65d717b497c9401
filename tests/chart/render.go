// render: the chart rendered the way `helm template` renders it, for
// machines without Helm. Go's text/template with the sprig function
// library (Helm's own template language) plus the functions Helm adds:
// include, tpl, required, fail, toYaml, fromYaml, toJson, fromJson, lookup
// (always empty, as in `helm template`), and .Release, .Chart, .Values,
// .Capabilities, .Files, .Template.
//
// Build (Debian packages golang-go, golang-github-masterminds-sprig-dev,
// golang-github-ghodss-yaml-dev):
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o render tests/chart/render.go
//
// Use:
//
//	render -chart charts/flowpilot -name demo -namespace crm -f more.yaml -set api.enabled=false
//	render -chart charts/flowpilot -notes ...   # templates/NOTES.txt instead
//
// Prints every rendered manifest as YAML documents, each after a
// `# Source: <chart>/templates/<file>` line, as Helm does; exits 1 with the
// template's error otherwise.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"text/template"

	"github.com/Masterminds/sprig"
	"github.com/ghodss/yaml"
)

type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(v string) error { *l = append(*l, v); return nil }

// Capabilities as Helm's .Capabilities: the Kubernetes version and the
// API versions a cluster serves (every built-in one and the monitoring
// CRDs' when asked for).
type kubeVersion struct{ Version, Major, Minor, GitVersion string }

type apiVersions []string

func (a apiVersions) Has(v string) bool {
	for _, x := range a {
		if x == v {
			return true
		}
	}
	return false
}

// Files as Helm's .Files, over the chart's directory.
type files struct{ root string }

func (f files) Get(name string) string {
	b, err := os.ReadFile(filepath.Join(f.root, filepath.FromSlash(name)))
	if err != nil {
		return ""
	}
	return string(b)
}

func (f files) GetBytes(name string) []byte { return []byte(f.Get(name)) }

func main() {
	chart := flag.String("chart", "charts/flowpilot", "the chart's directory")
	name := flag.String("name", "flowpilot", "release name")
	namespace := flag.String("namespace", "default", "release namespace")
	kube := flag.String("kube-version", "1.31.0", "Kubernetes version for .Capabilities")
	var valueFiles, sets, apis list
	flag.Var(&valueFiles, "f", "values file (repeatable, later wins)")
	flag.Var(&sets, "set", "key.path=value (repeatable; true/false/numbers typed as Helm does)")
	flag.Var(&apis, "api-versions", "extra API versions for .Capabilities.APIVersions")
	notes := flag.Bool("notes", false, "print the rendered templates/NOTES.txt instead of the manifests")
	flag.Parse()
	out, err := render(*chart, *name, *namespace, *kube, valueFiles, sets, apis, *notes)
	if err != nil {
		fmt.Fprintln(os.Stderr, "render:", err)
		os.Exit(1)
	}
	os.Stdout.WriteString(out)
}

func readYAML(file string) (map[string]interface{}, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	m := map[string]interface{}{}
	if err := yaml.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%s: %v", file, err)
	}
	return m, nil
}

// merge puts src over dst, maps merged key by key, as Helm merges values.
func merge(dst, src map[string]interface{}) map[string]interface{} {
	for k, v := range src {
		if sm, ok := v.(map[string]interface{}); ok {
			if dm, ok := dst[k].(map[string]interface{}); ok {
				dst[k] = merge(dm, sm)
				continue
			}
		}
		dst[k] = v
	}
	return dst
}

// set applies one `a.b.c=value`.
func set(values map[string]interface{}, expr string) error {
	eq := strings.Index(expr, "=")
	if eq < 0 {
		return fmt.Errorf("-set %q: want key=value", expr)
	}
	keys := strings.Split(expr[:eq], ".")
	raw := expr[eq+1:]
	var v interface{} = raw
	switch {
	case raw == "true" || raw == "false":
		v = raw == "true"
	case raw == "null":
		v = nil
	default:
		if n, err := strconv.ParseInt(raw, 10, 64); err == nil {
			v = n
		}
	}
	m := values
	for _, k := range keys[:len(keys)-1] {
		next, ok := m[k].(map[string]interface{})
		if !ok {
			next = map[string]interface{}{}
			m[k] = next
		}
		m = next
	}
	m[keys[len(keys)-1]] = v
	return nil
}

func toYAML(v interface{}) string {
	b, err := yaml.Marshal(v)
	if err != nil {
		return ""
	}
	return strings.TrimSuffix(string(b), "\n")
}

func render(chartDir, name, namespace, kube string, valueFiles, sets, apis []string, notes bool) (string, error) {
	meta, err := readYAML(filepath.Join(chartDir, "Chart.yaml"))
	if err != nil {
		return "", err
	}
	values, err := readYAML(filepath.Join(chartDir, "values.yaml"))
	if err != nil {
		return "", err
	}
	for _, f := range valueFiles {
		more, err := readYAML(f)
		if err != nil {
			return "", err
		}
		values = merge(values, more)
	}
	for _, s := range sets {
		if err := set(values, s); err != nil {
			return "", err
		}
	}
	chartName, _ := meta["name"].(string)
	parts := strings.SplitN(strings.TrimPrefix(kube, "v"), ".", 3)
	if len(parts) < 2 {
		return "", fmt.Errorf("-kube-version %q: want MAJOR.MINOR.PATCH", kube)
	}
	versions := apiVersions{"v1", "apps/v1", "batch/v1", "policy/v1", "rbac.authorization.k8s.io/v1",
		"coordination.k8s.io/v1", "apiextensions.k8s.io/v1", "autoscaling/v2", "networking.k8s.io/v1"}
	versions = append(versions, apis...)
	top := map[string]interface{}{
		"Values": values,
		"Release": map[string]interface{}{
			"Name": name, "Namespace": namespace, "Service": "Helm",
			"IsInstall": true, "IsUpgrade": false, "Revision": 1,
		},
		"Chart": map[string]interface{}{
			"Name": chartName, "Version": meta["version"], "AppVersion": meta["appVersion"],
			"Description": meta["description"], "Type": meta["type"], "ApiVersion": meta["apiVersion"],
		},
		"Capabilities": map[string]interface{}{
			"KubeVersion": kubeVersion{Version: "v" + strings.TrimPrefix(kube, "v"), Major: parts[0],
				Minor: parts[1], GitVersion: "v" + strings.TrimPrefix(kube, "v")},
			"APIVersions": versions,
		},
		"Files": files{root: chartDir},
	}

	t := template.New("chart").Option("missingkey=zero")
	funcs := sprig.TxtFuncMap()
	// Helm's own functions. include and tpl need the template set itself.
	funcs["include"] = func(name string, data interface{}) (string, error) {
		var buf bytes.Buffer
		if err := t.ExecuteTemplate(&buf, name, data); err != nil {
			return "", err
		}
		return buf.String(), nil
	}
	funcs["tpl"] = func(text string, data interface{}) (string, error) {
		c, err := t.Clone()
		if err != nil {
			return "", err
		}
		inner, err := c.New("tpl").Parse(text)
		if err != nil {
			return "", err
		}
		var buf bytes.Buffer
		err = inner.Execute(&buf, data)
		return buf.String(), err
	}
	funcs["required"] = func(msg string, v interface{}) (interface{}, error) {
		if v == nil || v == "" {
			return nil, errors.New(msg)
		}
		return v, nil
	}
	funcs["fail"] = func(msg string) (string, error) { return "", errors.New(msg) }
	funcs["toYaml"] = toYAML
	funcs["fromYaml"] = func(s string) map[string]interface{} {
		m := map[string]interface{}{}
		if err := yaml.Unmarshal([]byte(s), &m); err != nil {
			m["Error"] = err.Error()
		}
		return m
	}
	funcs["toJson"] = func(v interface{}) string {
		b, _ := json.Marshal(v)
		return string(b)
	}
	funcs["fromJson"] = func(s string) map[string]interface{} {
		m := map[string]interface{}{}
		if err := json.Unmarshal([]byte(s), &m); err != nil {
			m["Error"] = err.Error()
		}
		return m
	}
	funcs["lookup"] = func(string, string, string, string) map[string]interface{} {
		return map[string]interface{}{}
	}
	t.Funcs(funcs)

	paths, err := filepath.Glob(filepath.Join(chartDir, "templates", "*"))
	if err != nil {
		return "", err
	}
	sort.Strings(paths)
	var names []string
	for _, p := range paths {
		base := filepath.Base(p)
		if !(strings.HasSuffix(base, ".yaml") || strings.HasSuffix(base, ".tpl") || strings.HasSuffix(base, ".txt")) {
			continue
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return "", err
		}
		tname := path.Join(chartName, "templates", base)
		if _, err := t.New(tname).Parse(string(b)); err != nil {
			return "", err
		}
		// Partials (_*) define templates only; NOTES.txt is not a manifest.
		if !strings.HasPrefix(base, "_") && strings.HasSuffix(base, ".yaml") {
			names = append(names, tname)
		}
	}
	if notes {
		names = []string{path.Join(chartName, "templates", "NOTES.txt")}
	}
	var out strings.Builder
	for _, tname := range names {
		data := map[string]interface{}{}
		for k, v := range top {
			data[k] = v
		}
		data["Template"] = map[string]interface{}{"Name": tname, "BasePath": path.Join(chartName, "templates")}
		var buf bytes.Buffer
		if err := t.ExecuteTemplate(&buf, tname, data); err != nil {
			return "", err
		}
		if notes {
			return buf.String(), nil
		}
		for _, doc := range strings.Split(buf.String(), "\n---") {
			if strings.TrimSpace(stripComments(doc)) == "" {
				continue
			}
			fmt.Fprintf(&out, "---\n# Source: %s\n%s\n", tname, strings.Trim(doc, "\n"))
		}
	}
	return out.String(), nil
}

// stripComments drops YAML comment lines, to tell an empty document.
func stripComments(doc string) string {
	var kept []string
	for _, line := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "#") {
			kept = append(kept, line)
		}
	}
	return strings.Join(kept, "\n")
}
