package topicmap_test

import (
	"errors"
	"fmt"

	"github.com/sensorgate/mqttsn-gateway/topicmap"
)

func Example() {
	// At start-up, from configuration; shared by every client.
	pre, err := topicmap.NewPredefined([]topicmap.PredefinedTopic{{ID: 1, Topic: "time"}})
	if err != nil {
		fmt.Println(err)
		return
	}
	// At a client's first CONNECT (and Reset at a CONNECT with CleanSession=1).
	r := topicmap.NewRegistry(pre, topicmap.DefaultMaxTopics)

	// sensor --REGISTER "sensors/t1/temp"--> gw, gw --REGACK id--> sensor
	id, err := r.Register("sensors/t1/temp")
	switch {
	case errors.Is(err, topicmap.ErrExhausted):
		fmt.Println("REGACK 0x01 congestion")
	case err != nil:
		fmt.Println("REGACK rejected:", err)
	}
	fmt.Println("REGACK", id)

	// sensor --PUBLISH normal id--> gw
	topic, ok := r.Lookup(topicmap.KindNormal, id)
	fmt.Println("PUBLISH to", topic, ok)

	// broker --PUBLISH "sensors/t1/set"--> gw: the client does not know the id yet.
	kind, id, confirmed, _ := r.Assign("sensors/t1/set")
	fmt.Println(kind, id, "confirmed:", confirmed)
	// gw --REGISTER id--> sensor, sensor --REGACK 0x00--> gw, then the PUBLISH.
	r.Confirm(id)
	fmt.Println("confirmed:", r.Confirmed(id))

	// A two-octet topic goes out as a short name (decision A12).
	kind, id, _, _ = r.Assign("T1")
	fmt.Printf("%v %#04x\n", kind, id)
	// Output:
	// REGACK 2
	// PUBLISH to sensors/t1/temp true
	// normal 3 confirmed: false
	// confirmed: true
	// short 0x5431
}
