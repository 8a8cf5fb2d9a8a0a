package tunneld

import (
	"errors"
	"regexp"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Patterns and bounds of the API model (iotsecuretunneling 2018-10-05) and the
// quotas of spec §7.
var (
	namePattern      = regexp.MustCompile(`^[a-zA-Z0-9:_-]{1,128}$`) // ThingName, Service
	tunnelIDPattern  = regexp.MustCompile(`^[a-zA-Z0-9_\-+=:]{1,128}$`)
	nextTokenPattern = regexp.MustCompile(`^[a-zA-Z0-9_=-]+$`) // and at most 4096 bytes
	tagPattern       = regexp.MustCompile(`^[\p{L}\p{Z}\p{N}_.:/=+\-@]*$`)
	// regionPattern is the agent's rule for a notification's region
	// (agent/notify.ParseNotification), which tunneld cannot import: every
	// notification carries Config.Region, and an agent refuses all of them
	// for a region it does not take. TestRegionRuleIsTheAgents holds the two
	// together.
	regionPattern = regexp.MustCompile(`^[a-zA-Z0-9._-]{1,64}$`)
)

const (
	maxServices        = 3   // services per tunnel (spec §7, adjustable at AWS)
	maxLifetimeMinutes = 720 // TimeoutInMin
	maxDescription     = 2048
	maxListResults     = 100
)

// Tag bounds, from the API model (botocore data/iotsecuretunneling/2018-10-05/
// service-2.json, and the API reference page API_iot-secure-tunneling_Tag): TagList
// holds 1–200 tags, in a request and in a tunnel's description alike, so 200 is
// also what a tunnel keeps across TagResource; TagKey is 1–128 characters, TagValue
// 0–256, both of tagPattern. Keys are unique per resource and the aws: prefix, in
// any case, is AWS's own (AWS tagging restrictions: "the reserved prefix is aws:").
const (
	maxTags        = 200
	maxTagKey      = 128
	maxTagValue    = 256
	reservedTagKey = "aws:"
)

// checkRegion reports whether an agent takes region in a notification.
func checkRegion(region string) error {
	if !regionPattern.MatchString(region) {
		return errors.New("want 1-64 characters of [a-zA-Z0-9._-], which the agent takes in a notification (e.g. eu-west-1)")
	}
	return nil
}

func checkTunnelID(id string) error {
	if id == "" {
		return invalid("tunnelId is required")
	}
	if !tunnelIDPattern.MatchString(id) {
		return invalid("tunnelId must match [a-zA-Z0-9_\\-+=:]{1,128}")
	}
	return nil
}

func checkDestinationConfig(dc *DestinationConfig) error {
	if dc == nil {
		return nil
	}
	if dc.ThingName != "" && !namePattern.MatchString(dc.ThingName) {
		return invalid("destinationConfig.thingName must match [a-zA-Z0-9:_-]+ and be 1-128 characters")
	}
	switch n := len(dc.Services); {
	case n == 0:
		return invalid("destinationConfig.services must list at least one service")
	case n > maxServices:
		return invalid("destinationConfig.services lists %d services, more than the %d allowed per tunnel", n, maxServices)
	}
	for i, s := range dc.Services {
		if !namePattern.MatchString(s) {
			return invalid("destinationConfig.services[%d] must match [a-zA-Z0-9:_-]+ and be 1-128 characters", i)
		}
		if slices.Contains(dc.Services[:i], s) {
			return invalid("destinationConfig.services lists %q twice", s)
		}
	}
	return nil
}

// checkTagKeys checks UntagResource's tagKeys: required, 0–200 keys (TagKeyList),
// each a TagKey as in checkTags.
func checkTagKeys(keys []string) error {
	if keys == nil {
		return invalid("tagKeys is required")
	}
	if len(keys) > maxTags {
		return invalid("tagKeys must hold 0-%d keys, got %d", maxTags, len(keys))
	}
	for i, k := range keys {
		if n := utf8.RuneCountInString(k); n < 1 || n > maxTagKey || !tagPattern.MatchString(k) {
			return invalid("tagKeys[%d] must be 1-%d characters of letters, spaces, digits and _.:/=+-@", i, maxTagKey)
		}
	}
	return nil
}

func checkTags(tags []Tag, required bool) error {
	if tags == nil && !required {
		return nil
	}
	if len(tags) < 1 || len(tags) > maxTags {
		return invalid("tags must hold 1-%d tags, got %d", maxTags, len(tags))
	}
	for i, t := range tags {
		if n := utf8.RuneCountInString(t.Key); n < 1 || n > maxTagKey || !tagPattern.MatchString(t.Key) {
			return invalid("tags[%d].key must be 1-%d characters of letters, spaces, digits and _.:/=+-@", i, maxTagKey)
		}
		if len(t.Key) >= len(reservedTagKey) && strings.EqualFold(t.Key[:len(reservedTagKey)], reservedTagKey) {
			return invalid("tags[%d].key %q uses the reserved prefix %s", i, t.Key, reservedTagKey)
		}
		if slices.ContainsFunc(tags[:i], func(x Tag) bool { return x.Key == t.Key }) {
			return invalid("tags lists key %q twice", t.Key)
		}
		if n := utf8.RuneCountInString(t.Value); n > maxTagValue || !tagPattern.MatchString(t.Value) {
			return invalid("tags[%d].value must be 0-%d characters of letters, spaces, digits and _.:/=+-@", i, maxTagValue)
		}
	}
	return nil
}

func checkDescription(d string) error {
	if d == "" {
		return nil
	}
	if !utf8.ValidString(d) || utf8.RuneCountInString(d) > maxDescription {
		return invalid("description must be 1-%d characters", maxDescription)
	}
	for _, r := range d {
		if unicode.Is(unicode.C, r) {
			return invalid("description must not contain control or format characters")
		}
	}
	return nil
}

func (in *OpenTunnelInput) validate() error {
	if err := checkDescription(in.Description); err != nil {
		return err
	}
	if err := checkTags(in.Tags, false); err != nil {
		return err
	}
	if err := checkDestinationConfig(in.DestinationConfig); err != nil {
		return err
	}
	if tc := in.TimeoutConfig; tc != nil && tc.MaxLifetimeTimeoutMinutes != 0 &&
		(tc.MaxLifetimeTimeoutMinutes < 1 || tc.MaxLifetimeTimeoutMinutes > maxLifetimeMinutes) {
		return invalid("timeoutConfig.maxLifetimeTimeoutMinutes must be 1-%d, got %d", maxLifetimeMinutes, tc.MaxLifetimeTimeoutMinutes)
	}
	return nil
}

func (in *RotateTunnelAccessTokenInput) validate() error {
	if err := checkTunnelID(in.TunnelID); err != nil {
		return err
	}
	switch in.ClientMode {
	case ClientModeSource:
		if in.DestinationConfig != nil {
			return invalid("destinationConfig cannot be used with clientMode SOURCE")
		}
	case ClientModeDestination, ClientModeAll:
	case "":
		return invalid("clientMode is required")
	default:
		return invalid("clientMode must be SOURCE, DESTINATION or ALL, got %q", in.ClientMode)
	}
	return checkDestinationConfig(in.DestinationConfig)
}

func (in *ListTunnelsInput) validate() error {
	if in.ThingName != "" && !namePattern.MatchString(in.ThingName) {
		return invalid("thingName must match [a-zA-Z0-9:_-]+ and be 1-128 characters")
	}
	if in.MaxResults != 0 && (in.MaxResults < 1 || in.MaxResults > maxListResults) {
		return invalid("maxResults must be 1-%d, got %d", maxListResults, in.MaxResults)
	}
	if in.NextToken != "" && (len(in.NextToken) > 4096 || !nextTokenPattern.MatchString(in.NextToken)) {
		return invalid("nextToken is not valid")
	}
	return nil
}

func checkResourceArn(arn string) error {
	if n := len(arn); n < 1 || n > 1011 {
		return invalid("resourceArn must be 1-1011 characters")
	}
	return nil
}
