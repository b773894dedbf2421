// Command floor is a benchmark baseline, not a gateway: the least a
// transparent MQTT-SN gateway must do per message, with the same raw,
// non-blocking system calls the gateway makes and nothing else. For each
// PUBLISH datagram it writes one MQTT PUBLISH on the client's own TCP
// connection to the broker; for QoS 1 a reader per connection reads the
// broker's PUBACK and sends the client one PUBACK datagram. No sessions, no
// checks, no keep-alive, no retries: what it costs per message is the floor
// under the gateway's cost (firmware-sim/bench.sh, mode "floor").
//
// It understands what firmware-sim's burst scenarios send (CONNECT,
// REGISTER, PUBLISH QoS 0/1 on registered topic ids, PINGREQ, DISCONNECT)
// over IPv4, and answers a QoS 1 PUBLISH's PUBACK with the topic id of the
// client's latest PUBLISH, which is right for window 1 (burst-qos1).
//
//	go run ./firmware-sim/floor -listen 127.0.0.1:11884 -broker 127.0.0.1:11883
package main

import (
	"flag"
	"fmt"
	"os"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:11884", "UDP `address` for MQTT-SN clients (IPv4)")
	broker := flag.String("broker", "127.0.0.1:11883", "TCP `address` of the MQTT broker")
	flag.Parse()
	if err := run(*listen, *broker); err != nil {
		fmt.Fprintln(os.Stderr, "floor:", err)
		os.Exit(1)
	}
}
