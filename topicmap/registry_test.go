package topicmap

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"unsafe"
)

func mustRegister(t testing.TB, r *Registry, topic string) uint16 {
	t.Helper()
	id, err := r.Register(topic)
	if err != nil {
		t.Fatalf("Register(%q): %v", topic, err)
	}
	return id
}

func TestRegisterIdempotent(t *testing.T) {
	for _, n := range []int{3, linearMax + 5} { // below and beyond the index threshold
		t.Run(fmt.Sprint(n, " topics"), func(t *testing.T) {
			r := NewRegistry(nil, 0)
			ids := map[string]uint16{}
			for i := range n {
				topic := fmt.Sprintf("s/%d", i)
				ids[topic] = mustRegister(t, r, topic)
			}
			for topic, id := range ids {
				if again := mustRegister(t, r, topic); again != id {
					t.Errorf("Register(%q) again = %d, first %d", topic, again, id)
				}
			}
			if r.Len() != n {
				t.Errorf("Len = %d, want %d", r.Len(), n)
			}
		})
	}
}

func TestRegisterFirstIDs(t *testing.T) {
	// Predefined 1, 2, 3 and 5: the client's ids skip them (decision A3).
	pre := mustPredefined(t, PredefinedTopic{1, "p1"}, PredefinedTopic{2, "p2"}, PredefinedTopic{3, "p3"}, PredefinedTopic{5, "p5"})
	r := NewRegistry(pre, 0)
	var got []uint16
	for _, topic := range []string{"a", "b", "c"} {
		got = append(got, mustRegister(t, r, topic))
	}
	if fmt.Sprint(got) != "[4 6 7]" {
		t.Errorf("ids = %v, want [4 6 7]", got)
	}
}

func TestRegisterPredefinedTopic(t *testing.T) {
	pre := mustPredefined(t, PredefinedTopic{42, "sensors/cmd"})
	r := NewRegistry(pre, 0)
	if id := mustRegister(t, r, "sensors/cmd"); id != 42 {
		t.Errorf("Register(predefined topic) = %d, want the predefined id 42", id)
	}
	if r.Len() != 0 {
		t.Errorf("Len = %d; a predefined topic must not take a normal entry", r.Len())
	}
	// The client got 42 from REGACK and will publish with TopicIdType normal.
	if topic, ok := r.Lookup(KindNormal, 42); !ok || topic != "sensors/cmd" {
		t.Errorf("Lookup(normal, 42) = %q, %v", topic, ok)
	}
	if !r.Confirmed(42) {
		t.Error("a predefined id is not confirmed")
	}
}

func TestRegisterInvalid(t *testing.T) {
	r := NewRegistry(nil, 0)
	for _, topic := range []string{"", "a/+", "a/#", "#", "+", "a\x00b", "\xff\xfe", strings.Repeat("a", MaxTopicLen+1)} {
		id, err := r.Register(topic)
		if !errors.Is(err, ErrInvalidTopic) {
			t.Errorf("Register(%.40q) = %d, %v; want ErrInvalidTopic", topic, id, err)
		}
		if _, _, _, err := r.Assign(topic); !errors.Is(err, ErrInvalidTopic) {
			t.Errorf("Assign(%.40q) error = %v; want ErrInvalidTopic", topic, err)
		}
	}
	if r.Len() != 0 {
		t.Errorf("Len = %d after invalid registrations", r.Len())
	}
	if _, err := r.Register(strings.Repeat("a", MaxTopicLen)); err != nil {
		t.Errorf("a 65535-octet name: %v", err)
	}
	_, err := r.Register("a/+")
	if want := `topicmap: invalid topic name "a/+": contains a wildcard`; err == nil || err.Error() != want {
		t.Errorf("error = %v, want %q", err, want)
	}
}

func TestExhaustedAtMaxTopics(t *testing.T) {
	r := NewRegistry(nil, 5)
	ids := make([]uint16, 5)
	for i := range ids {
		ids[i] = mustRegister(t, r, fmt.Sprint("topic/", i))
	}
	_, err := r.Register("topic/5")
	if !errors.Is(err, ErrExhausted) {
		t.Fatalf("6th Register error = %v, want ErrExhausted", err)
	}
	if !strings.Contains(err.Error(), "5 topics") {
		t.Errorf("error %q does not say the limit", err)
	}
	if _, _, _, err := r.Assign("topic/5"); !errors.Is(err, ErrExhausted) {
		t.Errorf("Assign error = %v, want ErrExhausted", err)
	}
	// Known topics and predefined-like cases still work at the limit.
	if id := mustRegister(t, r, "topic/3"); id != ids[3] {
		t.Errorf("Register(topic/3) at the limit = %d, want %d", id, ids[3])
	}
	if k, id, ok, err := r.Assign("ab"); err != nil || k != KindShort || id != 0x6162 || !ok {
		t.Errorf("Assign(ab) at the limit = %v %#x %v %v", k, id, ok, err)
	}
	r.Remove(ids[0])
	if _, err := r.Register("topic/5"); err != nil {
		t.Errorf("Register after Remove: %v", err)
	}
}

func TestExhaustedIDSpace(t *testing.T) {
	// The predefined set takes every id but ten, so the client runs out of ids
	// long before its limit of 100.
	free := map[uint16]bool{}
	for _, id := range []uint16{1, 2, 999, 1000, 30000, 40000, 50000, 65532, 65533, 65534} {
		free[id] = true
	}
	var topics []PredefinedTopic
	for id := uint16(1); id < 0xFFFF; id++ {
		if !free[id] {
			topics = append(topics, PredefinedTopic{id, fmt.Sprint("p/", id)})
		}
	}
	pre := mustPredefined(t, topics...)
	r := NewRegistry(pre, 100)
	got := map[uint16]bool{}
	for i := range len(free) {
		id := mustRegister(t, r, fmt.Sprint("n/", i))
		if !free[id] || got[id] {
			t.Fatalf("Register gave %d: predefined or twice", id)
		}
		got[id] = true
	}
	_, err := r.Register("one more")
	if !errors.Is(err, ErrExhausted) || !strings.Contains(err.Error(), "no free id") {
		t.Fatalf("Register after the last id: %v, want ErrExhausted (no free id)", err)
	}
	// A freed id is found again, wherever the cursor stands.
	r.Remove(1000)
	if id := mustRegister(t, r, "again"); id != 1000 {
		t.Errorf("after Remove(1000) Register = %d, want 1000", id)
	}
}

func TestExhaustedFullIDSpace(t *testing.T) {
	if testing.Short() {
		t.Skip("registers 65534 topics")
	}
	r := NewRegistry(nil, 1<<20) // capped to the id space
	seen := make([]bool, 1<<16)
	for i := range maxIDs {
		id := mustRegister(t, r, fmt.Sprint(i))
		if id == 0 || id == 0xFFFF || seen[id] {
			t.Fatalf("Register gave %d", id)
		}
		seen[id] = true
	}
	if _, err := r.Register("x"); !errors.Is(err, ErrExhausted) {
		t.Fatalf("Register beyond 65534 ids: %v, want ErrExhausted", err)
	}
	if r.Len() != maxIDs {
		t.Errorf("Len = %d", r.Len())
	}
}

func TestCursorDelaysReuse(t *testing.T) {
	r := NewRegistry(nil, 0)
	a := mustRegister(t, r, "a")
	mustRegister(t, r, "b")
	r.Remove(a)
	if c := mustRegister(t, r, "c"); c == a {
		t.Errorf("removed id %d handed out again before the cursor wrapped", a)
	}
	if a2 := mustRegister(t, r, "a"); a2 == a {
		t.Errorf("re-registered topic got its removed id %d before the cursor wrapped", a)
	}
}

func TestCursorWraps(t *testing.T) {
	// Free ids 10, 20 and 0xFFFE only: the cursor must wrap past 0xFFFF to 1,
	// never returning 0 or 0xFFFF.
	var topics []PredefinedTopic
	for id := uint16(1); id < 0xFFFF; id++ {
		if id != 10 && id != 20 && id != 0xFFFE {
			topics = append(topics, PredefinedTopic{id, fmt.Sprint(id)})
		}
	}
	r := NewRegistry(mustPredefined(t, topics...), 0)
	var seq []uint16
	for i := range 3 {
		seq = append(seq, mustRegister(t, r, fmt.Sprint("x", i)))
	}
	r.Remove(20)
	seq = append(seq, mustRegister(t, r, "y"))
	r.Remove(0xFFFE)
	r.Remove(10)
	seq = append(seq, mustRegister(t, r, "z"), mustRegister(t, r, "w"))
	if want := "[10 20 65534 20 65534 10]"; fmt.Sprint(seq) != want {
		t.Errorf("ids = %v, want %s", seq, want)
	}
}

func TestAssign(t *testing.T) {
	pre := mustPredefined(t, PredefinedTopic{9, "cmd"}, PredefinedTopic{10, "xy"})
	tests := []struct {
		topic     string
		kind      Kind
		id        uint16 // 0: a new normal id
		confirmed bool
	}{
		{"cmd", KindPredefined, 9, true},
		{"xy", KindPredefined, 10, true}, // predefined wins over the short form
		{"ab", KindShort, 0x6162, true},  // decision A12: exactly two octets
		{"é", KindShort, 0xc3a9, true},
		{"a", KindNormal, 0, false}, // one octet: REGISTER, not short form
		{"abc", KindNormal, 0, false},
		{"sensors/t1/set", KindNormal, 0, false},
	}
	r := NewRegistry(pre, 0)
	for _, tt := range tests {
		kind, id, confirmed, err := r.Assign(tt.topic)
		if err != nil {
			t.Fatalf("Assign(%q): %v", tt.topic, err)
		}
		wantID := tt.id
		if wantID == 0 {
			wantID, _ = r.ID(tt.topic)
		}
		if kind != tt.kind || id != wantID || id == 0 || confirmed != tt.confirmed {
			t.Errorf("Assign(%q) = %v, %d, %v; want %v, %d, %v", tt.topic, kind, id, confirmed, tt.kind, wantID, tt.confirmed)
		}
	}
	if r.Len() != 3 {
		t.Errorf("Len = %d, want 3 (only the normal topics)", r.Len())
	}
}

func TestConfirm(t *testing.T) {
	r := NewRegistry(mustPredefined(t, PredefinedTopic{1, "p"}), 0)

	// sensor --REGISTER "up"--> gw: the REGACK tells the id, so it is confirmed.
	up := mustRegister(t, r, "up")
	if !r.Confirmed(up) {
		t.Error("id from Register not confirmed")
	}

	// gw --REGISTER "down"--> sensor: not confirmed until REGACK 0x00.
	_, down, confirmed, err := r.Assign("down")
	if err != nil || confirmed || r.Confirmed(down) {
		t.Fatalf("Assign(down) = %d, confirmed %v, %v", down, confirmed, err)
	}
	if _, again, confirmed, _ := r.Assign("down"); again != down || confirmed {
		t.Errorf("Assign(down) again = %d, %v; want %d, false", again, confirmed, down)
	}
	// The client may publish on an id it has been sent, even before its REGACK.
	if topic, ok := r.Lookup(KindNormal, down); !ok || topic != "down" {
		t.Errorf("Lookup(normal, %d) = %q, %v", down, topic, ok)
	}
	// sensor --REGACK 0x00--> gw
	r.Confirm(down)
	if _, _, confirmed, _ := r.Assign("down"); !confirmed || !r.Confirmed(down) {
		t.Error("not confirmed after Confirm")
	}

	// A client REGISTER for a topic the gateway assigned confirms it.
	_, side, _, _ := r.Assign("side")
	if id := mustRegister(t, r, "side"); id != side || !r.Confirmed(side) {
		t.Errorf("Register(side) = %d, confirmed %v; want %d, true", id, r.Confirmed(side), side)
	}

	// CleanSession=0 reconnect: every id must be REGISTERed again.
	r.UnconfirmAll()
	for _, id := range []uint16{up, down, side} {
		if r.Confirmed(id) {
			t.Errorf("id %d confirmed after UnconfirmAll", id)
		}
		if _, ok := r.Topic(id); !ok {
			t.Errorf("id %d lost by UnconfirmAll", id)
		}
	}

	if !r.Confirmed(1) {
		t.Error("predefined id not confirmed")
	}
	for _, id := range []uint16{0, 0xFFFF, 777} {
		r.Confirm(id) // ignored
		if r.Confirmed(id) {
			t.Errorf("unknown id %d confirmed", id)
		}
	}
	r.Remove(down)
	if r.Confirmed(down) {
		t.Error("removed id confirmed")
	}
}

func TestRemove(t *testing.T) {
	pre := mustPredefined(t, PredefinedTopic{1, "p"})
	r := NewRegistry(pre, 0)
	a := mustRegister(t, r, "a")
	r.Remove(1)      // predefined: ignored
	r.Remove(0x1234) // unknown: ignored
	r.Remove(0)
	if _, ok := r.Lookup(KindPredefined, 1); !ok {
		t.Error("Remove deleted a predefined id")
	}
	if r.Len() != 1 {
		t.Errorf("Len = %d", r.Len())
	}
	r.Remove(a)
	r.Remove(a)
	if _, ok := r.Topic(a); ok || r.Len() != 0 {
		t.Error("Remove left the id")
	}
	if _, ok := r.ID("a"); ok {
		t.Error("Remove left the topic")
	}
}

func TestReset(t *testing.T) {
	pre := mustPredefined(t, PredefinedTopic{1, "p"})
	r := NewRegistry(pre, 3)
	var ids []uint16
	for i := range 3 {
		ids = append(ids, mustRegister(t, r, fmt.Sprint(i)))
	}
	r.Reject("w/1")
	r.Reset()
	if r.Len() != 0 || r.Rejected("w/1") {
		t.Fatal("Reset left entries or rejections")
	}
	for _, id := range ids {
		if _, ok := r.Lookup(KindNormal, id); ok {
			t.Errorf("id %d resolves after Reset", id)
		}
	}
	if _, ok := r.Lookup(KindNormal, 1); !ok {
		t.Error("predefined id lost by Reset")
	}
	// The limit stays, and old ids are not handed out again at once.
	for i := range 3 {
		id := mustRegister(t, r, fmt.Sprint("new", i))
		for _, old := range ids {
			if id == old {
				t.Errorf("Reset: id %d reused at once", id)
			}
		}
	}
	if _, err := r.Register("fourth"); !errors.Is(err, ErrExhausted) {
		t.Errorf("limit lost by Reset: %v", err)
	}
}

func TestRejected(t *testing.T) {
	r := NewRegistry(nil, 3)
	if r.Rejected("a") {
		t.Error("empty set rejects")
	}
	for _, topic := range []string{"a", "b", "c", "a"} {
		if !r.Reject(topic) {
			t.Errorf("Reject(%q) = false below the bound", topic)
		}
	}
	if r.Reject("d") {
		t.Error("Reject beyond the bound of maxTopics reported true")
	}
	if r.Rejected("d") || len(r.rejected) != 3 {
		t.Errorf("set grew beyond the bound: %d entries", len(r.rejected))
	}
	for _, topic := range []string{"a", "b", "c"} {
		if !r.Rejected(topic) {
			t.Errorf("Rejected(%q) = false", topic)
		}
	}
	r.Unreject("b")
	if r.Rejected("b") || !r.Reject("d") || !r.Rejected("d") {
		t.Error("Unreject did not make room")
	}
	r.Unreject("never")
	r.Reset()
	if r.Rejected("a") || r.Rejected("d") {
		t.Error("Reset kept rejections")
	}
}

func TestLookup(t *testing.T) {
	pre := mustPredefined(t, PredefinedTopic{100, "pre/topic"})
	r := NewRegistry(pre, 0)
	n := mustRegister(t, r, "normal/topic")
	tests := []struct {
		kind  Kind
		id    uint16
		topic string
		ok    bool
	}{
		{KindNormal, n, "normal/topic", true},
		{KindNormal, 100, "pre/topic", true}, // predefined id under type normal (our interpretation)
		{KindNormal, 0, "", false},
		{KindNormal, 0xFFFF, "", false},
		{KindNormal, 555, "", false},
		{KindPredefined, 100, "pre/topic", true},
		{KindPredefined, n, "", false}, // a normal id is not predefined
		{KindPredefined, 0, "", false},
		{KindShort, 0x6162, "ab", true},
		{KindShort, 0x5431, "T1", true},
		{KindShort, 0x6162, "ab", true},
		{KindShort, 0x612b, "", false},
		{KindShort, 0x0000, "", false},
		{Kind(3), n, "", false},
		{Kind(3), 100, "", false},
	}
	for _, tt := range tests {
		topic, ok := r.Lookup(tt.kind, tt.id)
		if topic != tt.topic || ok != tt.ok {
			t.Errorf("Lookup(%v, %#04x) = %q, %v; want %q, %v", tt.kind, tt.id, topic, ok, tt.topic, tt.ok)
		}
	}
}

func TestTopicAndIDSeeOnlyNormal(t *testing.T) {
	r := NewRegistry(mustPredefined(t, PredefinedTopic{100, "p"}), 0)
	if _, ok := r.Topic(100); ok {
		t.Error("Topic found a predefined id")
	}
	if _, ok := r.ID("p"); ok {
		t.Error("ID found a predefined topic")
	}
}

func TestAll(t *testing.T) {
	r := NewRegistry(nil, 0)
	want := map[uint16]string{}
	for i := range 12 {
		topic := fmt.Sprint("t", i)
		want[mustRegister(t, r, topic)] = topic
	}
	got := map[uint16]string{}
	for id, topic := range r.All() {
		got[id] = topic
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("All = %v, want %v", got, want)
	}
	n := 0
	for range r.All() {
		n++
		break
	}
	if n != 1 {
		t.Error("All continued after break")
	}
}

func TestZeroRegistry(t *testing.T) {
	var r Registry
	id := mustRegister(t, &r, "a")
	if id != 1 {
		t.Errorf("first id = %d, want 1", id)
	}
	if r.limit() != DefaultMaxTopics {
		t.Errorf("limit = %d", r.limit())
	}
	if topic, ok := r.Lookup(KindNormal, id); !ok || topic != "a" {
		t.Errorf("Lookup = %q, %v", topic, ok)
	}
}

func TestNewRegistryLimit(t *testing.T) {
	for _, tt := range []struct{ in, want int }{
		{-1, DefaultMaxTopics}, {0, DefaultMaxTopics}, {1, 1}, {5000, 5000}, {maxIDs, maxIDs}, {1 << 30, maxIDs},
	} {
		if got := NewRegistry(nil, tt.in).limit(); got != tt.want {
			t.Errorf("NewRegistry(nil, %d).limit() = %d, want %d", tt.in, got, tt.want)
		}
	}
}

// TestFootprint reports what an idle client's Registry costs.
func TestFootprint(t *testing.T) {
	size := unsafe.Sizeof(Registry{})
	if size > 72 {
		t.Errorf("unsafe.Sizeof(Registry{}) = %d, want at most 72", size)
	}
	t.Logf("unsafe.Sizeof(Registry{}) = %d, entry = %d", size, unsafe.Sizeof(entry{}))
}
