package topicmap

import (
	"fmt"
	"iter"
)

// DefaultMaxTopics is the default limit of normal topics per client.
//
// It is the default of the configuration key session.max_topics.
const DefaultMaxTopics = 1000

// maxIDs is the number of assignable ids, 0x0001 to 0xFFFE.
const maxIDs = 0xFFFE

// linearMax is the number of topics up to which a Registry searches its slice
// instead of keeping index maps. Most sensors use a handful of topics, and a
// short slice costs far less memory than two maps.
const linearMax = 8

// entry is one normal topic id of a client.
type entry struct {
	topic     string
	id        uint16
	confirmed bool // the client knows the id: it registered it or acknowledged our REGISTER
}

// index maps ids and topics to positions in Registry.entries.
type index struct {
	byID    map[uint16]int32
	byTopic map[string]int32
}

// Registry holds one client's normal topic ids (MQTT-SN 1.2 §6.5).
//
// It also answers for the predefined set it was built with, records which ids
// the client has acknowledged, and remembers the wildcard-matched topics the
// client rejected (decision A13).
//
// A Registry survives sleep and a reconnect with CleanSession=0; on a connect
// with CleanSession=1 the owner calls [Registry.Reset] (decision A3). It is
// owned by one goroutine and is not safe for concurrent use; the [Predefined]
// set it refers to may be shared. The zero Registry is empty, has no predefined
// set and the limit [DefaultMaxTopics].
//
// Memory: an empty Registry is one small struct; up to a few topics live in one
// slice, and index maps are added only beyond that.
type Registry struct {
	pre      *Predefined
	entries  []entry
	idx      *index              // nil while len(entries) <= linearMax
	rejected map[string]struct{} // nil until the first Reject
	short    string              // the short name Lookup returned last, reused to avoid allocating
	max      uint16              // 0 means DefaultMaxTopics
	cursor   uint16              // the id handed out last
}

// NewRegistry returns an empty registry for one client.
//
// pre is the gateway's predefined set (nil for none). maxTopics limits the
// normal topics of the client (predefined topics do not count); zero or less
// means [DefaultMaxTopics], and more than 65534 means 65534, the size of the id
// space.
func NewRegistry(pre *Predefined, maxTopics int) *Registry {
	r := &Registry{pre: pre}
	switch {
	case maxTopics <= 0:
		r.max = DefaultMaxTopics
	case maxTopics > maxIDs:
		r.max = maxIDs
	default:
		r.max = uint16(maxTopics)
	}
	return r
}

// limit returns the maximum number of normal topics.
func (r *Registry) limit() int {
	if r.max == 0 {
		return DefaultMaxTopics
	}
	return int(r.max)
}

// Register returns the id of topic for a client that asked for it.
//
// Use it for the client's REGISTER and for its SUBSCRIBE by topic name without
// wildcards: the REGACK or SUBACK tells the client the id, so the id counts as
// confirmed, also if the gateway had assigned it earlier with [Registry.Assign].
// Register is idempotent: a registered topic keeps its id.
//
// A topic of the predefined set gets its predefined id and no entry (our
// interpretation; see the package documentation). Otherwise a new normal id is
// allocated. Errors wrap [ErrInvalidTopic] for an invalid name (empty,
// wildcards, U+0000, invalid UTF-8, longer than [MaxTopicLen]) and
// [ErrExhausted] when the client has no id left.
func (r *Registry) Register(topic string) (uint16, error) {
	if id, ok := r.pre.ID(topic); ok {
		return id, nil
	}
	if i := r.find(topic); i >= 0 {
		r.entries[i].confirmed = true
		return r.entries[i].id, nil
	}
	return r.add(topic, true)
}

// Assign returns how the gateway addresses topic in a PUBLISH to this client.
//
// Use it for every message the gateway forwards to the client. A predefined
// topic is sent as [KindPredefined] and a topic of exactly two octets as
// [KindShort] (decision A12); both are confirmed. Any other topic is sent as
// [KindNormal] under its registered id, or under a new id that is not yet
// confirmed. While confirmed is false the gateway must send REGISTER and wait
// for the client's REGACK before the PUBLISH (MQTT-SN 1.2 §6.5), then call
// [Registry.Confirm], or [Registry.Remove] if the client rejected it.
//
// Errors are those of [Registry.Register].
func (r *Registry) Assign(topic string) (kind Kind, id uint16, confirmed bool, err error) {
	if id, ok := r.pre.ID(topic); ok {
		return KindPredefined, id, true, nil
	}
	if id, ok := ShortID(topic); ok {
		return KindShort, id, true, nil
	}
	if i := r.find(topic); i >= 0 {
		e := &r.entries[i]
		return KindNormal, e.id, e.confirmed, nil
	}
	id, err = r.add(topic, false)
	if err != nil {
		return KindNormal, 0, false, err
	}
	return KindNormal, id, false, nil
}

// add registers topic, which is neither predefined nor registered, under a new id.
func (r *Registry) add(topic string, confirmed bool) (uint16, error) {
	if p := topicProblem(topic); p != "" {
		return 0, invalidTopic(topic, p)
	}
	if len(r.entries) >= r.limit() {
		return 0, fmt.Errorf("%w: the client already has %d topics, the limit", ErrExhausted, len(r.entries))
	}
	id, ok := r.nextID()
	if !ok {
		return 0, fmt.Errorf("%w: no free id is left for the client", ErrExhausted)
	}
	r.entries = append(r.entries, entry{topic: topic, id: id, confirmed: confirmed})
	switch {
	case r.idx != nil:
		i := int32(len(r.entries) - 1)
		r.idx.byID[id] = i
		r.idx.byTopic[topic] = i
	case len(r.entries) > linearMax:
		r.buildIndex()
	}
	return id, nil
}

// nextID returns the next free id after the cursor.
//
// The cursor rotates through 0x0001..0xFFFE, skipping predefined ids and ids in
// use, so a freed id is handed out again only after the cursor has wrapped.
func (r *Registry) nextID() (uint16, bool) {
	if maxIDs-r.pre.Len()-len(r.entries) <= 0 {
		return 0, false
	}
	// Each id appears once per round, and a free one exists.
	for range maxIDs {
		r.cursor++
		if r.cursor == 0xFFFF {
			r.cursor = 1
		}
		if !r.pre.Contains(r.cursor) && r.findID(r.cursor) < 0 {
			return r.cursor, true
		}
	}
	return 0, false
}

// buildIndex creates the index maps for the current entries.
func (r *Registry) buildIndex() {
	r.idx = &index{
		byID:    make(map[uint16]int32, len(r.entries)),
		byTopic: make(map[string]int32, len(r.entries)),
	}
	for i, e := range r.entries {
		r.idx.byID[e.id] = int32(i)
		r.idx.byTopic[e.topic] = int32(i)
	}
}

// find returns the position of topic in r.entries, or -1.
func (r *Registry) find(topic string) int {
	if r.idx != nil {
		if i, ok := r.idx.byTopic[topic]; ok {
			return int(i)
		}
		return -1
	}
	for i := range r.entries {
		if r.entries[i].topic == topic {
			return i
		}
	}
	return -1
}

// findID returns the position of id in r.entries, or -1.
func (r *Registry) findID(id uint16) int {
	if r.idx != nil {
		if i, ok := r.idx.byID[id]; ok {
			return int(i)
		}
		return -1
	}
	for i := range r.entries {
		if r.entries[i].id == id {
			return i
		}
	}
	return -1
}

// Topic returns the topic registered under the normal id.
//
// It sees only this client's registrations, not the predefined set; to
// resolve the topic of a PUBLISH use [Registry.Lookup].
func (r *Registry) Topic(id uint16) (string, bool) {
	if i := r.findID(id); i >= 0 {
		return r.entries[i].topic, true
	}
	return "", false
}

// ID returns the normal id registered for topic.
//
// It sees only this client's registrations, not the predefined set.
func (r *Registry) ID(topic string) (uint16, bool) {
	if i := r.find(topic); i >= 0 {
		return r.entries[i].id, true
	}
	return 0, false
}

// Lookup returns the topic a client means by a TopicIdType and TopicId.
//
// It resolves the topic of a client's PUBLISH and does not allocate, except
// for a short name that differs from the one it returned last (one 2-octet
// string, then reused). [KindNormal] finds this client's registrations and also
// predefined ids, because a client that registered a predefined topic was
// given the predefined id (see [Registry.Register]). [KindPredefined] finds
// only predefined ids. [KindShort] decodes the two octets of id and reports
// false if they are not a valid topic name. The reserved kind finds nothing.
func (r *Registry) Lookup(kind Kind, id uint16) (topic string, ok bool) {
	switch kind {
	case KindNormal:
		if i := r.findID(id); i >= 0 {
			return r.entries[i].topic, true
		}
		return r.pre.Topic(id)
	case KindPredefined:
		return r.pre.Topic(id)
	case KindShort:
		hi, lo := byte(id>>8), byte(id)
		if s := r.short; len(s) == 2 && s[0] == hi && s[1] == lo {
			return s, true
		}
		if !validShort(hi, lo) {
			return "", false
		}
		r.short = ShortName(id)
		return r.short, true
	}
	return "", false
}

// Confirm records that the client acknowledged the normal id.
//
// The gateway calls it when the client answers the gateway's REGISTER with
// REGACK 0x00. Unknown ids are ignored.
func (r *Registry) Confirm(id uint16) {
	if i := r.findID(id); i >= 0 {
		r.entries[i].confirmed = true
	}
}

// Confirmed reports whether the client knows id, so the gateway may publish on it.
//
// Ids from [Registry.Register] and predefined ids are always confirmed; ids
// from [Registry.Assign] are confirmed by [Registry.Confirm]. An unknown id is
// not confirmed.
func (r *Registry) Confirmed(id uint16) bool {
	if i := r.findID(id); i >= 0 {
		return r.entries[i].confirmed
	}
	return r.pre.Contains(id)
}

// UnconfirmAll marks every normal id as unknown to the client, keeping the ids.
//
// The gateway calls it when a client connects again with CleanSession=0 and may
// have lost its own table: each id is then REGISTERed again before the
// gateway's next PUBLISH on it (MQTT-SN 1.2 §6.5). A CONNECT that resumes a
// sleeping client (decision A1) is not such a reconnect.
func (r *Registry) UnconfirmAll() {
	for i := range r.entries {
		r.entries[i].confirmed = false
	}
}

// Remove deletes the normal id and its topic.
//
// The gateway calls it when the client rejects the gateway's REGISTER
// (decision A13) or answers a PUBLISH with PUBACK 0x02 (invalid topic id).
// Unknown and predefined ids are ignored. The id is handed out again only
// after the allocation cursor has wrapped around.
func (r *Registry) Remove(id uint16) {
	i := r.findID(id)
	if i < 0 {
		return
	}
	last := len(r.entries) - 1
	gone := r.entries[i]
	r.entries[i] = r.entries[last]
	r.entries[last] = entry{} // drop the reference to the topic string
	r.entries = r.entries[:last]
	if r.idx != nil {
		delete(r.idx.byID, gone.id)
		delete(r.idx.byTopic, gone.topic)
		if i != last {
			moved := r.entries[i]
			r.idx.byID[moved.id] = int32(i)
			r.idx.byTopic[moved.topic] = int32(i)
		}
	}
}

// Reset drops every normal id and every rejected topic.
//
// The gateway calls it when the client connects with CleanSession=1 (decision
// A3). The predefined set and the limit stay. The allocation cursor is kept, so
// ids from before the reset are not handed out again at once, which makes a
// late message on an old id fail instead of reaching a new topic.
func (r *Registry) Reset() {
	r.entries = nil
	r.idx = nil
	r.rejected = nil
}

// Len returns the number of normal ids; predefined topics are not counted.
func (r *Registry) Len() int {
	return len(r.entries)
}

// All yields the normal ids and their topics, in no particular order.
//
// The registry must not be changed during the iteration.
func (r *Registry) All() iter.Seq2[uint16, string] {
	return func(yield func(uint16, string) bool) {
		for _, e := range r.entries {
			if !yield(e.id, e.topic) {
				return
			}
		}
	}
}

// Reject records that the client rejected a wildcard-matched topic.
//
// The client answered the gateway's REGISTER for topic, sent because topic
// matched one of the client's wildcard subscriptions, with a rejection; later
// messages on topic are dropped (decision A13). The set holds at most as many
// topics as the registry's limit; when it is full, Reject records nothing and
// reports false. It reports true if topic is in the set afterwards.
func (r *Registry) Reject(topic string) bool {
	if _, ok := r.rejected[topic]; ok {
		return true
	}
	if len(r.rejected) >= r.limit() {
		return false
	}
	if r.rejected == nil {
		r.rejected = make(map[string]struct{})
	}
	r.rejected[topic] = struct{}{}
	return true
}

// Rejected reports whether the client rejected topic (see [Registry.Reject]).
func (r *Registry) Rejected(topic string) bool {
	_, ok := r.rejected[topic]
	return ok
}

// Unreject forgets that the client rejected topic.
//
// The gateway calls it when the client asks for the topic again, for example
// by subscribing to it by name.
func (r *Registry) Unreject(topic string) {
	delete(r.rejected, topic)
}
