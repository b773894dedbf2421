package topicmap

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
)

// model is the obvious implementation a Registry is checked against.
type model struct {
	pre       *Predefined
	max       int
	ids       map[string]uint16
	topics    map[uint16]string
	confirmed map[uint16]bool
	cursor    uint16
}

func newModel(pre *Predefined, max int) *model {
	return &model{pre: pre, max: max, ids: map[string]uint16{}, topics: map[uint16]string{}, confirmed: map[uint16]bool{}}
}

// next returns the id a rotating cursor must hand out next, or 0 if none is free.
func (m *model) next() uint16 {
	if len(m.topics)+m.pre.Len() >= maxIDs {
		return 0
	}
	c := m.cursor
	for range maxIDs {
		c++
		if c == 0xFFFF {
			c = 1
		}
		if _, used := m.topics[c]; !used && !m.pre.Contains(c) {
			return c
		}
	}
	return 0
}

// register applies a registration of topic and returns the expected result.
func (m *model) register(topic string, confirm bool) (id uint16, err error) {
	if id, ok := m.ids[topic]; ok {
		if confirm {
			m.confirmed[id] = true
		}
		return id, nil
	}
	if topicProblem(topic) != "" {
		return 0, ErrInvalidTopic
	}
	if len(m.ids) >= m.max {
		return 0, ErrExhausted
	}
	id = m.next()
	if id == 0 {
		return 0, ErrExhausted
	}
	m.cursor = id
	m.ids[topic], m.topics[id], m.confirmed[id] = id, topic, confirm
	return id, nil
}

func (m *model) remove(id uint16) {
	if topic, ok := m.topics[id]; ok {
		delete(m.ids, topic)
		delete(m.topics, id)
		delete(m.confirmed, id)
	}
}

// checkInvariants verifies the registry's internal consistency and that it
// agrees with the model.
func checkInvariants(t *testing.T, r *Registry, m *model) {
	t.Helper()
	if r.Len() != len(m.ids) {
		t.Fatalf("Len = %d, model %d", r.Len(), len(m.ids))
	}
	seenID := map[uint16]bool{}
	seenTopic := map[string]bool{}
	for i, e := range r.entries {
		switch {
		case e.id == 0 || e.id == 0xFFFF:
			t.Fatalf("entry %d has reserved id %#04x", i, e.id)
		case r.pre.Contains(e.id):
			t.Fatalf("entry %d has predefined id %d", i, e.id)
		case seenID[e.id]:
			t.Fatalf("id %d held twice", e.id)
		case seenTopic[e.topic]:
			t.Fatalf("topic %q held twice", e.topic)
		case topicProblem(e.topic) != "":
			t.Fatalf("invalid topic %q held", e.topic)
		}
		if _, ok := r.pre.ID(e.topic); ok {
			t.Fatalf("predefined topic %q holds a normal id", e.topic)
		}
		seenID[e.id], seenTopic[e.topic] = true, true
	}
	if len(r.entries) > linearMax && r.idx == nil {
		t.Fatalf("%d entries without an index", len(r.entries))
	}
	if r.idx != nil {
		if len(r.idx.byID) != len(r.entries) || len(r.idx.byTopic) != len(r.entries) {
			t.Fatalf("index sizes %d, %d; entries %d", len(r.idx.byID), len(r.idx.byTopic), len(r.entries))
		}
		for i, e := range r.entries {
			if r.idx.byID[e.id] != int32(i) || r.idx.byTopic[e.topic] != int32(i) {
				t.Fatalf("index of entry %d (%d %q) is wrong", i, e.id, e.topic)
			}
		}
	}
	for topic, id := range m.ids {
		if got, ok := r.ID(topic); !ok || got != id {
			t.Fatalf("ID(%q) = %d, %v; model %d", topic, got, ok, id)
		}
		if got, ok := r.Topic(id); !ok || got != topic {
			t.Fatalf("Topic(%d) = %q, %v; model %q", id, got, ok, topic)
		}
		if got, ok := r.Lookup(KindNormal, id); !ok || got != topic {
			t.Fatalf("Lookup(normal, %d) = %q, %v; model %q", id, got, ok, topic)
		}
		if r.Confirmed(id) != m.confirmed[id] {
			t.Fatalf("Confirmed(%d) = %v, model %v", id, r.Confirmed(id), m.confirmed[id])
		}
	}
	if len(r.rejected) > r.limit() {
		t.Fatalf("%d rejected topics, limit %d", len(r.rejected), r.limit())
	}
}

func TestRegistryProperties(t *testing.T) {
	sparse := []PredefinedTopic{{0xFFFE, "pre/last"}}
	for id := uint16(1); id <= 300; id += 3 {
		sparse = append(sparse, PredefinedTopic{id, fmt.Sprint("pre/", id)})
	}
	var dense []PredefinedTopic // all but 20 ids: the id space runs out and the cursor wraps
	for id := uint16(1); id < 0xFFFF; id++ {
		if id%3300 != 7 { // 20 free ids
			dense = append(dense, PredefinedTopic{id, fmt.Sprint("pre/", id)})
		}
	}
	configs := []struct {
		name string
		pre  []PredefinedTopic
		max  int
		ops  int
	}{
		{"no predefined", nil, 30, 20000},
		{"sparse predefined", sparse, 20, 20000},
		{"dense predefined", dense, 100, 1500},
		{"limit below the index threshold", sparse, linearMax - 2, 5000},
	}
	for ci, cfg := range configs {
		t.Run(cfg.name, func(t *testing.T) {
			pre := mustPredefined(t, cfg.pre...)
			rng := rand.New(rand.NewPCG(uint64(ci)+1, 0x5eed))
			r, m := NewRegistry(pre, cfg.max), newModel(pre, cfg.max)

			pool := []string{"", "a/+", "#", "x\x00", "\xff\xfe", "ab", "T1", "a", "pre/4", "pre/7", "pre/last"}
			for i := range 60 {
				pool = append(pool, fmt.Sprint("s/", i))
			}
			randomID := func() uint16 {
				if len(m.topics) > 0 && rng.IntN(4) > 0 {
					for id := range m.topics { // map order is random enough here
						return id
					}
				}
				return uint16(rng.IntN(1 << 16))
			}
			stats := map[string]int{}

			for op := range cfg.ops {
				topic := pool[rng.IntN(len(pool))]
				switch n := rng.IntN(100); {
				case n < 30:
					var want uint16
					var wantErr error
					if pid, ok := pre.ID(topic); ok {
						want = pid
					} else {
						want, wantErr = m.register(topic, true)
					}
					id, err := r.Register(topic)
					if id != want || !errors.Is(err, wantErr) || (err == nil) != (wantErr == nil) {
						t.Fatalf("op %d: Register(%q) = %d, %v; want %d, %v", op, topic, id, err, want, wantErr)
					}
					stats[fmt.Sprint("register err=", wantErr)]++
				case n < 55:
					wantKind, wantConf := KindNormal, true
					var want uint16
					var wantErr error
					if pid, ok := pre.ID(topic); ok {
						wantKind, want = KindPredefined, pid
					} else if sid, ok := ShortID(topic); ok {
						wantKind, want = KindShort, sid
					} else {
						want, wantErr = m.register(topic, false)
						wantConf = wantErr == nil && m.confirmed[want]
					}
					kind, id, conf, err := r.Assign(topic)
					if kind != wantKind || id != want || conf != wantConf || !errors.Is(err, wantErr) || (err == nil) != (wantErr == nil) {
						t.Fatalf("op %d: Assign(%q) = %v, %d, %v, %v; want %v, %d, %v, %v", op, topic, kind, id, conf, err, wantKind, want, wantConf, wantErr)
					}
					stats[fmt.Sprint("assign ", wantKind)]++
				case n < 75:
					id := randomID()
					m.remove(id)
					r.Remove(id)
				case n < 85:
					id := randomID()
					if _, ok := m.topics[id]; ok {
						m.confirmed[id] = true
					}
					r.Confirm(id)
				case n < 95:
					id, kind := randomID(), Kind(rng.IntN(4))
					got, ok := r.Lookup(kind, id)
					var want string
					var wantOK bool
					switch kind {
					case KindNormal:
						if want, wantOK = m.topics[id]; !wantOK {
							want, wantOK = pre.Topic(id)
						}
					case KindPredefined:
						want, wantOK = pre.Topic(id)
					case KindShort:
						if _, wantOK = ShortID(ShortName(id)); wantOK {
							want = ShortName(id)
						}
					}
					if got != want || ok != wantOK {
						t.Fatalf("op %d: Lookup(%v, %d) = %q, %v; want %q, %v", op, kind, id, got, ok, want, wantOK)
					}
				case n < 98:
					r.Reject(topic)
					if len(r.rejected) < r.limit() && !r.Rejected(topic) {
						t.Fatalf("op %d: Reject(%q) not recorded below the limit", op, topic)
					}
				case n < 99:
					r.UnconfirmAll()
					for id := range m.confirmed {
						m.confirmed[id] = false
					}
				default:
					r.Reset()
					clear(m.ids)
					clear(m.topics)
					clear(m.confirmed)
					stats["reset"]++
				}
				checkInvariants(t, r, m)
			}
			t.Logf("%v", stats)
		})
	}
}
