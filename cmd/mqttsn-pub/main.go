// Command mqttsn-pub publishes one message through an MQTT-SN gateway, as a
// sensor would: CONNECT, REGISTER the topic, PUBLISH, DISCONNECT. It is the
// smallest way to try the gateway by hand.
//
// Usage:
//
//	mqttsn-pub [-gateway 127.0.0.1:1884] [-id mqttsn-pub] [-qos 1] -t sensors/t1 -m 21.5
//
// QoS -1 needs no connection and only works with a predefined topic id
// (-predefined N) or a 2-character short topic name.
package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/sensorgate/mqttsn-gateway/mqttsn"
)

func main() {
	gateway := flag.String("gateway", "127.0.0.1:1884", "the gateway's UDP `address`")
	clientID := flag.String("id", "mqttsn-pub", "the `ClientId` to connect with")
	topic := flag.String("t", "", "the `topic` to publish to")
	predefined := flag.Uint("predefined", 0, "publish to this predefined topic `id` instead of -t")
	message := flag.String("m", "", "the `message` to publish")
	qos := flag.Int("qos", 1, "QoS: -1, 0, 1 or 2")
	retain := flag.Bool("retain", false, "set the retain flag")
	timeout := flag.Duration("timeout", 5*time.Second, "how long to wait for each answer")
	flag.Parse()
	if (*topic == "") == (*predefined == 0) || *qos < -1 || *qos > 2 {
		fmt.Fprintln(os.Stderr, "mqttsn-pub: give either -t TOPIC or -predefined ID, and -qos -1..2")
		flag.Usage()
		os.Exit(2)
	}
	c, err := dial(*gateway, *timeout)
	if err != nil {
		fail(err)
	}
	defer c.conn.Close()
	if err := publish(c, *clientID, *topic, uint16(*predefined), []byte(*message), *qos, *retain); err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "mqttsn-pub:", err)
	os.Exit(1)
}

// client is a UDP socket connected to the gateway.
type client struct {
	conn    *net.UDPConn
	timeout time.Duration
	buf     []byte
}

func dial(addr string, timeout time.Duration) (*client, error) {
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("gateway address %q: %w", addr, err)
	}
	conn, err := net.DialUDP("udp", nil, ua)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	return &client{conn: conn, timeout: timeout, buf: make([]byte, 65535)}, nil
}

func (c *client) send(m mqttsn.Message) error {
	b, err := m.AppendBinary(nil)
	if err != nil {
		return err
	}
	_, err = c.conn.Write(b)
	return err
}

// await reads datagrams until one of type T arrives.
func await[T mqttsn.Message](c *client) (T, error) {
	var zero T
	_ = c.conn.SetReadDeadline(time.Now().Add(c.timeout))
	for {
		n, err := c.conn.Read(c.buf)
		if err != nil {
			return zero, fmt.Errorf("waiting for %T: %w", zero, err)
		}
		m, err := mqttsn.Decode(c.buf[:n])
		if err != nil {
			continue
		}
		if t, ok := m.(T); ok {
			return t, nil
		}
		if _, ok := m.(*mqttsn.Disconnect); ok {
			return zero, errors.New("the gateway sent DISCONNECT")
		}
	}
}

func publish(c *client, clientID, topic string, predefined uint16, data []byte, qos int, retain bool) error {
	p := &mqttsn.Publish{Retain: retain, Data: data}
	switch {
	case predefined != 0:
		p.TopicIDType, p.TopicID = mqttsn.TopicIDPredefined, predefined
	case len(topic) == 2:
		p.TopicIDType = mqttsn.TopicIDShort
		p.TopicID, _ = mqttsn.ShortTopicID(topic)
	}
	if qos == -1 {
		if predefined == 0 && len(topic) != 2 {
			return errors.New("QoS -1 needs -predefined or a 2-character topic")
		}
		p.QoS = mqttsn.QoSMinus1
		return c.send(p)
	}
	p.QoS = mqttsn.QoS(qos)

	if err := c.send(&mqttsn.Connect{CleanSession: true, Duration: 60, ClientID: clientID}); err != nil {
		return err
	}
	ack, err := await[*mqttsn.ConnAck](c)
	if err != nil {
		return err
	}
	if ack.ReturnCode != mqttsn.Accepted {
		return fmt.Errorf("CONNACK: %v", ack.ReturnCode)
	}
	if predefined == 0 && len(topic) != 2 {
		if err := c.send(&mqttsn.Register{MsgID: 1, TopicName: topic}); err != nil {
			return err
		}
		ra, err := await[*mqttsn.RegAck](c)
		if err != nil {
			return err
		}
		if ra.ReturnCode != mqttsn.Accepted {
			return fmt.Errorf("REGACK: %v", ra.ReturnCode)
		}
		p.TopicID = ra.TopicID
	}
	if qos > 0 {
		p.MsgID = 2
	}
	if err := c.send(p); err != nil {
		return err
	}
	switch qos {
	case 1:
		pa, err := await[*mqttsn.PubAck](c)
		if err != nil {
			return err
		}
		if pa.ReturnCode != mqttsn.Accepted {
			return fmt.Errorf("PUBACK: %v", pa.ReturnCode)
		}
	case 2:
		if _, err := await[*mqttsn.PubRec](c); err != nil {
			return err
		}
		if err := c.send(&mqttsn.PubRel{MsgID: 2}); err != nil {
			return err
		}
		if _, err := await[*mqttsn.PubComp](c); err != nil {
			return err
		}
	}
	if err := c.send(&mqttsn.Disconnect{}); err != nil {
		return err
	}
	_, err = await[*mqttsn.Disconnect](c)
	return err
}
