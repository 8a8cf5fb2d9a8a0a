package tunneld

import (
	"context"
	"fmt"
	"slices"
	"strings"
)

// The tagging operations (TagResource, UntagResource, ListTagsForResource) and
// their helpers.

// TagResource adds or replaces tags of a tunnel. A tunnel keeps at most 200 tags,
// as many as OpenTunnel takes and DescribeTunnel returns.
func (s *Server) TagResource(ctx context.Context, in *TagResourceInput) error {
	if err := checkResourceArn(in.ResourceArn); err != nil {
		return err
	}
	if err := checkTags(in.Tags, true); err != nil {
		return err
	}
	r, err := s.lockArn(in.ResourceArn)
	if err != nil {
		return err
	}
	tags := slices.Clone(r.Tags) // a refused change leaves r as it was
	for _, t := range in.Tags {
		if i := slices.IndexFunc(tags, func(x Tag) bool { return x.Key == t.Key }); i >= 0 {
			tags[i] = t
		} else {
			tags = append(tags, t)
		}
	}
	if len(tags) > maxTags {
		s.mu.Unlock()
		return invalid("the tunnel would have %d tags, more than the %d allowed", len(tags), maxTags)
	}
	r.Tags = tags
	ticket := s.saveTicketLocked()
	s.mu.Unlock()
	s.log.Info("tunnel tagged", append([]any{"tunnel", r.ID, "keys", quotedList(tagKeys(in.Tags))}, callerAttrs(ctx)...)...)
	return s.commit(ticket, false)
}

// UntagResource removes tags of a tunnel by key.
func (s *Server) UntagResource(ctx context.Context, in *UntagResourceInput) error {
	if err := checkResourceArn(in.ResourceArn); err != nil {
		return err
	}
	if err := checkTagKeys(in.TagKeys); err != nil {
		return err
	}
	r, err := s.lockArn(in.ResourceArn)
	if err != nil {
		return err
	}
	r.Tags = slices.DeleteFunc(r.Tags, func(t Tag) bool { return slices.Contains(in.TagKeys, t.Key) })
	ticket := s.saveTicketLocked()
	s.mu.Unlock()
	s.log.Info("tunnel untagged", append([]any{"tunnel", r.ID, "keys", quotedList(in.TagKeys)}, callerAttrs(ctx)...)...)
	return s.commit(ticket, false)
}

// ListTagsForResource lists the tags of a tunnel.
func (s *Server) ListTagsForResource(ctx context.Context, in *ListTagsForResourceInput) (*ListTagsForResourceOutput, error) {
	if err := checkResourceArn(in.ResourceArn); err != nil {
		return nil, err
	}
	r, err := s.lockArn(in.ResourceArn)
	if err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	return &ListTagsForResourceOutput{Tags: append([]Tag{}, r.Tags...)}, nil
}

// lockArn locks s.mu and returns the tunnel of arn; without one it unlocks and
// returns the API's not-found error.
func (s *Server) lockArn(arn string) (*record, error) {
	s.mu.Lock()
	r := s.byArnLocked(arn)
	if r == nil {
		s.mu.Unlock()
		return nil, notFound("resource %s not found", arn)
	}
	return r, nil
}

func (s *Server) byArnLocked(arn string) *record {
	i := strings.LastIndex(arn, ":tunnel/")
	if i < 0 {
		return nil
	}
	if r := s.tunnels[arn[i+len(":tunnel/"):]]; r != nil && r.Arn == arn {
		return r
	}
	return nil
}

// quotedList is names as a log value: each quoted, for keys may hold spaces
// (the text form of a []string, "[Owner Team]", reads the same for one key
// and for two).
func quotedList(names []string) string { return fmt.Sprintf("%q", names) }

func tagKeys(tags []Tag) []string {
	keys := make([]string, len(tags))
	for i, t := range tags {
		keys[i] = t.Key
	}
	return keys
}
