package upstream

import (
	"slices"
	"testing"
)

// TestFlights: flights behaves as a map from identifier to flight, whether
// an identifier sits in the inline place or in the map, and whatever the
// order of puts and takes.
func TestFlights(t *testing.T) {
	var got flights
	want := map[uint16]string{}
	check := func(step string) {
		t.Helper()
		if got.len() != len(want) {
			t.Fatalf("%s: len %d, want %d", step, got.len(), len(want))
		}
		seen := map[uint16]string{}
		got.each(func(id uint16, f flight) { seen[id] = f.topic })
		for id, topic := range want {
			if !got.has(id) || seen[id] != topic {
				t.Fatalf("%s: id %d has %v, topic %q; want %q", step, id, got.has(id), seen[id], topic)
			}
		}
		if len(seen) != len(want) {
			t.Fatalf("%s: each gave %d flights, want %d", step, len(seen), len(want))
		}
	}
	put := func(id uint16, topic string) {
		got.put(id, flight{topic: topic})
		want[id] = topic
	}
	take := func(id uint16) {
		t.Helper()
		f, ok := got.take(id)
		topic, in := want[id]
		if ok != in || f.topic != topic {
			t.Fatalf("take(%d) = %q, %v; want %q, %v", id, f.topic, ok, topic, in)
		}
		delete(want, id)
	}

	check("empty")
	take(1)
	put(1, "a") // inline
	put(2, "b") // map
	put(3, "c")
	check("three")
	put(1, "a2") // replaces inline
	put(3, "c2") // replaces in the map
	check("replaced")
	take(1) // the inline place is free again
	put(4, "d")
	put(3, "c3") // still in the map, not duplicated inline
	check("after take")
	take(3)
	take(2)
	take(4)
	take(4)
	check("emptied")
	for id := uint16(10); id < 50; id++ {
		put(id, "x")
	}
	check("many")
	all := got.clear()
	if len(all) != 40 || got.len() != 0 || got.has(10) {
		t.Fatalf("clear returned %d flights and left %d", len(all), got.len())
	}
	clear(want)
	check("cleared")
	topics := []string{}
	for _, f := range all {
		topics = append(topics, f.topic)
	}
	if slices.ContainsFunc(topics, func(s string) bool { return s != "x" }) {
		t.Errorf("clear returned topics %v", topics)
	}
}
