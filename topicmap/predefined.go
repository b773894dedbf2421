package topicmap

import (
	"errors"
	"fmt"
	"iter"
	"slices"
)

// PredefinedTopic is one configured predefined topic id (MQTT-SN 1.2 §6.7).
type PredefinedTopic struct {
	ID    uint16 // the TopicId, 0x0001 to 0xFFFE
	Topic string // the MQTT topic name
}

// Predefined is the gateway-wide set of predefined topic ids.
//
// It is immutable after [NewPredefined] and safe for concurrent reads, so all
// clients share one. A nil *Predefined is an empty set.
type Predefined struct {
	byID    map[uint16]string
	byTopic map[string]uint16
	sorted  []PredefinedTopic // by ID, for All
}

// NewPredefined builds the predefined set from configuration.
//
// It rejects the reserved ids 0x0000 and 0xFFFF, an id or a topic listed twice
// and invalid topic names (empty, wildcards, U+0000, invalid UTF-8, longer than
// [MaxTopicLen]). All problems are reported at once, joined; each names the id
// and the topic, and those about a name wrap [ErrInvalidTopic]. An empty list
// gives an empty set. The caller may reuse topics afterwards.
func NewPredefined(topics []PredefinedTopic) (*Predefined, error) {
	p := &Predefined{
		byID:    make(map[uint16]string, len(topics)),
		byTopic: make(map[string]uint16, len(topics)),
		sorted:  make([]PredefinedTopic, 0, len(topics)),
	}
	var errs []error
	for _, t := range topics {
		switch {
		case t.ID == 0x0000 || t.ID == 0xFFFF:
			errs = append(errs, fmt.Errorf("topicmap: predefined topic id %d (%s): the id is reserved", t.ID, quoteTopic(t.Topic)))
			continue
		case topicProblem(t.Topic) != "":
			errs = append(errs, fmt.Errorf("%w %s (predefined id %d): %s", ErrInvalidTopic, quoteTopic(t.Topic), t.ID, topicProblem(t.Topic)))
			continue
		}
		if other, dup := p.byID[t.ID]; dup {
			errs = append(errs, fmt.Errorf("topicmap: predefined topic id %d is given twice: %s and %s", t.ID, quoteTopic(other), quoteTopic(t.Topic)))
			continue
		}
		if other, dup := p.byTopic[t.Topic]; dup {
			errs = append(errs, fmt.Errorf("topicmap: predefined topic %s is given twice: ids %d and %d", quoteTopic(t.Topic), other, t.ID))
			continue
		}
		p.byID[t.ID] = t.Topic
		p.byTopic[t.Topic] = t.ID
		p.sorted = append(p.sorted, t)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	slices.SortFunc(p.sorted, func(a, b PredefinedTopic) int { return int(a.ID) - int(b.ID) })
	return p, nil
}

// Topic returns the topic name of the predefined id.
func (p *Predefined) Topic(id uint16) (string, bool) {
	if p == nil {
		return "", false
	}
	t, ok := p.byID[id]
	return t, ok
}

// ID returns the predefined id of topic.
func (p *Predefined) ID(topic string) (uint16, bool) {
	if p == nil {
		return 0, false
	}
	id, ok := p.byTopic[topic]
	return id, ok
}

// Contains reports whether id is a predefined id.
func (p *Predefined) Contains(id uint16) bool {
	if p == nil {
		return false
	}
	_, ok := p.byID[id]
	return ok
}

// Len returns the number of predefined topics.
func (p *Predefined) Len() int {
	if p == nil {
		return 0
	}
	return len(p.sorted)
}

// All yields the predefined ids and their topics in ascending id order.
func (p *Predefined) All() iter.Seq2[uint16, string] {
	return func(yield func(uint16, string) bool) {
		if p == nil {
			return
		}
		for _, t := range p.sorted {
			if !yield(t.ID, t.Topic) {
				return
			}
		}
	}
}
