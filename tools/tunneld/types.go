package tunneld

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"time"
)

// The request and response shapes of the AWS IoT Secure Tunneling API
// (iotsecuretunneling 2018-10-05), with its JSON member names. They are both the
// wire format of the control plane and the Go API of Server.

// DestinationConfig names the thing to notify and the tunnel's services.
type DestinationConfig struct {
	ThingName string   `json:"thingName,omitempty"`
	Services  []string `json:"services"`
}

// TimeoutConfig bounds a tunnel's lifetime.
type TimeoutConfig struct {
	// MaxLifetimeTimeoutMinutes is 1–720; 0 in a request means the default, 720.
	MaxLifetimeTimeoutMinutes int `json:"maxLifetimeTimeoutMinutes,omitempty"`
}

// Tag is a resource tag.
type Tag struct {
	Key   string `json:"key"`
	Value string `json:"value" aws:"required"` // may be "", not left out
}

// OpenTunnelInput is the OpenTunnel request.
type OpenTunnelInput struct {
	Description       string             `json:"description,omitempty"`
	Tags              []Tag              `json:"tags,omitempty"`
	DestinationConfig *DestinationConfig `json:"destinationConfig,omitempty"`
	TimeoutConfig     *TimeoutConfig     `json:"timeoutConfig,omitempty"`
}

// OpenTunnelOutput is the OpenTunnel response. The tokens are secrets: never log them.
type OpenTunnelOutput struct {
	TunnelID               string `json:"tunnelId"`
	TunnelArn              string `json:"tunnelArn"`
	SourceAccessToken      string `json:"sourceAccessToken"`
	DestinationAccessToken string `json:"destinationAccessToken"`
}

// CloseTunnelInput is the CloseTunnel request. Delete removes the tunnel at once
// instead of keeping it describable as CLOSED.
type CloseTunnelInput struct {
	TunnelID string `json:"tunnelId"`
	Delete   bool   `json:"delete,omitempty"`
}

// DescribeTunnelInput is the DescribeTunnel request.
type DescribeTunnelInput struct {
	TunnelID string `json:"tunnelId"`
}

// DescribeTunnelOutput is the DescribeTunnel response.
type DescribeTunnelOutput struct {
	Tunnel *Tunnel `json:"tunnel"`
}

// Status values of a tunnel and of a connection.
const (
	StatusOpen         = "OPEN"
	StatusClosed       = "CLOSED"
	StatusConnected    = "CONNECTED"
	StatusDisconnected = "DISCONNECTED"
)

// ConnectionState is one side's connection state.
type ConnectionState struct {
	Status        string    `json:"status"` // CONNECTED or DISCONNECTED
	LastUpdatedAt Timestamp `json:"lastUpdatedAt"`
}

// Tunnel is the description of a tunnel.
type Tunnel struct {
	TunnelID                   string             `json:"tunnelId"`
	TunnelArn                  string             `json:"tunnelArn"`
	Status                     string             `json:"status"` // OPEN or CLOSED
	SourceConnectionState      *ConnectionState   `json:"sourceConnectionState,omitempty"`
	DestinationConnectionState *ConnectionState   `json:"destinationConnectionState,omitempty"`
	Description                string             `json:"description,omitempty"`
	DestinationConfig          *DestinationConfig `json:"destinationConfig,omitempty"`
	TimeoutConfig              *TimeoutConfig     `json:"timeoutConfig,omitempty"`
	Tags                       []Tag              `json:"tags,omitempty"`
	CreatedAt                  Timestamp          `json:"createdAt"`
	LastUpdatedAt              Timestamp          `json:"lastUpdatedAt"`
}

// ListTunnelsInput is the ListTunnels request. MaxResults is 1–100; 0 means 100.
type ListTunnelsInput struct {
	ThingName  string `json:"thingName,omitempty"`
	MaxResults int    `json:"maxResults,omitempty"`
	NextToken  string `json:"nextToken,omitempty"`
}

// TunnelSummary is a tunnel in a ListTunnels response.
type TunnelSummary struct {
	TunnelID      string    `json:"tunnelId"`
	TunnelArn     string    `json:"tunnelArn"`
	Status        string    `json:"status"`
	Description   string    `json:"description,omitempty"`
	CreatedAt     Timestamp `json:"createdAt"`
	LastUpdatedAt Timestamp `json:"lastUpdatedAt"`
}

// ListTunnelsOutput is the ListTunnels response, newest tunnel first.
type ListTunnelsOutput struct {
	TunnelSummaries []TunnelSummary `json:"tunnelSummaries"`
	NextToken       string          `json:"nextToken,omitempty"`
}

// Client modes of RotateTunnelAccessToken.
const (
	ClientModeSource      = "SOURCE"
	ClientModeDestination = "DESTINATION"
	ClientModeAll         = "ALL"
)

// RotateTunnelAccessTokenInput is the RotateTunnelAccessToken request.
type RotateTunnelAccessTokenInput struct {
	TunnelID          string             `json:"tunnelId"`
	ClientMode        string             `json:"clientMode"`
	DestinationConfig *DestinationConfig `json:"destinationConfig,omitempty"`
}

// RotateTunnelAccessTokenOutput is the RotateTunnelAccessToken response; only the
// rotated tokens are set.
type RotateTunnelAccessTokenOutput struct {
	TunnelArn              string `json:"tunnelArn"`
	SourceAccessToken      string `json:"sourceAccessToken,omitempty"`
	DestinationAccessToken string `json:"destinationAccessToken,omitempty"`
}

// TagResourceInput is the TagResource request.
type TagResourceInput struct {
	ResourceArn string `json:"resourceArn"`
	Tags        []Tag  `json:"tags"`
}

// UntagResourceInput is the UntagResource request.
type UntagResourceInput struct {
	ResourceArn string   `json:"resourceArn"`
	TagKeys     []string `json:"tagKeys"`
}

// ListTagsForResourceInput is the ListTagsForResource request.
type ListTagsForResourceInput struct {
	ResourceArn string `json:"resourceArn"`
}

// ListTagsForResourceOutput is the ListTagsForResource response.
type ListTagsForResourceOutput struct {
	Tags []Tag `json:"tags"`
}

// Timestamp is a time that AWS JSON 1.1 writes as epoch seconds, a number with up to
// millisecond precision.
type Timestamp struct{ time.Time }

// MarshalJSON writes epoch seconds.
func (t Timestamp) MarshalJSON() ([]byte, error) {
	ms := t.UnixMilli()
	return []byte(strconv.FormatFloat(float64(ms)/1000, 'f', -1, 64)), nil
}

// The epoch seconds of the years 0 and 10000: time.Time's own JSON has years
// 0 to 9999 only. Past them the milliseconds soon leave int64, and converted
// they were whatever the CPU's conversion gives (1e20 was the year -292275055
// on amd64): a time from a bad answer rather than an error.
const (
	minTimestamp = -62167219200
	maxTimestamp = 253402300800
)

// UnmarshalJSON reads epoch seconds (a number) of the years 0 to 9999; null
// leaves t as it is, as encoding/json leaves other fields.
func (t *Timestamp) UnmarshalJSON(b []byte) error {
	var f *float64
	if err := json.Unmarshal(b, &f); err != nil {
		return fmt.Errorf("timestamp: %w", err)
	}
	if f == nil {
		return nil
	}
	ms := math.Round(*f * 1000)
	if !(ms >= minTimestamp*1000 && ms < maxTimestamp*1000) { // NaN too
		return fmt.Errorf("timestamp: %v is not in the years 0 to 9999", *f)
	}
	t.Time = time.UnixMilli(int64(ms)).UTC()
	return nil
}

// String describes the output with token fingerprints, never the tokens.
func (o OpenTunnelOutput) String() string {
	return fmt.Sprintf("{tunnel %s, source token %s, destination token %s}", o.TunnelID, fingerprint(o.SourceAccessToken), fingerprint(o.DestinationAccessToken))
}

// LogValue is String for slog.
func (o OpenTunnelOutput) LogValue() slog.Value { return slog.StringValue(o.String()) }

// GoString is String for %#v.
func (o OpenTunnelOutput) GoString() string { return o.String() }

// String describes the output with token fingerprints, never the tokens.
func (o RotateTunnelAccessTokenOutput) String() string {
	return fmt.Sprintf("{%s, source token %s, destination token %s}", o.TunnelArn, fingerprint(o.SourceAccessToken), fingerprint(o.DestinationAccessToken))
}

// LogValue is String for slog.
func (o RotateTunnelAccessTokenOutput) LogValue() slog.Value { return slog.StringValue(o.String()) }

// GoString is String for %#v.
func (o RotateTunnelAccessTokenOutput) GoString() string { return o.String() }
