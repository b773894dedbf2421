package upstream

// flights holds our QoS 1/2 PUBLISHes awaiting their acknowledgement, by
// packet identifier. A sensor mostly has one in flight at a time (it waits
// for the PUBACK before its next QoS 1 PUBLISH), so the first is kept
// inline and only the others in a map: the common PUBLISH and its
// acknowledgement then cost no hashing and none of the map's cache lines.
// The zero value is empty. Its owner's mutex guards it.
type flights struct {
	oneID  uint16
	hasOne bool
	one    flight
	more   map[uint16]flight
}

// len returns how many are in flight.
func (t *flights) len() int {
	n := len(t.more)
	if t.hasOne {
		n++
	}
	return n
}

// has reports whether id is in flight.
func (t *flights) has(id uint16) bool { return t.hasOne && t.oneID == id || t.inMore(id) }

// put records f as the flight of id, replacing the one it had.
func (t *flights) put(id uint16, f flight) {
	switch {
	case t.hasOne && t.oneID == id:
		t.one = f
	case !t.hasOne && !t.inMore(id):
		t.oneID, t.one, t.hasOne = id, f, true
	default:
		if t.more == nil {
			t.more = make(map[uint16]flight, 1)
		}
		t.more[id] = f
	}
}

// inMore reports whether id is in the map.
func (t *flights) inMore(id uint16) bool {
	if len(t.more) == 0 {
		return false
	}
	_, ok := t.more[id]
	return ok
}

// take removes the flight of id and returns it, if there is one.
func (t *flights) take(id uint16) (flight, bool) {
	if t.hasOne && t.oneID == id {
		f := t.one
		t.one, t.hasOne = flight{}, false
		return f, true
	}
	if len(t.more) == 0 {
		return flight{}, false
	}
	f, ok := t.more[id]
	if ok {
		delete(t.more, id)
	}
	return f, ok
}

// each calls fn for every flight, in no particular order; fn must not
// change t.
func (t *flights) each(fn func(id uint16, f flight)) {
	if t.hasOne {
		fn(t.oneID, t.one)
	}
	for id, f := range t.more {
		fn(id, f)
	}
}

// clear empties t and returns what was in flight.
func (t *flights) clear() []flight {
	var all []flight
	t.each(func(_ uint16, f flight) { all = append(all, f) })
	*t = flights{}
	return all
}
