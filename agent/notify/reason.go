package notify

import "fmt"

// MQTT v5 reason codes (MQTT 5.0 §2.4) that a device meets in practice (a
// table rather than a map: static data, nothing built at start).
var reasonNames = [...]struct {
	code byte
	name string
}{
	{0x80, "unspecified error"},
	{0x81, "malformed packet"},
	{0x82, "protocol error"},
	{0x83, "implementation specific error"},
	{0x84, "unsupported protocol version"},
	{0x85, "client identifier not valid"},
	{0x86, "bad user name or password"},
	{0x87, "not authorized"},
	{0x88, "server unavailable"},
	{0x89, "server busy"},
	{0x8A, "banned"},
	{0x8B, "server shutting down"},
	{0x8C, "bad authentication method"},
	{0x8D, "keep alive timeout"},
	{0x8E, "session taken over"},
	{0x8F, "topic filter invalid"},
	{0x90, "topic name invalid"},
	{0x91, "packet identifier in use"},
	{0x93, "receive maximum exceeded"},
	{0x95, "packet too large"},
	{0x96, "message rate too high"},
	{0x97, "quota exceeded"},
	{0x98, "administrative action"},
	{0x99, "payload format invalid"},
	{0x9C, "use another server"},
	{0x9D, "server moved"},
	{0x9E, "shared subscriptions not supported"},
	{0x9F, "connection rate exceeded"},
	{0xA0, "maximum connect time"},
	{0xA2, "wildcard subscriptions not supported"},
}

// reasonText formats a reason code as "0x87 (not authorized)".
func reasonText(code byte) string {
	for _, r := range reasonNames {
		if r.code == code {
			return fmt.Sprintf("0x%02X (%s)", code, r.name)
		}
	}
	return fmt.Sprintf("0x%02X", code)
}

// Policy hints. AWS IoT policies name a subscription's resource with the
// "topicfilter/" prefix and a received or published message's with
// "topic/"; mixing them up is the most common set-up failure (DESIGN.md
// "Where this comes from", spec/secure-tunneling.md §4).

func subscribePolicyHint(thing, clientID, topic string) string {
	hint := "the device's IoT policy must allow iot:Subscribe on " +
		"arn:aws:iot:REGION:ACCOUNT:topicfilter/" + topic + " and iot:Receive on " +
		"arn:aws:iot:REGION:ACCOUNT:topic/" + topic + " (topicfilter/ for Subscribe, topic/ for Receive; " +
		"a policy shared by all devices can write ${iot:Connection.Thing.ThingName} for " + thing + ")"
	if clientID != "" && clientID != thing {
		// AWS IoT, thing policy variables: with a client id other than the
		// thing name the variable does not resolve, and the policy matches
		// nothing.
		hint += "; ${iot:Connection.Thing.ThingName} resolves only when the MQTT client id is the thing name, and the client id is " + quoteShort(clientID)
	}
	return hint
}

// connectPolicyHint: the agent keeps a persistent session (clean start off),
// which a policy's iot:ConnectAttributes condition must allow.
func connectPolicyHint(clientID string) string {
	return "the device's IoT policy must allow iot:Connect on arn:aws:iot:REGION:ACCOUNT:client/" + clientID +
		" (with PersistentConnect, if it has an iot:ConnectAttributes condition), and the certificate must be active and attached to the thing"
}

func publishPolicyHint(topic string) string {
	return "the device's IoT policy must allow iot:Publish on arn:aws:iot:REGION:ACCOUNT:topic/" + topic
}

// maxReference is how much of a Server Reference is logged: a host name and
// a port fit; the broker chooses its length.
const maxReference = 256

// reasonReferring is reasonText with the other server a CONNACK or
// DISCONNECT names, if any (its Server Reference, MQTT 5.0 §3.2.2.3.17,
// §3.14.2.2.5: with 0x9C use another server or 0x9D server moved), clipped.
// In the reason rather than an attribute of its own: an optional attribute is
// an append, 300 bytes of code on mipsle before the tunnel's start-up code
// (docs/size.md).
func reasonReferring(code byte, ref string) string {
	if ref == "" {
		return reasonText(code)
	}
	return reasonText(code) + ", server reference " + ref[:min(len(ref), maxReference)]
}
