package caddyfile_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
)

// syntaxBlock tells a syntax summary (`max_size <size>`) from an example.
var syntaxBlock = regexp.MustCompile(`<[a-z_]+>`)

// TestDocsExamples adapts and validates every Caddyfile example in the
// Markdown documents and every testdata/*.Caddyfile, as `caddy adapt` and
// `caddy validate` would, so that no example a user copies fails to load
// or loads with a warning. Syntax summaries (with <placeholders>) are
// skipped.
func TestDocsExamples(t *testing.T) {
	t.Setenv("AFFINITY_SECRET", "0123456789abcdef0123456789abcdef")
	t.Setenv("AFFINITY_SECRET_OLD", "fedcba9876543210fedcba9876543210")
	secrets := t.TempDir()
	for _, name := range []string{"affinity.secret", "affinity.secret.old"} {
		if err := os.WriteFile(filepath.Join(secrets, name), []byte(name+"-0123456789abcdef\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	docs, err := filepath.Glob("../*.md")
	if err != nil {
		t.Fatal(err)
	}
	more, _ := filepath.Glob("../*/README.md")
	docs = append(docs, more...)
	examples := 0
	for _, doc := range docs {
		data, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range caddyfileBlocks(string(data)) {
			if syntaxBlock.MatchString(b.text) {
				continue
			}
			// The examples read the affinity secret from a file under
			// /etc/caddy: one of the test's own, with a secret in it.
			b.text = strings.ReplaceAll(b.text, "{file./etc/caddy/", "{file."+secrets+"/")
			examples++
			t.Run(strings.TrimPrefix(doc, "../")+":"+itoa(b.line), func(t *testing.T) { adaptAndValidate(t, doc, b.line, b.text) })
		}
	}
	files, _ := filepath.Glob("../testdata/*.Caddyfile")
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		examples++
		t.Run(strings.TrimPrefix(file, "../"), func(t *testing.T) { adaptAndValidate(t, file, 1, string(data)) })
	}
	if examples < 5 {
		t.Errorf("found %d Caddyfile examples in %v; the documents have more", examples, docs)
	}
}

// adaptAndValidate fails t if the Caddyfile text, found at file:line,
// does not adapt without warnings or does not validate.
func adaptAndValidate(t *testing.T, file string, line int, text string) {
	out, err := adapt(t, text)
	if err != nil && strconv.IntSize == 32 && strings.Contains(err.Error(), "in a 32-bit build") {
		t.Skipf("the example at %s:%d is for a 64-bit build: %v", file, line, err)
	}
	if err != nil {
		t.Fatalf("adapting the example at %s:%d: %v\n%s", file, line, err, text)
	}
	var cfg caddy.Config
	if err := json.Unmarshal([]byte(out), &cfg); err != nil {
		t.Fatal(err)
	}
	if err := caddy.Validate(&cfg); err != nil {
		t.Errorf("validating the example at %s:%d: %v", file, line, err)
	}
}

type block struct {
	line int // of the opening fence
	text string
}

// caddyfileBlocks returns the ```caddyfile fenced blocks of a Markdown text.
func caddyfileBlocks(md string) []block {
	var out []block
	var cur *block
	for i, line := range strings.Split(md, "\n") {
		switch {
		case cur == nil && strings.TrimSpace(line) == "```caddyfile":
			cur = &block{line: i + 1}
		case cur != nil && strings.TrimSpace(line) == "```":
			out = append(out, *cur)
			cur = nil
		case cur != nil:
			cur.text += line + "\n"
		}
	}
	return out
}

func itoa(n int) string {
	var b []byte
	for n > 0 || len(b) == 0 {
		b = append([]byte{byte('0' + n%10)}, b...)
		n /= 10
	}
	return string(b)
}
