package topicmap

import (
	"errors"
	"math/rand"
	"strings"
	"testing"
	"testing/quick"
)

func TestKindString(t *testing.T) {
	tests := []struct {
		k    Kind
		want string
	}{
		{KindNormal, "normal"},
		{KindPredefined, "predefined"},
		{KindShort, "short"},
		{3, "reserved(3)"},
	}
	for _, tt := range tests {
		if got := tt.k.String(); got != tt.want {
			t.Errorf("Kind(%d).String() = %q, want %q", uint8(tt.k), got, tt.want)
		}
	}
	// The constants are the TopicIdType bits of the flags octet (§5.3.4).
	if KindNormal != 0b00 || KindPredefined != 0b01 || KindShort != 0b10 {
		t.Error("Kind constants differ from the wire values")
	}
}

func TestTopicProblem(t *testing.T) {
	tests := []struct {
		name    string
		topic   string
		problem string // "" for valid
	}{
		{"plain", "sensors/t1/temp", ""},
		{"one octet", "a", ""},
		{"leading slash", "/a", ""},
		{"empty levels", "a//b", ""},
		{"dollar", "$SYS/x", ""},
		{"utf8", "capteurs/été", ""},
		{"max length", strings.Repeat("a", MaxTopicLen), ""},
		{"empty", "", "empty"},
		{"too long", strings.Repeat("a", MaxTopicLen+1), "longer than 65535 octets"},
		{"plus", "a/+/b", "contains a wildcard"},
		{"hash", "a/#", "contains a wildcard"},
		{"bare hash", "#", "contains a wildcard"},
		{"plus inside level", "a+b", "contains a wildcard"},
		{"nul", "a\x00b", "contains U+0000"},
		{"invalid utf8", "a\xffb", "not valid UTF-8"},
		{"surrogate", "a\xed\xa0\x80", "not valid UTF-8"},
		{"truncated utf8", "\xc3", "not valid UTF-8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := topicProblem(tt.topic); got != tt.problem {
				t.Errorf("topicProblem = %q, want %q", got, tt.problem)
			}
		})
	}
}

func TestInvalidTopicError(t *testing.T) {
	err := invalidTopic("a/+", "contains a wildcard")
	if !errors.Is(err, ErrInvalidTopic) {
		t.Fatalf("%v does not wrap ErrInvalidTopic", err)
	}
	if want := `topicmap: invalid topic name "a/+": contains a wildcard`; err.Error() != want {
		t.Errorf("error = %q, want %q", err, want)
	}
	long := strings.Repeat("x", MaxTopicLen+1)
	msg := invalidTopic(long, "longer than 65535 octets").Error()
	if len(msg) > 200 || !strings.Contains(msg, "(65536 octets)") {
		t.Errorf("error for a long name is not shortened: %.300q", msg)
	}
}

func TestShortName(t *testing.T) {
	tests := []struct {
		id   uint16
		name string
		ok   bool // a valid short name
	}{
		{0x6162, "ab", true},
		{0x5431, "T1", true},
		{0x2f61, "/a", true},
		{0xc3a9, "é", true}, // one character, two octets: still a 2-octet name
		{0x612b, "a+", false},
		{0x2361, "#a", false},
		{0x2b23, "+#", false},
		{0x6100, "a\x00", false},
		{0x0061, "\x00a", false},
		{0x0000, "\x00\x00", false},
		{0xffff, "\xff\xff", false},
		{0xc361, "\xc3a", false},
	}
	for _, tt := range tests {
		if got := ShortName(tt.id); got != tt.name {
			t.Errorf("ShortName(%#04x) = %q, want %q", tt.id, got, tt.name)
		}
		id, ok := ShortID(tt.name)
		if ok != tt.ok || (ok && id != tt.id) {
			t.Errorf("ShortID(%q) = %#04x, %v; want %#04x, %v", tt.name, id, ok, tt.id, tt.ok)
		}
	}
}

func TestShortIDRejectsOtherLengths(t *testing.T) {
	for _, topic := range []string{"", "a", "+", "abc", "a/b", "été", "ab/"} {
		if id, ok := ShortID(topic); ok {
			t.Errorf("ShortID(%q) = %#04x, true; want false (decision A12: exactly 2 octets)", topic, id)
		}
	}
}

// TestShortRoundTripAll checks every 16-bit value: ShortID inverts ShortName
// exactly for the valid names, and Lookup agrees with ShortID.
func TestShortRoundTripAll(t *testing.T) {
	r := NewRegistry(nil, 0)
	valid := 0
	for v := range 1 << 16 {
		id := uint16(v)
		name := ShortName(id)
		got, ok := ShortID(name)
		wantOK := topicProblem(name) == ""
		if ok != wantOK || (ok && got != id) {
			t.Fatalf("ShortID(ShortName(%#04x)) = %#04x, %v; valid name: %v", id, got, ok, wantOK)
		}
		topic, lok := r.Lookup(KindShort, id)
		if lok != ok || (lok && topic != name) {
			t.Fatalf("Lookup(short, %#04x) = %q, %v; want %q, %v", id, topic, lok, name, ok)
		}
		if ok {
			valid++
		}
	}
	t.Logf("%d of 65536 TopicId values are valid short names", valid)
}

func TestShortRoundTripQuick(t *testing.T) {
	f := func(hi, lo byte) bool {
		name := string([]byte{hi, lo})
		id, ok := ShortID(name)
		if !ok {
			return topicProblem(name) != ""
		}
		return ShortName(id) == name
	}
	if err := quick.Check(f, &quick.Config{MaxCount: 5000, Rand: rand.New(rand.NewSource(1))}); err != nil {
		t.Error(err)
	}
}
