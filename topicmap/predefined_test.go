package topicmap

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
)

func mustPredefined(t testing.TB, topics ...PredefinedTopic) *Predefined {
	t.Helper()
	p, err := NewPredefined(topics)
	if err != nil {
		t.Fatalf("NewPredefined: %v", err)
	}
	return p
}

func TestPredefinedLookups(t *testing.T) {
	p := mustPredefined(t,
		PredefinedTopic{ID: 7, Topic: "sensors/all/cmd"},
		PredefinedTopic{ID: 1, Topic: "time"},
		PredefinedTopic{ID: 0xFFFE, Topic: "last"},
	)
	for _, tt := range []struct {
		id    uint16
		topic string
	}{{1, "time"}, {7, "sensors/all/cmd"}, {0xFFFE, "last"}} {
		if got, ok := p.Topic(tt.id); !ok || got != tt.topic {
			t.Errorf("Topic(%d) = %q, %v; want %q, true", tt.id, got, ok, tt.topic)
		}
		if got, ok := p.ID(tt.topic); !ok || got != tt.id {
			t.Errorf("ID(%q) = %d, %v; want %d, true", tt.topic, got, ok, tt.id)
		}
		if !p.Contains(tt.id) {
			t.Errorf("Contains(%d) = false", tt.id)
		}
	}
	for _, id := range []uint16{0, 2, 8, 0xFFFF} {
		if p.Contains(id) {
			t.Errorf("Contains(%d) = true", id)
		}
		if got, ok := p.Topic(id); ok {
			t.Errorf("Topic(%d) = %q, true", id, got)
		}
	}
	if id, ok := p.ID("nope"); ok {
		t.Errorf("ID(nope) = %d, true", id)
	}
	if p.Len() != 3 {
		t.Errorf("Len = %d, want 3", p.Len())
	}
	var ids []uint16
	for id, topic := range p.All() {
		if got, _ := p.Topic(id); got != topic {
			t.Errorf("All yielded %d, %q; Topic gives %q", id, topic, got)
		}
		ids = append(ids, id)
	}
	if fmt.Sprint(ids) != "[1 7 65534]" {
		t.Errorf("All ids = %v, want ascending [1 7 65534]", ids)
	}
	for id := range p.All() {
		if id != 1 {
			t.Errorf("All continued after break")
		}
		break
	}
}

func TestPredefinedEmptyAndNil(t *testing.T) {
	empty := mustPredefined(t)
	var nilSet *Predefined
	for name, p := range map[string]*Predefined{"empty": empty, "nil": nilSet} {
		t.Run(name, func(t *testing.T) {
			if p.Len() != 0 || p.Contains(1) {
				t.Error("not empty")
			}
			if _, ok := p.Topic(1); ok {
				t.Error("Topic found something")
			}
			if _, ok := p.ID("a"); ok {
				t.Error("ID found something")
			}
			for range p.All() {
				t.Error("All yielded something")
			}
		})
	}
}

func TestNewPredefinedErrors(t *testing.T) {
	tests := []struct {
		name      string
		topics    []PredefinedTopic
		wantParts []string // each must appear in the error
		invalid   bool     // the error wraps ErrInvalidTopic
	}{
		{"id 0", []PredefinedTopic{{0, "a"}}, []string{"id 0 ", `"a"`, "reserved"}, false},
		{"id 0xFFFF", []PredefinedTopic{{0xFFFF, "a"}}, []string{"id 65535", "reserved"}, false},
		{"duplicate id", []PredefinedTopic{{5, "a"}, {5, "b"}}, []string{"id 5", `"a"`, `"b"`, "twice"}, false},
		{"duplicate topic", []PredefinedTopic{{5, "a"}, {6, "a"}}, []string{`"a"`, "ids 5 and 6", "twice"}, false},
		{"empty topic", []PredefinedTopic{{5, ""}}, []string{"id 5", "empty"}, true},
		{"plus", []PredefinedTopic{{5, "a/+"}}, []string{"id 5", `"a/+"`, "wildcard"}, true},
		{"hash", []PredefinedTopic{{5, "a/#"}}, []string{"id 5", "wildcard"}, true},
		{"nul", []PredefinedTopic{{5, "a\x00"}}, []string{"id 5", "U+0000"}, true},
		{"utf8", []PredefinedTopic{{5, "a\xff"}}, []string{"id 5", "UTF-8"}, true},
		{"too long", []PredefinedTopic{{5, strings.Repeat("a", MaxTopicLen+1)}}, []string{"id 5", "longer"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := NewPredefined(tt.topics)
			if err == nil {
				t.Fatalf("NewPredefined(%v) succeeded", tt.topics)
			}
			if p != nil {
				t.Error("returned a set along with the error")
			}
			for _, part := range tt.wantParts {
				if !strings.Contains(err.Error(), part) {
					t.Errorf("error %q lacks %q", err, part)
				}
			}
			if got := errors.Is(err, ErrInvalidTopic); got != tt.invalid {
				t.Errorf("errors.Is(err, ErrInvalidTopic) = %v, want %v", got, tt.invalid)
			}
		})
	}
}

func TestNewPredefinedReportsAllProblems(t *testing.T) {
	_, err := NewPredefined([]PredefinedTopic{
		{0, "zero"}, {1, "ok"}, {2, "a/+"}, {1, "again"}, {3, "ok"},
	})
	if err == nil {
		t.Fatal("no error")
	}
	for _, part := range []string{`"zero"`, `"a/+"`, `"again"`, "ids 1 and 3"} {
		if !strings.Contains(err.Error(), part) {
			t.Errorf("error lacks %q:\n%v", part, err)
		}
	}
	if n := strings.Count(err.Error(), "\n") + 1; n != 4 {
		t.Errorf("%d problems reported, want 4:\n%v", n, err)
	}
}

func TestNewPredefinedCopiesInput(t *testing.T) {
	in := []PredefinedTopic{{1, "a"}}
	p := mustPredefined(t, in...)
	in[0] = PredefinedTopic{2, "b"}
	if topic, ok := p.Topic(1); !ok || topic != "a" {
		t.Errorf("set changed with its input: Topic(1) = %q, %v", topic, ok)
	}
}

// TestPredefinedConcurrentReads shares one set between goroutines, as all
// sessions do; run with -race.
func TestPredefinedConcurrentReads(t *testing.T) {
	p := mustPredefined(t, PredefinedTopic{1, "a"}, PredefinedTopic{2, "b"})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			r := NewRegistry(p, 10)
			for i := range 200 {
				topic := fmt.Sprintf("c/%d/%d", g, i%20)
				if _, err := r.Register(topic); err != nil && !errors.Is(err, ErrExhausted) {
					t.Error(err)
					return
				}
				if got, ok := r.Lookup(KindPredefined, 2); !ok || got != "b" {
					t.Errorf("Lookup(predefined, 2) = %q, %v", got, ok)
					return
				}
				for range p.All() {
				}
			}
		})
	}
	wg.Wait()
}
