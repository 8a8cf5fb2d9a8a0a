package tunneld

import (
	"errors"
	"fmt"
	"net/http"
)

// Error types of the control plane, as AWS names them in the __type of an error body.
const (
	ErrTypeResourceNotFound   = "ResourceNotFoundException"
	ErrTypeInvalidRequest     = "InvalidRequestException"
	ErrTypeLimitExceeded      = "LimitExceededException"
	ErrTypeSerialization      = "SerializationException"
	ErrTypeUnknownOperation   = "UnknownOperationException"
	ErrTypeMissingAuthToken   = "MissingAuthenticationTokenException"
	ErrTypeIncompleteSigature = "IncompleteSignatureException"
	ErrTypeInternalFailure    = "InternalFailure"
	ErrTypeAccessDenied       = "AccessDeniedException"
	ErrTypeThrottling         = "ThrottlingException"
)

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = http.ErrServerClosed

// ErrDataDirInUse is returned by New when another server holds Config.DataDir
// (and by LockDir when another holds its directory).
var ErrDataDirInUse = errors.New("tunneld: data directory is in use by another server (porthole-tunneld --data-dir)")

// APIError is an error of the control plane, with the type and message AWS sends in
// the error body ({"__type": Type, "message": Message}).
type APIError struct {
	Type    string
	Message string
	Status  int // HTTP status; 0 means 400

	// abandon: the request's body was left unread; the connection is closed
	// after the answer without reading it (hangUp).
	abandon bool
}

func (e *APIError) Error() string { return "tunneld: " + e.Type + ": " + e.Message }

func (e *APIError) status() int {
	if e.Status == 0 {
		return http.StatusBadRequest
	}
	return e.Status
}

func invalid(format string, args ...any) error {
	return &APIError{Type: ErrTypeInvalidRequest, Message: fmt.Sprintf(format, args...)}
}

func notFound(format string, args ...any) error {
	return &APIError{Type: ErrTypeResourceNotFound, Message: fmt.Sprintf(format, args...)}
}

// IsNotFound reports whether err is a ResourceNotFoundException.
func IsNotFound(err error) bool {
	var e *APIError
	return errors.As(err, &e) && e.Type == ErrTypeResourceNotFound
}
