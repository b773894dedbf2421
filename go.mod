module github.com/sensorgate/mqttsn-gateway

go 1.26

require (
	github.com/BurntSushi/toml v1.6.0
	github.com/eclipse/paho.golang v0.23.0
	github.com/mochi-mqtt/server/v2 v2.7.9
	github.com/pion/dtls/v3 v3.1.15
	github.com/rs/zerolog v1.35.1
	golang.org/x/net v0.49.0
)

require (
	github.com/gorilla/websocket v1.5.3 // indirect
	github.com/mattn/go-colorable v0.1.14 // indirect
	github.com/mattn/go-isatty v0.0.20 // indirect
	github.com/pion/logging v0.2.4 // indirect
	github.com/pion/transport/v5 v5.0.0 // indirect
	github.com/rs/xid v1.6.0 // indirect
	golang.org/x/crypto v0.48.0 // indirect
	golang.org/x/sys v0.41.0 // indirect
)

// mochi-mqtt/server v2.7.9 with one fix (a deadlock); see third_party/mochi-mqtt-server/README.md.
replace github.com/mochi-mqtt/server/v2 => ./third_party/mochi-mqtt-server
